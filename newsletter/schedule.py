"""The weekly slot (weekday, local time, time zone) and sending the issue that is due.

Slots are computed as local wall time and then converted to UTC, so "Monday 09:00
Europe/London" is 08:00 UTC in summer and 09:00 UTC in winter. Two wall times need a
rule of their own:

* a time that does not exist (clocks spring forward over it): the slot moves forward
  by the gap, e.g. 01:30 on a 01:00->02:00 night becomes 02:30 local time;
* a time that happens twice (clocks fall back): the first occurrence; a slot is one
  instant, so the issue cannot go out twice.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session, col

from newsletter.models import Issue, IssueStatus, utcnow
from newsletter.settings import settings

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# A slot missed by more than this (beat was down) is skipped, not sent days late.
SLOT_GRACE = timedelta(hours=24)


def parse_time(value: str) -> time:
    """'09:00' -> time(9, 0); a clear error names the setting."""
    try:
        hours, minutes = value.strip().split(":")
        return time(int(hours), int(minutes))
    except ValueError as exc:
        raise ValueError(f"SCHEDULE_TIME must look like 09:00, not {value!r}") from exc


def local_to_utc(day: date, at: time, zone: ZoneInfo) -> datetime:
    """Wall time `day at` in `zone` as an aware UTC instant (DST rules in the docstring)."""
    # fold=0 does both rules at once: an ambiguous time takes its first occurrence,
    # and a non-existent one is read with the offset from before the jump, which is
    # the wall time moved forward by the gap. tests/test_schedule.py pins both.
    return datetime.combine(day, at).replace(tzinfo=zone, fold=0).astimezone(UTC)


def wall_time_exists(day: date, at: time, zone: ZoneInfo) -> bool:
    """False for a wall time skipped by a spring-forward jump."""
    naive = datetime.combine(day, at)
    return naive.replace(tzinfo=zone).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


def _zone(name: str | None) -> ZoneInfo:
    return ZoneInfo(name or settings.schedule_timezone)


def slot_on_week_of(
    day: date, *, weekday: str | None = None, at: str | None = None, tz: str | None = None
) -> datetime:
    """The slot in the Monday-to-Sunday week containing `day`, in UTC."""
    wd = WEEKDAYS.index(weekday or settings.schedule_weekday)
    monday = day - timedelta(days=day.weekday())
    return local_to_utc(monday + timedelta(days=wd), parse_time(at or settings.schedule_time),
                        _zone(tz))


def current_slot(
    now: datetime | None = None, *, weekday: str | None = None, at: str | None = None,
    tz: str | None = None,
) -> datetime:
    """The most recent slot at or before `now` (UTC)."""
    return _slot_from(now, step_weeks=-1, weekday=weekday, at=at, tz=tz)


def next_slot(
    now: datetime | None = None, *, weekday: str | None = None, at: str | None = None,
    tz: str | None = None,
) -> datetime:
    """The first slot strictly after `now` (UTC)."""
    return _slot_from(now, step_weeks=1, weekday=weekday, at=at, tz=tz)


def _slot_from(now: datetime | None, *, step_weeks: int, weekday: str | None, at: str | None,
               tz: str | None) -> datetime:
    """This local week's slot, or the one a week before/after when it is on the wrong side
    of `now` (before: at or before now; after: strictly after)."""
    now = now or utcnow()
    local_day = now.astimezone(_zone(tz)).date()
    slot = slot_on_week_of(local_day, weekday=weekday, at=at, tz=tz)
    wrong_side = slot > now if step_weeks < 0 else slot <= now
    if wrong_side:
        slot = slot_on_week_of(local_day + timedelta(days=7 * step_weeks), weekday=weekday,
                               at=at, tz=tz)
    return slot


# --- what is due ------------------------------------------------------------------------


def due_issue_ids(*, session: Session, now: datetime | None = None) -> list[int]:
    """Issues that should start sending now.

    * every `scheduled` issue whose scheduled_for has passed;
    * within SLOT_GRACE after the weekly slot: the newest `approved` issue approved
      before the slot, unless an issue already started in this slot, a scheduled
      one is due now, or a newer-or-same-date issue went out.
    """
    now = now or utcnow()
    due = list(session.execute(
        select(col(Issue.id)).where(col(Issue.status) == IssueStatus.scheduled,
                               col(Issue.scheduled_for) <= now)
        .order_by(col(Issue.scheduled_for), col(Issue.id))
    ).scalars())
    slot = current_slot(now)
    started_this_slot = session.execute(
        select(col(Issue.id)).where(col(Issue.send_started_at) >= slot).limit(1)
    ).first()
    # A scheduled issue due now takes the slot: one issue per week, not two at once.
    if not due and started_this_slot is None and now - slot <= SLOT_GRACE:
        candidate = session.execute(
            select(col(Issue.id), col(Issue.issue_date)).where(
                col(Issue.status) == IssueStatus.approved, col(Issue.approved_at) <= slot)
            .order_by(col(Issue.issue_date).desc(), col(Issue.id).desc()).limit(1)
        ).first()
        if candidate is not None:
            newer_went_out = session.execute(
                select(col(Issue.id)).where(
                    col(Issue.status).in_(
                        (IssueStatus.sending, IssueStatus.paused, IssueStatus.sent)),
                    col(Issue.issue_date) >= candidate.issue_date,
                ).limit(1)
            ).first()
            if newer_went_out is None and candidate.id not in due:
                due.append(candidate.id)
    return [i for i in due if i is not None]


def send_due_issues(*, session: Session, now: datetime | None = None) -> list[int]:
    """Plan every due issue; their batches are enqueued when the session commits.

    Safe when beat fires twice or two beats run: plan_send's conditional UPDATE lets
    only one of them plan an issue, the other gets AlreadyPlanned and moves on.
    """
    from newsletter.delivery import (
        AlreadyPlanned,
        enqueue_after_commit,
        finish_if_done,
        pending_batches,
        plan_send,
    )

    planned: list[int] = []
    for issue_id in due_issue_ids(session=session, now=now):
        try:
            # AlreadyPlanned is raised before plan_send writes anything.
            plan_send(session=session, issue_id=issue_id)
        except AlreadyPlanned:
            continue
        finish_if_done(session=session, issue_id=issue_id)
        enqueue_after_commit(session, issue_id, pending_batches(session=session, issue_id=issue_id))
        planned.append(issue_id)
    return planned
