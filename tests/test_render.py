"""Rendering: one function for every email, and the digest rendered once per composition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.composer import compose
from newsletter.render import (
    Recipient,
    TemplateError,
    render_digest,
    render_email,
)
from newsletter.settings import settings
from newsletter.tokens import read_token
from tests.fixtures.mail import issue_content

GMAIL_CLIP_BYTES = 102 * 1024

ALICE = Recipient(subscriber_id=17, email="alice@example.org", name="Alice Liddell")


def _digest(items=None, *, followed=("logistics",), test=False, **issue_fields):
    issue = issue_content(
        items=items
        if items is not None
        else [
            {"headline": "Hermès Q3 sales beat forecasts", "topics": ["luxury-fashion"],
             "body": "First paragraph about Hermès.\n\nSecond paragraph.",
             "link_text": "Read the full story", "link_url": "https://example.com/hermes?a=1&b=2"},
            {"headline": "Cainiao builds smart warehouses", "topics": ["logistics"],
             "body": "Karachi and Lahore.", "link_text": "Photo credit: Shutterstock"},
            {"headline": "Cloud news", "topics": ["cloud-ai"], "body": "Servers."},
        ],
        **issue_fields,
    )
    composition = compose(issue, followed=followed, max_items=settings.digest_max_items)
    assert composition is not None
    return issue, composition, render_digest(issue, composition, test=test)


# --- render_email ------------------------------------------------------------------


@pytest.fixture
def custom_templates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "emails" / "hello"
    folder.mkdir(parents=True)
    (folder / "subject.txt").write_text("Hello {{ who }}\nand more\n")
    (folder / "body.mjml").write_text(
        "<mjml><mj-body><mj-section><mj-column><mj-text>Hi {{ who }}</mj-text>"
        "</mj-column></mj-section></mj-body></mjml>"
    )
    (folder / "body.txt").write_text("Hi {{ who }}\n")
    monkeypatch.setattr(settings, "templates_dir", tmp_path)
    return folder


def test_render_email_escapes_html_but_not_plain_text(custom_templates: Path) -> None:
    email = render_email("hello", {"who": "Tom & <Jerry>"})
    assert "Hi Tom &amp; &lt;Jerry&gt;" in email.html
    assert "<Jerry>" not in email.html
    assert email.text == "Hi Tom & <Jerry>\n"


def test_render_email_subject_is_one_line(custom_templates: Path) -> None:
    email = render_email("hello", {"who": "Tom\r\nBcc: x@evil.test"})
    assert email.subject == "Hello Tom Bcc: x@evil.test and more"


def test_render_email_compiles_mjml_to_html(custom_templates: Path) -> None:
    html = render_email("hello", {"who": "Tom"}).html
    assert html.startswith("<!doctype html>")
    assert "<mj-" not in html


def test_missing_email_template_names_the_file(custom_templates: Path) -> None:
    with pytest.raises(TemplateError, match=r"nope/subject\.txt"):
        render_email("nope", {})


def test_missing_context_variable_is_an_error_not_a_blank(custom_templates: Path) -> None:
    with pytest.raises(TemplateError, match="who"):
        render_email("hello", {})


def test_broken_mjml_names_the_template(custom_templates: Path) -> None:
    (custom_templates / "body.mjml").write_text("<mjml><mj-body><mj-text>x</mj-body></mjml>")
    with pytest.raises(TemplateError, match=r"hello/body\.mjml"):
        render_email("hello", {"who": "Tom"})


# --- the digest: content --------------------------------------------------------------


def test_digest_subject_is_the_issue_title() -> None:
    _, _, digest = _digest()
    assert digest.subject == "Alibaba News Roundup: Hermès beats expectations"


def test_test_digest_subject_and_body_say_test() -> None:
    _, _, digest = _digest(test=True)
    html, text = digest.personalise(ALICE)
    assert digest.subject.startswith("[TEST] ")
    assert "Test send." in html
    assert "TEST SEND" in text


@pytest.mark.parametrize(
    ("recipient", "greeting"), [(ALICE, "Hi Alice,"), (Recipient(3, "x@example.org"), "Hi there,")]
)
def test_digest_greets_by_first_name_or_generically(recipient: Recipient, greeting: str) -> None:
    html, text = _digest()[2].personalise(recipient)
    assert greeting in html and greeting in text


def test_personal_values_are_escaped_in_html_only() -> None:
    evil = Recipient(3, "x@example.org", name="<script>alert(1)</script>")
    html, text = _digest()[2].personalise(evil)
    assert "<script>" not in html
    assert "Hi &lt;script&gt;alert(1)&lt;/script&gt;," in html
    assert "Hi <script>alert(1)</script>," in text


def test_item_content_is_escaped_in_html() -> None:
    _, _, digest = _digest([{"headline": "AT&T <b>bold</b> move", "body": "x < y"}])
    html, text = digest.personalise(ALICE)
    assert "AT&amp;T &lt;b&gt;bold&lt;/b&gt; move" in html
    assert "x &lt; y" in html
    assert "AT&T <b>bold</b> move" in text


def test_digest_orders_items_as_composed_and_shows_reasons() -> None:
    html, text = _digest(followed=("logistics",))[2].personalise(ALICE)
    headlines = ["Cainiao builds smart warehouses", "Hermès Q3 sales beat forecasts", "Cloud news"]
    assert [html.index(h) for h in headlines] == sorted(html.index(h) for h in headlines)
    assert [text.index(h) for h in headlines] == sorted(text.index(h) for h in headlines)
    assert "You follow Logistics" in html
    assert "You follow Logistics" in text


def test_item_with_url_gets_a_read_more_link() -> None:
    html, text = _digest()[2].personalise(ALICE)
    assert 'href="https://example.com/hermes?a=1&amp;b=2"' in html
    assert "Read the full story: https://example.com/hermes?a=1&b=2" in text


def test_item_with_link_text_but_no_url_shows_text_without_a_link() -> None:
    html, text = _digest()[2].personalise(ALICE)
    assert "Photo credit: Shutterstock" in html
    assert not re.search(r"<a [^>]*>Photo credit", html)
    assert "Photo credit: Shutterstock" in text


def test_both_parts_carry_working_manage_and_unsubscribe_links() -> None:
    html, text = _digest()[2].personalise(ALICE)
    for body in (html, text):
        manage = re.search(re.escape(settings.base_url) + r"/manage/([\w.\-]+)", body)
        unsub = re.search(re.escape(settings.base_url) + r"/unsubscribe/([\w.\-]+)", body)
        assert manage and read_token("manage", manage.group(1)) == ALICE.subscriber_id
        assert unsub and read_token("unsubscribe", unsub.group(1)) == ALICE.subscriber_id


def test_footer_says_why_and_where_from() -> None:
    html, text = _digest()[2].personalise(ALICE)
    for body in (html, text):
        assert "alice@example.org" in body
        assert settings.postal_address in body
        assert "You get this email because" in body


def test_preheader_previews_the_first_headlines() -> None:
    html, _ = _digest(followed=("logistics",))[2].personalise(ALICE)
    hidden = re.search(r'<div style="display:none;[^"]*">([^<]*)</div>', html)
    assert hidden is not None
    assert hidden.group(1).startswith("Cainiao builds smart warehouses")


def test_issue_content_cannot_forge_a_placeholder() -> None:
    _, _, digest = _digest([{"headline": "x", "body": "@@{nonce}:email@@ @@abc:email@@"}])
    nonce_marker = re.compile(r"@@[0-9a-f]+:(\w+)@@")
    html, text = digest.personalise(ALICE)
    # The literal text survives untouched; it was never treated as a placeholder.
    assert "@@abc:email@@" in text
    assert len(nonce_marker.findall(text)) == 1


def test_plain_text_is_wrapped_at_72_columns_except_urls() -> None:
    long_body = " ".join(["wordy"] * 200)
    _, _, digest = _digest([{"headline": "Long", "body": long_body,
                             "link_url": "https://example.com/" + "x" * 90}])
    _, text = digest.personalise(ALICE)
    for line in text.splitlines():
        assert len(line) <= 72 or "://" in line, line


def test_one_render_serves_many_recipients_without_leaking_between_them() -> None:
    _, _, digest = _digest()
    alice_html, _ = digest.personalise(ALICE)
    bob_html, bob_text = digest.personalise(Recipient(18, "bob@example.org", "Bob"))
    assert "Hi Bob," in bob_html and "Hi Alice," in alice_html
    assert "alice@example.org" not in bob_html + bob_text
    assert "Alice" not in bob_html + bob_text


def test_html_is_responsive_single_column_for_phones() -> None:
    html, _ = _digest()[2].personalise(ALICE)
    assert 'name="viewport"' in html
    assert "@media only screen and (min-width:480px)" in html


def test_html_fetches_nothing_when_opened() -> None:
    html, _ = _digest()[2].personalise(ALICE)
    assert not re.search(r"<(link|img|script|iframe)\b|\bsrc=|@import|url\(", html, re.I)


def test_each_reason_is_a_badge_above_its_headline_coloured_by_kind() -> None:
    items = [
        {"headline": "Pinned story", "pinned": True},
        {"headline": "Logistics story", "topics": ["logistics"]},
        {"headline": "Other story", "topics": ["cloud-ai"]},
    ]
    html, text = _digest(items)[2].personalise(ALICE)
    badges = re.findall(r'<span class="badge" style="([^"]+)">([^<]+)</span>\s*</p>\s*<h2>', html)
    reasons = [reason for _, reason in badges]
    assert reasons == ["Editor&#39;s pick", "You follow Logistics", "Also this week"]
    assert len({style for style, _ in badges}) == 3  # one colour per kind of reason
    assert "[You follow Logistics]\nLogistics story" in text


def _luminance(css: str) -> float:
    channels = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_digest_in_a_browser_is_one_column_on_a_phone_with_readable_badges(
    browser_page,  # type: ignore[no-untyped-def]
) -> None:
    from tests.fixtures.web import screenshot

    items = [
        {"headline": "Pinned: the editor's pick of the week", "pinned": True},
        {"headline": "Cainiao builds smart warehouses in Karachi and Lahore",
         "topics": ["logistics"], "body": "Two automated distribution centres. " * 8,
         "link_text": "Read the full story", "link_url": "https://example.com/cainiao"},
        {"headline": "Cloud news", "topics": ["cloud-ai"], "body": "Servers. " * 30},
    ]
    html, _ = _digest(items)[2].personalise(ALICE)
    page = browser_page
    page.set_content(html)
    screenshot(page, "digest-email", widths=(375, 800))  # asserts no sideways scrolling
    page.set_viewport_size({"width": 375, "height": 800})
    boxes = page.eval_on_selector_all(
        "h2, .badge, a[href^='https://example.com']",
        "els => els.map(e => [e.tagName, e.getBoundingClientRect().toJSON()])",
    )
    headlines = [box for tag, box in boxes if tag == "H2"]
    # One column: every headline starts at the same left edge and spans the screen.
    assert len(headlines) == 3
    assert {round(b["left"]) for b in headlines} == {24}
    assert all(b["width"] >= 375 - 2 * 24 - 1 for b in headlines)
    badges = [box for tag, box in boxes if tag == "SPAN"]
    assert all(badge["bottom"] <= h["top"] for badge, h in zip(badges, headlines, strict=True))
    colours = page.eval_on_selector_all(
        ".badge",
        "els => els.map(e => [getComputedStyle(e).color, getComputedStyle(e).backgroundColor])",
    )
    for fg, bg in colours:
        light, dark = sorted([_luminance(fg), _luminance(bg)], reverse=True)
        assert (light + 0.05) / (dark + 0.05) >= 7, (fg, bg)  # WCAG AAA


def test_full_twelve_item_digest_stays_well_under_gmail_clipping() -> None:
    paragraph = "Hermès International’s third quarter sales jumped 24% at constant rates. " * 6
    items = [
        {"headline": f"Story {i} with a reasonably long headline about logistics",
         "body": "\n\n".join([paragraph] * 3), "topics": ["logistics"],
         "link_text": "Read more", "link_url": f"https://example.com/{i}"}
        for i in range(12)
    ]
    html, _ = _digest(items)[2].personalise(ALICE)
    assert len(html.encode()) < GMAIL_CLIP_BYTES * 0.75


# --- seeds, through the real ingest -------------------------------------------------


def test_every_seed_issue_renders_under_gmail_clipping(session, seed_paths) -> None:
    from newsletter.composer import load_issue
    from newsletter.ingest import ingest_file

    assert len(seed_paths) == 5
    for path in seed_paths:
        result = ingest_file(session=session, path=path)
        session.commit()
        issue = load_issue(session=session, issue_id=result.issue_id)
        composition = compose(issue, followed=(), max_items=settings.digest_max_items)
        assert composition is not None and composition.items, path.name
        html, text = render_digest(issue, composition).personalise(ALICE)
        assert len(html.encode()) < GMAIL_CLIP_BYTES * 0.75, path.name
        flat_text = " ".join(text.split())
        for chosen in composition.items:
            assert " ".join(chosen.item.headline.split()) in flat_text, path.name
