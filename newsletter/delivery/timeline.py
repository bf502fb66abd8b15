"""When an issue's messages were accepted by the relay, bucketed for a chart."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session, col, select

from newsletter.models import Delivery, DeliveryStatus, as_utc

MAX_BUCKETS = 48


def delivery_timeline(*, session: Session, issue_id: int) -> tuple[str, list[tuple[str, int]]]:
    """(unit, [(label, messages accepted)]): per minute, hour or day, whichever shows the
    whole send in at most MAX_BUCKETS columns. Empty when nothing was sent."""
    moments = [as_utc(t) for t in session.exec(
        select(Delivery.sent_at).where(Delivery.issue_id == issue_id,
                                       Delivery.status == DeliveryStatus.sent,
                                       col(Delivery.sent_at).is_not(None))).all() if t]
    if not moments:
        return "", []
    first, last = min(moments), max(moments)
    span = last - first
    units = (("minute", timedelta(minutes=1), "%H:%M"),
             ("hour", timedelta(hours=1), "%d %b %H:00"),
             ("day", timedelta(days=1), "%d %b"))
    unit, step, fmt = next((u for u in units if span < u[1] * MAX_BUCKETS), units[-1])
    start = first.replace(second=0, microsecond=0)
    if unit != "minute":
        start = start.replace(minute=0)
    if unit == "day":
        start = start.replace(hour=0)
    buckets = [0] * (int((last - start) / step) + 1)
    for moment in moments:
        buckets[int((moment - start) / step)] += 1
    return unit, [((start + i * step).strftime(fmt), n) for i, n in enumerate(buckets)]
