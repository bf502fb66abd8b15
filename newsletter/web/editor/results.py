"""The issue report at /editor/issues/<id>/results: the delivery timeline, what became
of the messages (delivered, failed, bounced, complaints, unsubscribes), readers per
story and per topic against emails delivered, clicks per day, and the unsubscribes it
caused."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlmodel import Session

from newsletter.charts import bar_chart, column_chart
from newsletter.delivery import status_counts
from newsletter.delivery.timeline import delivery_timeline
from newsletter.engagement.interests import tracking_enabled
from newsletter.engagement.results import UNSUB_WINDOW, IssueResults, issue_results
from newsletter.inbound.stats import issue_feedback
from newsletter.models import Issue
from newsletter.web.editor.issues import issue_view
from newsletter.web.editor.routing import router

# Narrower than the dashboard's 640: the charts scale to the card, and at 375 px a
# 640-wide drawing would shrink its labels below legibility.
CHART_WIDTH = 440


def _label(text: str, limit: int = 26) -> str:
    # bar_chart's label column is 190 units wide: long headlines (in full in the table
    # below) would run off its left edge.
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def outcome_chart(session: Session, issue_id: int) -> tuple[Markup, dict[str, int]]:
    """What became of the issue's messages, as bars: the figures people ask first."""
    counts = status_counts(session=session, issue_id=issue_id)
    feedback = issue_feedback(session=session, issue_id=issue_id)
    figures = {"Delivered": counts.get("sent", 0), "Failed": counts.get("failed", 0),
               "Hard bounces": feedback.hard_bounces, "Soft bounces": feedback.soft_bounces,
               "Complaints": feedback.complaints, "Unsubscribes": feedback.unsubscribes}
    return bar_chart(title="What became of this issue's messages", labels=list(figures),
                     values=list(figures.values()), width=CHART_WIDTH,
                     empty="Not sent yet"), figures


def timeline_chart(session: Session, issue_id: int) -> Markup:
    unit, buckets = delivery_timeline(session=session, issue_id=issue_id)
    return column_chart(
        title=f"Messages accepted by the relay per {unit or 'minute'}",
        labels=[label for label, _n in buckets],
        series={"Delivered": [n for _label, n in buckets]}, width=CHART_WIDTH, height=200,
        max_labels=6, empty="Nothing delivered yet", colours=["#0e9f6e"])


def charts(results: IssueResults) -> dict[str, Markup]:
    return {
        "stories": bar_chart(
            title="Readers who opened each story",
            labels=[_label(r.label) for r in results.stories],
            values=[r.readers for r in results.stories], empty="No stories in this issue",
            width=CHART_WIDTH),
        "topics": bar_chart(
            title="Readers who opened a story on each topic",
            labels=[_label(r.label) for r in results.topics],
            values=[r.readers for r in results.topics],
            empty="Nobody has opened a story yet", width=CHART_WIDTH),
        "days": column_chart(
            title="Stories opened per day since the send",
            labels=[day for day, _n in results.clicks_per_day],
            series={"Stories opened": [n for _day, n in results.clicks_per_day]},
            width=CHART_WIDTH, height=200, empty="Not sent yet"),
    }


@router.get("/issues/{issue_id:int}/results")
def results_page(request: Request, issue_id: int) -> Response:
    def context(session: Session, _issue: Issue) -> dict[str, Any]:
        results = issue_results(session=session, issue_id=issue_id)
        outcomes, figures = outcome_chart(session, issue_id)
        return {"results": results, "outcomes": outcomes, "figures": figures,
                "timeline": timeline_chart(session, issue_id), "charts": charts(results),
                "window_days": UNSUB_WINDOW.days, "tracking": tracking_enabled()}

    return issue_view(request, issue_id, "results.html", context)
