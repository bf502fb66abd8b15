"""Keys in the web app: rotation keeps links and editor sessions working, the old
published key opens nothing, and an expired manage link gets a clear page."""

from __future__ import annotations

import time

import pytest
from itsdangerous import URLSafeTimedSerializer

from newsletter import tokens
from newsletter.models import Subscriber, SubscriberStatus
from newsletter.settings import DEFAULT_SECRET, settings
from tests.fixtures.web import path_of

OLD_KEY = "old-key-Ql8m2v9XkP4sT7wZbN1cR6yH3jF5dG0a"
NEW_KEY = "new-key-Zr4nV8bM1xC6qW3eT9yU2iO5pA7sD0fG"
ONE_CLICK = {"List-Unsubscribe": "One-Click"}


def _rotated(monkeypatch: pytest.MonkeyPatch) -> None:
    """SECRET_KEY is now NEW_KEY; OLD_KEY moved to SECRET_KEY_FALLBACKS."""
    monkeypatch.setattr(settings, "secret_key", NEW_KEY)
    monkeypatch.setattr(settings, "secret_key_fallbacks", OLD_KEY)


def _editor_cookie(key: str, editor_id: int) -> str:
    """A cookie for a real session row, signed with `key`: only the key decides."""
    from newsletter import db
    from newsletter.team import start_session

    with db.session_scope() as session:
        sid = start_session(session=session, editor_id=editor_id)
    return URLSafeTimedSerializer(key, salt="editor-session").dumps(
        {"id": editor_id, "gen": 0, "sid": sid})


def test_an_unsubscribe_link_signed_with_a_fallback_key_unsubscribes(
        client, session, make_subscriber, monkeypatch):
    sub = make_subscriber()
    monkeypatch.setattr(settings, "secret_key", OLD_KEY)
    link = path_of(tokens.unsubscribe_url(sub.id))  # in an email sent before the rotation
    _rotated(monkeypatch)
    assert client.get(link).status_code == 200
    assert client.post(link, data=ONE_CLICK).status_code == 200
    session.expire_all()
    assert session.get(Subscriber, sub.id).status == SubscriberStatus.unsubscribed


def test_without_the_fallback_the_old_link_is_refused(client, session, make_subscriber,
                                                      monkeypatch):
    sub = make_subscriber()
    monkeypatch.setattr(settings, "secret_key", OLD_KEY)
    link = path_of(tokens.unsubscribe_url(sub.id))
    monkeypatch.setattr(settings, "secret_key", NEW_KEY)
    client.post(link, data=ONE_CLICK)  # one-click answers alike either way
    session.expire_all()
    assert session.get(Subscriber, sub.id).status == SubscriberStatus.confirmed


def test_an_expired_manage_link_is_refused_with_a_clear_page(client, make_subscriber,
                                                             monkeypatch):
    sub = make_subscriber(email="old-link@example.org")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 91 * 24 * 3600)
    link = path_of(tokens.manage_url(sub.id))  # mailed 91 days ago
    monkeypatch.setattr(time, "time", real_time)
    page = client.get(link)
    assert page.status_code == 404
    assert "expired" in page.text
    assert "old-link@example.org" not in page.text
    assert client.post(f"{link}/export").status_code != 200


def test_a_manage_link_within_manage_link_days_opens(client, make_subscriber, monkeypatch):
    sub = make_subscriber(email="recent@example.org")
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() - 89 * 24 * 3600)
    link = path_of(tokens.manage_url(sub.id))
    monkeypatch.setattr(time, "time", real_time)
    page = client.get(link)
    assert page.status_code == 200 and "recent@example.org" in page.text


def test_an_editor_session_survives_a_key_rotation(anon_client, editor_account, monkeypatch):
    monkeypatch.setattr(settings, "secret_key", OLD_KEY)
    cookie = _editor_cookie(OLD_KEY, editor_account.id)
    _rotated(monkeypatch)
    anon_client.cookies.set("roundup_editor", cookie, path="/editor")
    assert anon_client.get("/editor", follow_redirects=False).status_code == 200


def test_a_cookie_forged_with_the_old_published_key_is_refused(anon_client, editor_account):
    anon_client.cookies.set("roundup_editor", _editor_cookie(DEFAULT_SECRET, editor_account.id),
                            path="/editor")
    response = anon_client.get("/editor", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/editor/login")


# --- the local key file --------------------------------------------------------------------


def test_commands_starting_together_agree_on_one_key(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    from newsletter.preflight.secret import local_key

    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: local_key(tmp_path / "var"), range(16)))
    assert len(keys) == 1
    assert [p.name for p in (tmp_path / "var").iterdir()] == ["secret_key"]  # no temp left


def test_a_damaged_key_file_is_refused_not_used(tmp_path):
    from newsletter.preflight.secret import SecretKeyError, local_key

    (tmp_path / "secret_key").write_text("abc\n")
    with pytest.raises(SecretKeyError, match="delete the file"):
        local_key(tmp_path)
