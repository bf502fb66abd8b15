"""Editors: the people who log in to /editor. Passwords are stored as argon2 hashes.

Import-safe (only models and sqlmodel) so the Alembic env can register the table.
"""

from __future__ import annotations

from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import update
from sqlmodel import Field, Session, SQLModel, col, select

from newsletter.errors import UserError
from newsletter.models import utcnow
from newsletter.subscribers import SubscriberError, normalise_email

MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 hashes anything, but a huge body is a cheap DoS

_hasher = PasswordHasher()
# Verifying against a real hash when the email is unknown keeps the timing of
# "no such editor" and "wrong password" alike.
_DUMMY_HASH = _hasher.hash("not-a-real-password-for-timing")


class EditorError(UserError):
    """A problem with an editor's details or login."""

    default_field = "email"


# Fields every view of an editor shares.
class EditorBase(SQLModel):
    email: str = Field(max_length=320, unique=True, index=True)  # normalised
    name: str = Field(default="", max_length=200)


# An editor account; only the argon2 hash of the password is stored.
class Editor(EditorBase, table=True):
    id: int | None = Field(default=None, primary_key=True)
    password_hash: str = Field(max_length=255)
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: datetime | None = None
    # Part of the signed session cookie; bumping it (logout, new password) ends
    # every session issued before, including copies of the cookie.
    session_generation: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    # owner: everything, including the team and the settings; editor: the newsletter.
    role: str = Field(default="editor", max_length=16,
                      sa_column_kwargs={"server_default": "editor"})


# An editor as pages and the CLI show it (never the hash).
class EditorPublic(EditorBase):
    id: int
    role: str = "editor"


def _clean_email(raw: str) -> str:
    try:
        return normalise_email(raw)
    except SubscriberError as exc:
        raise EditorError(str(exc), field="email") from None


def validate_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise EditorError(
            f"Passwords need at least {MIN_PASSWORD} characters.", field="password"
        )
    if len(password) > MAX_PASSWORD:
        raise EditorError(f"Passwords are limited to {MAX_PASSWORD} characters.", field="password")
    return password


def add_editor(*, session: Session, email: str, password: str, name: str = "") -> Editor:
    """Create an editor; refuses duplicates and short passwords."""
    address = _clean_email(email)
    validate_password(password)
    if session.exec(select(Editor.id).where(Editor.email == address)).first() is not None:
        raise EditorError(f"{address} is already an editor (if deactivated: "
                          "`newsletter editors activate`).")
    editor = Editor(email=address, name=name.strip()[:200], password_hash=_hasher.hash(password))
    session.add(editor)
    session.flush()
    return editor


def set_password(*, session: Session, editor_id: int, password: str) -> None:
    editor = session.get(Editor, editor_id)
    if editor is None:
        raise EditorError(f"no editor with id {editor_id}")
    editor.password_hash = _hasher.hash(validate_password(password))
    session.add(editor)
    session.flush()
    end_sessions(session=session, editor_id=editor_id)


def end_sessions(*, session: Session, editor_id: int) -> None:
    """Invalidate every session cookie issued to this editor so far."""
    from newsletter.models import EditorSession

    session.exec(  # type: ignore[call-overload]
        update(Editor).where(col(Editor.id) == editor_id)
        .values(session_generation=col(Editor.session_generation) + 1)
    )
    session.exec(  # type: ignore[call-overload]
        update(EditorSession).where(col(EditorSession.editor_id) == editor_id,
                                    col(EditorSession.revoked_at).is_(None))
        .values(revoked_at=utcnow())
    )
    session.expire_all()


def authenticate(*, session: Session, email: str, password: str) -> Editor | None:
    """The active editor with this email and password, or None (never says which was wrong)."""
    if not email or not password or len(password) > MAX_PASSWORD:
        return None
    try:
        address = normalise_email(email)
    except SubscriberError:
        address = ""
    editor = (
        session.exec(select(Editor).where(Editor.email == address)).first() if address else None
    )
    stored = editor.password_hash if editor is not None and editor.active else _DUMMY_HASH
    try:
        _hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return None
    if editor is None or not editor.active:
        return None
    if _hasher.check_needs_rehash(editor.password_hash):
        editor.password_hash = _hasher.hash(password)
    editor.last_login_at = utcnow()
    session.add(editor)
    session.flush()
    return editor
