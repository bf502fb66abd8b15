"""The Procfile's processes, run as an operator runs them: every one refuses to start
without SECRET_KEY (exit 78), and the web app it starts opens nothing to a cookie
signed with the key older versions published."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from itsdangerous import URLSafeTimedSerializer

from newsletter.cli.local.services import free_port
from newsletter.settings import DEFAULT_SECRET
from tests.fixtures import TEST_SECRET
from tests.fixtures.editor import create_editor

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
EX_CONFIG = 78
_LISTENING = re.compile(r"Uvicorn running on http://[\d.]+:(\d+)")


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return dict(line.split(":", 1) for line in lines if re.match(r"^[a-z]+:", line))


def procfile_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """An operator's shell: no SECRET_KEY, nothing else from the test run's settings."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(
        ("SECRET_KEY", "DATABASE_URL", "ENVIRONMENT", "BASE_URL", "SMTP_", "DKIM_"))}
    return {**keep, "PATH": f"{BIN}{os.pathsep}{keep.get('PATH', '')}",
            "PYTHONPATH": str(REPO), "DATA_DIR": str(tmp_path / "var"), "PORT": "0",
            # Somewhere nothing answers: the key check must come first anyway.
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0", "SMTP_HOST": "127.0.0.1",
            "SMTP_PORT": str(free_port()), **extra}


def run_process(name: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-c", procfile()[name]], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("name", "environment"), [
    *((name, "development") for name in sorted(procfile())), ("web", "production")])
def test_every_procfile_process_refuses_to_start_without_secret_key(tmp_path, name,
                                                                   environment):
    """Whatever ENVIRONMENT says: a process that made up its own key would sign links
    that the other processes (and machines) reject."""
    result = run_process(name, procfile_env(tmp_path, ENVIRONMENT=environment), tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == EX_CONFIG, output[-2000:]
    assert "SECRET_KEY is not set" in output
    assert "Traceback" not in output
    assert not (tmp_path / "var" / "secret_key").exists()


def test_the_procfile_web_refuses_the_old_published_key(tmp_path):
    result = run_process("web", procfile_env(tmp_path, SECRET_KEY=DEFAULT_SECRET), tmp_path)
    assert result.returncode == EX_CONFIG
    assert "SECRET_KEY" in result.stderr and "Traceback" not in result.stderr


def _session_id(editor_id: int) -> str:
    """A real session row, so a cookie is refused only for its signature."""
    from newsletter import db
    from newsletter.team import start_session

    with db.session_scope() as session:
        return start_session(session=session, editor_id=editor_id)


def _forged_cookie(editor_id: int) -> str:
    return URLSafeTimedSerializer(DEFAULT_SECRET, salt="editor-session").dumps(
        {"id": editor_id, "gen": 0, "sid": _session_id(editor_id)})


def _serve(env: dict[str, str], cwd: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start the Procfile's web; (process, base URL) or (exited process, "")."""
    with open(log, "wb") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(["bash", "-c", "exec " + procfile()["web"]], cwd=cwd, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return proc, ""
        if found := _LISTENING.search(log.read_text(errors="replace")):
            return proc, f"http://127.0.0.1:{found.group(1)}"
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"the Procfile's web neither served nor exited:\n{log.read_text()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        proc.wait(15)


@pytest.mark.slow
def test_a_cookie_forged_with_the_old_default_key_opens_nothing(tmp_path, session,
                                                                database_url):
    editor = create_editor(session)
    env = procfile_env(tmp_path, DATABASE_URL=database_url)
    env.pop("REDIS_URL")

    # As the issue found it: no SECRET_KEY, ENVIRONMENT left at its default.
    proc, url = _serve(env, tmp_path, tmp_path / "web-1.log")
    try:
        if url:  # it should not be serving at all; if it is, the cookie must not work
            page = httpx.get(f"{url}/editor", cookies={"roundup_editor": _forged_cookie(
                editor.id)}, follow_redirects=False, timeout=10)
            assert page.status_code != 200, "the forged cookie opened the editors' console"
    finally:
        _stop(proc)
    assert proc.returncode == EX_CONFIG, (tmp_path / "web-1.log").read_text()

    # With a key set, the server runs and the forged cookie gets the login page.
    proc, url = _serve({**env, "SECRET_KEY": TEST_SECRET}, tmp_path, tmp_path / "web-2.log")
    try:
        assert url, (tmp_path / "web-2.log").read_text()
        forged = httpx.get(f"{url}/editor", cookies={"roundup_editor": _forged_cookie(
            editor.id)}, follow_redirects=False, timeout=10)
        assert forged.status_code == 303
        assert forged.headers["location"].startswith("/editor/login")
        real = URLSafeTimedSerializer(TEST_SECRET, salt="editor-session").dumps(
            {"id": editor.id, "gen": 0, "sid": _session_id(editor.id)})
        assert httpx.get(f"{url}/editor", cookies={"roundup_editor": real},
                         follow_redirects=False, timeout=10).status_code == 200
    finally:
        _stop(proc)
