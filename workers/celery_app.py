"""The worker side of the Celery app: task modules, beat schedule, start-up checks.

Tasks carry only IDs and are safe to run twice: the delivery ledger, not the broker,
decides what gets sent (see newsletter/delivery/). `celery -A workers.celery_app`
finds `app` here.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from celery.signals import beat_init, celeryd_init, worker_process_init, worker_ready

from newsletter.queue import REDIS_URL_MISSING, app  # `celery -A workers.celery_app` finds app
from newsletter.settings import settings
from workers.beat import beat_schedule

log = logging.getLogger(__name__)

# Set by the local services' worker_process: a worker owned by a CLI command (which
# brings its own mail catcher when SMTP_HOST is empty) or a test.
EMBEDDED_WORKER_ENV = "ROUNDUP_EMBEDDED_WORKER"
EX_CONFIG = 78  # sysexits.h: configuration error

# The app (broker, queues, routes, late acks) lives in newsletter.queue, which domain
# code publishes through by task name; the worker adds the task modules and the beat.
app.conf.include = ["workers.tasks", "workers.signup_tasks", "workers.welcome_tasks"]

# The beat schedule lives with the code it runs.
app.conf.beat_schedule = beat_schedule()


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
    # The local services' worker_process waits for this file.
    path = os.environ.get("ROUNDUP_WORKER_READY_FILE")
    if path:
        Path(path).touch()
