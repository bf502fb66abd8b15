"""The team: roles, invitations, deactivation, password links, sessions, and the CLI."""

from __future__ import annotations

import re
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlmodel import Session, select
from typer.testing import CliRunner

from newsletter.editors import Editor
from tests.fixtures.editor import EDITOR_PASSWORD, create_editor, editor_post, login
from tests.fixtures.web import csrf_token


def _promote(session: Session, email: str, role: str = "owner") -> None:
    editor = session.exec(select(Editor).where(Editor.email == email)).one()
    editor.role = role
    session.add(editor)
    session.commit()


def _owner_client(web_app: FastAPI, session: Session) -> TestClient:
    account = create_editor(session, email="owner@roundup.example")
    _promote(session, account.email)
    client = TestClient(web_app)
    assert login(client, account.email, account.password).status_code == 303
    return client


def _invite(client: TestClient, email: str, role: str = "editor") -> str:
    page = editor_post(client, "/editor/team/invite", {"email": email, "role": role},
                       page="/editor/team")
    assert page.status_code == 200, page.text
    return re.search(r'id="invite-link" value="[^"]*(/editor/invite/[^"]+)"', page.text).group(1)


def test_an_editor_is_refused_the_team_page(editor_client: TestClient) -> None:
    response = editor_client.get("/editor/team")
    assert response.status_code == 403
    assert "Only owners" in response.text
    assert editor_post(editor_client, "/editor/team/invite", {"email": "x@example.org",
                                                              "role": "owner"}).status_code == 403


def test_invited_editor_sets_their_password_once_and_is_logged_in(
        web_app: FastAPI, session: Session) -> None:
    owner = _owner_client(web_app, session)
    path = _invite(owner, "new@roundup.example")
    with TestClient(web_app) as invitee:
        form = invitee.get(path)
        assert "new@roundup.example" in form.text
        accepted = invitee.post(path, data={"csrf_token": csrf_token(form.text), "name": "Nia",
                                            "password": "a brand new password",
                                            "password_again": "a brand new password"},
                                follow_redirects=False)
        assert accepted.status_code == 303
        assert invitee.get("/editor").status_code == 200  # logged in
        again = invitee.get(path)
        assert "already" in again.text and again.status_code == 400
    session.expire_all()
    editor = session.exec(select(Editor).where(Editor.email == "new@roundup.example")).one()
    assert editor.active and editor.name == "Nia" and editor.role == "editor"


def test_a_tampered_invitation_is_refused(web_app: FastAPI, session: Session) -> None:
    owner = _owner_client(web_app, session)
    path = _invite(owner, "new@roundup.example")
    with TestClient(web_app) as stranger:
        page = stranger.get(path[:-3] + "abc")
        assert page.status_code == 400 and "not valid" in page.text


def test_deactivating_an_editor_ends_their_sessions(web_app: FastAPI, session: Session,
                                                   editor_client: TestClient,
                                                   editor_account: Any) -> None:
    owner = _owner_client(web_app, session)
    assert editor_client.get("/editor").status_code == 200
    editor_post(owner, f"/editor/team/{editor_account.id}/deactivate", page="/editor/team")
    assert editor_client.get("/editor", follow_redirects=False).status_code == 303
    assert login(editor_client, editor_account.email,
                 editor_account.password).status_code == 401


def test_the_last_owner_cannot_step_down(web_app: FastAPI, session: Session) -> None:
    owner = _owner_client(web_app, session)
    me = session.exec(select(Editor).where(Editor.email == "owner@roundup.example")).one()
    response = editor_post(owner, f"/editor/team/{me.id}/role", {"role": "editor"},
                           page="/editor/team")
    assert response.status_code == 400 and "only owner" in response.text
    session.expire_all()
    assert session.get(Editor, me.id).role == "owner"


def test_reset_link_sets_a_new_password(web_app: FastAPI, session: Session,
                                        editor_account: Any) -> None:
    owner = _owner_client(web_app, session)
    page = editor_post(owner, f"/editor/team/{editor_account.id}/reset", page="/editor/team")
    path = re.search(r'id="invite-link" value="[^"]*(/editor/reset/[^"]+)"', page.text).group(1)
    with TestClient(web_app) as them:
        form = them.get(path)
        them.post(path, data={"csrf_token": csrf_token(form.text),
                              "password": "the replacement pw", "password_again":
                              "the replacement pw"})
        them.cookies.clear()
        assert login(them, editor_account.email, "the replacement pw").status_code == 303
        them.cookies.clear()
        assert login(them, editor_account.email, EDITOR_PASSWORD).status_code == 401


def test_account_lists_sessions_and_signs_out_the_others(web_app: FastAPI,
                                                         editor_account: Any) -> None:
    with TestClient(web_app) as laptop, TestClient(web_app) as phone:
        login(laptop, editor_account.email, editor_account.password)
        login(phone, editor_account.email, editor_account.password)
        page = laptop.get("/editor/account")
        assert page.text.count("last seen") == 2
        editor_post(laptop, "/editor/account/sessions/end-others", page="/editor/account")
        assert phone.get("/editor", follow_redirects=False).status_code == 303
        assert laptop.get("/editor").status_code == 200


def test_change_password_needs_the_current_one(editor_client: TestClient) -> None:
    wrong = editor_post(editor_client, "/editor/account/password", {
        "current": "not it at all", "password": "a new long password",
        "password_again": "a new long password"}, page="/editor/account")
    assert wrong.status_code == 400 and "current password" in wrong.text
    ok = editor_post(editor_client, "/editor/account/password", {
        "current": EDITOR_PASSWORD, "password": "a new long password",
        "password_again": "a new long password"}, page="/editor/account")
    assert ok.status_code == 303
    assert editor_client.get("/editor/account").status_code == 200  # still logged in here


def _cli() -> Any:
    import typer

    from newsletter.cli import editor_cmds

    app = typer.Typer()
    app.command("noop")(lambda: None)
    editor_cmds.register(app)
    return app


def test_cli_first_editor_is_owner_then_list_set_role_deactivate(app_settings: Any,
                                                                  session: Session) -> None:
    runner, app = CliRunner(), _cli()
    pw = "a long password\na long password\n"
    assert runner.invoke(app, ["editors", "add", "first@example.org"], input=pw).exit_code == 0
    assert runner.invoke(app, ["editors", "add", "second@example.org"], input=pw).exit_code == 0
    listed = runner.invoke(app, ["editors", "list", "--json"])
    roles = {r["email"]: r["role"] for r in __import__("json").loads(listed.output)}
    assert roles == {"first@example.org": "owner", "second@example.org": "editor"}
    assert runner.invoke(app, ["editors", "set-role", "second@example.org",
                               "owner"]).exit_code == 0
    assert runner.invoke(app, ["editors", "deactivate", "first@example.org"]).exit_code == 0
    refused = runner.invoke(app, ["editors", "deactivate", "second@example.org"])
    assert refused.exit_code == 1 and "only owner" in refused.output
    assert runner.invoke(app, ["editors", "reset-password", "second@example.org"],
                         input="a newer password\na newer password\n").exit_code == 0
    assert runner.invoke(app, ["editors", "activate", "first@example.org"]).exit_code == 0
    session.expire_all()
    first = session.exec(select(Editor).where(Editor.email == "first@example.org")).one()
    assert first.active
