"""The public web archive: sent issues and their stories as pages, the Atom feed,
OpenGraph tags, caching, and nothing unsent ever public."""

from __future__ import annotations

import re
from datetime import date
from xml.etree import ElementTree as ET

import pytest
from sqlmodel import select

from newsletter import tokens
from newsletter.engagement.links import issue_path, story_path
from newsletter.models import Issue, IssueStatus, Item, utcnow

ATOM = "{http://www.w3.org/2005/Atom}"

STORIES = [
    {"headline": "Hermès beats forecasts", "topics": ["luxury-fashion", "europe"],
     "body": "Sales rose 12% in the quarter.\n\nThe Birkin maker raised its outlook."},
    {"headline": "Pakistan's first smart warehouses", "topics": ["logistics"],
     "body": "Robots now pick parcels in Karachi."},
    {"headline": "Hidden draft note", "hidden": True},
]


@pytest.fixture
def sent_issue(make_issue, session):
    issue = make_issue(title="Hermès beats forecasts + 1 more", intro="Two stories this week.",
                       items=STORIES, status=IssueStatus.sent, issue_date=date(2026, 11, 23))
    issue.sent_at = utcnow()
    session.add(issue)
    session.commit()
    return issue


def items_of(session, issue) -> list[Item]:
    return list(session.exec(select(Item).where(Item.issue_id == issue.id)
                             .order_by(Item.position)).all())


def test_archive_lists_sent_issues_newest_first(client, make_issue, sent_issue):
    make_issue(title="Older issue", status=IssueStatus.sent, issue_date=date(2026, 11, 16),
               items=["Old story"])
    make_issue(title="Draft in progress", items=["Secret"])
    page = client.get("/archive")
    assert page.status_code == 200
    assert page.text.index("Hermès beats forecasts + 1 more") < page.text.index("Older issue")
    assert "Draft in progress" not in page.text and "Secret" not in page.text
    assert issue_path(sent_issue.id, sent_issue.title) in page.text


def test_archive_is_paginated(client, make_issue):
    for n in range(12):
        make_issue(title=f"Issue number {n}", status=IssueStatus.sent,
                   issue_date=date(2026, 1, 1 + n), items=["A"])
    first, second = client.get("/archive"), client.get("/archive?page=2")
    assert "Issue number 11" in first.text and "Issue number 1<" not in first.text
    assert re.findall(r"Issue number (\d+)<", second.text) == ["1", "0"]
    assert 'rel="next"' in first.text and 'rel="prev"' in second.text
    assert client.get("/archive?page=3").status_code == 404
    assert client.get("/archive?page=x").status_code == 404


def test_issue_page_shows_stories_in_editor_order_with_topics(client, session, sent_issue):
    page = client.get(issue_path(sent_issue.id, sent_issue.title))
    assert page.status_code == 200
    text = page.text
    assert text.index("Hermès beats forecasts</a>") < text.index("smart warehouses</a>")
    assert "Hidden draft note" not in text
    assert "Luxury" in text and "Logistics" in text
    first, second, _hidden = items_of(session, sent_issue)
    assert story_path(second.id, second.headline) in text


def test_wrong_or_missing_slug_redirects_permanently_to_the_canonical_url(
        client, session, sent_issue):
    canonical = issue_path(sent_issue.id, sent_issue.title)
    for wrong in (f"/issues/{sent_issue.id}/old-title", f"/issues/{sent_issue.id}"):
        response = client.get(wrong, follow_redirects=False)
        assert (response.status_code, response.headers["location"]) == (301, canonical)
    story = items_of(session, sent_issue)[1]
    response = client.get(f"/stories/{story.id}/nope", follow_redirects=False)
    assert response.status_code == 301
    assert response.headers["location"] == story_path(story.id, story.headline)


def test_story_page_shows_the_full_story_topics_and_follow_links(client, session, sent_issue):
    story = items_of(session, sent_issue)[0]
    page = client.get(story_path(story.id, story.headline))
    assert page.status_code == 200
    assert "Sales rose 12% in the quarter." in page.text
    assert "The Birkin maker raised its outlook." in page.text
    assert 'href="/follow/luxury-fashion"' in page.text and 'href="/follow/europe"' in page.text


@pytest.mark.parametrize("status", [IssueStatus.draft, IssueStatus.approved,
                                    IssueStatus.scheduled, IssueStatus.cancelled])
def test_unsent_issues_and_their_stories_are_404(client, session, make_issue, status):
    issue = make_issue(title="Not out yet", status=status, items=["Embargoed story"])
    story = items_of(session, issue)[0]
    assert client.get(issue_path(issue.id, issue.title)).status_code == 404
    assert client.get(f"/issues/{issue.id}").status_code == 404
    assert client.get(story_path(story.id, story.headline)).status_code == 404
    assert "Not out yet" not in client.get("/archive").text
    assert "Not out yet" not in client.get("/archive.atom").text


def test_hidden_story_of_a_sent_issue_is_404(client, session, sent_issue):
    hidden = items_of(session, sent_issue)[2]
    assert client.get(story_path(hidden.id, hidden.headline)).status_code == 404


def test_unknown_ids_are_404(client):
    assert client.get("/issues/999/x").status_code == 404
    assert client.get("/stories/99999999999/x").status_code == 404


def test_pages_carry_opengraph_tags(client, session, sent_issue):
    story = items_of(session, sent_issue)[0]
    for path, title in ((issue_path(sent_issue.id, sent_issue.title), sent_issue.title),
                        (story_path(story.id, story.headline), story.headline)):
        html = client.get(path).text
        og = dict(re.findall(r'<meta property="og:(\w+)" content="([^"]*)"', html))
        assert og["title"] == title
        assert og["url"] == "http://testserver" + path
        assert og["type"] == "article" and og["description"]


def test_pages_are_cacheable_with_validators_and_no_cookie(client, sent_issue):
    path = issue_path(sent_issue.id, sent_issue.title)
    first = client.get(path)
    assert "public" in first.headers["cache-control"]
    assert "max-age" in first.headers["cache-control"]
    assert first.headers["last-modified"] and first.headers["etag"]
    assert "set-cookie" not in first.headers
    again = client.get(path, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""


def test_editing_the_issue_changes_its_etag(client, session, sent_issue):
    path = issue_path(sent_issue.id, sent_issue.title)
    before = client.get(path).headers["etag"]
    issue = session.get(Issue, sent_issue.id)
    issue.updated_at = utcnow()
    session.add(issue)
    session.commit()
    assert client.get(path).headers["etag"] != before


def test_pages_make_no_third_party_requests(client, session, sent_issue):
    story = items_of(session, sent_issue)[0]
    for path in ("/archive", issue_path(sent_issue.id, sent_issue.title),
                 story_path(story.id, story.headline)):
        html = client.get(path).text
        sources = re.findall(r'<(?:script|link|img|iframe)[^>]+(?:src|href)="([^"]+)"', html)
        assert all(s.startswith(("/", "http://testserver/")) for s in sources), sources


def test_atom_feed_parses_with_one_entry_per_sent_issue(client, session, make_issue, sent_issue):
    make_issue(title="Draft", items=["x"])
    response = client.get("/archive.atom")
    assert response.headers["content-type"].startswith("application/atom+xml")
    feed = ET.fromstring(response.content)
    assert feed.tag == f"{ATOM}feed"
    entries = feed.findall(f"{ATOM}entry")
    assert len(entries) == 1
    entry = entries[0]
    assert entry.findtext(f"{ATOM}title") == sent_issue.title
    assert entry.findtext(f"{ATOM}id") == (
        f"tag:testserver,{sent_issue.created_at:%Y-%m-%d}:issue-{sent_issue.id}")
    link = entry.find(f"{ATOM}link[@rel='alternate']")
    assert link.get("href") == "http://testserver" + issue_path(sent_issue.id, sent_issue.title)
    updated = entry.findtext(f"{ATOM}updated")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", updated)
    assert feed.findtext(f"{ATOM}updated") == updated
    assert "Hermès beats forecasts" in ET.tostring(entry.find(f"{ATOM}content"), "unicode")
    categories = {c.get("term"): c.get("label") for c in entry.findall(f"{ATOM}category")}
    assert categories["logistics"] == "Logistics" and "luxury-fashion" in categories


def test_atom_feed_escapes_markup_in_titles(client, make_issue):
    make_issue(title="Q&A: <script>alert(1)</script>", status=IssueStatus.sent, items=["A & B"])
    feed = ET.fromstring(client.get("/archive.atom").content)
    assert feed.find(f"{ATOM}entry").findtext(f"{ATOM}title") == "Q&A: <script>alert(1)</script>"


def test_follow_without_a_reader_goes_to_sign_up_with_the_topic_ticked(client):
    response = client.get("/follow/logistics", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/subscribe?topics=logistics"
    page = client.get("/subscribe?topics=logistics")
    assert re.search(r'value="logistics" id="topic-logistics"[^>]*checked', page.text)
    assert client.get("/follow/no-such-topic", follow_redirects=False).status_code == 404


def test_reader_from_their_email_follows_in_their_preference_centre(
        client, session, sent_issue, make_subscriber):
    sub = make_subscriber(topics=["europe"])
    token = tokens.make_token(tokens.MANAGE, sub.id)
    story = items_of(session, sent_issue)[1]
    path = story_path(story.id, story.headline)
    arrived = client.get(f"{path}?m={token}", follow_redirects=False)
    # The token leaves the address bar at once: the page they share is the clean one.
    assert arrived.status_code == 303 and arrived.headers["location"] == path
    assert "no-store" in arrived.headers["cache-control"]
    response = client.get("/follow/logistics", follow_redirects=False)
    assert response.headers["location"] == f"/manage/{token}?follow=logistics"


def test_a_forged_reader_token_falls_back_to_sign_up(client, session, sent_issue):
    story = items_of(session, sent_issue)[1]
    client.get(f"{story_path(story.id, story.headline)}?m=forged.token", follow_redirects=False)
    response = client.get("/follow/logistics", follow_redirects=False)
    assert response.headers["location"] == "/subscribe?topics=logistics"


def test_a_retitled_story_opened_from_an_email_keeps_the_reader(client, session, sent_issue,
                                                                make_subscriber):
    sub = make_subscriber()
    token = tokens.make_token(tokens.MANAGE, sub.id)
    story = items_of(session, sent_issue)[1]
    old = client.get(f"/stories/{story.id}/old-headline?m={token}", follow_redirects=False)
    assert old.status_code == 301 and "no-store" in old.headers["cache-control"]
    client.get(old.headers["location"], follow_redirects=True)
    assert client.get("/follow/logistics", follow_redirects=False).headers["location"] == (
        f"/manage/{token}?follow=logistics")


@pytest.mark.parametrize("status", [IssueStatus.sending, IssueStatus.paused])
def test_an_issue_going_out_is_public_as_readers_already_click_it(
        client, session, make_issue, status):
    issue = make_issue(title="Going out now", status=status, items=["Fresh story"])
    story = items_of(session, issue)[0]
    assert client.get(issue_path(issue.id, issue.title)).status_code == 200
    assert client.get(story_path(story.id, story.headline)).status_code == 200


def test_uptime_monitors_can_probe_with_head(client, sent_issue):
    for path in ("/archive", "/archive.atom", issue_path(sent_issue.id, sent_issue.title)):
        response = client.head(path)
        assert response.status_code == 200 and response.headers["etag"], path
