"""The console's login limit (normalised, shared through Redis), CSRF tokens bound to
the editor's session, and sessions that end on the server at logout."""

from __future__ import annotations

import time

import redis
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlmodel import select

from newsletter import db
from newsletter.editors import Editor
from newsletter.web.editor.routing import SESSION_COOKIE
from newsletter.web.security import CSRF_COOKIE
from tests.fixtures.editor import create_editor, editor_post, login
from tests.fixtures.web import csrf_token


def _clear_of_the_minute_boundary() -> None:
    """The limit counts per calendar minute: don't let a test straddle two."""
    if time.time() % 60 > 55:
        time.sleep(60.5 - time.time() % 60)


# --- the login limit ------------------------------------------------------------------


def test_spellings_of_one_address_share_one_login_budget(anon_client, editor_account):
    _clear_of_the_minute_boundary()
    # All of these log in to editor@roundup.example (the domain is IDNA-normalised).
    spellings = ["editor@ROUNDUP.example", "editor@ｒｏｕｎｄｕｐ.example",
                 "Editor@Roundup.Example", "editor@ｒoundup.example", "EDITOR@roundup.EXAMPLE"]
    for email in spellings:
        assert login(anon_client, email, "wrong password").status_code == 401
    response = login(anon_client, editor_account.email, editor_account.password)
    assert response.status_code == 429
    assert "Too many login attempts" in response.text


def test_the_login_limit_is_counted_in_redis_across_processes(redis_url, web_app,
                                                              editor_account):
    _clear_of_the_minute_boundary()
    with TestClient(web_app) as client:
        for _ in range(5):
            assert login(client, editor_account.email, "wrong password").status_code == 401
        keys = redis.Redis.from_url(redis_url).keys("roundup:editor-login:email:*")
        assert [k.decode().rsplit(":", 1)[0] for k in keys] == [
            "roundup:editor-login:email:editor@roundup.example"]
        # Another web process starts with an empty memory; Redis still holds the count.
        web_app.state.editor_login_limiter = None
        assert login(client, editor_account.email, editor_account.password).status_code == 429


# --- CSRF bound to the session ----------------------------------------------------------


def test_a_csrf_token_from_another_editors_session_is_refused(web_app, session,
                                                              editor_account, make_issue):
    other = create_editor(session, email="other@roundup.example")
    issue = make_issue(title="Before")
    with TestClient(web_app) as mallory, TestClient(web_app) as victim:
        assert login(mallory, other.email, other.password).status_code == 303
        token = csrf_token(mallory.get("/editor").text)
        # Same browser cookie (e.g. planted or shared), different editor session.
        victim.cookies.set(CSRF_COOKIE, mallory.cookies.get(CSRF_COOKIE), path="/")
        assert login(victim, editor_account.email, editor_account.password).status_code == 303
        response = victim.post(f"/editor/issues/{issue.id}",
                               data={"title": "After", "intro": "", "csrf_token": token},
                               follow_redirects=False)
        assert response.status_code == 403
        # The victim's own token works.
        assert editor_post(victim, f"/editor/issues/{issue.id}",
                           {"title": "After", "intro": ""}).status_code == 303


def test_the_login_pages_token_cannot_post_an_editor_form(anon_client, editor_account,
                                                          make_issue):
    issue = make_issue(title="Before")
    login_token = csrf_token(anon_client.get("/editor/login").text)
    assert login(anon_client, editor_account.email, editor_account.password).status_code == 303
    response = anon_client.post(f"/editor/issues/{issue.id}",
                                data={"title": "After", "intro": "", "csrf_token": login_token},
                                follow_redirects=False)
    assert response.status_code == 403


# --- sessions end on the server ---------------------------------------------------------


def test_a_copied_session_cookie_stops_working_after_logout(web_app, editor_client):
    copied = editor_client.cookies.get(SESSION_COOKIE)
    assert editor_post(editor_client, "/editor/logout").status_code == 303
    with TestClient(web_app) as thief:
        thief.cookies.set(SESSION_COOKIE, copied, path="/editor")
        assert thief.get("/editor", follow_redirects=False).status_code == 303


def test_logging_in_again_after_logout_works(anon_client, editor_account, session):
    assert login(anon_client, editor_account.email, editor_account.password).status_code == 303
    assert editor_post(anon_client, "/editor/logout").status_code == 303
    assert login(anon_client, editor_account.email, editor_account.password).status_code == 303
    assert anon_client.get("/editor", follow_redirects=False).status_code == 200
    session.expire_all()
    assert session.exec(select(Editor.session_generation)).one() == 1


def test_the_session_generation_column_comes_from_a_migration(session):
    columns = {c["name"]: c for c in inspect(db.get_engine()).get_columns("editor")}
    assert "session_generation" in columns
    assert not columns["session_generation"]["nullable"]
