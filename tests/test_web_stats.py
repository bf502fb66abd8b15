"""`newsletter stats`: sign-ups per week, confirmation rate, time to confirm, topics."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from sqlmodel import select
from typer.testing import CliRunner

from newsletter.models import Event, EventKind
from newsletter.stats import bar, signup_stats
from newsletter.subscribers import add_subscriber, confirm, unsubscribe


def _at(session, subscriber_id, kind, when):
    event = session.exec(select(Event).where(Event.subscriber_id == subscriber_id,
                                             Event.kind == kind)).one()
    event.at = when
    session.add(event)


def _history(session):
    monday = datetime(2026, 11, 2, 9, tzinfo=UTC)  # ISO week 45
    a = add_subscriber(session=session, email="a@example.org", topics=["travel"], source="form")
    b = add_subscriber(session=session, email="b@example.org", topics=["travel", "health"],
                       source="form")
    c = add_subscriber(session=session, email="c@example.org", source="api")
    session.flush()
    for sub, hours in ((a, 2), (b, 6)):
        confirm(session=session, subscriber_id=sub.id, source="form")
        session.flush()
        _at(session, sub.id, EventKind.signed_up, monday)
        _at(session, sub.id, EventKind.confirmed, monday + timedelta(hours=hours))
    _at(session, c.id, EventKind.signed_up, monday + timedelta(days=7))
    unsubscribe(session=session, subscriber_id=b.id, source="one-click")
    session.flush()
    _at(session, b.id, EventKind.unsubscribed, monday + timedelta(days=8))
    session.commit()


def test_stats_count_weeks_rate_median_and_topics(session):
    _history(session)
    stats = signup_stats(session=session)
    assert [(w.week, w.signups, w.unsubscribes) for w in stats.weeks] == [
        ("2026-W45", 2, 0), ("2026-W46", 1, 1)]
    assert stats.confirmation_rate == 2 / 3
    assert stats.median_time_to_confirm_hours == 4.0
    per_topic = {t.slug: t.subscribers for t in stats.topics}
    assert per_topic["travel"] == 1 and per_topic["health"] == 0  # b unsubscribed


def test_stats_cli_prints_json(session):
    from newsletter.cli import app

    _history(session)
    result = CliRunner().invoke(app, ["stats", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["median_time_to_confirm_hours"] == 4.0
    assert data["weeks"][0]["week"] == "2026-W45"


def test_stats_cli_prints_tables(session):
    from newsletter.cli import app

    _history(session)
    result = CliRunner().invoke(app, ["stats"])
    assert result.exit_code == 0, result.output
    assert "2026-W45" in result.output and "Confirmation rate" in result.output
    assert "67%" in result.output


def test_bar_scales_to_the_maximum():
    assert bar(10, 10, width=4) == "████"
    assert bar(5, 10, width=4) == "██"
    assert bar(0, 10) == ""
