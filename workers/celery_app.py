"""The Celery app: Redis broker, late acks, one task at a time per process.

Tasks carry only IDs and are safe to run twice: the delivery ledger, not the broker,
decides what gets sent (see newsletter/delivery.py).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from celery import Celery
from celery.signals import beat_init, celeryd_init, worker_process_init, worker_ready
from kombu import Exchange, Queue

from newsletter.settings import settings

log = logging.getLogger(__name__)

DEFAULT_QUEUE = "roundup"
# Set by newsletter.services.worker_process: a worker owned by a CLI command (which
# brings its own mail catcher when SMTP_HOST is empty) or a test.
EMBEDDED_WORKER_ENV = "ROUNDUP_EMBEDDED_WORKER"
EX_CONFIG = 78  # sysexits.h: configuration error
BULK_QUEUE = "roundup.bulk"  # newsletter batches, so transactional mail never waits behind them


def _includes() -> list[str]:
    # workers.signup_tasks is written by the web engineer; tolerate its absence.
    modules = ["workers.tasks", "workers.signup_tasks", "workers.welcome_tasks"]
    return [m for m in modules if importlib.util.find_spec(m) is not None]


# The placeholder only lets this module import without REDIS_URL (the CLI sets it
# later, maybe to a private server); nothing ever connects to it: workers and beat
# refuse to start without REDIS_URL and producer() refuses to publish.
UNSET_BROKER = "redis://redis-url-is-not-set.invalid:6379/0"
app = Celery("roundup", broker=settings.redis_url or UNSET_BROKER, include=_includes())
app.conf.update(
    task_serializer="json",
    accept_content=["json"],
    result_serializer="json",
    task_ignore_result=True,
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    # Unacked tasks come back after this long; it must exceed the longest retry
    # countdown (10 minutes) or Redis would redeliver ETA tasks early.
    broker_transport_options={"visibility_timeout": 3600},
    broker_connection_retry_on_startup=True,
    task_default_queue=DEFAULT_QUEUE,
    task_queues=[
        Queue(DEFAULT_QUEUE, Exchange(DEFAULT_QUEUE), routing_key=DEFAULT_QUEUE),
        Queue(BULK_QUEUE, Exchange(BULK_QUEUE), routing_key=BULK_QUEUE),
    ],
    task_routes={"workers.tasks.send_batch": {"queue": BULK_QUEUE, "routing_key": BULK_QUEUE}},
    worker_max_memory_per_child=400_000,  # KiB: a leak cannot grow a worker forever
    timezone="UTC",
    enable_utc=True,
)

# The beat schedule lives with the code it runs.
from workers.beat import BEAT_SCHEDULE  # noqa: E402

app.conf.beat_schedule = BEAT_SCHEDULE


REDIS_URL_MISSING = (
    "REDIS_URL is not set: there is no broker to use. Set REDIS_URL to the Redis the web "
    "app and the workers share, or run `newsletter worker` / `newsletter web`, which start "
    "a private Redis when it is unset.")


@celeryd_init.connect
@beat_init.connect
def _require_redis_url(**_: Any) -> None:
    """A stand-alone worker or beat without REDIS_URL would meet nobody on some default."""
    if not settings.redis_url:
        log.critical(REDIS_URL_MISSING)  # logging is not set up yet: this goes to stderr
        raise SystemExit(EX_CONFIG)


@celeryd_init.connect
def _require_smtp_host(**_: Any) -> None:
    """A stand-alone worker (the Procfile's) without SMTP_HOST could send nothing: stop now.

    Better one clear error at start-up than every batch deferred until its rows fail.
    The CLI's `newsletter worker`, `send` and `demo` set SMTP_HOST to their local mail
    catcher when it is empty, so "unset: the local mail catcher" holds there.
    """
    if settings.smtp_host:
        return
    if os.environ.get(EMBEDDED_WORKER_ENV):
        log.warning("SMTP_HOST is not set: this worker cannot send mail")
        return
    message = ("SMTP_HOST is not set: this worker would have no relay to send through. "
               "Set SMTP_HOST (and SMTP_PORT, SMTP_USERNAME, SMTP_PASSWORD) to your relay, "
               "or run `newsletter worker`, which starts a local mail catcher when it is unset.")
    log.critical(message)  # logging is not set up yet: this goes to stderr
    raise SystemExit(EX_CONFIG)


@celeryd_init.connect
def _worker_preflight(**_: Any) -> None:
    """SECRET_KEY set, and in production an empty `newsletter check` (issue 11), or exit 78."""
    from newsletter.preflight.startup import procfile_start

    procfile_start("worker")


@beat_init.connect
def _beat_preflight(**_: Any) -> None:
    from newsletter.preflight.startup import procfile_start

    procfile_start("beat")


@worker_process_init.connect
def _fresh_db_connections(**_: Any) -> None:
    # A forked pool process must not reuse the parent's DB sockets.
    from newsletter import db

    db.reset_engine()


@worker_ready.connect
def _touch_ready_file(**_: Any) -> None:
    # newsletter.services.worker_process waits for this file.
    path = os.environ.get("ROUNDUP_WORKER_READY_FILE")
    if path:
        Path(path).touch()


@contextlib.contextmanager
def producer(url: str | None = None) -> Iterator[Any]:
    """A producer on `url` (default: the current settings.redis_url), queues declared.

    The web app and CLI may point settings at a Redis chosen after this module was
    imported (a private server), so publishers pass the URL explicitly.
    """
    url = url or settings.redis_url
    if not url:
        log.error(REDIS_URL_MISSING)
        raise RuntimeError(REDIS_URL_MISSING)
    with app.connection_for_write(url) as conn:
        channel = conn.default_channel
        for queue in app.amqp.queues.values():
            queue.bind(channel).declare()
        with app.amqp.Producer(conn) as prod:
            yield prod
