"""Rendering: one function for every email, and the digest rendered once per composition."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from newsletter.composer import compose
from newsletter.digest import DigestExtras, ItemExtras, default_excerpt
from newsletter.render import (
    Recipient,
    TemplateError,
    render_digest,
    render_email,
)
from newsletter.settings import settings
from newsletter.tokens import read_click_token, read_token
from tests.fixtures.mail import issue_content

GMAIL_CLIP_BYTES = 102 * 1024

ALICE = Recipient(subscriber_id=17, email="alice@example.org", name="Alice Liddell")


def _digest(items=None, *, followed=("logistics",), test=False, only=False, extras=None,
            **issue_fields):
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
    composition = compose(issue, followed=followed, only_my_topics=only,
                          max_items=settings.digest_max_items)
    assert composition is not None
    return issue, composition, render_digest(issue, composition, test=test,
                                             extras=extras or DigestExtras())


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


# --- the digest: subject, masthead, preheader -----------------------------------------

CLICK = re.compile(r"/r/([\w.\-]+)")
OWN_LINK = re.compile(r"/r/([\w.\-]+)/link")


def _sections(html: str) -> list[str]:
    return re.findall(r"text-transform:uppercase;color:#1d4ed8\">([^<]+)</p>", html)


def test_subject_is_the_editors_subject_else_the_title() -> None:
    assert _digest(extras=DigestExtras(subject="Hermès beats forecasts + 2 more"))[2].subject \
        == "Hermès beats forecasts + 2 more"
    assert _digest()[2].subject == "Alibaba News Roundup: Hermès beats expectations"


def test_test_digest_subject_and_body_say_test() -> None:
    _, _, digest = _digest(test=True, extras=DigestExtras(subject="Short"))
    html, text = digest.personalise(ALICE)
    assert digest.subject == "[TEST] Short"
    assert "Test send." in html
    assert "TEST SEND" in text


def test_masthead_shows_the_newsletter_name_logo_and_date(monkeypatch) -> None:
    monkeypatch.setattr(settings, "newsletter_name", "The Weekly Parcel")
    monkeypatch.setattr(settings, "logo_url", "https://cdn.example.com/logo.png")
    html, text = _digest()[2].personalise(ALICE)
    assert "The Weekly Parcel</td>" in html
    assert re.search(r'<img src="https://cdn.example.com/logo.png" alt="The Weekly Parcel logo"',
                     html)
    assert "Monday 23 November 2026" in html and "The Weekly Parcel - Monday 23 November 2026" \
        in text


def test_a_logo_that_is_not_https_is_not_shown(monkeypatch) -> None:
    monkeypatch.setattr(settings, "logo_url", "javascript:alert(1)")
    html, _ = _digest()[2].personalise(ALICE)
    assert "javascript:" not in html and "<img" not in html


def _preheader(html: str) -> str:
    hidden = re.search(r'<div style="display:none;[^"]*">(.*?)</div>', html)
    assert hidden is not None
    return hidden.group(1)


def test_preheader_is_personal_then_a_spacer_so_the_body_does_not_leak() -> None:
    html, _ = _digest(followed=("logistics",))[2].personalise(ALICE)
    pre = _preheader(html)
    assert pre.startswith("Alice, 1 story on Logistics for you + 2 more: Cainiao builds")
    assert pre.endswith("&zwnj;&nbsp;" * 80)
    anonymous, _ = _digest(followed=())[2].personalise(Recipient(3, "x@example.org"))
    assert _preheader(anonymous).startswith("3 stories this week: ")


def test_view_in_browser_links_to_the_issues_archive_page() -> None:
    html, text = _digest()[2].personalise(ALICE)
    url = settings.base_url + "/issues/1/alibaba-news-roundup-hermes-beats-expectations"
    assert f'<a href="{url}"' in html and f"View in your browser: {url}" in text


def test_html_declares_its_colour_scheme() -> None:
    html, _ = _digest()[2].personalise(ALICE)
    assert '<meta name="color-scheme" content="light"' in html


# --- the digest: sections, chips, intro --------------------------------------------------


def test_a_reader_with_matches_gets_picked_for_you_then_also_this_week_once_each() -> None:
    html, text = _digest(followed=("logistics",))[2].personalise(ALICE)
    assert _sections(html) == ["Picked for you", "Also this week"]
    assert text.count("PICKED FOR YOU") == 1 and text.count("ALSO THIS WEEK") == 1
    headlines = ["Cainiao builds smart warehouses", "Hermès Q3 sales beat forecasts", "Cloud news"]
    for body in (html, text):
        positions = [body.rindex(h) for h in headlines]
        assert positions == sorted(positions)
    assert html.index("Picked for you") < html.rindex("Cainiao") < html.rindex("Also this week")


def test_a_reader_who_matches_nothing_gets_one_this_week_section() -> None:
    html, text = _digest(followed=("fintech",))[2].personalise(ALICE)
    assert _sections(html) == ["This week"]
    assert "Picked for you" not in html and "Also this week" not in html
    assert "ALSO THIS WEEK" not in text
    assert "nothing this week is on the topics you follow" in " ".join(text.lower().split())


def test_an_only_my_topics_reader_gets_only_their_section_and_intro() -> None:
    html, text = _digest(followed=("logistics",), only=True, title="Weekly roundup",
                         intro="Hermès had a record quarter.\n\nA word from the editors.")[2] \
        .personalise(ALICE)
    assert _sections(html) == ["Picked for you"]
    assert "Hermès" not in html and "Hermès" not in text  # neither the story nor the intro
    assert "we picked 1 story on Logistics for you." in html
    assert "A word from the editors." in html
    assert "more from the week" not in html


def test_each_story_has_a_compact_reason_chip_coloured_by_kind() -> None:
    items = [
        {"headline": "Pinned story", "pinned": True},
        {"headline": "Logistics story", "topics": ["logistics"]},
        {"headline": "Other story", "topics": ["cloud-ai"]},
    ]
    html, text = _digest(items)[2].personalise(ALICE)
    chips = re.findall(r'<span class="chip" style="([^"]+)">([^<]+)</span>', html)
    assert [label for _, label in chips] == ["Editor&#39;s pick", "Logistics", "Cloud &amp; AI"]
    assert len({style for style, _ in chips}) == 3
    assert "[Logistics]\nLogistics story" in text


def test_intro_paragraphs_about_a_story_are_left_to_the_excerpt() -> None:
    intro = ("Cainiao opened warehouses in Karachi.\n\nCloud servers grew in Frankfurt.\n\n"
             "A quieter week overall.")
    items = [{"headline": "Cainiao builds smart warehouses", "topics": ["logistics"],
              "body": "Cainiao opened warehouses in Karachi and Lahore."},
             {"headline": "Cloud news", "topics": ["cloud-ai"],
              "body": "Servers in Frankfurt grew."}]
    html, _ = _digest(items, intro=intro, followed=("logistics",), only=True)[2] \
        .personalise(ALICE)
    assert "A quieter week overall." in html
    assert "Frankfurt" not in html and "Karachi." not in html.split("Cainiao builds")[0]


def test_in_this_issue_links_to_each_story_below() -> None:
    html, _ = _digest()[2].personalise(ALICE)
    toc = html[html.index("In this issue"):html.index("Picked for you")]
    anchors = re.findall(r'href="#(story-\d+)"', toc)
    assert len(anchors) == 3
    for anchor in anchors:
        assert f'id="{anchor}"' in html and html.index(f'id="{anchor}"') > html.index(
            "Picked for you")


# --- the digest: stories and their links --------------------------------------------------


def test_the_excerpt_is_the_first_sentences_up_to_about_sixty_words() -> None:
    body = ("One short opening sentence here. " + "Word " * 30 + "ends here. "
            + "A third sentence that would take it past the limit " * 3 + ".\n\nMore.")
    excerpt = default_excerpt(body)
    assert excerpt == "One short opening sentence here. " + "Word " * 30 + "ends here."
    assert default_excerpt("Short body. Two sentences.\n\nAnd a paragraph.") == \
        "Short body. Two sentences. And a paragraph."
    endless = " ".join(["word"] * 200)
    assert default_excerpt(endless) == " ".join(["word"] * 60) + "…"


def test_an_editors_excerpt_replaces_the_default() -> None:
    extras = DigestExtras(items={2: ItemExtras(excerpt="Two new *automated* hubs.")})
    html, text = _digest(extras=extras)[2].personalise(ALICE)
    assert "Two new automated hubs." in html and "Two new automated hubs." in text
    assert "Karachi and Lahore." not in text


def test_every_story_links_through_a_signed_click_token_to_its_page() -> None:
    _, composition, digest = _digest()
    html, text = digest.personalise(ALICE)
    for body in (html, text):
        tokens = {read_click_token(t) for t in CLICK.findall(body)}
        assert tokens == {(ALICE.subscriber_id, 1, c.item.id) for c in composition.items}
        # The one item with its own URL also links there, through the redirect too.
        assert {read_click_token(t) for t in OWN_LINK.findall(body)} == {
            (ALICE.subscriber_id, 1, 1)}
    assert "example.com/hermes" not in html + text  # only ever via /r/
    # Both parts share one token per link (made once per recipient).
    assert set(CLICK.findall(html)) == set(CLICK.findall(text))


def test_other_recipients_get_their_own_click_tokens() -> None:
    _, _, digest = _digest()
    bob = Recipient(18, "bob@example.org", "Bob")
    html, _ = digest.personalise(bob)
    assert {read_click_token(t)[0] for t in CLICK.findall(html)} == {18}


def test_with_click_tracking_off_stories_link_straight_to_their_pages(monkeypatch) -> None:
    monkeypatch.setattr(settings, "track_clicks", False)
    html, text = _digest()[2].personalise(ALICE)
    assert "/r/" not in html + text
    assert f'href="{settings.base_url}/stories/2/cainiao-builds-smart-warehouses"' in html
    assert "Read the full story: " + settings.base_url + "/stories/3/cloud-news" in text
    assert 'href="https://example.com/hermes?a=1&amp;b=2"' in html


def test_link_text_without_a_link_is_never_shown() -> None:
    html, text = _digest()[2].personalise(ALICE)
    assert "Photo credit" not in html + text


def test_story_images_have_alt_text() -> None:
    extras = DigestExtras(items={
        1: ItemExtras(image_url="https://img.example.com/h.jpg", image_alt="A Hermès scarf"),
        2: ItemExtras(image_url="https://img.example.com/c.jpg"),
        3: ItemExtras(image_url="http://insecure.example.com/x.jpg")})
    html, _ = _digest(extras=extras)[2].personalise(ALICE)
    images = dict(re.findall(r'<img alt="([^"]*)"[^>]* src="([^"]+)"', html))
    assert images == {"A Hermès scarf": "https://img.example.com/h.jpg",
                      "Cainiao builds smart warehouses": "https://img.example.com/c.jpg"}


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


def test_html_fetches_nothing_when_opened_unless_there_are_pictures() -> None:
    html, _ = _digest()[2].personalise(ALICE)
    assert not re.search(r"<(link|img|script|iframe)\b|\bsrc=|@import|url\(", html, re.I)


def _luminance(css: str) -> float:
    channels = [int(v) / 255 for v in re.findall(r"\d+", css)[:3]]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def test_digest_in_a_browser_is_one_column_on_a_phone_with_readable_chips(
    browser_page,  # type: ignore[no-untyped-def]
) -> None:
    from tests.fixtures.web import screenshot

    items = [
        {"headline": "Pinned: the editor's pick of the week", "pinned": True},
        {"headline": "Cainiao builds smart warehouses in Karachi and Lahore",
         "topics": ["logistics"], "body": "Two automated distribution centres. " * 8,
         "link_text": "Read the announcement", "link_url": "https://example.com/cainiao"},
        {"headline": "Cloud news", "topics": ["cloud-ai"], "body": "Servers. " * 30},
    ]
    html, _ = _digest(items)[2].personalise(ALICE)
    page = browser_page
    page.set_content(html)
    screenshot(page, "digest-email", widths=(375, 800))  # asserts no sideways scrolling
    page.set_viewport_size({"width": 375, "height": 800})
    boxes = page.eval_on_selector_all(
        "h2, .chip", "els => els.map(e => [e.tagName, e.getBoundingClientRect().toJSON()])")
    headlines = [box for tag, box in boxes if tag == "H2"]
    # One column: every headline starts at the same left edge and spans the screen.
    assert len(headlines) == 3
    assert {round(b["left"]) for b in headlines} == {24}
    assert all(b["width"] >= 375 - 2 * 24 - 1 for b in headlines)
    chips = [box for tag, box in boxes if tag == "SPAN"]
    assert all(chip["bottom"] <= h["top"] for chip, h in zip(chips, headlines, strict=True))
    colours = page.eval_on_selector_all(
        ".chip",
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
    assert len(html.encode()) < GMAIL_CLIP_BYTES * 0.5


# --- seeds, through the real ingest -------------------------------------------------


def test_every_seed_issue_renders_its_subject_and_every_headline(session, seed_paths) -> None:
    from newsletter.composer import load_issue
    from newsletter.ingest import ingest_file

    assert len(seed_paths) == 5
    for path in seed_paths:
        result = ingest_file(session=session, path=path)
        session.commit()
        issue = load_issue(session=session, issue_id=result.issue_id)
        composition = compose(issue, followed=(), max_items=settings.digest_max_items)
        assert composition is not None and composition.items, path.name
        digest = render_digest(issue, composition)  # extras from the database
        assert len(digest.subject) <= 70 and not digest.subject.startswith("Alibaba News")
        html, text = digest.personalise(ALICE)
        assert len(html.encode()) < GMAIL_CLIP_BYTES * 0.5, path.name
        flat_text = " ".join(text.split())
        for chosen in composition.items:
            assert " ".join(chosen.item.headline.split()) in flat_text, path.name


def test_a_learned_interest_shows_its_reason_in_also_this_week() -> None:
    """The composer's learned ordering (engagement) marks a story with the topics the
    reader often reads; the email shows its reason as a chip of its own colour."""
    issue, _, _ = _digest()
    learned = compose(issue, followed=("logistics",), learned=("luxury-fashion",),
                      max_items=settings.digest_max_items)
    assert learned is not None
    html, text = render_digest(issue, learned, extras=DigestExtras()).personalise(ALICE)
    assert _sections(html) == ["Picked for you", "Also this week"]
    chip = re.search(r'<span class="chip" style="([^"]+)">You often read Luxury &amp; Fashion<',
                     html)
    assert chip and "#dcfce7" in chip.group(1)
    assert "[You often read Luxury & Fashion]" in text


def test_a_reader_without_topics_is_invited_to_pick_some() -> None:
    html, text = _digest(followed=())[2].personalise(ALICE)
    manage = re.search(r'<a href="([^"]+/manage/[^"]+)" style="color:#1d4ed8">Pick your topics</a>',
                       html)
    assert manage and read_token("manage", manage.group(1).rsplit("/", 1)[1]) == 17
    assert "Pick your topics and your stories come first: " in text
    picked, _ = _digest(followed=("logistics",))[2].personalise(ALICE)
    assert "Pick your topics" not in picked
