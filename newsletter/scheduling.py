"""When an issue goes out: a forecast before sending, and due times per reader's zone.

"Deliver at 09:00 in each reader's time zone" plans every ledger row with its own due
time (`Delivery.next_attempt_at`): a worker claims a row only once it is due, so the
sending day lasts about 24 hours and stays exactly-once. Due times come from zoneinfo,
so a reader in London gets 09:00 London time on both sides of a DST change; a wall
time that doesn't exist that day (the hour skipped in spring) moves forward, one that
happens twice (autumn) takes the first.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from newsletter.checks import audiences, readers
from newsletter.composer import load_issue
from newsletter.editorial import EditorialError, schedule_issue
from newsletter.models import (
    Delivery,
    DeliveryStatus,
    Issue,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from newsletter.settings import settings

DEFAULT_RATE = 200.0  # msg/s assumed before any send was measured here


@dataclass(frozen=True)
class Forecast:
    """What "Send now" would do: who gets it, in how many versions, for how long."""

    recipients: int
    versions: int
    get_nothing: int
    rate: float  # messages per second this estimate assumes
    measured: bool  # the rate comes from this installation's last sends

    @property
    def seconds(self) -> float:
        return self.recipients / self.rate if self.rate > 0 else 0.0

    @property
    def duration_text(self) -> str:
        seconds = self.seconds
        if seconds < 60:
            return "under a minute"
        if seconds < 3600:
            minutes = round(seconds / 60)
            return f"about {minutes} minute{'s' if minutes != 1 else ''}"
        hours = seconds / 3600
        return f"about {hours:.1f} hours"


def measured_rate(*, session: Session, recent: int = 3) -> float | None:
    """Messages per second of the last sends here (first to last 250 of each issue)."""
    rows = session.exec(
        select(Delivery.issue_id, func.count(), func.min(Delivery.sent_at),
               func.max(Delivery.sent_at))
        .where(Delivery.status == DeliveryStatus.sent, col(Delivery.sent_at).is_not(None))
        .group_by(col(Delivery.issue_id)).order_by(col(Delivery.issue_id).desc()).limit(recent)
    ).all()
    sent = spent = 0.0
    for _issue, count, first, last in rows:
        if count >= 100 and first and last and last > first:
            sent += count
            spent += (last - first).total_seconds()
    return sent / spent if spent else None


def forecast(*, session: Session, issue_id: int) -> Forecast:
    """Recipients, distinct versions and the expected duration of sending `issue_id` now."""
    issue = load_issue(session=session, issue_id=issue_id)
    groups = audiences(issue=issue, people=readers(session=session))
    nothing = sum(a.count for a in groups if a.composition is None)
    total = sum(a.count for a in groups)
    rate = measured_rate(session=session)
    limit = float(getattr(settings, "smtp_rate_limit", 0) or 0)
    chosen = rate or DEFAULT_RATE
    if limit:
        chosen = min(chosen, limit)
    return Forecast(recipients=total - nothing,
                    versions=sum(1 for a in groups if a.composition is not None),
                    get_nothing=nothing, rate=chosen, measured=rate is not None)


# --- due times per zone -------------------------------------------------------------------


def zone_or_default(name: str | None, default: str) -> ZoneInfo:
    try:
        return ZoneInfo(name or default)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(default)


def local_instant(day: date, at: time, zone: ZoneInfo) -> datetime:
    """`at` on `day` in `zone`, as UTC: a skipped wall time moves forward by the gap,
    a repeated one takes its first occurrence."""
    # PEP 495: fold=0 reads a wall time in a gap with the offset from before the gap
    # (so 01:30 on the spring-forward night lands at 02:30 new time) and a repeated one
    # as its first occurrence.
    return datetime.combine(day, at).replace(tzinfo=zone, fold=0).astimezone(UTC)


def due_times(*, day: date, at: time, zones: Iterable[str], default_zone: str,
              now: datetime) -> dict[str, datetime]:
    """Each zone name -> when its readers are due (never before `now`)."""
    result: dict[str, datetime] = {}
    for name in set(zones):
        instant = local_instant(day, at, zone_or_default(name, default_zone))
        result[name] = max(instant, now)
    return result


def first_due(*, day: date, at: time, zones: Iterable[str], default_zone: str) -> datetime:
    """When the earliest zone is due: the moment the issue starts sending."""
    instants = [local_instant(day, at, zone_or_default(z, default_zone)) for z in set(zones)]
    return min(instants, default=local_instant(day, at, ZoneInfo(default_zone)))


# --- scheduling an issue --------------------------------------------------------------------

# Readers whose zone we never learned are stored as "UTC": they get the issue's default.
UNKNOWN_ZONE = "UTC"


def subscriber_zones(*, session: Session) -> list[str]:
    """The distinct time zones of the people a send would go to."""
    return sorted(z for z in session.exec(
        select(Subscriber.timezone).where(Subscriber.status == SubscriberStatus.confirmed)
        .distinct()).all() if z)


def schedule_at(*, session: Session, issue_id: int, day: date, at: time,
                timezone: str | None = None, subscriber_local: bool = False,
                now: datetime | None = None) -> Issue:
    """Schedule an approved issue for `at` on `day`: in `timezone` (default the weekly
    slot's zone), or in each reader's own zone. Refuses a time already past."""
    now = now or utcnow()
    default = timezone or settings.schedule_timezone
    try:
        zone = ZoneInfo(default)
    except (ZoneInfoNotFoundError, ValueError):
        raise EditorialError(f"Unknown time zone {default!r}: use a name like "
                             "Europe/London.", field="timezone") from None
    if subscriber_local:
        zones = [z if z != UNKNOWN_ZONE else default for z in subscriber_zones(session=session)]
        when = first_due(day=day, at=at, zones=zones or [default], default_zone=default)
        last = max((local_instant(day, at, zone_or_default(z, default)) for z in zones),
                   default=when)
        if last <= now:
            raise EditorialError(f"{day:%d %B %Y} at {at:%H:%M} has passed in every reader's "
                                 "time zone: pick a later date.", field="when")
    else:
        when = local_instant(day, at, zone)
        if when <= now:
            raise EditorialError(f"{day:%d %B %Y} {at:%H:%M} ({default}) has passed: pick a "
                                 "later time.", field="when")
    issue = schedule_issue(session=session, issue_id=issue_id, when=max(when, now))
    issue.local_send_date = day if subscriber_local else None
    issue.local_send_time = at.strftime("%H:%M") if subscriber_local else ""
    session.add(issue)
    session.flush()
    return issue


def apply_local_due_times(*, session: Session, issue_id: int,
                          now: datetime | None = None) -> int:
    """After planning a subscriber-local issue: give each pending row its reader's due
    time (one UPDATE per zone). Returns how many rows got a later time than now."""
    issue = session.get(Issue, issue_id)
    if issue is None or issue.local_send_date is None or not issue.local_send_time:
        return 0
    now = now or utcnow()
    at = time.fromisoformat(issue.local_send_time)
    default = settings.schedule_timezone
    zones = session.exec(
        select(Subscriber.timezone)
        .join(Delivery, col(Delivery.subscriber_id) == col(Subscriber.id))
        .where(Delivery.issue_id == issue_id, Delivery.status == DeliveryStatus.pending)
        .distinct()).all()
    later = 0
    for name in zones:
        due = max(local_instant(issue.local_send_date, at,
                                zone_or_default(default if name == UNKNOWN_ZONE else name,
                                                default)), now)
        if due <= now:
            continue
        in_zone = select(Subscriber.id).where(Subscriber.timezone == name)
        result = session.exec(  # type: ignore[call-overload]
            update(Delivery).where(col(Delivery.issue_id) == issue_id,
                                   col(Delivery.status) == DeliveryStatus.pending,
                                   col(Delivery.subscriber_id).in_(in_zone))
            .values(next_attempt_at=due))
        later += int(result.rowcount or 0)
    return later
