"""`/r/<token>`: story links record one click and redirect only to allowed places."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from sqlmodel import Session, func, select

from newsletter import db, tokens
from newsletter.composer import compose, load_issue
from newsletter.engagement.links import story_path
from newsletter.models import Click, IssueStatus
from newsletter.render import Recipient, render_digest
from newsletter.settings import settings

ITEMS = [
    {"headline": "Cainiao opens smart hubs", "topics": ["logistics"],
     "link_text": "Read the announcement", "link_url": "https://news.example.com/cainiao?a=1&b=2"},
    {"headline": "Hermès beats forecasts", "topics": ["luxury-fashion"]},
]


@pytest.fixture
def sent(make_issue: Any, make_subscriber: Any) -> tuple[Any, Any, list[Any]]:
    issue = make_issue(items=ITEMS, status=IssueStatus.sent)
    reader = make_subscriber(email="ana@example.org", topics=["logistics"])
    items = sorted(issue_items(issue.id), key=lambda i: i.position)
    return issue, reader, items


def issue_items(issue_id: int) -> list[Any]:
    from newsletter.models import Item

    with Session(db.get_engine()) as s:
        return list(s.exec(select(Item).where(Item.issue_id == issue_id)).all())


def clicks(session: Session) -> list[tuple[int, int, int]]:
    session.expire_all()
    return [(c.subscriber_id, c.issue_id, c.item_id) for c in session.exec(select(Click)).all()]


def page_of(item: Any) -> str:
    return settings.base_url + story_path(item.id, item.headline)


def follow(client: Any, subscriber_id: int, issue_id: int, item_id: int, suffix: str = "",
           method: str = "GET") -> Any:
    """Request a story link the way a reader's email has it."""
    token = tokens.make_click_token(subscriber_id, issue_id, item_id)
    return client.request(method, f"/r/{token}{suffix}", follow_redirects=False)


def test_a_click_is_recorded_once_and_redirects_to_the_story_page(client, session, sent) -> None:
    issue, reader, (hub, _) = sent
    path = "/r/" + tokens.make_click_token(reader.id, issue.id, hub.id)
    for _ in range(3):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 302
        assert response.headers["location"] == page_of(hub)
        assert response.headers["cache-control"] == "no-store"
    assert clicks(session) == [(reader.id, issue.id, hub.id)]


def test_the_story_own_link_redirects_to_its_url(client, session, sent) -> None:
    issue, reader, (hub, plain) = sent
    own = follow(client, reader.id, issue.id, hub.id, "/link")
    assert own.headers["location"] == "https://news.example.com/cainiao?a=1&b=2"
    # A story without a link of its own falls back to its page.
    none = follow(client, reader.id, issue.id, plain.id, "/link")
    assert none.headers["location"] == page_of(plain)
    assert sorted(clicks(session)) == sorted([(reader.id, issue.id, hub.id),
                                              (reader.id, issue.id, plain.id)])


@pytest.mark.parametrize("mangle", [
    lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # signature
    lambda t: "Wzk5LDk5LDk5XQ" + t[t.index("."):],  # payload swapped for [99,99,99]
    lambda t: t + "x",
    lambda t: "not-a-token",
])
def test_a_tampered_token_gets_404_and_records_nothing(client, session, sent, mangle) -> None:
    issue, reader, (hub, _) = sent
    response = client.get("/r/" + mangle(tokens.make_click_token(reader.id, issue.id, hub.id)),
                          follow_redirects=False)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert clicks(session) == []


def test_a_token_made_for_another_purpose_is_refused(client, session, sent) -> None:
    _, reader, _ = sent
    for purpose in (tokens.MANAGE, tokens.UNSUBSCRIBE):
        response = client.get("/r/" + tokens.make_token(purpose, reader.id),
                              follow_redirects=False)
        assert response.status_code == 404
    assert clicks(session) == []


def test_a_story_from_another_issue_gets_404(client, session, sent, make_issue) -> None:
    _, reader, (hub, _) = sent
    other = make_issue(items=["Elsewhere"], status=IssueStatus.sent)
    response = follow(client, reader.id, other.id, hub.id)
    assert response.status_code == 404
    assert clicks(session) == []


def test_no_redirect_ever_leaves_the_allowed_targets(client, sent) -> None:
    issue, reader, items = sent
    allowed = {page_of(i) for i in items} | {i.link_url for i in items if i.link_url}
    seen = set()
    for item in items:
        token = tokens.make_click_token(reader.id, issue.id, item.id)
        for suffix in ("", "/link", "?to=https://evil.example", "?next=https://evil.example",
                       "/link?url=//evil.example", "/..%2F..%2Fhttps:%2F%2Fevil.example",
                       "/https://evil.example", "//evil.example"):
            response = client.get(f"/r/{token}{suffix}", follow_redirects=False)
            if response.status_code == 302:
                seen.add(response.headers["location"])
            else:
                assert response.status_code == 404
    assert seen and seen <= allowed


def test_with_tracking_off_the_link_works_and_records_nothing(
        client, session, sent, monkeypatch) -> None:
    issue, reader, (hub, _) = sent
    monkeypatch.setattr(settings, "track_clicks", False)
    response = follow(client, reader.id, issue.id, hub.id)
    assert response.status_code == 302 and response.headers["location"] == page_of(hub)
    assert clicks(session) == []


def test_a_reader_who_opted_out_is_not_recorded(client, session, sent) -> None:
    issue, reader, (hub, _) = sent
    reader.track_clicks = False
    session.add(reader)
    session.commit()
    response = follow(client, reader.id, issue.id, hub.id)
    assert response.status_code == 302
    assert clicks(session) == []


def test_link_checkers_head_requests_are_not_clicks(client, session, sent) -> None:
    issue, reader, (hub, _) = sent
    response = follow(client, reader.id, issue.id, hub.id, method="HEAD")
    assert response.status_code == 302
    assert clicks(session) == []


def test_preview_and_test_send_links_work_without_recording(client, session, sent) -> None:
    issue, _, (hub, _) = sent
    response = follow(client, 0, issue.id, hub.id)
    assert response.status_code == 302
    assert clicks(session) == []


def test_simultaneous_clicks_record_one_row(web_app, session, sent) -> None:
    from fastapi.testclient import TestClient

    issue, reader, (hub, _) = sent
    path = "/r/" + tokens.make_click_token(reader.id, issue.id, hub.id)
    barrier = threading.Barrier(6)
    codes: list[int] = []

    def click() -> None:
        with TestClient(web_app) as c:
            barrier.wait()
            codes.append(c.get(path, follow_redirects=False).status_code)

    threads = [threading.Thread(target=click) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert codes == [302] * 6
    session.expire_all()
    assert session.exec(select(func.count()).select_from(Click)).one() == 1


def email_for(session: Session, issue: Any, reader: Any) -> tuple[str, str]:
    """(html, text) of the digest `reader` gets, rendered as a send renders it."""
    content = load_issue(session=session, issue_id=issue.id)
    composition = compose(content, followed=["logistics"])
    assert composition is not None
    return render_digest(content, composition).personalise(
        Recipient(reader.id, reader.email, reader.name))


def test_every_story_link_in_a_real_email_works(client, session, sent) -> None:
    """Render the email the reader gets, follow every story link it has."""
    issue, reader, items = sent
    html, text = email_for(session, issue, reader)
    link = re.escape(settings.base_url) + r"(/r/[\w.\-]+(?:/link)?)"
    links = set(re.findall(link, html))
    assert links == set(re.findall(link, text)) and len(links) == 3
    targets = {client.get(link, follow_redirects=False).headers["location"] for link in links}
    assert targets == {page_of(i) for i in items} | {"https://news.example.com/cainiao?a=1&b=2"}
    assert sorted(clicks(session)) == sorted((reader.id, issue.id, i.id) for i in items)


@pytest.mark.browser
@pytest.mark.slow
def test_a_reader_clicking_in_chromium_lands_on_the_story(live_server, browser_page, session,
                                                          sent) -> None:
    """The email opened in a real browser; tapping the first headline goes through the
    real server's redirect to the story's archive page and records the click."""
    issue, reader, items = sent
    html, _ = email_for(session, issue, reader)
    page = browser_page
    page.set_viewport_size({"width": 375, "height": 800})
    page.set_content(html)
    with page.expect_navigation():
        page.locator("h2 a").first.click()
    first = items[0]
    assert page.url == live_server.url + story_path(first.id, first.headline)
    assert clicks(session) == [(reader.id, issue.id, first.id)]


def test_click_tokens_are_itsdangerous_tokens_bound_to_the_secret(monkeypatch) -> None:
    now = time.time()  # both tokens carry the second: one clock for both
    monkeypatch.setattr(time, "time", lambda: now)
    token = tokens.make_click_token(12, 3, 45)
    assert token == tokens._serializer(settings.secret_key, tokens.CLICK).dumps([12, 3, 45])
    assert tokens.read_click_token(token) == (12, 3, 45)
    with pytest.raises(tokens.BadToken):  # a manage token is not a click token
        tokens.read_click_token(tokens.make_token(tokens.MANAGE, 12))
    monkeypatch.setattr(settings, "secret_key", "another-secret-that-is-long-enough-0123456789")
    with pytest.raises(tokens.BadToken):
        tokens.read_click_token(token)
    fresh = tokens.make_click_token(12, 3, 45)  # signed with the new key, not a cached one
    assert fresh != token and tokens.read_click_token(fresh) == (12, 3, 45)
