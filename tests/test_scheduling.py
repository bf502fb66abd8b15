"""Due times per reader's zone across DST, and the send forecast."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text
from sqlmodel import select

from newsletter.models import Delivery, utcnow
from newsletter.scheduling import due_times, first_due, forecast, local_instant

NINE = time(9, 0)


def test_nine_in_london_and_new_york_across_the_march_changes() -> None:
    # 2027: the US moves its clocks on 14 March, the UK on 28 March.
    london, new_york = ZoneInfo("Europe/London"), ZoneInfo("America/New_York")
    assert local_instant(date(2027, 3, 13), NINE, new_york) == datetime(2027, 3, 13, 14, tzinfo=UTC)
    assert local_instant(date(2027, 3, 15), NINE, new_york) == datetime(2027, 3, 15, 13, tzinfo=UTC)
    assert local_instant(date(2027, 3, 27), NINE, london) == datetime(2027, 3, 27, 9, tzinfo=UTC)
    assert local_instant(date(2027, 3, 29), NINE, london) == datetime(2027, 3, 29, 8, tzinfo=UTC)
    for day, zone in ((date(2027, 3, 14), new_york), (date(2027, 3, 28), london)):
        instant = local_instant(day, NINE, zone)
        assert instant.astimezone(zone).time() == NINE  # 09:00 on the change day itself


def test_a_wall_time_in_the_spring_gap_moves_forward() -> None:
    london = ZoneInfo("Europe/London")
    instant = local_instant(date(2027, 3, 28), time(1, 30), london)
    assert instant.astimezone(london).time() == time(2, 30)


def test_due_times_never_lie_in_the_past_and_unknown_zones_use_the_default() -> None:
    now = datetime(2027, 3, 15, 12, tzinfo=UTC)
    due = due_times(day=date(2027, 3, 15), at=NINE, zones=["Asia/Tokyo", "America/New_York",
                                                           "Not/AZone"],
                    default_zone="Europe/London", now=now)
    assert due["Asia/Tokyo"] == now  # 09:00 in Tokyo was 00:00 UTC: already past, send now
    assert due["America/New_York"] == datetime(2027, 3, 15, 13, tzinfo=UTC)
    assert due["Not/AZone"] == now  # London 09:00 GMT = 09:00 UTC, past


def test_the_send_starts_with_the_earliest_zone() -> None:
    start = first_due(day=date(2027, 3, 15), at=NINE, zones=["Europe/London", "Pacific/Auckland"],
                      default_zone="UTC")
    assert start == datetime(2027, 3, 14, 20, tzinfo=UTC)  # 09:00 NZDT


def test_forecast_counts_recipients_and_versions(session, make_issue, make_subscriber) -> None:
    issue = make_issue(items=[{"headline": "A", "topics": ["logistics"]},
                              {"headline": "B", "topics": ["fintech"]}])
    make_subscriber(topics=["logistics"])
    make_subscriber(topics=["logistics"])
    make_subscriber(topics=["fintech"])
    make_subscriber(topics=["travel"], only_my_topics=True)  # gets nothing
    make_subscriber(confirmed=False)  # not a recipient
    result = forecast(session=session, issue_id=issue.id)
    assert (result.recipients, result.versions, result.get_nothing) == (3, 2, 1)
    assert not result.measured and result.duration_text == "under a minute"


def test_forecast_uses_the_rate_measured_on_earlier_sends(session, make_issue,
                                                         make_subscriber) -> None:
    old = make_issue(items=["A"], status="sent")
    start = datetime(2026, 11, 2, 9, tzinfo=UTC)
    for n in range(200):
        sub = make_subscriber()
        session.add(Delivery(issue_id=old.id, subscriber_id=sub.id, status="sent",
                             sent_at=start + timedelta(seconds=n)))
    session.commit()
    new = make_issue(items=["B"])
    result = forecast(session=session, issue_id=new.id)
    assert result.measured and 0.9 < result.rate < 1.1  # 200 messages over 199 s
    assert result.recipients == 200 and result.duration_text == "about 3 minutes"


# --- subscriber-local delivery --------------------------------------------------------------


def _scheduled_local(session, make_issue, make_subscriber, day):
    from newsletter.scheduling import schedule_at

    issue = make_issue(items=[{"headline": "A", "topics": ["logistics"]}], status="approved")
    people = {
        "london": make_subscriber(email="l@example.org", timezone="Europe/London"),
        "new_york": make_subscriber(email="n@example.org", timezone="America/New_York"),
        "unknown": make_subscriber(email="u@example.org"),  # stored as UTC: the default zone
    }
    schedule_at(session=session, issue_id=issue.id, day=day, at=NINE, subscriber_local=True,
                timezone="Europe/London", now=datetime(2027, 3, 1, tzinfo=UTC))
    session.commit()
    return issue, people


def _claim_at(session, issue_id, moment):
    from newsletter.delivery import claim

    token, _lease = claim(session=session, issue_id=issue_id, batch=0, now=moment)
    return sorted(d.subscriber_id for d in session.exec(
        select(Delivery).where(Delivery.claim_token == token)).all())


def _plan(session, issue_id, monkeypatch):
    """Plan as beat would (planning gives each row its reader's due time), in one batch
    so that claims show who is due when. Planning runs on 1 March 2027, as the schedule
    was made: a due time already past is brought forward to now, so on the real clock
    these tests would fail from 15 March 2027."""
    from newsletter.delivery import plan_send, planning

    monkeypatch.setattr(planning, "utcnow", lambda: datetime(2027, 3, 1, tzinfo=UTC))
    plan_send(session=session, issue_id=issue_id)
    session.execute(text("UPDATE delivery SET batch = 0"))
    session.flush()


def test_each_reader_is_due_at_nine_their_time_across_the_march_changes(
        session, app_settings, make_issue, make_subscriber, monkeypatch) -> None:
    monkeypatch.setattr(app_settings, "schedule_timezone", "Europe/London")
    # 15 March 2027: New York is already on summer time (since the 14th), London not yet.
    issue, people = _scheduled_local(session, make_issue, make_subscriber, date(2027, 3, 15))
    assert issue.scheduled_for == datetime(2027, 3, 15, 9, tzinfo=UTC)  # London first
    _plan(session, issue.id, monkeypatch)
    due = {d.subscriber_id: d.next_attempt_at for d in session.exec(select(Delivery)).all()}
    assert due[people["london"].id] == datetime(2027, 3, 15, 9, tzinfo=UTC)  # 09:00 GMT
    assert due[people["new_york"].id] == datetime(2027, 3, 15, 13, tzinfo=UTC)  # 09:00 EDT
    assert due[people["unknown"].id] == due[people["london"].id]  # the default zone
    assert _claim_at(session, issue.id, datetime(2027, 3, 15, 8, 59, tzinfo=UTC)) == []
    assert _claim_at(session, issue.id, datetime(2027, 3, 15, 9, 1, tzinfo=UTC)) == sorted(
        [people["london"].id, people["unknown"].id])
    assert _claim_at(session, issue.id, datetime(2027, 3, 15, 12, 59, tzinfo=UTC)) == []
    assert _claim_at(session, issue.id, datetime(2027, 3, 15, 13, 0, tzinfo=UTC)) == [
        people["new_york"].id]
    assert _claim_at(session, issue.id, datetime(2027, 3, 16, tzinfo=UTC)) == []  # once each


def test_after_both_changes_london_is_due_at_eight_utc(
        session, app_settings, make_issue, make_subscriber, monkeypatch) -> None:
    monkeypatch.setattr(app_settings, "schedule_timezone", "Europe/London")
    issue, people = _scheduled_local(session, make_issue, make_subscriber, date(2027, 3, 29))
    assert issue.scheduled_for == datetime(2027, 3, 29, 8, tzinfo=UTC)  # 09:00 BST
    _plan(session, issue.id, monkeypatch)
    due = {d.subscriber_id: d.next_attempt_at for d in session.exec(select(Delivery)).all()}
    assert due[people["london"].id] == datetime(2027, 3, 29, 8, tzinfo=UTC)
    assert due[people["new_york"].id] == datetime(2027, 3, 29, 13, tzinfo=UTC)


def test_scheduling_in_the_past_is_refused(session, make_issue) -> None:
    from newsletter.editorial import EditorialError
    from newsletter.scheduling import schedule_at

    issue = make_issue(items=["A"], status="approved")
    with pytest.raises(EditorialError, match="has passed"):
        schedule_at(session=session, issue_id=issue.id, day=date(2020, 1, 6), at=NINE,
                    timezone="Europe/London")


def test_the_schedule_command_schedules_at_a_local_time(app_settings, session, make_issue,
                                                       make_subscriber) -> None:
    from typer.testing import CliRunner

    from newsletter.cli import app
    from newsletter.models import Issue

    issue = make_issue(items=["A"], status="approved")
    make_subscriber(timezone="Asia/Tokyo")
    # 7 January, some years ahead (New York on standard time, UTC-5), never in the past.
    year = utcnow().year + 3
    result = CliRunner().invoke(app, ["schedule", str(issue.id), "--at", f"{year}-01-07 09:00",
                                      "--timezone", "America/New_York"])
    assert result.exit_code == 0, result.output
    assert f"sending starts {year}-01-07 14:00 UTC" in result.output
    session.expire_all()
    assert session.get(Issue, issue.id).status == "scheduled"
    bad = CliRunner().invoke(app, ["schedule", str(issue.id), "--at", "next monday"])
    assert bad.exit_code == 1 and "must look like" in bad.output
