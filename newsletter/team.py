"""The editors' team: roles, invitations, deactivation, password resets, sessions.

Invitations and reset links are signed tokens (salt per purpose) carrying the editor's
id and session generation: accepting one sets a password, which bumps the generation,
so every link works once. Sessions are rows, so an editor can see where they are
logged in and end them; the cookie names its row.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlalchemy import func, update
from sqlmodel import Session, col, select

from newsletter import tokens
from newsletter.editors import (
    Editor,
    EditorError,
    _clean_email,
    _hasher,
    end_sessions,
    set_password,
    validate_password,
)
from newsletter.models import EditorSession, utcnow

Role = Literal["owner", "editor"]
ROLES: tuple[Role, ...] = ("owner", "editor")
INVITE_SALT = "editor-invite"
RESET_SALT = "editor-password-reset"
INVITE_VALID_DAYS = 7
RESET_VALID_HOURS = 24
SEEN_EVERY = timedelta(minutes=5)  # last-seen is written at most this often per session


def _serializer(salt: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(tokens.secret_keys()), salt=salt)


def _validate_role(role: str) -> Role:
    if role not in ROLES:
        raise EditorError(f"Unknown role {role!r}: use owner or editor.", field="role")
    return role  # type: ignore[return-value]


def owner_count(*, session: Session) -> int:
    return int(session.exec(select(func.count()).select_from(Editor).where(
        Editor.role == "owner", col(Editor.active).is_(True))).one())


def first_role(*, session: Session) -> Role:
    """The first account is the owner: someone must be able to manage the team."""
    return "editor" if owner_count(session=session) else "owner"


# --- invitations and password links -------------------------------------------------


def invite(*, session: Session, email: str, role: str, name: str = "") -> tuple[Editor, str]:
    """An inactive account without a password, and the link token that activates it."""
    address = _clean_email(email)
    clean_role = _validate_role(role)
    existing = session.exec(select(Editor).where(Editor.email == address)).first()
    if existing is not None and existing.password_hash:
        hint = "" if existing.active else " (deactivated: reactivate them instead)"
        raise EditorError(f"{address} is already an editor{hint}.")
    editor = existing or Editor(email=address, name=name.strip()[:200], password_hash="",
                                active=False)
    editor.role = clean_role
    session.add(editor)
    session.flush()
    return editor, link_token(editor, purpose="invite")


def link_token(editor: Editor, *, purpose: Literal["invite", "reset"]) -> str:
    salt = INVITE_SALT if purpose == "invite" else RESET_SALT
    return str(_serializer(salt).dumps({"id": editor.id, "gen": editor.session_generation}))


def editor_for_link(*, session: Session, token: str,
                    purpose: Literal["invite", "reset"]) -> Editor:
    """The editor a still-valid invitation or reset link names, or a clear error."""
    salt, max_age = ((INVITE_SALT, INVITE_VALID_DAYS * 86400) if purpose == "invite"
                     else (RESET_SALT, RESET_VALID_HOURS * 3600))
    what = "invitation" if purpose == "invite" else "password link"
    try:
        data: Any = _serializer(salt).loads(token[:512], max_age=max_age)
    except SignatureExpired:
        raise EditorError(f"This {what} has expired: ask an owner for a new one.") from None
    except BadSignature:
        raise EditorError(f"This {what} is not valid.") from None
    editor = session.get(Editor, data.get("id")) if isinstance(data, dict) else None
    if editor is None or data.get("gen") != editor.session_generation:
        raise EditorError(f"This {what} has already been used or was replaced.")
    if purpose == "invite" and editor.password_hash:
        raise EditorError("This invitation has already been accepted: log in instead.")
    return editor


def accept(*, session: Session, token: str, password: str, name: str = "",
           purpose: Literal["invite", "reset"] = "invite") -> Editor:
    """Set the password from an invitation or reset link (once) and activate the account."""
    editor = editor_for_link(session=session, token=token, purpose=purpose)
    validate_password(password)
    if purpose == "invite":
        editor.active = True
        if name.strip():
            editor.name = name.strip()[:200]
        session.add(editor)
    assert editor.id is not None
    set_password(session=session, editor_id=editor.id, password=password)  # bumps generation
    return editor


def change_password(*, session: Session, editor_id: int, current: str, new: str) -> None:
    editor = session.get(Editor, editor_id)
    if editor is None:
        raise EditorError("Unknown editor.")
    try:
        _hasher.verify(editor.password_hash, current)
    except Exception:
        raise EditorError("Your current password is not right.", field="current") from None
    set_password(session=session, editor_id=editor_id, password=new)


# --- roles and deactivation ------------------------------------------------------------


def _keep_an_owner(*, session: Session, editor: Editor) -> None:
    if editor.role == "owner" and editor.active and owner_count(session=session) <= 1:
        raise EditorError("This is the only owner: make someone else an owner first.")


def set_role(*, session: Session, editor_id: int, role: str) -> Editor:
    editor = session.get(Editor, editor_id)
    if editor is None:
        raise EditorError("Unknown editor.")
    clean = _validate_role(role)
    if clean != "owner":
        _keep_an_owner(session=session, editor=editor)
    editor.role = clean
    session.add(editor)
    session.flush()
    return editor


def deactivate(*, session: Session, editor_id: int) -> Editor:
    """No more logins; every session ends at once."""
    editor = session.get(Editor, editor_id)
    if editor is None:
        raise EditorError("Unknown editor.")
    _keep_an_owner(session=session, editor=editor)
    editor.active = False
    session.add(editor)
    session.flush()
    end_sessions(session=session, editor_id=editor_id)
    revoke_sessions(session=session, editor_id=editor_id)
    return editor


def reactivate(*, session: Session, editor_id: int) -> Editor:
    editor = session.get(Editor, editor_id)
    if editor is None:
        raise EditorError("Unknown editor.")
    if not editor.password_hash:
        raise EditorError("This invitation was never accepted: invite them again.")
    editor.active = True
    session.add(editor)
    session.flush()
    return editor


def list_editors(*, session: Session) -> list[Editor]:
    return list(session.exec(select(Editor).order_by(col(Editor.id))).all())


def status_of(editor: Editor) -> str:
    if not editor.password_hash:
        return "invited"
    return "active" if editor.active else "deactivated"


# --- sessions ------------------------------------------------------------------------


def start_session(*, session: Session, editor_id: int, ip: str = "",
                  user_agent: str = "") -> str:
    sid = uuid.uuid4().hex
    session.add(EditorSession(id=sid, editor_id=editor_id, ip=ip[:64],
                              user_agent=user_agent[:300]))
    session.flush()
    return sid


def session_is_live(*, session: Session, sid: str, editor_id: int) -> bool:
    """The session row exists, is the editor's, and was not ended; notes it was seen."""
    row = session.get(EditorSession, sid)
    if row is None or row.editor_id != editor_id or row.revoked_at is not None:
        return False
    now = utcnow()
    if now - row.last_seen_at > SEEN_EVERY:
        session.exec(update(EditorSession).where(  # type: ignore[call-overload]
            col(EditorSession.id) == sid).values(last_seen_at=now))
        session.commit()
    return True


@dataclass
class SessionView:
    id: str
    created_at: Any
    last_seen_at: Any
    ip: str
    user_agent: str
    current: bool


def active_sessions(*, session: Session, editor_id: int, current: str = "") -> list[SessionView]:
    rows = session.exec(select(EditorSession).where(
        EditorSession.editor_id == editor_id, col(EditorSession.revoked_at).is_(None))
        .order_by(col(EditorSession.last_seen_at).desc())).all()
    return [SessionView(r.id, r.created_at, r.last_seen_at, r.ip, r.user_agent, r.id == current)
            for r in rows]


def revoke_sessions(*, session: Session, editor_id: int, keep: str = "") -> int:
    """End the editor's sessions (all, or all but `keep`). Returns how many ended."""
    query = update(EditorSession).where(col(EditorSession.editor_id) == editor_id,
                                        col(EditorSession.revoked_at).is_(None))
    if keep:
        query = query.where(col(EditorSession.id) != keep)
    result = session.exec(query.values(revoked_at=utcnow()))  # type: ignore[call-overload]
    return int(result.rowcount or 0)
