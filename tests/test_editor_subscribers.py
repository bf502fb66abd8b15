"""The console's subscribers screen: find, filter, page, export, one person's page,
actions, and CSV imports with a preview, progress and an error report."""

from __future__ import annotations

import csv
import io
import time
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from newsletter.audience.search import Filters, find
from newsletter.models import Delivery, Event, Subscriber, Suppression
from tests.fixtures.editor import editor_post


def _emails(html: str) -> list[str]:
    import re

    return re.findall(r'href="/editor/subscribers/\d+">([^<]+)</a>', html)


def test_list_finds_by_partial_address_and_name(editor_client: TestClient,
                                               make_subscriber: Any) -> None:
    make_subscriber(email="ana@example.org", name="Ana Lima")
    make_subscriber(email="bo@example.net", name="Bo Berg")
    assert _emails(editor_client.get("/editor/subscribers?q=ANA@").text) == ["ana@example.org"]
    assert _emails(editor_client.get("/editor/subscribers?q=berg").text) == ["bo@example.net"]


def test_filters_by_status_topic_and_source(editor_client: TestClient, make_subscriber: Any,
                                            session: Session) -> None:
    make_subscriber(email="log@example.org", topics=["logistics"])
    make_subscriber(email="pend@example.org", confirmed=False)
    imported = make_subscriber(email="imp@example.org")
    imported.source = "import"
    session.add(imported)
    session.commit()
    assert _emails(editor_client.get("/editor/subscribers?topic=logistics").text) == [
        "log@example.org"]
    assert _emails(editor_client.get("/editor/subscribers?status=pending").text) == [
        "pend@example.org"]
    assert _emails(editor_client.get("/editor/subscribers?source=import").text) == [
        "imp@example.org"]


def test_filters_by_sign_up_date(editor_client: TestClient, make_subscriber: Any,
                                 session: Session) -> None:
    from datetime import UTC, datetime

    old = make_subscriber(email="old@example.org")
    old.created_at = datetime(2025, 1, 10, 23, 30, tzinfo=UTC)
    session.add(old)
    session.commit()
    make_subscriber(email="new@example.org")
    assert _emails(editor_client.get("/editor/subscribers?since=2026-01-01").text) == [
        "new@example.org"]
    assert _emails(editor_client.get(
        "/editor/subscribers?since=2025-01-10&until=2025-01-10").text) == ["old@example.org"]


def test_a_bad_date_filter_is_a_message_not_an_error(editor_client: TestClient) -> None:
    page = editor_client.get("/editor/subscribers?since=yesterday")
    assert page.status_code == 200
    assert "must look like 2026-11-23" in page.text


def test_keyset_pages_cover_everyone_once(session: Session, make_subscriber: Any,
                                          app_settings: Any) -> None:
    for n in range(7):
        make_subscriber(email=f"p{n}@example.org")
    seen: list[str] = []
    before = None
    while True:
        page = find(session=session, filters=Filters(), before=before, page_size=3)
        seen += [r.subscriber.email for r in page.rows]
        if page.next_before is None:
            break
        before = page.next_before
    assert sorted(seen) == sorted(f"p{n}@example.org" for n in range(7))
    assert len(seen) == 7


def test_export_is_the_current_filter_and_reimportable(editor_client: TestClient,
                                                       make_subscriber: Any) -> None:
    make_subscriber(email="log@example.org", name="=HYPERLINK()", topics=["logistics"])
    make_subscriber(email="other@example.org")
    response = editor_client.get("/editor/subscribers/export.csv?topic=logistics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["email"] for r in rows] == ["log@example.org"]
    assert rows[0]["topics"] == "logistics"
    assert rows[0]["name"] == "'=HYPERLINK()"  # no formula runs in a spreadsheet


def test_subscriber_page_shows_deliveries_with_message_id_and_events(
        editor_client: TestClient, make_subscriber: Any, make_issue: Any,
        session: Session) -> None:
    sub = make_subscriber(email="ana@example.org", topics=["logistics"])
    issue = make_issue(title="Ports week", items=["A"], status="sent")
    session.add(Delivery(issue_id=issue.id, subscriber_id=sub.id, status="sent",
                         message_id="<abc.123@roundup.example>"))
    session.commit()
    page = editor_client.get(f"/editor/subscribers/{sub.id}")
    assert page.status_code == 200
    assert "&lt;abc.123@roundup.example&gt;" in page.text
    assert "Ports week" in page.text
    assert "signed up" in page.text and "confirmed" in page.text


def test_unknown_subscriber_is_404(editor_client: TestClient) -> None:
    assert editor_client.get("/editor/subscribers/999999").status_code == 404


def test_suppress_then_unsuppress(editor_client: TestClient, make_subscriber: Any,
                                  session: Session) -> None:
    sub = make_subscriber(email="ana@example.org")
    url = f"/editor/subscribers/{sub.id}"
    assert editor_post(editor_client, url + "/suppress", {"reason": "asked by phone"},
                       page=url).status_code == 303
    session.expire_all()
    row = session.get(Suppression, "ana@example.org")
    assert row is not None and "asked by phone" in row.reason
    assert "suppressed" in editor_client.get(url).text
    editor_post(editor_client, url + "/unsuppress", page=url)
    session.expire_all()
    assert session.get(Suppression, "ana@example.org") is None
    kinds = session.exec(select(Event.kind).where(Event.subscriber_id == sub.id)).all()
    assert "suppressed" in kinds and "unsuppressed" in kinds


def test_confirm_and_unsubscribe(editor_client: TestClient, make_subscriber: Any,
                                 session: Session) -> None:
    sub = make_subscriber(email="ana@example.org", confirmed=False)
    url = f"/editor/subscribers/{sub.id}"
    editor_post(editor_client, url + "/confirm", page=url)
    session.expire_all()
    assert session.get(Subscriber, sub.id).status == "confirmed"
    editor_post(editor_client, url + "/unsubscribe", page=url)
    session.expire_all()
    assert session.get(Subscriber, sub.id).status == "unsubscribed"


def test_delete_erases_personal_data(editor_client: TestClient, make_subscriber: Any,
                                     session: Session) -> None:
    sub = make_subscriber(email="ana@example.org", name="Ana")
    url = f"/editor/subscribers/{sub.id}"
    assert editor_post(editor_client, url + "/delete", page=url).status_code == 303
    session.expire_all()
    erased = session.get(Subscriber, sub.id)
    assert erased.email.endswith("@erased.invalid") and erased.name == ""
    assert "ana@example.org" not in editor_client.get("/editor/subscribers").text


def test_edit_topics(editor_client: TestClient, make_subscriber: Any) -> None:
    sub = make_subscriber(email="ana@example.org", topics=["logistics"])
    url = f"/editor/subscribers/{sub.id}"
    editor_post(editor_client, url + "/topics", {"topics": ["cloud-ai", "europe"]}, page=url)
    page = editor_client.get("/editor/subscribers?topic=europe")
    assert _emails(page.text) == ["ana@example.org"]


def test_add_reshows_the_form_with_the_message(editor_client: TestClient,
                                               make_subscriber: Any) -> None:
    make_subscriber(email="ana@example.org")
    response = editor_post(editor_client, "/editor/subscribers/new",
                           {"email": "ana@example.org", "name": "Ana again"})
    assert response.status_code == 400
    assert "already subscribed" in response.text and 'value="Ana again"' in response.text
    ok = editor_post(editor_client, "/editor/subscribers/new",
                     {"email": "new@example.org", "topics": ["logistics"], "confirmed": "1"})
    assert ok.status_code == 303
    assert "new@example.org" in editor_client.get(ok.headers["location"]).text


def _wait_for_import(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        data = client.get(f"/editor/subscribers/import/{job_id}.json").json()
        if data["done"]:
            return data
        time.sleep(0.1)
    raise AssertionError("the import did not finish")


CSV_WITH_BAD_ROWS = (
    "email,name,topics\n"
    "ok1@example.org,One,logistics\n"
    "not-an-address,Bad,\n"
    "ok2@example.org,Two,\n"
    "ok3@example.org,Three,no-such-topic\n"
)


def test_import_previews_then_imports_and_reports_bad_rows(editor_client: TestClient,
                                                           session: Session) -> None:
    import re

    from tests.fixtures.web import csrf_token

    page = editor_client.get("/editor/subscribers/import")
    preview = editor_client.post("/editor/subscribers/import", data={
        "csrf_token": csrf_token(page.text)},
        files={"file": ("people.csv", CSV_WITH_BAD_ROWS.encode(), "text/csv")})
    assert preview.status_code == 200
    assert "4 rows" in preview.text and "ok1@example.org" in preview.text
    assert session.exec(select(Subscriber)).all() == []  # nothing before the editor agrees
    job_id = re.search(r"/subscribers/import/(\d+)/start", preview.text).group(1)
    started = editor_client.post(f"/editor/subscribers/import/{job_id}/start", data={
        "csrf_token": csrf_token(preview.text), "confirmed": "1"}, follow_redirects=False)
    assert started.status_code == 303
    result = _wait_for_import(editor_client, job_id)
    assert (result["added"], result["rejected"], result["status"]) == (2, 2, "done")
    report = list(csv.DictReader(io.StringIO(
        editor_client.get(f"/editor/subscribers/import/{job_id}/errors.csv").text)))
    assert [(r["line"], r["email"]) for r in report] == [("3", "not-an-address"),
                                                          ("5", "ok3@example.org")]
    session.expire_all()
    statuses = {s.email: s.status for s in session.exec(select(Subscriber)).all()}
    assert statuses == {"ok1@example.org": "confirmed", "ok2@example.org": "confirmed"}


def test_import_starts_once_on_a_double_click(editor_client: TestClient,
                                              session: Session) -> None:
    import re

    from tests.fixtures.web import csrf_token

    page = editor_client.get("/editor/subscribers/import")
    preview = editor_client.post("/editor/subscribers/import", data={
        "csrf_token": csrf_token(page.text)},
        files={"file": ("p.csv", b"email\nx@example.org\n", "text/csv")})
    job_id = re.search(r"/subscribers/import/(\d+)/start", preview.text).group(1)
    for _ in range(2):
        editor_client.post(f"/editor/subscribers/import/{job_id}/start",
                           data={"csrf_token": csrf_token(preview.text)})
    result = _wait_for_import(editor_client, job_id)
    assert (result["added"], result["rejected"]) == (1, 0)


def test_import_without_email_column_says_so(editor_client: TestClient) -> None:
    from tests.fixtures.web import csrf_token

    page = editor_client.get("/editor/subscribers/import")
    response = editor_client.post("/editor/subscribers/import", data={
        "csrf_token": csrf_token(page.text)},
        files={"file": ("people.csv", b"mail,name\na@example.org,A\n", "text/csv")})
    assert response.status_code == 400
    assert "people.csv:1: the header row must have an &#39;email&#39; column" in response.text


def test_subscribers_pages_need_login(anon_client: TestClient) -> None:
    response = anon_client.get("/editor/subscribers", follow_redirects=False)
    assert response.status_code == 303
    assert anon_client.get("/editor/subscribers/export.csv",
                           follow_redirects=False).status_code == 303
