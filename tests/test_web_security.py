"""Security properties of every page: the secret check, headers, body cap, methods."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlmodel import select

from newsletter import tokens
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.settings import DEFAULT_SECRET
from newsletter.web.security import InsecureSecretError
from tests.fixtures.web import csrf_token, path_of, snapshot, submit


def test_create_app_refuses_the_default_secret_outside_development(app_settings, monkeypatch):
    from newsletter.web.app import create_app

    monkeypatch.setattr(app_settings, "secret_key", DEFAULT_SECRET)
    monkeypatch.setattr(app_settings, "environment", "test")
    with pytest.raises(InsecureSecretError, match="SECRET_KEY"):
        create_app()


def test_create_app_refuses_the_old_published_secret_in_development_too(app_settings,
                                                                       monkeypatch):
    from newsletter.web.app import create_app

    monkeypatch.setattr(app_settings, "secret_key", DEFAULT_SECRET)
    monkeypatch.setattr(app_settings, "environment", "development")
    with pytest.raises(InsecureSecretError, match="SECRET_KEY"):
        create_app()


def test_pages_send_security_headers(client):
    headers = client.get("/subscribe").headers
    csp = headers["content-security-policy"]
    assert "script-src 'self' 'nonce-" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"


def test_the_only_inline_script_carries_the_csp_nonce(client):
    page = client.get("/subscribe")
    nonce = page.headers["content-security-policy"].split("'nonce-", 1)[1].split("'", 1)[0]
    assert page.text.count("<script") == page.text.count(f'<script nonce="{nonce}">') == 1


def test_pages_reference_no_cdn(client):
    for path in ("/subscribe", "/subscribe/embed", "/subscribe/embed/form"):
        text = client.get(path).text
        assert "cdn" not in text.lower() and "https://" not in text.replace(
            "http://testserver", "")


def test_huge_body_is_413(client):
    response = client.post("/subscribe", content=b"email=" + b"a" * 70_000,
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413


def test_huge_chunked_body_is_413(client):
    def chunks():
        for _ in range(20):
            yield b"a" * 8192

    response = client.post("/api/subscribers", content=chunks(),
                           headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_wrong_method_is_405(client):
    assert client.delete("/subscribe").status_code == 405
    assert client.put("/api/subscribers", json={}).status_code == 405


def test_file_upload_is_refused_with_400(client):
    response = client.post("/subscribe", files={"email": ("a.txt", b"x")})
    assert response.status_code == 400


def test_healthz_checks_the_database(client):
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}


def test_healthz_is_503_when_the_database_is_gone(client, monkeypatch, app_settings):
    from newsletter import db
    from newsletter.cli.local.services import free_port

    # A PostgreSQL URL on a port nobody listens on: connecting fails at once.
    monkeypatch.setattr(app_settings, "database_url",
                        f"postgresql://nobody@127.0.0.1:{free_port()}/gone")
    db.reset_engine()
    response = client.get("/healthz")
    assert response.status_code == 503


def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404 and "<h1>Page not found</h1>" in response.text


def test_a_short_secret_is_refused_outside_development(app_settings, monkeypatch):
    from newsletter.web.app import create_app

    monkeypatch.setattr(app_settings, "secret_key", "hunter2")
    monkeypatch.setattr(app_settings, "environment", "production")
    with pytest.raises(InsecureSecretError, match="at least"):
        create_app()


def test_the_served_app_refuses_the_default_secret(app_settings, monkeypatch):
    """What uvicorn loads (`newsletter.web.app:app`) goes through the same check."""
    import newsletter.web.app as web_app_module

    monkeypatch.setattr(app_settings, "secret_key", DEFAULT_SECRET)
    monkeypatch.setattr(app_settings, "environment", "test")
    monkeypatch.setattr(web_app_module, "_app", None)
    with pytest.raises(InsecureSecretError):
        web_app_module.app  # noqa: B018


def test_newsletter_web_refuses_the_default_secret(app_settings, monkeypatch):
    from typer.testing import CliRunner

    from newsletter.cli import app

    monkeypatch.setattr(app_settings, "secret_key", DEFAULT_SECRET)
    monkeypatch.setattr(app_settings, "environment", "test")
    result = CliRunner().invoke(app, ["web", "--port", "1"])
    assert result.exit_code != 0
    assert "SECRET_KEY" in result.output


# --- CSRF, GET and tokens on every form -------------------------------------------------


def _forms(sub_id: int) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """Every form: the page that shows it, where it posts, and a valid body."""
    manage = path_of(tokens.manage_url(sub_id))
    unsub = path_of(tokens.unsubscribe_url(sub_id))
    confirm = path_of(tokens.confirm_url(sub_id))
    signup = {"email": "new@example.org", "topics": ["travel"], "consent": "1"}
    return {
        "subscribe": ("/subscribe", "/subscribe", signup),
        "embed": ("/subscribe/embed/form", "/subscribe/embed/form", signup),
        "confirm": (confirm, confirm, {}),
        "manage": (manage, manage, {"topics": ["health"], "name": "Changed", "paused": "1"}),
        "manage-unsubscribe": (manage, manage + "/unsubscribe", {}),
        "export": (manage, manage + "/export", {}),
        "delete": (manage, manage + "/delete", {"sure": "1"}),
        "unsubscribe": (unsub, unsub, {}),
        "resubscribe": (unsub, unsub + "/resubscribe", {}),
    }


FORMS = list(_forms(1))


@pytest.fixture
def target(session, make_subscriber):
    """A subscriber each form can act on: pending for confirm, unsubscribed for
    resubscribe, confirmed otherwise."""
    from newsletter.subscribers import unsubscribe

    def make(form: str):
        sub = make_subscriber(email="ana@example.org", topics=["travel"],
                              confirmed=form != "confirm")
        if form == "resubscribe":
            unsubscribe(session=session, subscriber_id=sub.id, source="test")
            session.commit()
        return sub

    return make


@pytest.mark.parametrize("form", FORMS)
def test_every_form_needs_its_csrf_token(client, session, target, form):
    sub = target(form)
    page, action, body = _forms(sub.id)[form]
    assert client.get(page).status_code == 200  # the browser has a CSRF cookie
    before = snapshot(session)
    response = client.post(action, data=body)
    assert response.status_code == 400
    assert "<h1>" in response.text and "json" not in response.headers["content-type"]
    assert snapshot(session) == before


@pytest.mark.parametrize("form", FORMS)
def test_every_form_works_with_its_csrf_token(client, session, target, form):
    """The counterpart: the same request with the token does act, so the test above
    fails for the right reason."""
    sub = target(form)
    page, action, body = _forms(sub.id)[form]
    before = snapshot(session)
    response = submit(client, page, body, action=action)
    assert response.status_code == 200, response.text[:300]
    if form != "export":  # a download changes nothing
        assert snapshot(session) != before


@pytest.mark.parametrize("form", FORMS)
def test_a_token_from_another_browser_is_refused(web_app, session, target, form):
    from fastapi.testclient import TestClient

    sub = target(form)
    page, action, body = _forms(sub.id)[form]
    stolen = csrf_token(TestClient(web_app).get(page).text)
    victim = TestClient(web_app)
    victim.get(page)
    before = snapshot(session)
    assert victim.post(action, data={**body, "csrf_token": stolen}).status_code == 400
    assert snapshot(session) == before


TOKEN_PAGES = ["/confirm/{confirm}", "/manage/{manage}", "/unsubscribe/{unsubscribe}"]


@pytest.mark.parametrize("confirmed", [False, True])
def test_no_get_or_head_changes_anything(client, session, make_subscriber, confirmed):
    sub = make_subscriber(topics=["travel"], confirmed=confirmed)
    links = {p: tokens.make_token(p, sub.id)
             for p in (tokens.CONFIRM, tokens.MANAGE, tokens.UNSUBSCRIBE)}
    before = snapshot(session)
    for template in TOKEN_PAGES:
        path = template.format(**links)
        for suffix in ("", "/unsubscribe", "/export", "/delete", "/resubscribe"):
            for method in ("GET", "HEAD"):
                assert client.request(method, path + suffix).status_code < 500
    assert snapshot(session) == before


@pytest.mark.parametrize("path", ["/healthz", "/subscribe", "/subscribe/embed",
                                  "/subscribe/embed/form", "/"])
def test_uptime_monitors_can_probe_public_pages_with_head(client, session, path):
    get = client.get(path, follow_redirects=False)
    before = snapshot(session)
    head = client.head(path, follow_redirects=False)
    assert head.status_code == get.status_code and head.status_code in (200, 303)
    assert head.content == b""
    assert head.headers.get("content-type") == get.headers.get("content-type")
    assert snapshot(session) == before


def _tamper(token: str) -> str:
    # Change a character inside the signature. Not the last one: its low bits are
    # base64 padding, so some changes there decode to the very same signature.
    i = len(token) - 6
    return token[:i] + ("A" if token[i] != "A" else "B") + token[i + 1:]


@pytest.mark.parametrize("form", [f for f in FORMS if f not in ("subscribe", "embed")])
def test_a_tampered_token_changes_nothing(client, session, target, form):
    sub = target(form)
    page, action, body = _forms(sub.id)[form]
    token = page.rsplit("/", 1)[1]
    bad_action = action.replace(token, _tamper(token))
    csrf = csrf_token(client.get("/subscribe").text)
    before = snapshot(session)
    response = client.post(bad_action, data={**body, "csrf_token": csrf})
    assert response.status_code in (200, 404)
    assert "ana@example.org" not in response.text
    assert snapshot(session) == before


@pytest.mark.parametrize("one_click", [True, False])
def test_unsubscribing_answers_alike_for_valid_and_unknown_and_refuses_bad_tokens(
        web_app, session, make_subscriber, one_click):
    """A genuine token answers the same whether or not its subscriber is still there (only
    we can sign one, so that says nothing to a stranger); a damaged or forged one is
    refused and says so, rather than telling the reader they left when they didn't."""
    from fastapi.testclient import TestClient

    sub = make_subscriber(email="ana@example.org")
    valid = tokens.make_token(tokens.UNSUBSCRIBE, sub.id)
    candidates = {"valid": valid, "tampered": _tamper(valid),
                  "unknown": tokens.make_token(tokens.UNSUBSCRIBE, 987_654),
                  "other purpose": tokens.make_token(tokens.MANAGE, sub.id)}
    answers = {}
    for name, token in candidates.items():
        browser = TestClient(web_app)
        if one_click:
            response = browser.post(f"/unsubscribe/{token}",
                                    data={"List-Unsubscribe": "One-Click"})
        elif name in ("valid", "unknown"):
            response = submit(browser, f"/unsubscribe/{token}", {})
        else:
            response = browser.get(f"/unsubscribe/{token}")
        body = re.sub(r'name="csrf_token" value="[^"]+"', "", response.text)
        answers[name] = (response.status_code, body.replace(token, "TOKEN"))
    assert answers["valid"] == answers["unknown"] and answers["valid"][0] == 200
    assert answers["tampered"] == answers["other purpose"] and answers["tampered"][0] == 404
    session.expire_all()
    assert session.get(Subscriber, sub.id).status == SubscriberStatus.unsubscribed


# --- bad input to the API ----------------------------------------------------------------


@pytest.mark.parametrize("body", [
    {"email": "a" * 400 + "@example.org"},
    {"email": "a" * 250 + "@example.org"},
    {"email": "ana@example.org\r\nBcc: x@evil.test"},
    {"email": "ana@example.org", "name": "<script>alert(1)</script>"},
    {"email": "ana@example.org", "name": "Ana\r\nBcc: x@evil.test"},
    {"email": "ana@example.org", "topics": ["fintech", "no-such-topic"]},
    {"email": "ana@example.org", "topics": "fintech"},
    {"email": "ana@example.org", "timezone": "Mars/Olympus"},
    {"email": ["ana@example.org"]},
    {},
])
def test_api_refuses_bad_input_with_422_and_stores_nothing(client, session, body):
    response = client.post("/api/subscribers", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"]
    assert session.exec(select(Subscriber)).all() == []


@pytest.mark.parametrize("content, content_type", [
    (b"{not json", "application/json"),
    (b"email=ana@example.org", "application/x-www-form-urlencoded"),
    (b"\xff\xfe", "application/json"),
    (b"[1, 2]", "application/json"),
])
def test_api_refuses_malformed_bodies(client, session, content, content_type):
    response = client.post("/api/subscribers", content=content,
                           headers={"content-type": content_type})
    assert response.status_code == 422
    assert session.exec(select(Subscriber)).all() == []


def test_api_refuses_a_huge_json_body_with_413(client, session):
    response = client.post("/api/subscribers",
                           json={"email": "ana@example.org", "name": "x" * 100_000})
    assert response.status_code == 413
    assert session.exec(select(Subscriber)).all() == []


@pytest.mark.parametrize("method, path", [
    ("GET", "/api/subscribers"), ("DELETE", "/api/topics"), ("POST", "/healthz"),
    ("PUT", "/subscribe/embed/form"), ("PATCH", "/subscribe"), ("POST", "/subscribe/embed"),
])
def test_wrong_methods_are_405_everywhere(client, method, path):
    assert client.request(method, path).status_code == 405


# --- issue 11: embed over https, console caching, disconnects, stated limits -------------


@pytest.fixture
def https_client(web_app, web_settings, monkeypatch):
    from fastapi.testclient import TestClient

    monkeypatch.setattr(web_settings, "base_url", "https://testserver")
    with TestClient(web_app, base_url="https://testserver") as c:
        yield c


def test_the_embed_form_works_over_https_with_a_partitioned_cookie(https_client, session):
    page = https_client.get("/subscribe/embed/form")
    assert page.status_code == 200
    cookie = page.headers["set-cookie"]
    assert cookie.startswith("roundup_csrf=")
    for attribute in ("Partitioned", "Secure", "SameSite=none", "HttpOnly"):
        assert attribute.lower() in cookie.lower(), (attribute, cookie)
    assert cookie.lower().count("partitioned") == 1
    response = https_client.post("/subscribe/embed/form", data={
        "email": "embed@example.org", "consent": "1", "csrf_token": csrf_token(page.text)})
    assert response.status_code == 200 and "Check your inbox" in response.text
    assert session.exec(select(Subscriber)).one().email == "embed@example.org"


def test_other_pages_over_https_set_an_unpartitioned_lax_cookie(https_client):
    cookie = https_client.get("/subscribe").headers["set-cookie"]
    assert "partitioned" not in cookie.lower() and "samesite=lax" in cookie.lower()


def test_every_console_page_is_no_store(anon_client, editor_client, make_issue):
    issue = make_issue(items=["A"])
    assert anon_client.get("/editor/login").headers["cache-control"] == "no-store"
    for path in ("/editor", "/editor/issues", f"/editor/issues/{issue.id}",
                 "/editor/issues/new", "/editor/no-such-page"):
        response = editor_client.get(path)
        assert response.headers.get("cache-control") == "no-store", path
    assert "cache-control" not in anon_client.get("/subscribe").headers


def test_a_client_leaving_mid_body_is_a_quiet_400(web_app, caplog):
    """No traceback, no 500: the client is gone and it is not our error."""
    import logging

    from tests.test_editor_hardening import run_coroutine

    messages = iter([{"type": "http.request", "body": b"email=ana%40exa", "more_body": True},
                     {"type": "http.disconnect"}])
    sent: list[dict] = []

    async def receive():
        return next(messages, {"type": "http.disconnect"})

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/subscribe", "raw_path": b"/subscribe",
             "query_string": b"", "root_path": "", "client": ("198.51.100.1", 1234),
             "server": ("testserver", 80),
             "headers": [(b"host", b"testserver"), (b"content-length", b"200"),
                         (b"content-type", b"application/x-www-form-urlencoded")]}
    with caplog.at_level(logging.INFO):
        run_coroutine(web_app(scope, receive, send))
    assert sent[0]["type"] == "http.response.start" and sent[0]["status"] == 400
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize("path, limit", [("/subscribe", "64 KB"),
                                         ("/editor/issues/new", "2.1 MB")])
def test_the_413_message_states_the_real_limit(client, path, limit):
    response = client.post(path, content=b"x" * (3 * 1024 * 1024),
                           headers={"content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 413
    assert f"at most {limit}" in response.text
