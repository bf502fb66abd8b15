"""Branding set in the console (issue 10): stored values over the environment, the
checks, the owners-only settings page, the logo route, and the emails that carry it."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import select

from newsletter import branding
from newsletter.branding import BrandingError
from newsletter.models import SiteSetting
from newsletter.settings import settings
from tests.fixtures.editor import editor_post, login
from tests.fixtures.mail import assert_email
from tests.fixtures.web import csrf_token
from workers.signup_tasks import send_confirmation

GOOD = {
    "newsletter_name": "Acme Weekly",
    "accent_color": "#0B6E4F",
    "mail_from_name": "Acme Newsroom",
    "mail_from_address": "News@Acme-Corp.co.uk",
    "reply_to": "editors@acme-corp.co.uk",
    "postal_address": "Acme Ltd\n2 Real Road\nLeeds LS1 1AA",
}
SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg">'
       b'<script>alert(1)</script></svg>')


def image_bytes(fmt: str = "PNG", size: tuple[int, int] = (480, 128)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, "#0b6e4f").save(out, fmt)
    return out.getvalue()


def settings_post(client: Any, data: dict[str, str], *, files: dict[str, Any] | None = None,
                  action: str = "/editor/settings") -> Any:
    page = client.get("/editor/settings")
    assert page.status_code == 200, page.text
    return client.post(action, data={**data, "csrf_token": csrf_token(page.text)},
                       files=files, follow_redirects=False)


def promote_to_owner(session, account_id: int) -> None:
    """Owners manage the settings: make this editor one."""
    from newsletter.editors import Editor

    editor = session.get(Editor, account_id)
    editor.role = "owner"
    session.add(editor)
    session.commit()


@pytest.fixture
def owner_client(web_app, session, editor_account) -> Iterator[TestClient]:
    """A TestClient logged in as an owner."""
    promote_to_owner(session, editor_account.id)
    with TestClient(web_app) as c:
        assert login(c, editor_account.email, editor_account.password).status_code == 303
        yield c


def rows(session) -> dict[str, str]:
    session.expire_all()
    return {r.key: r.value for r in session.exec(select(SiteSetting)).all()}


# --- the service ---------------------------------------------------------------------


def test_without_saved_values_the_environment_applies(session, monkeypatch):
    monkeypatch.setattr(settings, "mail_from_name", "Env Name")
    monkeypatch.setattr(settings, "reply_to", "")
    brand = branding.current()
    assert brand.newsletter_name == "Env Name" and brand.mail_from_name == "Env Name"
    assert brand.reply_to == "" and brand.logo_url == ""
    assert brand.postal_address == settings.postal_address


def test_saved_values_win_and_an_emptied_field_falls_back(session):
    brand = branding.save(session=session, values=GOOD, editor_email="owner@acme-corp.co.uk")
    assert brand.mail_from_address == "news@acme-corp.co.uk"  # normalised
    assert brand.accent_color == "#0b6e4f"
    assert brand.postal_address == "Acme Ltd, 2 Real Road, Leeds LS1 1AA"
    assert branding.current() == brand
    assert rows(session)["newsletter_name"] == "Acme Weekly"

    branding.save(session=session, values={**GOOD, "newsletter_name": " "},
                  editor_email="owner@acme-corp.co.uk")
    assert "newsletter_name" not in rows(session)
    assert branding.current().newsletter_name == settings.mail_from_name


def test_each_bad_value_gets_its_own_message_and_nothing_is_stored(session):
    bad = {**GOOD, "accent_color": "green", "mail_from_address": "not an address",
           "reply_to": "a@@b", "mail_from_name": "x" * 101}
    with pytest.raises(BrandingError) as caught:
        branding.save(session=session, values=bad, editor_email="o@acme-corp.co.uk")
    errors = caught.value.errors
    assert set(errors) == {"accent_color", "mail_from_address", "reply_to", "mail_from_name"}
    assert "#1a56db" in errors["accent_color"]
    assert "at most 100" in errors["mail_from_name"]
    assert rows(session) == {}


def test_a_colour_too_light_for_white_text_is_refused(session):
    with pytest.raises(BrandingError) as caught:
        branding.save(session=session, values={"accent_color": "#ffd400"}, editor_email="o@x.io")
    assert "too light" in caught.value.errors["accent_color"]
    assert "4.5:1" in caught.value.errors["accent_color"]


def test_a_postal_address_is_required_when_the_environment_has_none(session, monkeypatch):
    monkeypatch.setattr(settings, "postal_address", "")
    with pytest.raises(BrandingError) as caught:
        branding.save(session=session, values={**GOOD, "postal_address": "  \n "},
                      editor_email="o@x.io")
    assert "postal address" in caught.value.errors["postal_address"]


def test_production_refuses_example_addresses_and_the_example_postal_address(
        session, monkeypatch):
    monkeypatch.setattr(settings, "environment", "production")
    with pytest.raises(BrandingError) as caught:
        branding.save(session=session, values={
            "mail_from_address": "news@example.com", "reply_to": "me@mail.example.org",
            "postal_address": ""}, editor_email="o@x.io")
    errors = caught.value.errors
    assert "example address" in errors["mail_from_address"]
    assert "example address" in errors["reply_to"]
    assert "built-in example" in errors["postal_address"]  # the environment's default
    # The environment's own roundup.example defaults count too.
    with pytest.raises(BrandingError) as caught:
        branding.save(session=session, values={"postal_address": "1 Real St, Leeds"},
                      editor_email="o@x.io")
    assert set(caught.value.errors) == {"mail_from_address", "reply_to"}
    assert rows(session) == {}
    branding.save(session=session, values=GOOD, editor_email="o@acme-corp.co.uk")
    assert branding.current().mail_from_address == "news@acme-corp.co.uk"


def test_outside_production_example_addresses_are_fine(session):
    branding.save(session=session, values={"mail_from_address": "news@example.com"},
                  editor_email="o@x.io")
    assert branding.current().mail_from_address == "news@example.com"


@pytest.mark.parametrize(("data", "message"), [
    (SVG, "SVG logos are not accepted"),
    (b"<svg onload='alert(1)'/>", "SVG logos are not accepted"),
    (b"GIF89a" + b"\0" * 40, "can't be read"),
    (b"%PDF-1.7 hello", "not a PNG, JPEG or GIF"),
    (b"", "empty"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * (200 * 1024), "at most 200 KB"),
], ids=["svg-with-script", "bare-svg", "broken-gif", "pdf", "empty", "oversized"])
def test_logo_checks_refuse_what_is_not_a_small_png_jpeg_or_gif(data, message):
    with pytest.raises(BrandingError) as caught:
        branding.check_logo(data)
    assert message in caught.value.errors["logo"]


@pytest.mark.parametrize(("fmt", "ext"), [("PNG", "png"), ("JPEG", "jpg"), ("GIF", "gif")])
def test_logos_keep_their_type_and_are_shown_at_most_240_by_64(fmt, ext):
    logo = branding.check_logo(image_bytes(fmt, (1000, 100)))
    assert logo.ext == ext and logo.filename.endswith("." + ext)
    assert logo.width == 240
    assert branding.check_logo(image_bytes(fmt, (100, 200))).width == 32  # height-bound


def test_other_processes_see_a_change_within_the_cache_time(session, monkeypatch):
    # branding's own clock, moved by hand: a real 0.3 s cache broke on a stalled machine.
    clock = [1000.0]
    monkeypatch.setattr(branding, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    assert branding.current().newsletter_name == settings.mail_from_name
    # Another process saves: a row appears without this process's forget().
    session.add(SiteSetting(key="newsletter_name", value="From elsewhere"))
    session.commit()
    clock[0] += branding.CACHE_SECONDS - 0.1
    assert branding.current().newsletter_name == settings.mail_from_name  # cached
    clock[0] += 0.2
    assert branding.current().newsletter_name == "From elsewhere"


# --- the page --------------------------------------------------------------------------


def test_an_editor_who_is_not_an_owner_gets_403(editor_client, session):
    from newsletter.editors import Editor

    editor = session.exec(select(Editor)).one()
    editor.role = "editor"
    session.add(editor)
    session.commit()
    token = csrf_token(editor_client.get("/editor").text)
    assert "/editor/settings" not in editor_client.get("/editor").text  # no link in the nav
    for method, path in [("get", "/editor/settings"), ("get", "/editor/settings/preview"),
                         ("post", "/editor/settings"), ("post", "/editor/settings/preview")]:
        kwargs = {"data": {**GOOD, "csrf_token": token}} if method == "post" else {}
        response = getattr(editor_client, method)(path, **kwargs)
        assert response.status_code == 403, (method, path)
        assert "Owners only" in response.text
    assert rows(session) == {}


def test_the_form_shows_environment_defaults_as_placeholders(owner_client):
    page = owner_client.get("/editor/settings")
    assert page.status_code == 200
    assert f'placeholder="{settings.mail_from_address}"' in page.text
    assert 'placeholder="#1a56db"' in page.text
    assert 'sandbox=""' in page.text and 'src="/editor/settings/preview"' in page.text
    assert 'href="/editor/settings"' in page.text  # owners see it in the nav


def test_owner_saves_and_the_next_confirmation_email_carries_the_new_branding(
        owner_client, session, smtp_server, make_subscriber):
    response = settings_post(owner_client, GOOD,
                             files={"logo": ("logo.png", image_bytes(), "image/png")})
    assert response.status_code == 303
    assert response.headers["location"] == "/editor/settings?saved=1"
    assert "Settings saved" in owner_client.get(response.headers["location"]).text
    stored = rows(session)
    logo_url = f"{settings.base_url}/branding/{stored['logo']}"

    sub = make_subscriber(email="ana@example.org", name="Ana", confirmed=False)
    assert send_confirmation(sub.id) == "sent"
    [received] = smtp_server.wait_for(1)
    msg = assert_email(received.data, to="ana@example.org", subject_contains="Acme Weekly",
                       both_contain=["Acme Ltd, 2 Real Road, Leeds LS1 1AA", "Acme Weekly"],
                       html_contains=[logo_url, "#0b6e4f"])
    assert msg["From"].addresses[0].display_name == "Acme Newsroom"
    assert msg["From"].addresses[0].addr_spec == "news@acme-corp.co.uk"
    assert str(msg["Reply-To"]) == "editors@acme-corp.co.uk"
    assert msg["Message-ID"].endswith("@acme-corp.co.uk>")
    assert settings.postal_address not in msg.get_body(("plain",)).get_content()


def test_bad_values_are_reshown_with_messages_and_nothing_is_saved(owner_client, session):
    bad = {**GOOD, "accent_color": "#12345", "mail_from_address": "news@", "reply_to": ""}
    response = settings_post(owner_client, bad)
    assert response.status_code == 400
    text = response.text
    assert "Nothing was saved: 2 values need fixing" in text
    assert 'id="accent_color-error"' in text and "six hex digits" in text
    assert 'id="mail_from_address-error"' in text
    assert 'value="#12345"' in text and 'value="Acme Weekly"' in text  # kept as typed
    assert "Acme Ltd\n2 Real Road" in text  # the textarea as typed
    assert rows(session) == {}


BAD_LOGOS = [
    ("logo.svg", SVG, "SVG logos are not accepted"),
    ("logo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (300 * 1024),
     "The file is 300 KB; a logo can be at most 200 KB"),
    # Past the editor router's 1 MB form-field limit, still the form's own message.
    ("photo.png", b"\x89PNG\r\n\x1a\n" + b"\0" * (1536 * 1024), "The file is 1536 KB"),
]


def test_bad_logos_are_reshown_with_messages(owner_client, session):
    for name, data, message in BAD_LOGOS:
        response = settings_post(owner_client, {**GOOD, "accent_color": "nope"},
                                 files={"logo": (name, data, "image/png")})
        assert response.status_code == 400, name
        assert message in response.text, name
        assert "six hex digits" in response.text  # the other problems are listed too
    assert rows(session) == {}
    assert not branding.logo_dir().exists() or not any(branding.logo_dir().iterdir())


def test_the_logo_is_served_with_its_type_and_a_long_cache(owner_client, anon_client,
                                                           session):
    gif = image_bytes("GIF", (64, 64))
    settings_post(owner_client, {}, files={"logo": ("l.gif", gif, "image/gif")})
    filename = rows(session)["logo"]
    assert re.fullmatch(r"[0-9a-f]{32}\.gif", filename)
    served = anon_client.get(f"/branding/{filename}")  # public: emails load it
    assert served.status_code == 200
    assert served.headers["content-type"] == "image/gif"
    assert "immutable" in served.headers["cache-control"]
    assert "max-age=31536000" in served.headers["cache-control"]
    assert served.headers["x-content-type-options"] == "nosniff"
    assert served.content == gif
    for bad in ("../newsletter.db", "x.svg", filename.replace(".gif", ".png"), "%2e%2e%2fa"):
        assert anon_client.get(f"/branding/{bad}").status_code == 404


def test_a_machine_without_the_logo_file_serves_it_from_the_database(
        owner_client, anon_client, session):
    png = image_bytes()
    settings_post(owner_client, {}, files={"logo": ("l.png", png, "image/png")})
    filename = rows(session)["logo"]
    (branding.logo_dir() / filename).unlink()  # another web machine, or a wiped disk
    served = anon_client.get(f"/branding/{filename}")
    assert served.status_code == 200 and served.content == png
    assert served.headers["content-type"] == "image/png"
    assert (branding.logo_dir() / filename).read_bytes() == png  # cached again


def test_the_logo_can_be_removed(owner_client, session):
    settings_post(owner_client, {}, files={"logo": ("l.png", image_bytes(), "image/png")})
    assert branding.current().logo_url.startswith(f"{settings.base_url}/branding/")
    page = owner_client.get("/editor/settings").text
    assert 'id="logo-current"' in page and 'name="remove_logo"' in page
    assert settings_post(owner_client, {"remove_logo": "1"}).status_code == 303
    assert branding.current().logo_url == ""
    assert 'id="logo-none"' in owner_client.get("/editor/settings").text


def test_the_preview_shows_typed_values_without_saving_them(owner_client, session):
    response = settings_post(owner_client, {**GOOD, "reply_to": "bad@"},
                             files={"logo": ("l.png", image_bytes(), "image/png")},
                             action="/editor/settings/preview")
    assert response.status_code == 200
    html = response.text
    assert "Acme Weekly" in html and "Acme Newsroom &lt;news@acme-corp.co.uk&gt;" in html
    assert "Acme Ltd, 2 Real Road" in html
    assert 'src="data:image/png;base64,' in html  # the chosen file, not yet stored
    assert "Reply-to address:" in html  # the bad field is named in the frame
    csp = response.headers["content-security-policy"]
    assert "sandbox" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert rows(session) == {}
    saved = owner_client.get("/editor/settings/preview").text
    assert "Acme Weekly" not in saved and settings.mail_from_name in saved


def test_the_preview_can_show_the_latest_digest(owner_client, make_issue):
    make_issue(title="Branding week", items=[{"headline": "A story", "topics": ["fintech"]}])
    response = settings_post(owner_client, {**GOOD, "sample": "digest"},
                             action="/editor/settings/preview")
    assert response.status_code == 200
    assert "Branding week" in response.text and "Acme Weekly" in response.text
    assert "Acme Ltd, 2 Real Road" in response.text


def test_in_production_the_page_refuses_example_values(owner_client, session, monkeypatch):
    monkeypatch.setattr(settings, "environment", "production")
    response = settings_post(owner_client, {**GOOD, "mail_from_address": "news@example.org",
                                             "postal_address": ""})
    assert response.status_code == 400
    assert "news@example.org is an example address" in response.text
    assert "built-in example address" in response.text
    assert rows(session) == {}


def test_settings_post_needs_csrf(owner_client, session):
    response = owner_client.post("/editor/settings", data=GOOD)
    assert response.status_code == 403
    assert rows(session) == {}


def test_digest_messages_carry_the_branding(session, make_issue, owner_client):
    """The send path: MessageFactory's From/Reply-To/List-Id and the rendered digest."""
    from newsletter.composer import compose, load_issue
    from newsletter.message import MessageFactory
    from newsletter.render import Recipient, render_digest
    from tests.fixtures.mail import parse_email

    editor_post(owner_client, "/editor/settings", GOOD, page="/editor/settings")
    issue = make_issue(items=[{"headline": "A story", "topics": ["fintech"]}])
    content = load_issue(session=session, issue_id=issue.id)
    composition = compose(content, followed=())
    assert composition is not None
    digest = render_digest(content, composition)
    message = MessageFactory(digest=digest, issue_id=issue.id).build(
        Recipient(subscriber_id=1, email="ana@example.org", name="Ana"))
    msg = parse_email(message.data)
    assert str(msg["From"]) == "Acme Newsroom <news@acme-corp.co.uk>"
    assert str(msg["Reply-To"]) == "editors@acme-corp.co.uk"
    assert str(msg["List-Id"]).startswith("Acme Weekly <")
    assert "Acme Ltd, 2 Real Road" in msg.get_body(("html",)).get_content()


def test_public_pages_show_the_saved_name_and_address(owner_client, anon_client):
    editor_post(owner_client, "/editor/settings", GOOD, page="/editor/settings")
    page = anon_client.get("/subscribe").text
    assert "Acme Weekly" in page and "Acme Ltd, 2 Real Road, Leeds LS1 1AA" in page


def test_an_unmigrated_database_means_the_environment_values(tmp_path, monkeypatch, caplog):
    import sqlite3

    from newsletter import db

    path = tmp_path / "old.db"
    sqlite3.connect(path).close()  # exists, no tables
    monkeypatch.setattr(settings, "database_url", f"sqlite:///{path}")
    db.reset_engine()
    try:
        assert branding.current() == branding.defaults()
        assert branding.current() == branding.defaults()
    finally:
        db.reset_engine()
    assert sum("branding settings unreadable" in r.message for r in caplog.records) == 1


def test_the_preview_offers_the_welcome_email(owner_client):
    page = owner_client.get("/editor/settings").text
    assert '<option value="welcome" selected>' in page
    response = settings_post(owner_client, GOOD, action="/editor/settings/preview")
    assert "You&#39;re in, Ana" in response.text or "You're in, Ana" in response.text
    assert "Welcome to Acme Weekly" in response.text  # the subject, in the inbox strip
    assert "Acme Ltd, 2 Real Road" in response.text
