"""A subscriber's whole journey in a real Chromium against a real uvicorn server, with
the confirmation emails sent by a real Celery worker to a real SMTP server."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from sqlmodel import select

from newsletter.models import Subscriber, SubscriberStatus
from newsletter.subscribers import followed_topics
from tests.fixtures.mail import parse_email
from tests.fixtures.web import screenshot

pytestmark = [pytest.mark.browser, pytest.mark.slow]

LINK = re.compile(r"https?://[^\s\"<>]+/confirm/[A-Za-z0-9_.\-]+")


@pytest.fixture
def stack(web_settings: Any, redis_url: str, smtp_server: Any, monkeypatch: pytest.MonkeyPatch,
          request: pytest.FixtureRequest) -> Any:
    """Server and worker share the test's DB, Redis and SMTP server. No cooldown, so the
    re-subscription a minute later gets its own confirmation email."""
    monkeypatch.setattr(web_settings, "signup_cooldown_minutes", 0)
    server = request.getfixturevalue("live_server")
    request.getfixturevalue("celery_workers").start()
    return server


def _confirm_link(smtp_server: Any, n: int) -> str:
    """The link in the n-th confirmation email (welcome emails come in between)."""
    deadline = time.monotonic() + 30
    while True:
        found = [LINK.search(parse_email(m.data).get_body(("plain",)).get_content())
                 for m in smtp_server.messages]
        links = [m.group(0) for m in found if m]
        if len(links) >= n:
            return links[n - 1]
        assert time.monotonic() < deadline, f"{len(links)} confirmation emails, wanted {n}"
        time.sleep(0.1)


def _subscriber(session: Any) -> Subscriber:
    """Ana's row; the worker writes it after the form answers, so wait for it a little."""
    deadline = time.monotonic() + 15
    while True:
        session.expire_all()
        found = session.exec(select(Subscriber).where(
            Subscriber.email == "ana@example.org")).first()
        if found is not None or time.monotonic() > deadline:
            assert found is not None, "the worker never stored the sign-up"
            return found
        time.sleep(0.05)


def test_sign_up_confirm_manage_unsubscribe_and_come_back(
        stack: Any, browser_page: Any, smtp_server: Any, session: Any) -> None:
    page = browser_page
    page.goto(f"{stack.url}/subscribe")
    # The inline script picked the browser's time zone.
    assert page.locator("#timezone").input_value() == "Europe/Paris"
    screenshot(page, "01-subscribe")

    page.get_by_label("Email address").fill("ana@example.org")
    page.get_by_label("Name (optional)").fill("Ana Lima")
    page.check("#topic-fintech")
    page.check("#topic-travel")
    page.check("#consent")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    screenshot(page, "02-check-inbox")
    assert _subscriber(session).status == SubscriberStatus.pending

    page.goto(_confirm_link(smtp_server, 1))
    assert _subscriber(session).status == SubscriberStatus.pending  # opening is not confirming
    screenshot(page, "03-confirm")
    page.get_by_role("button", name="Confirm my subscription").click()
    page.get_by_role("heading", name="You're subscribed").wait_for()
    assert _subscriber(session).status == SubscriberStatus.confirmed

    page.get_by_role("link", name="Manage your topics").click()
    page.get_by_role("heading", name="Your subscription").wait_for()
    page.uncheck("#topic-travel")
    page.check("#topic-health")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_text("Saved.").wait_for()
    screenshot(page, "04-manage")
    sub = _subscriber(session)
    assert followed_topics(session=session, subscriber_id=sub.id) == ["fintech", "health"]

    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You're unsubscribed").wait_for()
    screenshot(page, "05-unsubscribed")
    assert _subscriber(session).status == SubscriberStatus.unsubscribed

    page.get_by_role("button", name="Subscribe again").click()
    page.get_by_role("heading", name="Check your inbox").wait_for()
    assert _subscriber(session).status == SubscriberStatus.pending
    page.goto(_confirm_link(smtp_server, 2))
    page.get_by_role("button", name="Confirm my subscription").click()
    page.get_by_role("heading", name="You're subscribed").wait_for()
    assert _subscriber(session).status == SubscriberStatus.confirmed


def test_invalid_sign_up_shows_the_errors_and_keeps_the_input(
        live_server: Any, browser_page: Any) -> None:
    page = browser_page
    page.goto(f"{live_server.url}/subscribe")
    page.get_by_label("Email address").fill("not-an-address")
    page.get_by_label("Name (optional)").fill("<b>Ana</b>")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Please fix these problems").wait_for()
    assert page.get_by_label("Email address").input_value() == "not-an-address"
    assert page.locator("#email").get_attribute("aria-invalid") == "true"
    screenshot(page, "06-errors")


def test_embed_snippet_page_fits_a_phone(live_server: Any, browser_page: Any) -> None:
    browser_page.goto(f"{live_server.url}/subscribe/embed")
    screenshot(browser_page, "07-embed")


# --- accessibility, checked on the rendered pages ------------------------------------------

AUDIT_JS = r"""
() => {
  const problems = [];
  const name = (el) => el.id ? '#' + el.id : el.outerHTML.slice(0, 60);
  const visible = (el) => !!(el.offsetWidth || el.offsetHeight || el.getClientRects().length)
                          && !el.closest('[aria-hidden="true"]');
  // Every control has an accessible label.
  for (const el of document.querySelectorAll('input, select, textarea')) {
    if (el.type === 'hidden' || !visible(el)) continue;
    const labelled = (el.labels && el.labels.length) || el.getAttribute('aria-label')
                     || el.getAttribute('aria-labelledby');
    if (!labelled) problems.push('no label: ' + name(el));
  }
  for (const el of document.querySelectorAll('button')) {
    if (!el.textContent.trim() && !el.getAttribute('aria-label'))
      problems.push('button without text: ' + name(el));
  }
  // Topic checkboxes are grouped with a legend.
  for (const el of document.querySelectorAll('input[name="topics"]')) {
    const fs = el.closest('fieldset');
    if (!fs || !fs.querySelector('legend') || !fs.querySelector('legend').textContent.trim())
      problems.push('topic outside a fieldset with a legend: ' + name(el));
  }
  // aria-describedby points at elements that exist; invalid fields name their error.
  for (const el of document.querySelectorAll('[aria-describedby]')) {
    for (const id of el.getAttribute('aria-describedby').split(/\s+/)) {
      if (!document.getElementById(id)) problems.push('describedby missing #' + id);
    }
  }
  for (const el of document.querySelectorAll('[aria-invalid="true"]')) {
    const ids = (el.getAttribute('aria-describedby') || '').split(/\s+/);
    const error = ids.map((id) => document.getElementById(id))
                     .find((e) => e && e.classList.contains('field-error'));
    if (!error || !error.textContent.trim()) problems.push('invalid without error: ' + name(el));
  }
  // Ids are unique (labels and descriptions depend on it).
  const seen = new Set();
  for (const el of document.querySelectorAll('[id]')) {
    if (seen.has(el.id)) problems.push('duplicate id #' + el.id);
    seen.add(el.id);
  }
  // Text contrast, WCAG AA: 4.5:1, 3:1 for large text.
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  }).reduce((acc, v, i) => acc + v * [0.2126, 0.7152, 0.0722][i], 0);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const el = node.parentElement;
    const skip = el.closest('.visually-hidden, .hp, option, script');
    if (!node.textContent.trim() || !visible(el) || skip) continue;
    const style = getComputedStyle(el);
    const a = lum(rgb(style.color)), b = lum(background(el));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize), bold = parseInt(style.fontWeight, 10) >= 700;
    const need = (size >= 24 || (bold && size >= 18.66)) ? 3 : 4.5;
    const text = node.textContent.trim().slice(0, 40);
    if (ratio < need) problems.push(`contrast ${ratio.toFixed(2)} < ${need}: "${text}"`);
  }
  return problems;
}
"""


FOCUS_JS = r"""
() => {
  const el = document.activeElement, s = getComputedStyle(el);
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => [r, g, b].map((v) => {
    v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
  }).reduce((acc, v, i) => acc + v * [0.2126, 0.7152, 0.0722][i], 0);
  let bg = [255, 255, 255];
  for (let e = el.parentElement; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || (c.length === 4 && c[3] > 0.99)) { bg = c.slice(0, 3); break; }
  }
  const a = lum(rgb(s.outlineColor)), b = lum(bg);
  return {key: el.id || el.getAttribute('href') || el.textContent.trim(),
          outline: s.outlineStyle, width: parseFloat(s.outlineWidth),
          contrast: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)};
}
"""


def _audit(page: Any, where: str) -> None:
    problems = page.evaluate(AUDIT_JS)
    assert problems == [], (where, problems)


def test_every_page_has_labels_grouped_topics_tied_errors_and_aa_contrast(
        live_server: Any, browser_page: Any, make_subscriber: Any, session: Any) -> None:
    from newsletter import tokens

    page = browser_page
    pending = make_subscriber(email="pending@example.org", confirmed=False)
    sub = make_subscriber(email="ana@example.org", topics=["travel"])
    urls = {
        "subscribe": "/subscribe", "embed": "/subscribe/embed",
        "embed form": "/subscribe/embed/form",
        "confirm": "/" + tokens.confirm_url(pending.id).split("/", 3)[3],
        "manage": "/" + tokens.manage_url(sub.id).split("/", 3)[3],
        "unsubscribe": "/" + tokens.unsubscribe_url(sub.id).split("/", 3)[3],
        "bad link": "/manage/not-a-token", "not found": "/nowhere",
    }
    for where, path in urls.items():
        page.goto(live_server.url + path)
        _audit(page, where)
    # With errors showing: sign-up, preference centre, delete without the box ticked.
    page.goto(live_server.url + "/subscribe")
    page.get_by_label("Email address").fill("nope")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Please fix these problems").wait_for()
    _audit(page, "subscribe with errors")
    page.goto(live_server.url + urls["manage"])
    page.get_by_label("Name (optional)").fill("A<b>")
    page.get_by_role("button", name="Save changes").click()
    page.get_by_role("heading", name="Please fix this problem").wait_for()
    _audit(page, "manage with errors")
    page.goto(live_server.url + urls["manage"])
    page.get_by_role("button", name="Delete my data").click()
    page.get_by_role("heading", name="Please fix this problem").wait_for()
    _audit(page, "delete without the box ticked")


def test_keyboard_focus_follows_the_form_and_is_always_visible(
        live_server: Any, browser_page: Any, session: Any) -> None:
    from newsletter.models import Topic

    page = browser_page
    page.goto(f"{live_server.url}/subscribe")
    order = []
    for _ in range(40):
        page.keyboard.press("Tab")
        focused = page.evaluate(FOCUS_JS)
        # WCAG 1.4.11: the ring needs 3:1 against what surrounds it.
        assert focused["outline"] != "none" and focused["width"] >= 2, focused
        assert focused["contrast"] >= 3, focused
        order.append(focused["key"])
        if focused["key"] == "/subscribe/embed":
            break
    slugs = [f"topic-{t.slug}" for t in session.exec(select(Topic).order_by(Topic.id)).all()]
    assert order == ["#main", "/subscribe", "email", "name", *slugs, "only_my_topics",
                     "timezone", "consent", "Subscribe", "/subscribe/embed"]
    # A tap anywhere on a topic's card (a big target on a phone) ticks its box.
    card = page.locator(".topic").first
    box = card.bounding_box()
    card.click(position={"x": box["width"] - 6, "y": box["height"] - 6})
    assert page.locator(f"#{slugs[0]}").is_checked()


def test_a_form_with_errors_puts_focus_on_the_summary(live_server: Any,
                                                      browser_page: Any) -> None:
    page = browser_page
    page.goto(f"{live_server.url}/subscribe")
    page.get_by_role("button", name="Subscribe").click()
    page.get_by_role("heading", name="Please fix these problems").wait_for()
    assert page.evaluate("document.activeElement.id") == "error-summary"
    page.get_by_role("link", name="Please enter an email address.").click()
    assert page.evaluate("document.activeElement.id") == "email"


def test_the_unsubscribe_page_from_an_email_footer(
        live_server: Any, browser_page: Any, make_subscriber: Any, session: Any) -> None:
    from newsletter import tokens

    sub = make_subscriber(email="ana@example.org")
    page = browser_page
    page.goto(tokens.unsubscribe_url(sub.id))
    page.get_by_role("heading", name="Unsubscribe").wait_for()
    screenshot(page, "05a-unsubscribe")
    assert _subscriber(session).status == SubscriberStatus.confirmed  # a GET changes nothing
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_role("heading", name="You're unsubscribed").wait_for()
    assert _subscriber(session).status == SubscriberStatus.unsubscribed
