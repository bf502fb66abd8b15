"""Ordering that learns: clicks on past stories move a reader's favourite topics up
"Also this week", with the reason shown, unless click tracking is off."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest

from newsletter.composer import compose, load_issue
from newsletter.engagement.interests import (
    decayed_weight,
    interests_by_subscriber,
    strongest,
    topic_suggestions,
)
from newsletter.models import Click, IssueStatus, utcnow

THIS_WEEK = [
    {"headline": "Retail results", "topics": ["europe"]},
    {"headline": "Fintech round", "topics": ["fintech"]},
    {"headline": "Port automation", "topics": ["logistics"]},
    {"headline": "Travel rebound", "topics": ["travel"]},
    {"headline": "Warehouse robots", "topics": ["logistics"]},
]


@pytest.fixture
def past_issue(make_issue):
    return make_issue(title="Last month", status=IssueStatus.sent, items=[
        {"headline": f"Logistics story {n}", "topics": ["logistics"]} for n in range(3)
    ] + [{"headline": "Health story", "topics": ["health"]}])


def tracking_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRACK_CLICKS=false (the setting lands with the click redirect; until then the
    module reads it with getattr and a default)."""
    from newsletter.engagement import interests
    from newsletter.settings import Settings, settings

    if "track_clicks" in Settings.model_fields:
        monkeypatch.setattr(settings, "track_clicks", False)
    else:
        monkeypatch.setattr(interests, "settings", SimpleNamespace(track_clicks=False))


def click(session, sub, issue, *, items, days_ago: float = 3) -> None:
    at = utcnow() - timedelta(days=days_ago)
    for item in items:
        session.add(Click(subscriber_id=sub.id, issue_id=issue.id, item_id=item, at=at))
    session.commit()


def item_ids(session, issue) -> list[int]:
    return [i.id for i in load_issue(session=session, issue_id=issue.id).items]


def digest(session, issue, sub, learned: dict[int, list[str]]):
    content = load_issue(session=session, issue_id=issue.id)
    return compose(content, followed=["europe"], learned=learned.get(sub.id, []))


def test_three_logistics_clicks_put_logistics_first_in_also_this_week(
        session, make_issue, make_subscriber, past_issue):
    reader = make_subscriber(topics=["europe"])
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3])
    week = make_issue(items=THIS_WEEK)

    learned = interests_by_subscriber(session=session)
    assert learned == {reader.id: ["logistics"]}
    comp = digest(session, week, reader, learned)
    assert [(c.item.headline, c.reason) for c in comp.items] == [
        ("Retail results", "You follow Europe"),
        ("Port automation", "You often read Logistics"),
        ("Warehouse robots", "You often read Logistics"),
        ("Fintech round", "Also this week"),
        ("Travel rebound", "Also this week"),
    ]


def test_reader_who_turned_tracking_off_keeps_the_editors_order(
        session, make_issue, make_subscriber, past_issue):
    reader = make_subscriber(topics=["europe"])
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3])
    reader.track_clicks = False
    session.add(reader)
    session.commit()
    week = make_issue(items=THIS_WEEK)

    learned = interests_by_subscriber(session=session)
    assert learned == {}
    baseline = compose(load_issue(session=session, issue_id=week.id), followed=["europe"])
    assert digest(session, week, reader, learned).key == baseline.key


def test_service_wide_tracking_off_learns_nothing(
        session, make_subscriber, past_issue, monkeypatch):
    reader = make_subscriber()
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3])
    tracking_off(monkeypatch)
    assert interests_by_subscriber(session=session) == {}
    assert topic_suggestions(session=session, subscriber_id=reader.id) == []


def test_old_clicks_fade_below_the_threshold(session, make_subscriber, past_issue):
    reader = make_subscriber()
    # three clicks 10 weeks ago weigh 3 × 0.5^2.5 ≈ 0.53: not "often" any more
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3], days_ago=70)
    assert interests_by_subscriber(session=session) == {}


def test_two_clicks_are_not_yet_an_interest(session, make_subscriber, past_issue):
    reader = make_subscriber()
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:2])
    assert interests_by_subscriber(session=session) == {}


def test_a_followed_topic_is_not_learned(session, make_subscriber, past_issue):
    reader = make_subscriber(topics=["logistics"])
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3])
    assert interests_by_subscriber(session=session) == {}


def test_interests_are_loaded_for_the_requested_readers_only(
        session, make_subscriber, past_issue):
    a, b = make_subscriber(), make_subscriber()
    for sub in (a, b):
        click(session, sub, past_issue, items=item_ids(session, past_issue)[:3])
    assert set(interests_by_subscriber(session=session, subscriber_ids=[b.id])) == {b.id}


def test_decay_halves_every_four_weeks():
    assert decayed_weight(timedelta(0)) == 1
    assert decayed_weight(timedelta(weeks=4)) == pytest.approx(0.5)
    assert decayed_weight(timedelta(weeks=8)) == pytest.approx(0.25)


def test_only_the_two_strongest_topics_above_the_threshold_are_kept():
    scores = {"a": 1.0, "b": 4.0, "c": 2.6, "d": 3.0, "e": 2.4}
    assert strongest(scores) == ["b", "d"]
    assert strongest({"e": 2.4}) == []


def test_suggests_an_unfollowed_topic_read_three_times_this_month(
        session, make_subscriber, past_issue):
    reader = make_subscriber(topics=["health"])
    click(session, reader, past_issue, items=item_ids(session, past_issue))
    [suggestion] = topic_suggestions(session=session, subscriber_id=reader.id)
    assert (suggestion.slug, suggestion.name, suggestion.stories) == ("logistics", "Logistics", 3)


def test_editor_preview_of_a_reader_shows_their_learned_order(
        editor_client, session, make_issue, make_subscriber, past_issue):
    reader = make_subscriber(email="lea@example.org", topics=["europe"])
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3])
    week = make_issue(items=THIS_WEEK)
    frame = editor_client.get(f"/editor/issues/{week.id}/preview/frame",
                              params={"email": "lea@example.org"}).text
    assert "You often read Logistics" in frame
    assert frame.index("Port automation") < frame.index("Fintech round")


def test_cli_preview_of_a_reader_shows_their_learned_order(
        app_settings, session, make_issue, make_subscriber, past_issue):
    from typer.testing import CliRunner

    from newsletter.cli import app

    reader = make_subscriber(email="lea@example.org", topics=["europe"])
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3])
    week = make_issue(items=THIS_WEEK)
    result = CliRunner().invoke(app, ["preview", str(week.id), "-s", "lea@example.org",
                                      "-f", "text"])
    assert result.exit_code == 0, result.output
    assert "You often read Logistics" in result.output
    assert result.output.index("Port automation") < result.output.index("Fintech round")


def test_interests_as_of_a_moment_ignore_later_clicks(session, make_subscriber, past_issue):
    """Planning and the batches of one send pass the same `now` (the send's start), so a
    click in between cannot change which email a reader gets half-way through."""
    reader = make_subscriber()
    started = utcnow() - timedelta(hours=1)
    click(session, reader, past_issue, items=item_ids(session, past_issue)[:3], days_ago=0.01)
    assert interests_by_subscriber(session=session, now=started) == {}
    assert interests_by_subscriber(session=session) == {reader.id: ["logistics"]}
