"""The suppression list: CLI, console page, /api endpoints, and that sends honour it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import select
from typer.testing import CliRunner

from newsletter import delivery
from newsletter.cli import app
from newsletter.delivery.ledger import claim, load_claimed
from newsletter.models import Delivery, Event, Subscriber, Suppression
from newsletter.subscribers import mark_bounced
from tests.fixtures.editor import editor_post

API_KEY = "api-key-for-tests-0123456789"


@pytest.fixture
def runner(app_settings) -> CliRunner:
    return CliRunner()


def emails(session) -> list[str]:
    session.expire_all()
    return sorted(s.email for s in session.exec(select(Suppression)).all())


def status_of(session, sub) -> str:
    session.expire_all()
    return session.get(Subscriber, sub.id).status


# --- CLI ---------------------------------------------------------------------------


def test_cli_add_then_list_json_shows_reason_and_date(runner, session):
    result = runner.invoke(app, ["suppressions", "add", "Gone@Example.org", "x@example.org",
                                 "--reason", "asked by phone"])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(app, ["suppressions", "list", "--json"]).stdout)
    assert listed["total"] == 2
    rows = {r["email"]: r for r in listed["suppressions"]}
    assert set(rows) == {"gone@example.org", "x@example.org"}
    assert rows["gone@example.org"]["reason"] == "asked by phone"
    assert rows["gone@example.org"]["created_at"].startswith("20")
    found = json.loads(runner.invoke(app, ["suppressions", "list", "--json", "-s", "gone"]).stdout)
    assert [r["email"] for r in found["suppressions"]] == ["gone@example.org"]


def test_cli_add_with_one_bad_address_adds_nothing(runner, session):
    result = runner.invoke(app, ["suppressions", "add", "ok@example.org", "not an address"])
    assert result.exit_code == 1
    assert "'not an address'" in result.stderr and "Nothing was added" in result.stderr
    assert emails(session) == []


def test_cli_remove_mails_a_bounced_subscriber_again(runner, session, make_subscriber):
    sub = make_subscriber(email="bouncy@example.org")
    mark_bounced(session=session, email=sub.email, reason="5.1.1 test")
    session.commit()
    assert status_of(session, sub) == "bounced"
    result = runner.invoke(app, ["suppressions", "remove", "bouncy@example.org"])
    assert result.exit_code == 0, result.output
    assert "confirmed again" in result.stdout
    assert status_of(session, sub) == "confirmed"
    assert emails(session) == []
    kinds = [e.kind for e in session.exec(select(Event).where(Event.subscriber_id == sub.id))]
    assert "unsuppressed" in kinds


def test_cli_remove_keeps_an_unsubscribed_subscriber_unsubscribed(
        runner, session, make_subscriber):
    from newsletter.subscribers import unsubscribe

    sub = make_subscriber(email="left@example.org")
    unsubscribe(session=session, subscriber_id=sub.id, source="test")
    session.add(Suppression(email="left@example.org", reason="complaint"))
    session.commit()
    result = runner.invoke(app, ["suppressions", "remove", "left@example.org"])
    assert result.exit_code == 0
    assert "stays unsubscribed" in result.stdout
    assert status_of(session, sub) == "unsubscribed"


def test_cli_remove_of_an_address_not_on_the_list_fails(runner, session):
    result = runner.invoke(app, ["suppressions", "remove", "nobody@example.org"])
    assert result.exit_code == 1
    assert "not on the suppression list: nobody@example.org" in result.stderr


def test_cli_import_reports_bad_lines_as_file_line_and_imports_the_rest(
        runner, session, tmp_path: Path):
    session.add(Suppression(email="old@example.org", reason="earlier"))
    session.commit()
    path = tmp_path / "blocklist.csv"
    path.write_text('email,reason\nA@example.org,bounced at the old ESP\n"not-an-address",x\n'
                    '\nold@example.org,\nb@example.org,"two\nlines"\n,no address\n')
    result = runner.invoke(app, ["suppressions", "import", str(path)])
    assert result.exit_code == 1
    assert "Suppressed 2 address(es); 1 already on the list." in result.stdout
    assert f"{path}:3:" in result.stderr
    assert f"{path}:8: no address" in result.stderr  # the quoted reason spans lines 6-7
    assert emails(session) == ["a@example.org", "b@example.org", "old@example.org"]
    assert session.get(Suppression, "a@example.org").reason == "bounced at the old ESP"
    assert session.get(Suppression, "old@example.org").reason == "earlier"  # first kept


def test_cli_import_plain_list_without_header(runner, session, tmp_path: Path):
    path = tmp_path / "list.txt"
    path.write_text("one@example.org\ntwo@example.org\n")
    result = runner.invoke(app, ["suppressions", "import", str(path), "--json",
                                 "--reason", "legacy list"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"added": 2, "already": 0, "rejected": []}
    assert session.get(Suppression, "two@example.org").reason == "legacy list"


# --- sends honour it ------------------------------------------------------------------


def test_suppressed_subscriber_is_not_planned(session, make_subscriber, make_issue):
    from newsletter.inbound.suppressions import add_suppression

    kept = make_subscriber(email="kept@example.org")
    gone = make_subscriber(email="gone@example.org")
    issue = make_issue(items=["A story"], status="approved")
    add_suppression(session=session, email=gone.email, source="test")
    session.commit()
    assert delivery.plan_send(session=session, issue_id=issue.id) == 1
    session.commit()
    planned = session.exec(select(Delivery.subscriber_id).where(
        Delivery.issue_id == issue.id)).all()
    assert planned == [kept.id]


def test_address_suppressed_after_planning_is_not_eligible_at_send_time(
        session, make_subscriber, make_issue):
    from newsletter.inbound.suppressions import add_suppression

    sub = make_subscriber(email="late@example.org")
    issue = make_issue(items=["A story"], status="approved")
    delivery.plan_send(session=session, issue_id=issue.id)
    session.commit()
    add_suppression(session=session, email=sub.email, source="test")
    session.commit()
    token, _ = claim(session=session, issue_id=issue.id, batch=1)
    rows = load_claimed(session, token)
    assert [(r.email, r.eligible) for r in rows] == [("late@example.org", False)]


# --- /api/suppressions ----------------------------------------------------------------


@pytest.fixture
def api_key(web_settings, monkeypatch):
    monkeypatch.setattr(web_settings, "api_keys", f"old-key-being-rotated-out,{API_KEY}")
    return API_KEY


def bearer(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_api_add_list_remove_with_a_key(client, session, api_key):
    added = client.post("/api/suppressions", json={"email": "Api@Example.org",
                                                   "reason": "asked by email"},
                        headers=bearer())
    assert added.status_code == 201, added.text
    assert added.json() == {"email": "api@example.org", "added": True}
    again = client.post("/api/suppressions", json={"email": "api@example.org"},
                        headers=bearer())
    assert again.status_code == 200 and again.json()["added"] is False
    listed = client.get("/api/suppressions", params={"search": "api@"}, headers=bearer())
    assert listed.status_code == 200
    assert [(r["email"], r["reason"]) for r in listed.json()["suppressions"]] == [
        ("api@example.org", "asked by email")]
    removed = client.delete("/api/suppressions/api@example.org", headers=bearer())
    assert removed.status_code == 200
    assert removed.json() == {"email": "api@example.org", "restored": False,
                              "subscriber_status": None}
    assert client.delete("/api/suppressions/api@example.org",
                         headers=bearer()).status_code == 404
    assert emails(session) == []


def test_api_needs_a_valid_key_for_every_method(client, session, api_key):
    session.add(Suppression(email="kept@example.org", reason="r"))
    session.commit()
    for headers in ({}, bearer("wrong-key-0123456789abcdef"), {"Authorization": API_KEY}):
        assert client.get("/api/suppressions", headers=headers).status_code == 401
        post = client.post("/api/suppressions", json={"email": "new@example.org"},
                           headers=headers)
        assert post.status_code == 401
        assert post.headers["www-authenticate"].startswith("Bearer")
        assert client.delete("/api/suppressions/kept@example.org",
                             headers=headers).status_code == 401
    assert emails(session) == ["kept@example.org"]


def test_api_without_configured_keys_is_503_not_open(client, session, web_settings):
    response = client.post("/api/suppressions", json={"email": "new@example.org"},
                           headers=bearer())
    assert response.status_code == 503
    assert "API_KEYS" in response.json()["detail"]
    assert emails(session) == []


def test_api_bad_address_is_422_with_the_reason(client, session, api_key):
    response = client.post("/api/suppressions", json={"email": "nope"}, headers=bearer())
    assert response.status_code == 422
    assert "valid email address" in response.json()["detail"][0]["msg"]


# --- the console page -----------------------------------------------------------------


def test_console_add_search_and_remove(editor_client, session, make_subscriber):
    sub = make_subscriber(email="reader@example.org")
    response = editor_post(editor_client, "/editor/suppressions",
                           {"email": "Reader@Example.org", "reason": "<b>asked</b>"},
                           page="/editor/suppressions", follow_redirects=True)
    assert response.status_code == 200
    assert "reader@example.org is suppressed" in response.text
    assert "&lt;b&gt;asked&lt;/b&gt;" in response.text  # escaped
    assert session.get(Suppression, "reader@example.org").reason == "<b>asked</b>"
    for i in range(3):
        session.add(Suppression(email=f"other{i}@example.org", reason="import"))
    session.commit()
    found = editor_client.get("/editor/suppressions", params={"q": "READER"})
    assert "reader@example.org" in found.text and "other0@" not in found.text
    removed = editor_post(editor_client, "/editor/suppressions/remove",
                          {"email": "reader@example.org"}, page="/editor/suppressions",
                          follow_redirects=True)
    assert "reader@example.org is off the list" in removed.text
    assert session.get(Suppression, "reader@example.org") is None
    assert status_of(session, sub) == "confirmed"


def test_console_bad_address_reshows_the_form_with_the_message(editor_client, session):
    response = editor_post(editor_client, "/editor/suppressions",
                           {"email": "not an address", "reason": "typed"},
                           page="/editor/suppressions")
    assert response.status_code == 400
    assert "valid email address" in response.text
    assert 'value="not an address"' in response.text and 'value="typed"' in response.text
    assert emails(session) == []


def test_console_paginates_fifty_per_page(editor_client, session):
    for i in range(120):
        session.add(Suppression(email=f"a{i:03}@example.org", reason="bulk"))
    session.commit()
    first = editor_client.get("/editor/suppressions")
    assert "1–50 of 120" in first.text and 'rel="next"' in first.text
    last = editor_client.get("/editor/suppressions", params={"page": "3"})
    assert "101–120 of 120" in last.text and 'rel="next"' not in last.text
    assert last.text.count('action="/editor/suppressions/remove"') == 20


def test_console_remove_without_csrf_is_refused(editor_client, session):
    session.add(Suppression(email="stay@example.org", reason="r"))
    session.commit()
    response = editor_client.post("/editor/suppressions/remove",
                                  data={"email": "stay@example.org"})
    assert response.status_code == 403
    assert emails(session) == ["stay@example.org"]


def test_console_page_needs_a_login(anon_client, session):
    response = anon_client.get("/editor/suppressions", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/editor/login")


def test_cli_list_all_pages_through_everything(runner, session):
    for i in range(205):
        session.add(Suppression(email=f"s{i:03}@example.org", reason="bulk"))
    session.commit()
    page = json.loads(runner.invoke(app, ["suppressions", "list", "--json"]).stdout)
    assert page["total"] == 205 and len(page["suppressions"]) == 100
    every = json.loads(runner.invoke(app, ["suppressions", "list", "--json", "--all"]).stdout)
    assert len({r["email"] for r in every["suppressions"]}) == 205


def test_console_shows_whose_address_it_is(editor_client, session, make_subscriber):
    make_subscriber(email="sub@example.org")
    session.add(Suppression(email="sub@example.org", reason="r"))
    session.add(Suppression(email="stranger@example.org", reason="r"))
    session.commit()
    text = editor_client.get("/editor/suppressions").text
    assert 'class="badge status-confirmed">confirmed' in text
    assert "not a subscriber" in text
