"""The weekly slot across DST changes, and which issue is due."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from newsletter import schedule
from newsletter.models import Issue, IssueStatus

LONDON = {"weekday": "mon", "at": "09:00", "tz": "Europe/London"}


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def test_monday_slot_after_the_october_change_is_0900_utc() -> None:
    # Clocks went back on Sunday 26 Oct 2025: Monday 27 Oct is GMT.
    assert schedule.current_slot(utc(2025, 10, 27, 12), **LONDON) == utc(2025, 10, 27, 9)


def test_monday_slot_before_the_october_change_is_0800_utc() -> None:
    assert schedule.current_slot(utc(2025, 10, 20, 12), **LONDON) == utc(2025, 10, 20, 8)


def test_current_slot_is_last_week_before_this_weeks_time() -> None:
    assert schedule.current_slot(utc(2025, 10, 27, 8, 59), **LONDON) == utc(2025, 10, 20, 8)


def test_next_slot_crosses_the_change() -> None:
    assert schedule.next_slot(utc(2025, 10, 21), **LONDON) == utc(2025, 10, 27, 9)


def test_a_slot_in_the_spring_forward_gap_moves_forward_by_the_gap() -> None:
    # Sunday 30 Mar 2025, Europe/London: 01:00 GMT -> 02:00 BST, so 01:30 never happens.
    day = date(2025, 3, 30)
    assert not schedule.wall_time_exists(day, time(1, 30), ZoneInfo("Europe/London"))
    slot = schedule.current_slot(utc(2025, 3, 30, 12), weekday="sun", at="01:30",
                                 tz="Europe/London")
    assert slot == utc(2025, 3, 30, 1, 30)  # 02:30 BST
    assert slot.astimezone(ZoneInfo("Europe/London")).strftime("%H:%M %Z") == "02:30 BST"


def test_an_ambiguous_slot_takes_the_first_occurrence() -> None:
    # Sunday 26 Oct 2025, 01:30 happens twice in London: first at BST (00:30 UTC).
    slot = schedule.current_slot(utc(2025, 10, 26, 12), weekday="sun", at="01:30",
                                 tz="Europe/London")
    assert slot == utc(2025, 10, 26, 0, 30)


def test_a_zone_without_dst_is_a_fixed_offset() -> None:
    slot = schedule.current_slot(utc(2025, 7, 2), weekday="tue", at="09:00", tz="Asia/Tokyo")
    assert slot == utc(2025, 7, 1, 0)


def test_bad_schedule_time_names_the_setting() -> None:
    with pytest.raises(ValueError, match="SCHEDULE_TIME"):
        schedule.parse_time("nine")


# --- due issues ------------------------------------------------------------------------


@pytest.fixture
def london(monkeypatch: pytest.MonkeyPatch) -> None:
    from newsletter.settings import settings

    monkeypatch.setattr(settings, "schedule_weekday", "mon")
    monkeypatch.setattr(settings, "schedule_time", "09:00")
    monkeypatch.setattr(settings, "schedule_timezone", "Europe/London")


def _approved(make_issue: Callable[..., Issue], session: Session, *, at: datetime,
              issue_date: date) -> Issue:
    issue = make_issue(items=["A story"], status=IssueStatus.approved, issue_date=issue_date)
    issue.approved_at = at
    session.add(issue)
    session.commit()
    return issue


def test_newest_issue_approved_before_the_slot_is_due_after_it(
    session: Session, make_issue: Callable[..., Issue], london: None
) -> None:
    _approved(make_issue, session, at=utc(2025, 10, 20), issue_date=date(2025, 10, 13))
    newest = _approved(make_issue, session, at=utc(2025, 10, 24), issue_date=date(2025, 10, 27))

    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 27, 8, 59)) == []
    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 27, 9, 1)) == [newest.id]


def test_an_issue_approved_after_the_slot_waits_for_next_week(
    session: Session, make_issue: Callable[..., Issue], london: None
) -> None:
    _approved(make_issue, session, at=utc(2025, 10, 27, 10), issue_date=date(2025, 10, 27))
    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 27, 11)) == []


def test_beat_firing_twice_in_a_slot_plans_the_issue_once(
    session: Session, make_issue: Callable[..., Issue], make_subscriber: Callable[..., object],
    london: None, redis_url: str,
) -> None:
    make_subscriber()
    issue = _approved(make_issue, session, at=utc(2025, 10, 24), issue_date=date(2025, 10, 27))
    now = utc(2025, 10, 27, 9, 1)

    first = schedule.send_due_issues(session=session, now=now)
    session.commit()
    second = schedule.send_due_issues(session=session, now=now + timedelta(minutes=1))

    assert (first, second) == ([issue.id], [])


def test_an_older_approved_issue_is_not_sent_after_a_newer_one(
    session: Session, make_issue: Callable[..., Issue], london: None
) -> None:
    _approved(make_issue, session, at=utc(2025, 10, 20), issue_date=date(2025, 10, 13))
    sent = make_issue(items=["A story"], status=IssueStatus.sent, issue_date=date(2025, 10, 20))
    assert sent.id
    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 27, 9, 1)) == []


def test_a_scheduled_issue_is_due_at_its_time(
    session: Session, make_issue: Callable[..., Issue], london: None
) -> None:
    issue = make_issue(items=["A story"], status=IssueStatus.scheduled)
    issue.scheduled_for = utc(2025, 10, 22, 15)
    session.add(issue)
    session.commit()

    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 22, 14, 59)) == []
    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 22, 15)) == [issue.id]


def test_a_slot_missed_by_more_than_a_day_is_skipped(
    session: Session, make_issue: Callable[..., Issue], london: None
) -> None:
    _approved(make_issue, session, at=utc(2025, 10, 24), issue_date=date(2025, 10, 27))
    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 28, 9, 1)) == []


def test_a_scheduled_issue_due_in_the_slot_is_the_only_one_sent(
    session: Session, make_issue: Callable[..., Issue], london: None
) -> None:
    _approved(make_issue, session, at=utc(2025, 10, 24), issue_date=date(2025, 10, 20))
    scheduled = make_issue(items=["A story"], status=IssueStatus.scheduled,
                           issue_date=date(2025, 10, 27))
    scheduled.scheduled_for = utc(2025, 10, 27, 9)
    session.add(scheduled)
    session.commit()

    assert schedule.due_issue_ids(session=session, now=utc(2025, 10, 27, 9, 1)) == [scheduled.id]
