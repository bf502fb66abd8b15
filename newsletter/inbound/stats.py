"""What came back from one issue: bounces (hard and soft), complaints and unsubscribes,
as counts of subscribers and as rates of the messages delivered (the relay said 250).

Counted from the events the bounce policy, the webhooks and the unsubscribe pages tie to
the issue (Event.issue_id); each subscriber counts once per kind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import distinct, func, not_
from sqlmodel import Session, col, select

from newsletter.inbound.policy import BOUNCED, COMPLAINED, SOFT_BOUNCED, UNSUBSCRIBED
from newsletter.models import Delivery, DeliveryStatus, Event

# The policy logs `bounced` for a hard bounce and for the soft bounce that crossed
# SOFT_BOUNCE_LIMIT; the latter says so in its data (JSON, keys sorted).
_SOFT_LIMIT_MARK = '%"hard": false%'


@dataclass(frozen=True)
class IssueFeedback:
    """Subscribers per outcome for one issue, and each as a share of `delivered`."""

    delivered: int
    hard_bounces: int
    soft_bounces: int
    complaints: int
    unsubscribes: int

    def rate(self, count: int) -> float | None:
        return count / self.delivered if self.delivered else None

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)
        for name in ("hard_bounces", "soft_bounces", "complaints", "unsubscribes"):
            rate = self.rate(data[name])
            data[f"{name}_rate"] = round(rate, 6) if rate is not None else None
        return data


def _subscribers(session: Session, issue_id: int, *where: Any) -> int:
    return int(session.exec(
        select(func.count(distinct(col(Event.subscriber_id))))
        .where(col(Event.issue_id) == issue_id, *where)
    ).one())


def issue_feedback(*, session: Session, issue_id: int) -> IssueFeedback:
    delivered = int(session.exec(
        select(func.count()).select_from(Delivery)
        .where(col(Delivery.issue_id) == issue_id, col(Delivery.status) == DeliveryStatus.sent)
    ).one())
    hard = _subscribers(session, issue_id, col(Event.kind) == BOUNCED,
                        not_(col(Event.data).like(_SOFT_LIMIT_MARK)))
    soft = _subscribers(session, issue_id, col(Event.kind) == SOFT_BOUNCED)
    complaints = _subscribers(session, issue_id, col(Event.kind) == COMPLAINED)
    unsubscribes = _subscribers(session, issue_id, col(Event.kind) == UNSUBSCRIBED)
    return IssueFeedback(delivered=delivered, hard_bounces=hard, soft_bounces=soft,
                         complaints=complaints, unsubscribes=unsubscribes)


def percent(rate: float | None) -> str:
    """"1.25 %", or an em dash before anything was delivered."""
    if rate is None:
        return "—"
    return f"{rate * 100:.2f} %".replace(".00 %", " %")


def summary(feedback: IssueFeedback) -> list[tuple[str, int, str]]:
    """(label, subscribers, rate) rows, in the order people read them."""
    f = feedback
    return [(label, n, percent(f.rate(n))) for label, n in (
        ("Hard bounces", f.hard_bounces), ("Soft bounces", f.soft_bounces),
        ("Complaints", f.complaints), ("Unsubscribes", f.unsubscribes))]
