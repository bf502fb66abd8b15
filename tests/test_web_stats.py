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
        confirm(session=session, subscriber_id=sub.id, source="confirm-link")
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


def test_imported_confirmed_subscribers_stay_out_of_the_opt_in_figures(session):
    # 50 addresses imported as confirmed would otherwise read as "100% confirm in 0 min".
    _history(session)
    for i in range(50):
        add_subscriber(session=session, email=f"imp{i}@example.org", confirmed=True,
                       source="import")
    session.commit()
    stats = signup_stats(session=session)
    assert stats.signups == 53 and stats.opt_in_signups == 3
    assert stats.confirmation_rate == 2 / 3
    assert stats.median_time_to_confirm_hours == 4.0


def test_quiet_weeks_are_listed_with_zeros(session):
    a = add_subscriber(session=session, email="a@example.org", source="form")
    b = add_subscriber(session=session, email="b@example.org", source="form")
    session.flush()
    _at(session, a.id, EventKind.signed_up, datetime(2026, 11, 3, tzinfo=UTC))  # W45
    _at(session, b.id, EventKind.signed_up, datetime(2026, 11, 26, tzinfo=UTC))  # W48
    session.commit()
    weeks = [(w.week, w.week_start, w.signups) for w in signup_stats(session=session).weeks]
    assert weeks == [("2026-W45", "2026-11-02", 1), ("2026-W46", "2026-11-09", 0),
                     ("2026-W47", "2026-11-16", 0), ("2026-W48", "2026-11-23", 1)]


def test_a_resubscription_is_a_new_sign_up_to_confirm(session):
    from newsletter.subscribers import resubscribe

    sub = add_subscriber(session=session, email="a@example.org", source="form")
    session.flush()
    confirm(session=session, subscriber_id=sub.id, source="confirm-link")
    unsubscribe(session=session, subscriber_id=sub.id, source="one-click")
    resubscribe(session=session, subscriber_id=sub.id, source="form")
    session.commit()
    stats = signup_stats(session=session)
    assert (stats.signups, stats.opt_in_signups, stats.confirmed) == (2, 2, 1)
    assert stats.confirmation_rate == 0.5
