"""Embedded services: a private Redis, the mail catcher, a worker subprocess."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
import redis

from newsletter.cli.local import services
from newsletter.cli.local.mailcatcher import mail_catcher
from newsletter.settings import REPO_ROOT, settings
from tests.fixtures.services import wait_until


def test_redis_service_starts_a_private_server_when_none_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings, "redis_url", f"redis://127.0.0.1:{services.free_port()}/0")
    monkeypatch.delenv("REDIS_URL", raising=False)

    with services.redis_service() as url:
        assert redis.Redis.from_url(url).ping()
        assert settings.redis_url == url == os.environ["REDIS_URL"]
        assert not url.startswith("redis://127.0.0.1:6379")

    assert not services.redis_answers(url)
    assert "REDIS_URL" not in os.environ


def test_redis_service_uses_redis_url_when_it_answers(redis_url: str) -> None:
    with services.redis_service() as url:
        assert url == redis_url


def test_private_redis_keeps_nothing_on_disk() -> None:
    with services.private_redis() as url:
        config = redis.Redis.from_url(url, decode_responses=True).config_get("save")
        appendonly = redis.Redis.from_url(url, decode_responses=True).config_get("appendonly")
    assert config["save"] == ""
    assert appendonly["appendonly"] == "no"


def test_mail_catcher_stores_each_message_as_an_eml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(settings, "smtp_host", "")
    with mail_catcher(tmp_path / "mail") as (host, port):
        assert (settings.smtp_host, settings.smtp_port) == (host, port)
        with smtplib.SMTP(host, port) as smtp:
            for n in range(2):
                smtp.sendmail("a@example.org", ["b@example.org"],
                              f"Subject: hello {n}\r\n\r\nbody {n}\r\n".encode())
    files = sorted((tmp_path / "mail").iterdir())
    assert [f.suffix for f in files] == [".eml", ".eml"]
    assert b"Subject: hello 0" in b"".join(f.read_bytes() for f in files)
    assert settings.smtp_host == ""


def test_worker_process_is_gone_after_the_block(
    app_settings: object, redis_url: str, tmp_path: Path
) -> None:
    with services.worker_process(concurrency=1, log_path=tmp_path / "w.log") as proc:
        assert proc.poll() is None
    assert proc.poll() is not None


# --- the CLI's embedded stack: SIGTERM cleans up, `newsletter web` is a whole site ----------


def _cli(args: list[str], tmp_path: Path, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    """`python -m newsletter ARGS` with REDIS_URL and SMTP_HOST unset, output to a file."""
    full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "SMTP_HOST")}
    full.update(env)
    out = tmp_path / f"{args[0]}.out"
    with open(out, "wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "newsletter", *args], cwd=REPO_ROOT,
                                env=full, stdout=sink, stderr=subprocess.STDOUT)
    return proc, out


def _children(proc: subprocess.Popen[bytes]) -> list[psutil.Process]:
    try:
        return psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _terminate_and_check_nothing_is_left(proc: subprocess.Popen[bytes], out: Path) -> None:
    children = _children(proc)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert "celery" in names and "redis-server" in names, names
    proc.send_signal(signal.SIGTERM)
    try:
        # The CLI's own budget: up to 15 s for Celery, a kill, then 5 s for Redis.
        proc.wait(60)
        # Children just killed may take a moment to be reaped.
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        left = [c for c in children if _alive(c)]
        for c in left:  # never leave them behind, even when the assertion fails
            c.kill()
    assert left == [], out.read_text(errors="replace")[-2000:]
    assert proc.returncode == 128 + signal.SIGTERM


def test_sigterm_to_newsletter_worker_stops_its_worker_and_private_redis(
    app_settings: object, tmp_path: Path,
) -> None:
    proc, out = _cli(["worker", "-c", "1"], tmp_path)
    try:
        wait_until(lambda: b" ready." in out.read_bytes() or proc.poll() is not None,
                   timeout=60, message=lambda: out.read_text(errors="replace"))
        assert proc.poll() is None, out.read_text(errors="replace")
        assert "REDIS_URL is not set; starting a private Redis" in out.read_text()
        _terminate_and_check_nothing_is_left(proc, out)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_newsletter_web_alone_sends_the_confirmation_email_to_the_mail_catcher(
    app_settings: object, tmp_path: Path,
) -> None:
    port = services.free_port()
    proc, out = _cli(["web", "--port", str(port)], tmp_path)
    base = f"http://127.0.0.1:{port}"
    mail_dir = tmp_path / "var" / "mail"

    def serving() -> bool:
        assert proc.poll() is None, out.read_text(errors="replace")
        try:
            return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_until(serving, timeout=60, message="the web server")
        text = out.read_text()
        assert "REDIS_URL is not set; starting a private Redis" in text
        assert f".eml files in {mail_dir.resolve()}." in text

        answer = httpx.post(f"{base}/api/subscribers", json={"email": "ana@example.org"})
        assert answer.status_code == 202, answer.text

        files = wait_until(lambda: list(mail_dir.glob("*.eml")), timeout=30,
                           message=lambda: out.read_text(errors="replace"))
        assert b"ana@example.org" in files[0].read_bytes()
        _terminate_and_check_nothing_is_left(proc, out)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_exit_on_signals_turns_sigterm_into_system_exit_and_restores_the_handler() -> None:
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as exited, services.exit_on_signals():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at once; this is never reached
    assert exited.value.code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_stand_alone_worker_without_redis_url_refuses_to_start(
    app_settings: object, tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL",)}
    env["SMTP_HOST"] = "127.0.0.1"
    result = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker", "-P", "solo"],
        cwd=REPO_ROOT, env=env, capture_output=True, timeout=60)
    assert result.returncode == 78
    assert b"REDIS_URL is not set" in result.stdout + result.stderr
