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
# People who signed up themselves; everyone else was added (import, API, editor, CLI),
# and counting a 600-row import as this week's sign-ups would flatter the form.
SELF_SIGNUP_SOURCES = ("form", "embed")
ADDED = "Added (import, API, editors)"
NARROW = 330  # the phone-sized charts: text stays at its real size at 375 px
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


def growth_series(session: Session, now: datetime) -> tuple[list[str], dict[str, list[int]]]:
    """Week labels and, per week, sign-ups (form), additions, confirmations, unsubscribes."""
    first = _week_start(now) - timedelta(weeks=WEEKS - 1)
    weeks = [first + timedelta(weeks=i) for i in range(WEEKS)]
    names = ["Sign-ups", ADDED, "Confirmations", "Unsubscribes"]
    series = {name: [0] * WEEKS for name in names}
    # Bucketed in Python: week arithmetic differs between SQLite and PostgreSQL.
    for kind, source, at in session.exec(
        select(Event.kind, Event.source, Event.at).where(
            col(Event.kind).in_(list(GROWTH_KINDS)), col(Event.at) >= first)
    ).all():
        index = (_week_start(at) - first).days // 7
        if not 0 <= index < WEEKS:
            continue
        name = GROWTH_KINDS[EventKind(kind)]
        if kind == EventKind.signed_up and source not in SELF_SIGNUP_SOURCES:
            name = ADDED
        elif kind == EventKind.confirmed and source not in ("web", *SELF_SIGNUP_SOURCES):
            continue  # added as confirmed: counted once, as added
        series[name][index] += 1
    return [w.strftime("%d %b") for w in weeks], series


def growth_chart(session: Session, now: datetime, *, width: int = 640) -> Markup:
    labels, series = growth_series(session, now)
    return column_chart(title="Sign-ups, additions, confirmations and unsubscribes per week",
                        labels=labels, series=series, width=width,
                        max_labels=12 if width >= 600 else 4)


def topics_chart(session: Session, *, width: int = 640) -> Markup:
    rows = topic_counts(session=session)
    return bar_chart(title="Confirmed subscribers per topic",
                     labels=[t.name for t, _items, _subs in rows],
                     values=[subs for _t, _items, subs in rows], width=width)


def delivery_chart(session: Session, *, width: int = 640) -> Markup:
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
    # Labelled by when the send started: that is when readers got it.
    return column_chart(title="Delivery results of recent issues, by send date",
                         labels=[f"#{i.id} {(i.send_started_at or i.updated_at):%d %b}"
                                 for i in issues],
                         series=series, stacked=True, width=width,
                         max_labels=8 if width >= 600 else 4,
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
            "growth_narrow": growth_chart(session, now, width=NARROW),
            "topics_narrow": topics_chart(session, width=NARROW),
            "delivery_narrow": delivery_chart(session, width=NARROW),
        }
        drafts = session.exec(select(Issue).where(Issue.status == IssueStatus.draft)
                              .order_by(col(Issue.issue_date).desc()).limit(5)).all()
    return page(request, "dashboard.html", {"totals": totals, "charts": charts,
                                            "drafts": drafts, "nav": "dashboard"})
