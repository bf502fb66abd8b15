"""The settings page in Debian's Chromium against a real uvicorn server: change the logo
and the name and watch the email preview follow, save, and look at it at 375 px."""

from __future__ import annotations

import pytest

from newsletter import branding
from tests.fixtures.editor import create_editor
from tests.fixtures.web import SCREENSHOTS, screenshot
from tests.test_branding import image_bytes, promote_to_owner

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _login(page, server, account, *, javascript=True):
    page.set_viewport_size({"width": 1280, "height": 800})
    page.goto(f"{server.url}/editor/login")
    page.fill("input[name=email]", account.email)
    page.fill("input[name=password]", account.password)
    page.click("button:has-text('Log in')")
    page.wait_for_url(f"{server.url}/editor")


def _frame_image_loaded(page) -> bool:
    return bool(page.frame_locator("#settings-preview").locator("img").first.evaluate(
        "img => img.complete && img.naturalWidth > 0"))


def test_change_the_logo_and_name_and_see_them_in_the_preview(session, live_server,
                                                             browser_page):
    account = create_editor(session)
    promote_to_owner(session, account.id)
    page = browser_page
    _login(page, live_server, account)
    page.click("nav.editor-nav >> text=Settings")
    page.wait_for_url("**/editor/settings")
    frame = page.frame_locator("#settings-preview")
    frame.locator("h1:has-text(\"You're in\")").first.wait_for()  # welcome: the first sample
    assert frame.locator("img").count() == 0  # no logo yet
    screenshot(page, "settings-empty")

    # A refused value comes back with its message beside the field, as typed.
    page.fill("#accent_color", "#ffee00")
    page.click("#btn-save")
    page.locator("#accent_color-error").wait_for()
    assert "too light" in page.locator("#accent_color-error").inner_text()
    assert page.input_value("#accent_color") == "#ffee00"
    assert page.locator("#form-error").is_visible()
    # The preview follows what was typed (naming the refused value), not the saved values.
    frame.locator("text=showing the saved value").wait_for()
    screenshot(page, "settings-error")

    history = page.evaluate("history.length")
    # Choosing a file previews it at once, before anything is saved.
    page.set_input_files("#logo", files=[{"name": "acme.png", "mimeType": "image/png",
                                          "buffer": image_bytes("PNG", (480, 128))}])
    frame.locator("img[src^='data:image/png;base64,']").wait_for()
    assert _frame_image_loaded(page)
    # Typing follows too (debounced), without a click.
    page.fill("#newsletter_name", "Acme Weekly")
    page.fill("#accent_color", "#0b6e4f")
    # Each keystroke pause may refresh the preview: wait for the one that has both.
    frame.locator("text=Acme Weekly").first.wait_for()
    frame.locator("[style*='#0b6e4f']").first.wait_for()
    assert branding.stored(session=session) == {}  # previewing saves nothing
    assert page.evaluate("history.length") == history  # Back still leaves the page
    assert page.locator("iframe").count() == 1

    page.fill("#postal_address", "Acme Ltd, 2 Real Road, Leeds")
    page.click("#btn-save")
    page.wait_for_url("**/editor/settings?saved=1")
    assert "Settings saved" in page.locator("p.notice").inner_text()
    session.expire_all()
    stored = branding.stored(session=session)
    assert stored["newsletter_name"].value == "Acme Weekly"
    assert stored["newsletter_name"].updated_by == account.email
    # The stored logo is served by the app, on the page and in the email preview.
    logo = page.locator("#logo-current")
    assert logo.evaluate("img => img.complete && img.naturalWidth === 480")
    frame.locator(f"img[src='{live_server.url}/branding/{stored['logo'].value}']").wait_for()
    frame.locator("text=Acme Ltd, 2 Real Road, Leeds").first.wait_for()
    assert _frame_image_loaded(page)
    screenshot(page, "settings-saved", widths=(1280,))
    # At phone width, freshly laid out (a resize just before a capture can catch the
    # frame mid-relayout): one column, nothing scrolls sideways.
    page.set_viewport_size({"width": 375, "height": 800})
    page.reload()
    frame.locator("text=Acme Ltd, 2 Real Road, Leeds").first.wait_for()
    assert _frame_image_loaded(page)
    screenshot(page, "settings-saved", widths=(375,))
    _oversized_logo_is_refused_before_uploading(page)
    # Chromium paints a sandboxed (out-of-process) frame only once it is on screen.
    page.locator("#settings-preview").scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / "settings-preview-375.png"))


def _oversized_logo_is_refused_before_uploading(page):
    big = b"\x89PNG\r\n\x1a\n" + b"\0" * (250 * 1024)
    page.set_input_files("#logo", files=[{"name": "big.png", "mimeType": "image/png",
                                          "buffer": big}])
    error = page.locator("#logo-size-error")
    error.wait_for()
    assert "250 KB" in error.inner_text() and "at most 200 KB" in error.inner_text()
    assert page.locator("#logo").evaluate("input => input.files.length") == 0


def test_without_javascript_the_preview_button_shows_the_typed_values(
        session, live_server, _chromium):
    account = create_editor(session)
    promote_to_owner(session, account.id)
    context = _chromium.new_context(java_script_enabled=False, viewport={"width": 375,
                                                                          "height": 800})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        _login(page, live_server, account)
        page.goto(f"{live_server.url}/editor/settings")
        page.fill("#newsletter_name", "No Script Weekly")
        page.click("#btn-preview")
        page.frame_locator("#settings-preview").locator("text=No Script Weekly").first.wait_for()
        assert page.url.endswith("/editor/settings")  # the page itself stayed put
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    finally:
        context.close()
