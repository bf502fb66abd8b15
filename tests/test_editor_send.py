"""Approve and send from the console: schedule, send now through a real worker, live
progress, pause/resume/cancel; and the dashboard's SVG charts."""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlmodel import select

from newsletter import charts
from newsletter.models import Delivery, Event, Issue, IssueStatus, utcnow
from newsletter.schedule import next_slot
from tests.fixtures.editor import editor_post
from tests.fixtures.services import wait_until

ITEMS = [{"headline": "Warehouse news", "topics": ["logistics"]},
         {"headline": "Payments news", "topics": ["fintech"]}]


def _status(session, issue_id):
    session.expire_all()
    return session.get(Issue, issue_id).status


def test_a_draft_cannot_be_sent(editor_client, make_issue, session):
    issue = make_issue(items=ITEMS)
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/send-now")
    assert response.status_code == 400
    assert "Only approved issues can be sent" in response.text
    assert _status(session, issue.id) == IssueStatus.draft


def test_scheduling_uses_the_next_weekly_slot(editor_client, make_issue, session):
    issue = make_issue(items=ITEMS, status=IssueStatus.approved)
    slot_before = next_slot()  # the request may run across the weekly slot itself
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/schedule")
    assert response.status_code == 303
    session.expire_all()
    saved = session.get(Issue, issue.id)
    assert saved.status == IssueStatus.scheduled
    assert min(abs(saved.scheduled_for - slot) for slot in (slot_before, next_slot())) < (
        timedelta(seconds=5))


def test_send_now_through_a_real_worker_reaches_done(
        editor_client, make_issue, make_subscriber, session, celery_worker, smtp_server):
    issue = make_issue(items=ITEMS, status=IssueStatus.approved)
    for i in range(3):
        make_subscriber(email=f"r{i}@example.org", topics=["fintech"])
    make_subscriber(email="picky@example.org", topics=["health"], only_my_topics=True)
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/send-now")
    assert response.status_code == 303, response.text

    def done():
        data = editor_client.get(f"/editor/issues/{issue.id}/progress.json").json()
        return data if data["done"] else None

    data = wait_until(done, timeout=60, message="the send to finish")
    assert (data["sent"], data["skipped"], data["pending"], data["failed"]) == (3, 1, 0, 0)
    assert data["status"] == "sent"
    assert sorted(smtp_server.recipients()) == [f"r{i}@example.org" for i in range(3)]
    page = editor_client.get(f"/editor/issues/{issue.id}/send").text
    assert 'data-key="sent">3<' in page


def test_pause_resume_and_cancel_act_on_the_ledger(
        editor_client, make_issue, make_subscriber, session, redis_url):
    # No worker runs: the batches wait in Redis, so the ledger stays pending.
    issue = make_issue(items=ITEMS, status=IssueStatus.approved)
    for i in range(2):
        make_subscriber(email=f"r{i}@example.org")
    assert editor_post(editor_client, f"/editor/issues/{issue.id}/send-now").status_code == 303
    assert _status(session, issue.id) == IssueStatus.sending
    assert editor_post(editor_client, f"/editor/issues/{issue.id}/pause").status_code == 303
    assert _status(session, issue.id) == IssueStatus.paused
    assert editor_post(editor_client, f"/editor/issues/{issue.id}/resume").status_code == 303
    assert _status(session, issue.id) == IssueStatus.sending
    assert editor_post(editor_client, f"/editor/issues/{issue.id}/cancel").status_code == 303
    assert _status(session, issue.id) == IssueStatus.cancelled
    statuses = session.exec(select(Delivery.status).where(Delivery.issue_id == issue.id)).all()
    assert statuses == ["cancelled", "cancelled"]


def test_resuming_an_issue_that_is_not_paused_says_why(editor_client, make_issue):
    issue = make_issue(items=ITEMS, status=IssueStatus.approved)
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/resume")
    assert response.status_code == 400
    assert "Nothing to resume" in response.text


def test_progress_json_reports_counts_and_time_left(editor_client, make_issue, make_subscriber,
                                                    session):
    issue = make_issue(items=ITEMS, status=IssueStatus.sending)
    subs = [make_subscriber() for _ in range(4)]
    now = utcnow()
    for sub, status in zip(subs, ["sent", "sent", "failed", "pending"], strict=True):
        session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id, status=status,
                             sent_at=now if status == "sent" else None))
    session.commit()
    data = editor_client.get(f"/editor/issues/{issue.id}/progress.json").json()
    assert (data["sent"], data["failed"], data["pending"], data["total"]) == (2, 1, 1, 4)
    assert not data["done"]


def _sent_rows(session, issue, make_subscriber, ages: list[float], pending: int) -> datetime:
    """Deliveries sent `ages` seconds before the moment returned, plus `pending` still to
    send. The subscribers are made first (slow on a busy machine), then the clock read."""
    readers = [make_subscriber().id for _ in range(len(ages) + pending)]
    now = utcnow()
    for subscriber_id, age in zip(readers, ages, strict=False):
        session.add(Delivery(issue_id=issue.id, subscriber_id=subscriber_id,
                             status="sent", sent_at=now - timedelta(seconds=age)))
    for subscriber_id in readers[len(ages):]:
        session.add(Delivery(issue_id=issue.id, subscriber_id=subscriber_id,
                             status="pending"))
    session.commit()
    return now


def _started(session, issue, seconds_ago: float, now) -> None:
    issue.send_started_at = now - timedelta(seconds=seconds_ago)
    session.add(issue)
    session.commit()


def test_progress_rate_of_a_young_send_is_over_its_age_not_a_minute(
        editor_client, make_issue, make_subscriber, session):
    # 20 sent in the 10 s since the start, 40 to go: 2/s and about 20 s left (the
    # old "sent in the last minute" said 20/min and 2 min left).
    issue = make_issue(items=ITEMS, status=IssueStatus.sending)
    t0 = _sent_rows(session, issue, make_subscriber, [i * 0.5 for i in range(20)], pending=40)
    _started(session, issue, 10, now=t0)
    # The send is 10 s old plus the moments since t0 when the page asks, so the
    # expected figures are worked out from them.
    before = (utcnow() - t0).total_seconds()
    data = editor_client.get(f"/editor/issues/{issue.id}/progress.json").json()
    after = (utcnow() - t0).total_seconds()
    assert data["rate"].endswith("/s")
    assert 20 * 60 / (10 + after) - 1 <= data["rate_per_minute"] <= 20 * 60 / (10 + before) + 1
    assert 2 * (10 + before) - 1 <= data["seconds_left"] <= 2 * (10 + after) + 1
    page = editor_client.get(f"/editor/issues/{issue.id}/send").text
    # The page is read a moment later, so its rate may differ in the last digit.
    assert re.search(r"\b[12]\.\d/s\b", page), "the page shows the per-second rate"


def test_progress_rate_of_a_long_send_uses_the_last_minute(
        editor_client, make_issue, make_subscriber, session):
    issue = make_issue(items=ITEMS, status=IssueStatus.sending)
    # 30 in the last minute, 10 long before: 30/min, so 60 pending take 2 min. (The 30
    # are within 45 s of the request, so a slow machine keeps them all in its minute.)
    now = _sent_rows(session, issue, make_subscriber,
                     [i * 1.5 for i in range(30)] + [3000 + i for i in range(10)], pending=60)
    _started(session, issue, 7200, now=now)
    data = editor_client.get(f"/editor/issues/{issue.id}/progress.json").json()
    assert data["rate"] == "30.0/min"
    assert 115 <= data["seconds_left"] <= 125


def test_progress_rate_of_a_finished_send_is_frozen_at_its_end(
        editor_client, make_issue, make_subscriber, session):
    # Six messages over 10 s, five minutes ago: 36/min, not "6/min" and not decaying.
    issue = make_issue(items=ITEMS, status=IssueStatus.sent)
    # One clock for both: the start and the rows are exactly 10 s apart.
    t0 = _sent_rows(session, issue, make_subscriber, [300 + i * 2 for i in range(6)],
                    pending=0)
    _started(session, issue, 310, now=t0)
    data = editor_client.get(f"/editor/issues/{issue.id}/progress.json").json()
    assert data["rate"] == "36.0/min"
    assert data["seconds_left"] is None and data["done"]


def test_progress_counts_rows_due_later_and_waits_for_the_last_of_them(
        editor_client, make_issue, make_subscriber, session):
    # 20 sent in 10 s (2/s), and 4 pending that a relay's 451 put off by 30 and 90 s:
    # not "2 s left", but at least the 90 s until the last may be tried.
    issue = make_issue(items=ITEMS, status=IssueStatus.sending)
    now = _sent_rows(session, issue, make_subscriber, [i * 0.5 for i in range(20)],
                     pending=0)
    _started(session, issue, 10, now=now)
    for delay in (30, 30, 60, 90):
        session.add(Delivery(issue_id=issue.id, subscriber_id=make_subscriber().id,
                             status="pending", attempts=1,
                             next_attempt_at=utcnow() + timedelta(seconds=delay)))
    session.commit()
    data = editor_client.get(f"/editor/issues/{issue.id}/progress.json").json()
    assert data["pending"] == 4 and data["waiting"] == 4
    assert 80 <= data["seconds_left"] <= 90
    assert re.fullmatch(r"4, next in (2\d|30) s", data["waiting_text"]), data["waiting_text"]
    page = editor_client.get(f"/editor/issues/{issue.id}/send").text
    assert "Due later" in page and 'data-key="waiting_text">4, next in' in page


def test_progress_of_rows_due_now_shows_nothing_due_later(
        editor_client, make_issue, make_subscriber, session):
    issue = make_issue(items=ITEMS, status=IssueStatus.sending)
    now = _sent_rows(session, issue, make_subscriber, [1.0, 2.0], pending=3)
    _started(session, issue, 10, now=now)
    data = editor_client.get(f"/editor/issues/{issue.id}/progress.json").json()
    assert (data["waiting"], data["waiting_text"]) == (0, "—")


# --- dashboard and charts -------------------------------------------------------------


def test_column_chart_draws_one_bar_per_value_with_escaped_labels():
    svg = charts.column_chart(title="T <x>", labels=["a<b", "c"],
                              series={"One": [1, 2], "Two": [3, 0]})
    assert svg.startswith("<svg") and svg.count('class="bar"') == 4
    assert "a&lt;b" in svg and "<x>" not in svg


def test_bar_heights_are_proportional():
    svg = charts.bar_chart(title="T", labels=["small", "big"], values=[5, 10])
    widths = [float(w) for w in re.findall(r'class="bar" x="\d+" y="[\d.]+" width="([\d.]+)"', svg)]
    assert widths[1] == pytest.approx(2 * widths[0])


def test_dashboard_renders_the_three_charts(editor_client, make_subscriber, make_issue, session):
    for i in range(3):
        make_subscriber(email=f"d{i}@example.org", topics=["fintech"])
    issue = make_issue(items=ITEMS, status=IssueStatus.sent)
    sub = make_subscriber()
    session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id, status="sent"))
    session.add(Event(kind="unsubscribed", subscriber_id=sub.id))
    session.commit()
    page = editor_client.get("/editor").text
    for chart_id in ("chart-growth", "chart-topics", "chart-delivery"):
        section = re.search(rf'id="{chart_id}".*?</section>', page, re.S).group(0)
        assert "<svg" in section and 'class="bar"' in section, chart_id
    topics = re.search(r'id="chart-topics".*?</section>', page, re.S).group(0)
    assert re.search(r"<title>[^<]*(Fintech|Payments)[^<]*: 3</title>", topics)
    delivery = re.search(r'id="chart-delivery".*?</section>', page, re.S).group(0)
    assert "<title>Sent, #" in delivery and ": 1</title>" in delivery


def test_delivery_chart_keeps_cancelled_apart_and_colours_results_sensibly(
        editor_client, make_subscriber, make_issue, session):
    issue = make_issue(items=ITEMS, status=IssueStatus.cancelled)
    for status, n in (("sent", 3), ("failed", 1), ("skipped", 1), ("cancelled", 2),
                      ("pending", 1)):
        for _ in range(n):
            session.add(Delivery(issue_id=issue.id, subscriber_id=make_subscriber().id,
                                 status=status))
    session.commit()
    page = editor_client.get("/editor").text
    delivery = re.search(r'id="chart-delivery".*?</section>', page, re.S).group(0)
    fills = dict(re.findall(r'fill="(#[0-9a-f]{6})"><title>(\w+), #', delivery))
    colour = {name: fill for fill, name in fills.items()}
    assert re.search(r"<title>Skipped, #[^<]*: 1</title>", delivery)
    assert re.search(r"<title>Cancelled, #[^<]*: 2</title>", delivery)
    assert colour["Sent"] == "#0e9f6e" and colour["Failed"] == "#e02424"
    assert colour["Skipped"] == "#e3a008" and colour["Pending"] != colour["Failed"]
    # The legend names every series, in the same colour as its bars.
    for name in ("Sent", "Failed", "Skipped", "Cancelled", "Pending"):
        assert re.search(rf'fill="{colour[name]}"/><text[^>]*>{name}</text>', delivery), name
