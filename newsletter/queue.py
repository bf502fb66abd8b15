"""The task queue as domain code sees it: the Celery app and `publish(task_name, ...)`.

Domain code (delivery, the web app, the CLI) publishes tasks *by name* through this
module and never imports `workers/`: the worker package is a thin leaf that imports
this app, registers its task modules and runs them. Publish only after the
transaction that made the work visible has committed (see delivery/enqueue.py): a
task that runs before its rows exist finds nothing and is gone.

It also keeps one marker key in Redis, so the sweep can tell when the broker lost its
data (a restart without persistence, a failover, a flush) and with it every queued
task: see `broker_was_reset`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from celery import Celery
from kombu import Exchange, Queue

from newsletter.settings import settings

log = logging.getLogger("newsletter.queue")

DEFAULT_QUEUE = "roundup"
BULK_QUEUE = "roundup.bulk"  # newsletter batches, so transactional mail never waits behind them
# Mail nobody is waiting for: welcome emails. Confirming an imported list queues
# thousands at once; on the default queue they held up confirmation emails (someone
# waiting for a link) for minutes. Workers take from each queue in turn.
LATER_QUEUE = "roundup.later"
SEND_BATCH = "workers.tasks.send_batch"
SEND_WELCOME = "workers.welcome_tasks.send_welcome_email"
# Set in Redis by the sweep; gone means Redis lost its data (and our queued tasks).
BROKER_MARKER = "roundup:broker-marker"

REDIS_URL_MISSING = (
    "REDIS_URL is not set: there is no broker to use. Set REDIS_URL to the Redis the web "
    "app and the workers share, or run `newsletter worker` / `newsletter web`, which start "
    "a private Redis when it is unset.")

# The placeholder only lets this module import without REDIS_URL (the CLI sets it
# later, maybe to a private server); nothing ever connects to it: workers and beat
# refuse to start without REDIS_URL and producer() refuses to publish.
UNSET_BROKER = "redis://redis-url-is-not-set.invalid:6379/0"

app = Celery("roundup", broker=settings.redis_url or UNSET_BROKER)
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
    # Keep reconnecting after Redis goes away, however long it stays away: a worker
    # that gave up would need a person to restart it (the default stops after 100 tries).
    broker_connection_max_retries=None,
    task_default_queue=DEFAULT_QUEUE,
    task_queues=[
        Queue(DEFAULT_QUEUE, Exchange(DEFAULT_QUEUE), routing_key=DEFAULT_QUEUE),
        Queue(BULK_QUEUE, Exchange(BULK_QUEUE), routing_key=BULK_QUEUE),
        Queue(LATER_QUEUE, Exchange(LATER_QUEUE), routing_key=LATER_QUEUE),
    ],
    task_routes={SEND_BATCH: {"queue": BULK_QUEUE, "routing_key": BULK_QUEUE},
                 SEND_WELCOME: {"queue": LATER_QUEUE, "routing_key": LATER_QUEUE}},
    worker_max_memory_per_child=400_000,  # KiB: a leak cannot grow a worker forever
    timezone="UTC",
    enable_utc=True,
)


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


def publish(task_name: str, *args: Any, **kwargs: Any) -> None:
    """Publish one task by name (fails fast if the broker is down). Call after commit."""
    publish_many(task_name, [args], kwargs)


def publish_many(task_name: str, arg_lists: Iterable[Sequence[Any]],
                 kwargs: dict[str, Any] | None = None) -> int:
    """Publish `task_name` once per argument list over one connection; how many."""
    count = 0
    with producer() as prod:
        for args in arg_lists:
            app.send_task(task_name, args=list(args), kwargs=kwargs or {}, producer=prod,
                          retry=False)
            count += 1
    return count


def broker_was_reset(url: str | None = None) -> bool:
    """True when Redis no longer holds our marker: it lost its data, queued tasks included.

    Sets the marker again, so a reset is reported once. Only the sweep calls this (a
    publisher setting the marker could hide a reset from it). A fresh Redis also
    reports True once; the sweep re-publishes idempotent work, so that costs a few
    tasks that find nothing to claim.
    Raises redis.RedisError when Redis does not answer (nothing can be re-published then).
    """
    import redis

    client = redis.Redis.from_url(url or settings.redis_url, socket_timeout=5,
                                  socket_connect_timeout=5)
    try:
        return bool(client.set(BROKER_MARKER, str(time.time()), nx=True))
    finally:
        client.close()


def first_time(key: str, seconds: float) -> bool:
    """True for the first caller to claim `key` in Redis for `seconds` (SET NX EX)."""
    import redis

    client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        return bool(client.set(key, "1", nx=True, ex=max(1, int(seconds))))
    finally:
        client.close()
