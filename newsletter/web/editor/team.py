"""The team (owners only), accepting an invitation or reset link, and one's own account."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import Request
from fastapi.responses import Response

from newsletter import team
from newsletter.editors import Editor, EditorError
from newsletter.settings import settings
from newsletter.web import forms
from newsletter.web.editor.routing import (
    current_editor,
    db_session,
    error_page,
    form_of,
    owners_only,
    page,
    redirect,
    router,
    session_id,
    set_session_cookie,
)


def _link(token: str, purpose: Literal["invite", "reset"]) -> str:
    return f"{settings.base_url.rstrip('/')}/editor/{purpose}/{token}"


def _team_page(request: Request, *, notice: str = "", error: str = "", link: str = "",
               link_for: str = "", values: dict[str, str] | None = None,
               status_code: int = 200) -> Response:
    with db_session() as session:
        editors = team.list_editors(session=session)
        rows = [{"editor": e, "status": team.status_of(e)} for e in editors]
    return page(request, "team.html", {
        "nav": "team", "rows": rows, "notice": notice, "error": error, "link": link,
        "link_for": link_for, "values": values or {"email": "", "role": "editor"},
        "roles": team.ROLES, "me": current_editor(request).id}, status_code=status_code)


@router.get("/team")
def team_page(request: Request) -> Response:
    return owners_only(request) or _team_page(request)


@router.post("/team/invite")
def team_invite(request: Request) -> Response:
    if refused := owners_only(request):
        return refused
    form = form_of(request)
    values = {"email": forms.text(form, "email").strip(), "role": forms.text(form, "role")}
    with db_session() as session:
        try:
            editor, token = team.invite(session=session, email=values["email"],
                                        role=values["role"])
            session.commit()
        except EditorError as exc:
            session.rollback()
            return _team_page(request, error=str(exc), values=values, status_code=400)
    return _team_page(request, notice=f"Invitation for {editor.email} ready. Send them this "
                      f"link; it works once, for {team.INVITE_VALID_DAYS} days.",
                      link=_link(token, "invite"), link_for=editor.email)


def _on_member(request: Request, editor_id: int, action: str) -> Response:
    if refused := owners_only(request):
        return refused
    with db_session() as session:
        editor = session.get(Editor, editor_id)
        if editor is None:
            return error_page(request, "Not found", "There is no such editor.", 404)
        try:
            if action == "role":
                team.set_role(session=session, editor_id=editor_id,
                              role=forms.text(form_of(request), "role"))
                notice = f"{editor.email} is now {editor.role}."
            elif action == "deactivate":
                team.deactivate(session=session, editor_id=editor_id)
                notice = f"{editor.email} can no longer log in; their sessions have ended."
            elif action == "reactivate":
                team.reactivate(session=session, editor_id=editor_id)
                notice = f"{editor.email} can log in again."
            else:  # reset
                token = team.link_token(editor, purpose="reset" if editor.password_hash
                                        else "invite")
                session.commit()
                purpose: Literal["invite", "reset"] = ("reset" if editor.password_hash
                                                       else "invite")
                return _team_page(
                    request, notice=f"Send {editor.email} this link to choose a new password.",
                    link=_link(token, purpose), link_for=editor.email)
            session.commit()
        except EditorError as exc:
            session.rollback()
            return _team_page(request, error=str(exc), status_code=400)
    return _team_page(request, notice=notice)


@router.post("/team/{editor_id:int}/role")
def team_role(request: Request, editor_id: int) -> Response:
    return _on_member(request, editor_id, "role")


@router.post("/team/{editor_id:int}/deactivate")
def team_deactivate(request: Request, editor_id: int) -> Response:
    return _on_member(request, editor_id, "deactivate")


@router.post("/team/{editor_id:int}/reactivate")
def team_reactivate(request: Request, editor_id: int) -> Response:
    return _on_member(request, editor_id, "reactivate")


@router.post("/team/{editor_id:int}/reset")
def team_reset(request: Request, editor_id: int) -> Response:
    return _on_member(request, editor_id, "reset")


# --- invitations and reset links (logged out) ---------------------------------------------


def _link_page(request: Request, token: str, purpose: Literal["invite", "reset"], *,
               error: str = "", status_code: int = 200) -> Response:
    with db_session() as session:
        try:
            editor: Editor | None = team.editor_for_link(session=session, token=token,
                                                         purpose=purpose)
            problem = ""
        except EditorError as exc:
            editor, problem = None, str(exc)
    return page(request, "set_password.html", {
        "purpose": purpose, "token": token, "email": editor.email if editor else "",
        "problem": problem, "error": error},
        status_code=400 if problem and status_code == 200 else status_code)


def _accept(request: Request, token: str, purpose: Literal["invite", "reset"]) -> Response:
    form = form_of(request)
    password, again = forms.text(form, "password"), forms.text(form, "password_again")
    if password != again:
        return _link_page(request, token, purpose, status_code=400,
                          error="The two passwords are not the same.")
    with db_session() as session:
        try:
            editor = team.accept(session=session, token=token, password=password,
                                 name=forms.text(form, "name"), purpose=purpose)
            session.commit()
        except EditorError as exc:
            session.rollback()
            return _link_page(request, token, purpose, error=str(exc), status_code=400)
        session.refresh(editor)
    response = redirect("/editor")
    set_session_cookie(response, editor)
    return response


@router.get("/invite/{token}")
def invite_page(request: Request, token: str) -> Response:
    return _link_page(request, token, "invite")


@router.post("/invite/{token}")
def invite_accept(request: Request, token: str) -> Response:
    return _accept(request, token, "invite")


@router.get("/reset/{token}")
def reset_page(request: Request, token: str) -> Response:
    return _link_page(request, token, "reset")


@router.post("/reset/{token}")
def reset_accept(request: Request, token: str) -> Response:
    return _accept(request, token, "reset")


# --- my account -----------------------------------------------------------------------


def _account_page(request: Request, *, notice: str = "", error: str = "",
                  status_code: int = 200) -> Response:
    me = current_editor(request)
    with db_session() as session:
        sessions = team.active_sessions(session=session, editor_id=me.id,
                                        current=session_id(request))
    context: dict[str, Any] = {"nav": "account", "sessions": sessions, "notice": notice,
                               "error": error}
    return page(request, "account.html", context, status_code=status_code)


@router.get("/account")
def account_page(request: Request) -> Response:
    changed = request.query_params.get("changed") == "1"
    return _account_page(request, notice="Password changed. Your other sessions have ended."
                         if changed else "")


@router.post("/account/password")
def account_password(request: Request) -> Response:
    form = form_of(request)
    new, again = forms.text(form, "password"), forms.text(form, "password_again")
    if new != again:
        return _account_page(request, error="The two new passwords are not the same.",
                             status_code=400)
    me = current_editor(request)
    with db_session() as session:
        try:
            team.change_password(session=session, editor_id=me.id,
                                 current=forms.text(form, "current"), new=new)
            session.commit()
        except EditorError as exc:
            session.rollback()
            return _account_page(request, error=str(exc), status_code=400)
        editor = session.get(Editor, me.id)
    assert editor is not None
    # A new password ends every session, this one included: start a fresh one here.
    response = redirect("/editor/account?changed=1")
    set_session_cookie(response, editor)
    return response


@router.post("/account/sessions/end-others")
def account_end_others(request: Request) -> Response:
    me = current_editor(request)
    with db_session() as session:
        ended = team.revoke_sessions(session=session, editor_id=me.id,
                                     keep=session_id(request))
        session.commit()
    return _account_page(request, notice=f"Signed out of {ended} other "
                         f"{'session' if ended == 1 else 'sessions'}.")
