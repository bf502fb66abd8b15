"""Configuration mistakes are reported as sentences, not tracebacks."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from newsletter.settings import DEFAULT_SECRET

REPO = Path(__file__).resolve().parent.parent


def _base_env(tmp_path: Path) -> dict[str, str]:
    base = {k: v for k, v in os.environ.items()
            if k not in {"DATABASE_URL", "SECRET_KEY", "SECRET_KEY_FALLBACKS", "ENVIRONMENT",
                         "SMTP_PORT", "BASE_URL"}}
    return {**base, "DATA_DIR": str(tmp_path / "var")}


def run_cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "newsletter", *args], cwd=tmp_path,
                          env={**_base_env(tmp_path), **env},
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("env", "says"), [
    ({"SMTP_PORT": "abc"}, "SMTP_PORT"),
    ({"ENVIRONMENT": "prod"}, "ENVIRONMENT"),
])
def test_bad_settings_are_named_without_a_traceback(tmp_path, env, says):
    result = run_cli(tmp_path, "init", **env)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_init_never_prints_the_database_password(tmp_path):
    # Nothing listens on port 1: the connection fails, and the error must not leak.
    result = run_cli(tmp_path, "init",
                     DATABASE_URL="postgresql://roundup:s3cretpw@127.0.0.1:1/roundup")
    assert result.returncode == 1
    assert "s3cretpw" not in result.stdout + result.stderr
    assert "cannot use the database" in result.stderr
    assert "Traceback" not in result.stderr


# --- the secret key (issue 11) ------------------------------------------------------------

GOOD_KEY = "cli-test-key-Vb7Nm2Qx9Lp4Ws6Er1Ty8Ui3Op5As0Df"


@pytest.fixture
def no_key(tmp_path, monkeypatch):
    """This process as a fresh local command sees it: no SECRET_KEY, DATA_DIR in tmp_path.
    (The CLI exports the key it settles on; monkeypatch puts the environment back.)"""
    from newsletter.settings import settings

    monkeypatch.setenv("SECRET_KEY", "")  # so that teardown removes what the CLI exports
    monkeypatch.delenv("SECRET_KEY")
    monkeypatch.setattr(settings, "secret_key", "")
    monkeypatch.setattr(settings, "secret_key_fallbacks", "")
    monkeypatch.setattr(settings, "environment", "development")
    monkeypatch.setattr(settings, "data_dir", tmp_path / "var")
    monkeypatch.setattr(settings, "database_url", f"sqlite:///{tmp_path}/n.db")
    return settings


def invoke(*args: str) -> int:
    from typer.testing import CliRunner

    from newsletter.cli import app

    return CliRunner().invoke(app, list(args)).exit_code


def test_local_commands_create_a_private_key_file_and_reuse_it(tmp_path, no_key):
    key_file = tmp_path / "var" / "secret_key"
    assert invoke("init") == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_text().strip()
    assert len(key) >= 32 and key != DEFAULT_SECRET
    assert no_key.secret_key == os.environ["SECRET_KEY"] == key  # what children inherit
    no_key.secret_key = ""  # the next command, as a new process would start
    assert invoke("init") == 0
    assert key_file.read_text().strip() == key == no_key.secret_key


def test_a_key_file_others_can_read_is_made_private(tmp_path, no_key):
    key_file = tmp_path / "var" / "secret_key"
    key_file.parent.mkdir()
    key_file.write_text(GOOD_KEY + "\n")
    key_file.chmod(0o644)
    assert invoke("init") == 0
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert no_key.secret_key == GOOD_KEY


def test_the_local_key_signs_what_the_next_process_reads(tmp_path):
    """Links made by one process verify in the next: the key is reused, not remade."""
    made = subprocess.run(
        [sys.executable, "-c", "from newsletter import tokens; print(tokens.manage_url(1))"],
        cwd=tmp_path, env=_base_env(tmp_path), capture_output=True, text=True, timeout=60)
    token = made.stdout.strip().rsplit("/", 1)[1]
    read = subprocess.run(
        [sys.executable, "-c", f"from newsletter import tokens; print(tokens.read_token("
                               f"'manage', {token!r}))"],
        cwd=tmp_path, env=_base_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert read.stdout.strip() == "1", read.stderr


def test_help_needs_no_key(tmp_path, no_key):
    assert invoke("send", "--help") == 0
    assert not (tmp_path / "var" / "secret_key").exists()


def test_production_commands_never_make_up_a_key(tmp_path):
    result = run_cli(tmp_path, "init", ENVIRONMENT="production")
    assert result.returncode == 78
    assert "SECRET_KEY is not set" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "secret_key").exists()


def test_the_old_published_key_is_refused_in_development(tmp_path):
    result = run_cli(tmp_path, "init", SECRET_KEY=DEFAULT_SECRET, ENVIRONMENT="development")
    assert result.returncode == 78
    assert "SECRET_KEY" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("key", [DEFAULT_SECRET, "hunter2", "change-me-" + "x" * 40, "a" * 64,
                                 "your-secret-key-goes-here-0123456789abcdef"])
def test_a_guessable_secret_key_is_refused(tmp_path, no_key, key):
    no_key.secret_key = key
    assert invoke("init") == 78
    assert not (tmp_path / "n.db").exists()  # refused before doing anything


def test_a_guessable_fallback_key_is_refused(no_key):
    no_key.secret_key = GOOD_KEY
    no_key.secret_key_fallbacks = f"{GOOD_KEY[::-1]},{DEFAULT_SECRET}"
    assert invoke("init") == 78


def test_a_random_key_is_accepted():
    from newsletter.preflight.secret import weakness

    assert weakness(GOOD_KEY) is None


# --- newsletter web --port (issue 11) -----------------------------------------------------


@pytest.mark.slow
def test_web_on_another_port_links_to_that_port(tmp_path, database_url, redis_url):
    import httpx

    from newsletter.cli.local.services import free_port

    port = free_port()
    env = {**_base_env(tmp_path), "DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "SECRET_KEY": GOOD_KEY}
    log = tmp_path / "web.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "newsletter", "web", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                page = httpx.get(f"http://127.0.0.1:{port}/subscribe/embed", timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        assert f"http://localhost:{port}/subscribe/embed/form" in page.text
        assert "localhost:8000" not in page.text
    finally:
        proc.terminate()
        proc.wait(20)


def test_an_explicit_base_url_is_kept(monkeypatch):
    from newsletter.cli.web_cmds import _match_base_url
    from newsletter.settings import Settings

    monkeypatch.setenv("BASE_URL", "https://news.acme-widgets.com")
    configured = Settings()
    monkeypatch.setattr("newsletter.settings.settings", configured)
    _match_base_url("0.0.0.0", 9000)
    assert configured.base_url == "https://news.acme-widgets.com"


def test_the_port_reaches_the_workers_that_send_the_emails(monkeypatch):
    """`newsletter web` starts its worker with settings_env(): links in emails match too."""
    from newsletter.cli.local.services import settings_env
    from newsletter.cli.web_cmds import _match_base_url
    from newsletter.settings import Settings, settings

    monkeypatch.setenv("BASE_URL", "")  # so that teardown removes what web exports
    monkeypatch.delenv("BASE_URL")
    fresh = Settings()
    monkeypatch.setattr("newsletter.settings.settings", fresh)
    monkeypatch.setattr(settings, "secret_key", GOOD_KEY)
    _match_base_url("0.0.0.0", 9123)
    assert fresh.base_url == os.environ["BASE_URL"] == "http://localhost:9123"
    monkeypatch.setattr("newsletter.cli.local.services.settings", fresh)
    monkeypatch.setattr(fresh, "secret_key", GOOD_KEY)
    assert settings_env()["BASE_URL"] == "http://localhost:9123"
