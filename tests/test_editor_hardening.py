"""The console's login limit (normalised, shared through Redis), CSRF tokens bound to
the editor's session, and sessions that end on the server at logout."""

from __future__ import annotations

import asyncio
import concurrent.futures
import time

import httpx
import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import inspect
from sqlmodel import select

from newsletter import db, editors
from newsletter.editors import Editor
from newsletter.web.editor import auth
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
    with TestClient(web_app) as client:
        for _ in range(5):
            assert login(client, editor_account.email, "wrong password").status_code == 401
        keys = redis.Redis.from_url(redis_url).keys("roundup:editor-login:*account-ip*")
        assert len(keys) == 1
        assert b"editor@roundup.example" not in keys[0]  # addresses stay out of Redis
        # Another web process starts with an empty memory; Redis still holds the count.
        web_app.state.editor_login_limiter = None
        assert login(client, editor_account.email, editor_account.password).status_code == 429


# --- the login limit under concurrency -------------------------------------------------


def run_coroutine(coroutine):
    """asyncio.run in a thread of its own: a browser test earlier in the session
    leaves Playwright's event loop running in this one."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _async_client(app, ip: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(ip, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def _login_async(client: httpx.AsyncClient, email: str, password: str) -> int:
    page = await client.get("/editor/login")
    token = csrf_token(page.text)
    response = await client.post("/editor/login", data={
        "email": email, "password": password, "next": "/editor", "csrf_token": token})
    return response.status_code


@pytest.fixture
def counted_checks(monkeypatch) -> list[str]:
    """Every password check the login page makes, by the address it was for."""
    checks: list[str] = []
    real = editors.authenticate

    def counting(*, session, email, password):
        checks.append(email)
        return real(session=session, email=email, password=password)

    monkeypatch.setattr(editors, "authenticate", counting)
    return checks


@pytest.mark.parametrize("storage", ["memory", "redis"])
def test_fifty_parallel_wrong_passwords_get_at_most_five_checks(
        request, web_app, editor_account, counted_checks, monkeypatch, storage):
    if storage == "redis":
        request.getfixturevalue("redis_url")
    # A short window so "afterwards" comes quickly; the count is what matters.
    monkeypatch.setattr(auth, "LOGIN_LIMIT_ACCOUNT_IP", "5/3 seconds")

    async def attack() -> list[int]:
        async with _async_client(web_app, "203.0.113.66") as client:
            page = await client.get("/editor/login")
            token = csrf_token(page.text)

            async def guess(i: int) -> int:
                response = await client.post("/editor/login", data={
                    "email": editor_account.email, "password": f"guess {i}",
                    "next": "/editor", "csrf_token": token})
                return response.status_code

            return list(await asyncio.gather(*(guess(i) for i in range(50))))

    codes = run_coroutine(attack())
    assert len(counted_checks) <= 5, len(counted_checks)
    assert sorted(set(codes)) == [401, 429] and codes.count(401) == len(counted_checks)

    async def real_editor(ip: str) -> int:
        async with _async_client(web_app, ip) as client:
            return await _login_async(client, editor_account.email, editor_account.password)

    # At once from anywhere else; from the attacker's own address once the window moved.
    assert run_coroutine(real_editor("198.51.100.20")) == 303
    time.sleep(3.2)
    assert run_coroutine(real_editor("203.0.113.66")) == 303


def test_failures_from_other_addresses_never_lock_the_editor_out(
        web_app, editor_account, counted_checks, monkeypatch):
    # Small numbers keep the test quick; the defaults are tested below.
    monkeypatch.setattr(auth, "FREE_FAILURES", 1)
    for ip in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
        with TestClient(web_app, client=(ip, 40000)) as attacker:
            assert login(attacker, editor_account.email, "wrong").status_code == 401
    with TestClient(web_app, client=("198.51.100.30", 40000)) as editor:
        started = time.monotonic()
        assert login(editor, editor_account.email, editor_account.password).status_code == 303
    # 3 failures, 1 free: the account is slowed down (1 s), not locked.
    assert time.monotonic() - started >= 1.0
    assert len(counted_checks) == 4


def test_the_slow_down_grows_with_failures_and_is_capped():
    delays = [auth.slowdown_seconds(n) for n in range(12)]
    assert delays[:6] == [0.0] * 6
    assert delays[6:9] == [0.5, 1.0, 2.0]
    assert max(delays) == auth.MAX_DELAY_SECONDS


def test_one_address_guessing_many_accounts_is_limited(web_app, session, counted_checks,
                                                        monkeypatch):
    monkeypatch.setattr(auth, "LOGIN_LIMIT_IP", "3/minute")
    for i in range(2):
        create_editor(session, email=f"ed{i}@roundup.example")
    with TestClient(web_app, client=("203.0.113.99", 40000)) as client:
        codes = [login(client, f"ed{i % 2}@roundup.example", "wrong password").status_code
                 for i in range(5)]
    assert codes == [401] * 3 + [429] * 2 and len(counted_checks) == 3


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


# --- roundup uploads: stated limits, the form again ------------------------------------


def _roundup(stories: int, body: str = "A body.") -> str:
    items = "".join(f"## Story {n}\n\n{body}\n\n" for n in range(stories))
    return f"---\ntitle: A week\ndate: 2026-11-30\n---\n\n{items}"


def _upload(client, name: str, data: bytes):
    page = client.get("/editor/issues/new")
    return client.post("/editor/issues/new",
                       data={"mode": "paste", "csrf_token": csrf_token(page.text)},
                       files={"file": (name, data, "text/markdown")}, follow_redirects=False)


def _issues(session) -> int:
    from newsletter.models import Issue

    session.expire_all()
    return len(session.exec(select(Issue)).all())


def test_a_roundup_with_too_many_stories_is_refused_with_the_limit(
        editor_client, session, monkeypatch, web_settings):
    monkeypatch.setattr(web_settings, "max_items_per_issue", 3)
    response = _upload(editor_client, "week.md", _roundup(4).encode())
    assert response.status_code == 400
    assert ("week.md has 4 stories; an issue holds at most 3 (MAX_ITEMS_PER_ISSUE)"
            in response.text)
    assert 'name="file"' in response.text and _issues(session) == 0
    assert _upload(editor_client, "week.md", _roundup(3).encode()).status_code == 303


def test_pasted_text_with_too_many_stories_is_refused_and_kept(
        editor_client, session, monkeypatch, web_settings):
    monkeypatch.setattr(web_settings, "max_items_per_issue", 2)
    response = editor_post(editor_client, "/editor/issues/new",
                           {"mode": "write", "text": _roundup(3)})
    assert response.status_code == 400
    assert "has 3 stories; an issue holds at most 2" in response.text
    assert "## Story 2" in response.text  # what was typed comes back
    assert _issues(session) == 0


def test_a_file_over_a_megabyte_is_refused_with_the_limit(editor_client, session):
    data = _roundup(300, "Words " * 600).encode()
    assert 1024 * 1024 < len(data) < 2 * 1024 * 1024
    response = _upload(editor_client, "huge.md", data)
    assert response.status_code == 400
    size = -(-len(data) // 1024)
    assert f"huge.md is {size:,} KB; a roundup can be at most 1,024 KB (1 MB)" in response.text
    assert 'name="file"' in response.text and _issues(session) == 0


def test_pasted_text_over_a_megabyte_is_refused_with_the_limit(editor_client, session):
    text = _roundup(300, "Words " * 600)
    response = editor_post(editor_client, "/editor/issues/new", {"mode": "paste", "text": text})
    assert response.status_code == 400
    assert "The text is 1," in response.text and "at most 1,024 KB (1 MB)" in response.text
    assert _issues(session) == 0


def test_adding_an_item_past_the_limit_is_refused(editor_client, make_issue, monkeypatch,
                                                  web_settings):
    monkeypatch.setattr(web_settings, "max_items_per_issue", 2)
    issue = make_issue(items=["One", "Two"])
    response = editor_post(editor_client, f"/editor/issues/{issue.id}/items",
                           {"headline": "Three", "body": "x"}, page=f"/editor/issues/{issue.id}")
    assert response.status_code == 400
    assert "That makes 3 items; an issue holds at most 2 (MAX_ITEMS_PER_ISSUE)" in response.text


@pytest.fixture
def three_items_at_most(web_settings, monkeypatch):
    """Before live_server: the server process takes its settings from ours."""
    monkeypatch.setattr(web_settings, "max_items_per_issue", 3)


@pytest.mark.browser
@pytest.mark.slow
def test_the_item_limit_in_a_browser(three_items_at_most, session, live_server, browser_page,
                                     tmp_path):
    from tests.fixtures.web import screenshot
    from tests.test_browser_editor import _login

    account = create_editor(session)
    page = browser_page
    _login(page, live_server, account)
    page.goto(f"{live_server.url}/editor/issues/new")
    assert "at most 3 stories" in page.inner_text("#limits")
    roundup = tmp_path / "week.md"
    roundup.write_text(_roundup(4))
    page.set_input_files("input[name=file]", str(roundup))
    page.click("button:has-text('Create draft')")
    assert "week.md has 4 stories; an issue holds at most 3" in page.inner_text("#form-error")
    screenshot(page, "i11-new-issue-too-many-stories")
