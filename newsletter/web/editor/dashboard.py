"""The dashboard: sign-ups, confirmations and unsubscribes per week, subscribers per
topic, delivery results of recent issues, drawn as SVG on the server."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy import func
from sqlmodel import Session, col, select

from newsletter.charts import bar_chart, column_chart
from newsletter.models import Event, EventKind, Issue, IssueStatus, Subscriber, utcnow
from newsletter.topics import topic_counts
from newsletter.web.editor.issues import delivery_counts
from newsletter.web.editor.routing import db_session, page, router

WEEKS = 12
RECENT_ISSUES = 8
GROWTH_KINDS = {EventKind.signed_up: "Sign-ups", EventKind.confirmed: "Confirmations",
                EventKind.unsubscribed: "Unsubscribes"}
# Stacked bottom-up in this order, each in the colour people expect for it.
DELIVERY_GROUPS: dict[str, tuple[tuple[str, ...], str]] = {
    "Sent": (("sent",), "#0e9f6e"),                    # green
    "Failed": (("failed",), "#e02424"),                # red
    "Skipped": (("skipped", "suppressed"), "#e3a008"),  # amber
    "Cancelled": (("cancelled",), "#4b5563"),          # dark grey
    "Pending": (("pending", "sending"), "#c4c9d1"),    # light grey
}
def _week_start(moment: datetime) -> datetime:
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return day - timedelta(days=day.weekday())


def growth_chart(session: Session, now: datetime) -> Markup:
    first = _week_start(now) - timedelta(weeks=WEEKS - 1)
    weeks = [first + timedelta(weeks=i) for i in range(WEEKS)]
    series = {label: [0] * WEEKS for label in GROWTH_KINDS.values()}
    # Bucketed in Python: week arithmetic differs between SQLite and PostgreSQL.
    for kind, at in session.exec(
        select(Event.kind, Event.at).where(col(Event.kind).in_(list(GROWTH_KINDS)),
                                           col(Event.at) >= first)
    ).all():
        index = (_week_start(at) - first).days // 7
        if 0 <= index < WEEKS:
            series[GROWTH_KINDS[EventKind(kind)]][index] += 1
    return column_chart(title="Sign-ups, confirmations and unsubscribes per week",
                        labels=[w.strftime("%d %b") for w in weeks], series=series)


def topics_chart(session: Session) -> Markup:
    rows = topic_counts(session=session)
    return bar_chart(title="Confirmed subscribers per topic",
                     labels=[t.name for t, _items, _subs in rows],
                     values=[subs for _t, _items, subs in rows])


def delivery_chart(session: Session) -> Markup:
    issues = list(session.exec(
        select(Issue).where(col(Issue.status).in_(
            (IssueStatus.sending, IssueStatus.paused, IssueStatus.sent, IssueStatus.cancelled)))
        .order_by(col(Issue.send_started_at).desc(), col(Issue.id).desc()).limit(RECENT_ISSUES)
    ).all())[::-1]
    counts = delivery_counts(session, [i.id for i in issues if i.id is not None])
    series = {
        name: [sum(counts.get(i.id or 0, {}).get(s, 0) for s in states) for i in issues]
        for name, (states, _colour) in DELIVERY_GROUPS.items()
    }
    return column_chart(title="Delivery results of recent issues",
                         labels=[f"#{i.id} {i.issue_date:%d %b}" for i in issues],
                         series=series, stacked=True,
                         empty="No issue has been sent yet",
                         colours=[colour for _states, colour in DELIVERY_GROUPS.values()])


@router.get("")
def dashboard(request: Request) -> Response:
    now = utcnow()
    with db_session() as session:
        counts = dict(session.exec(
            select(Subscriber.status, func.count()).group_by(col(Subscriber.status))
        ).all())
        totals = {s: int(counts.get(s, 0)) for s in ("confirmed", "pending", "unsubscribed")}
        charts = {
            "growth": growth_chart(session, now),
            "topics": topics_chart(session),
            "delivery": delivery_chart(session),
        }
        drafts = session.exec(select(Issue).where(Issue.status == IssueStatus.draft)
                              .order_by(col(Issue.issue_date).desc()).limit(5)).all()
    return page(request, "dashboard.html", {"totals": totals, "charts": charts,
                                            "drafts": drafts, "nav": "dashboard"})
