"""Editors: accounts, login, the session cookie, CSRF, rate limit, and that anonymous
requests to every /editor route are refused."""

from __future__ import annotations

import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlmodel import select

from newsletter.editors import Editor, EditorError, add_editor, authenticate
from newsletter.web.editor import router
from newsletter.web.editor.routing import SESSION_COOKIE
from tests.fixtures.editor import EditorAccount, editor_post, login


def test_add_editor_stores_an_argon2_hash_not_the_password(session):
    editor = add_editor(session=session, email="Ed@Example.org", password="a long password")
    assert editor.email == "ed@example.org"
    assert editor.password_hash.startswith("$argon2id$")
    assert "a long password" not in editor.password_hash


def test_add_editor_refuses_short_passwords(session):
    with pytest.raises(EditorError, match="at least"):
        add_editor(session=session, email="ed@example.org", password="short")


def test_add_editor_refuses_a_duplicate_email(session):
    add_editor(session=session, email="ed@example.org", password="a long password")
    with pytest.raises(EditorError, match="already"):
        add_editor(session=session, email="ED@example.org", password="another password")


def test_authenticate_accepts_the_right_password_only(session):
    add_editor(session=session, email="ed@example.org", password="a long password")
    assert authenticate(session=session, email="ed@example.org", password="wrong password") is None
    assert authenticate(session=session, email="nobody@example.org",
                        password="a long password") is None
    editor = authenticate(session=session, email="ED@example.org", password="a long password")
    assert editor is not None and editor.last_login_at is not None


def test_login_sets_an_httponly_lax_session_cookie(anon_client: TestClient,
                                                   editor_account: EditorAccount):
    response = login(anon_client, editor_account.email, editor_account.password)
    assert response.status_code == 303
    assert response.headers["location"] == "/editor"
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "samesite=lax" in cookie.lower()
    assert "Path=/editor" in cookie
    # ENVIRONMENT=test: not Secure, so it works over plain http in tests.
    assert "secure" not in cookie.lower().replace("samesite", "")


def test_session_cookie_is_secure_in_production(anon_client, editor_account, monkeypatch):
    from newsletter.settings import settings

    response = login(anon_client, editor_account.email, editor_account.password)
    monkeypatch.setattr(settings, "environment", "production")
    response = login(anon_client, editor_account.email, editor_account.password)
    cookie = next(h for h in response.headers.get_list("set-cookie")
                  if h.startswith(SESSION_COOKIE + "="))
    assert "; secure" in cookie.lower()


def test_wrong_password_shows_the_form_again_with_a_message(anon_client, editor_account):
    response = login(anon_client, editor_account.email, "not the password")
    assert response.status_code == 401
    assert "don&#39;t match" in response.text or "don't match" in response.text
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")
    assert anon_client.get("/editor", follow_redirects=False).status_code == 303


def test_login_without_csrf_token_is_refused(anon_client, editor_account):
    anon_client.get("/editor/login")
    response = anon_client.post("/editor/login", data={
        "email": editor_account.email, "password": editor_account.password})
    assert response.status_code == 403
    assert SESSION_COOKIE not in response.headers.get("set-cookie", "")


def test_login_attempts_are_rate_limited(anon_client, editor_account):
    from tests.test_editor_hardening import _clear_of_the_minute_boundary

    _clear_of_the_minute_boundary()
    for _ in range(5):
        assert login(anon_client, editor_account.email, "wrong password").status_code == 401
    response = login(anon_client, editor_account.email, editor_account.password)
    assert response.status_code == 429
    assert "Too many login attempts" in response.text


def test_successful_logins_do_not_use_up_the_per_account_limit(anon_client, editor_account):
    from tests.test_editor_hardening import _clear_of_the_minute_boundary

    _clear_of_the_minute_boundary()
    for _ in range(6):  # more than the 5 attempts a minute allowed per account
        anon_client.cookies.clear()
        assert login(anon_client, editor_account.email,
                     editor_account.password).status_code == 303
    anon_client.cookies.clear()
    for _ in range(3):  # failures still count, from zero
        assert login(anon_client, editor_account.email, "wrong password").status_code == 401


def test_login_redirects_back_to_the_page_asked_for(anon_client, editor_account):
    first = anon_client.get("/editor/issues", follow_redirects=False)
    assert first.headers["location"] == "/editor/login?next=%2Feditor%2Fissues"
    response = login(anon_client, editor_account.email, editor_account.password,
                     next_url="/editor/issues")
    assert response.headers["location"] == "/editor/issues"


def test_login_never_redirects_off_site(anon_client, editor_account):
    response = login(anon_client, editor_account.email, editor_account.password,
                     next_url="//evil.example/editor")
    assert response.headers["location"] == "/editor"


def test_logout_ends_the_session(editor_client: TestClient):
    assert editor_client.get("/editor").status_code == 200
    response = editor_post(editor_client, "/editor/logout")
    assert response.status_code == 303
    assert editor_client.get("/editor", follow_redirects=False).status_code == 303


def test_forged_session_cookie_is_refused(anon_client, editor_account):
    anon_client.cookies.set(SESSION_COOKIE, '{"id": 1}', path="/editor")
    assert anon_client.get("/editor", follow_redirects=False).status_code == 303


def test_changing_the_password_ends_other_sessions(editor_client, editor_account, session):
    from newsletter.editors import set_password

    set_password(session=session, editor_id=editor_account.id, password="a brand new password")
    session.commit()
    assert editor_client.get("/editor", follow_redirects=False).status_code == 303


def test_post_without_csrf_token_is_refused_when_logged_in(editor_client, make_issue):
    issue = make_issue(title="Before")
    response = editor_client.post(f"/editor/issues/{issue.id}", data={"title": "After"})
    assert response.status_code == 403


def test_cli_adds_an_editor_after_asking_twice_for_the_password(app_settings, session):
    from typer.testing import CliRunner

    app = _cli()

    result = CliRunner().invoke(app, ["editors", "add", "cli@example.org"],
                                input="a long password\na long password\n")
    assert result.exit_code == 0, result.output
    assert session.exec(select(Editor).where(Editor.email == "cli@example.org")).first()


def test_cli_refuses_mismatched_passwords(app_settings, session):
    from typer.testing import CliRunner

    app = _cli()

    result = CliRunner().invoke(app, ["editors", "add", "cli@example.org"],
                                input="a long password\nanother password\n"
                                      "a long password\nanother password\n"
                                      "a long password\nanother password\n")
    assert result.exit_code != 0
    assert session.exec(select(Editor).where(Editor.email == "cli@example.org")).first() is None


def _cli():
    import typer

    from newsletter.cli import editor_cmds

    app = typer.Typer()
    app.command("noop")(lambda: None)  # a second command keeps `editors` a sub-group
    editor_cmds.register(app)
    return app


# --- every route refuses anonymous requests -------------------------------------------------

PUBLIC = {("GET", "/editor/login"), ("POST", "/editor/login"),
          # an invitation or reset link is its own credential (tests/test_editor_team.py)
          ("GET", "/editor/invite/{token}"), ("POST", "/editor/invite/{token}"),
          ("GET", "/editor/reset/{token}"), ("POST", "/editor/reset/{token}")}


def _anonymous_cases() -> list[tuple[str, str]]:
    """Every (method, path) the editor router has, the catch-all for guessed URLs included."""
    cases = []
    for route in router.routes:
        assert isinstance(route, APIRoute)
        for method in sorted(route.methods):
            if (method, route.path) not in PUBLIC:
                cases.append((method, route.path))
    return cases


def test_the_enumeration_covers_every_console_page():
    paths = {p for _m, p in _anonymous_cases()}
    for expected in ("/editor", "/editor/issues", "/editor/issues/{issue_id:int}/preview",
                     "/editor/issues/{issue_id:int}/approve", "/editor/{rest:path}"):
        assert expected in paths, expected


@pytest.mark.parametrize(("method", "path"), _anonymous_cases(),
                         ids=[f"{m} {p}" for m, p in _anonymous_cases()])
def test_anonymous_requests_are_refused(anon_client, make_issue, method, path):
    issue = make_issue(items=["Secret headline"], title="Secret issue title")
    concrete = re.sub(r"\{issue_id(:int)?\}", str(issue.id), path)
    concrete = re.sub(r"\{item_id(:int)?\}", "1", concrete)
    concrete = re.sub(r"\{action\}", "up", concrete)
    concrete = re.sub(r"\{rest:path\}", "guessed/page", concrete)
    response = anon_client.request(method, concrete, follow_redirects=False,
                                   data={"title": "x"} if method == "POST" else None)
    assert response.status_code in (303, 401), response.status_code
    if response.status_code == 303:
        assert response.headers["location"].startswith("/editor/login")
    assert "Secret" not in response.text


@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/editor/no-such-page"), ("GET", "/editor/issues/1/approve"),
    ("DELETE", "/editor/issues/1"), ("GET", "/editor/issues/1/secret.json"),
])
def test_guessed_urls_tell_anonymous_visitors_nothing(anon_client, make_issue, method, path):
    make_issue(items=["Secret headline"], title="Secret issue title")
    response = anon_client.request(method, path, follow_redirects=False)
    assert response.status_code in (303, 401), (path, response.status_code)
    assert "Secret" not in response.text


def test_unknown_editor_pages_get_the_console_404_page(editor_client, make_issue):
    issue = make_issue(items=["A"])
    for method, path in [("GET", "/editor/no-such-page"),
                         ("GET", f"/editor/issues/{issue.id}/approve")]:
        response = editor_client.request(method, path)
        assert response.status_code == 404, path
        assert "Log out editor@roundup.example" in response.text  # the console's own page
    assert editor_client.get("/editor/", follow_redirects=False).headers["location"] == "/editor"


@pytest.mark.parametrize("path", [
    "/editor/issues/99999999999999999999", "/editor/issues/99999999999999999999/preview",
    "/editor/issues/99999999999999999999/progress.json",
])
def test_ids_too_large_for_the_database_are_not_found(editor_client, path):
    assert editor_client.get(path).status_code == 404


def test_an_action_on_an_id_too_large_is_not_found(editor_client, make_issue):
    issue = make_issue(items=["A"])
    response = editor_post(editor_client,
                           f"/editor/issues/{issue.id}/items/99999999999999999999/delete")
    assert response.status_code == 404
