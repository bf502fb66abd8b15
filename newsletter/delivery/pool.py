"""The worker process's event loop and its pool of idle relay connections.

One asyncio loop per worker process runs every batch's sends, on a daemon thread
(started in the process that uses it, so a forked Celery child gets its own). It
outlives a batch so that connections can too: a batch of 250 over 50 connections
would otherwise open 50 sessions (TCP, EHLO, STARTTLS, AUTH) for five messages each.
Idle connections wait in the pool for the next batch and are closed after
IDLE_SECONDS, before relays drop them (Postfix waits 300 s, hosted relays less). A
connection the relay closed meanwhile is noticed by the loop and never handed out.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from newsletter.delivery.connection import RelayConnection
from newsletter.settings import settings

T = TypeVar("T")

IDLE_SECONDS = 5.0  # an idle connection is closed after this long
# After the relay refused one more connection (Postfix's per-client limit is 50 by
# default, shared by every worker), batches open no more than were open then, for
# this long; then they try SMTP_MAX_CONNECTIONS again (the others may have gone).
CAP_SECONDS = 60.0

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_pid = 0
_builder: ThreadPoolExecutor | None = None


def _key() -> tuple[Any, ...]:
    """Connections are only reused for the relay and login they were opened with."""
    return (settings.smtp_host, settings.smtp_port, settings.smtp_username,
            settings.smtp_password, settings.smtp_starttls)


class ConnectionPool:
    """Idle connections by relay; used only on the loop's thread."""

    def __init__(self) -> None:
        self._idle: dict[tuple[Any, ...], list[tuple[RelayConnection, float]]] = {}
        self._caps: dict[tuple[Any, ...], tuple[int, float]] = {}  # relay -> (most, until)

    def most(self) -> int:
        """How many connections a batch may use now: SMTP_MAX_CONNECTIONS, or fewer for
        CAP_SECONDS after the relay refused one beyond what we had open."""
        cap = self._caps.get(_key())
        if cap is not None and time.monotonic() < cap[1]:
            return min(cap[0], settings.smtp_max_connections)
        return settings.smtp_max_connections

    def refused_beyond(self, open_now: int) -> None:
        """The relay refused a connection while `open_now` of ours were open."""
        self._caps[_key()] = (max(1, open_now), time.monotonic() + CAP_SECONDS)

    async def get(self) -> RelayConnection:
        """A live idle connection to the configured relay, or a new one (may raise)."""
        idle = self._idle.get(_key(), [])
        while idle:
            conn, _ = idle.pop()
            if not conn.closed:
                return conn
        return await RelayConnection.open()

    def put(self, conn: RelayConnection) -> None:
        if conn.closed:
            return
        idle = self._idle.setdefault(_key(), [])
        if len(idle) >= settings.smtp_max_connections:
            conn.close()
            return
        idle.append((conn, time.monotonic()))

    async def reap(self) -> None:
        """Close connections idle for IDLE_SECONDS (QUIT first), for ever."""
        while True:
            await asyncio.sleep(1.0)
            cutoff = time.monotonic() - IDLE_SECONDS
            for key, idle in list(self._idle.items()):
                old = [c for c, at in idle if at < cutoff or c.closed]
                self._idle[key] = [(c, at) for c, at in idle if at >= cutoff and not c.closed]
                for conn in old:
                    await conn.quit()


pool = ConnectionPool()


def _start() -> asyncio.AbstractEventLoop:
    global _loop, _pid, _builder
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.call_soon(ready.set)
        loop.create_task(pool.reap())
        loop.run_forever()

    threading.Thread(target=run, name="smtp-loop", daemon=True).start()
    ready.wait()
    _loop, _pid = loop, os.getpid()
    # Messages are built (and DKIM-signed) here, off the loop.
    _builder = ThreadPoolExecutor(1, thread_name_prefix="build")
    return loop


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the process's loop and wait for it (from any other thread)."""
    global pool
    with _lock:
        loop = _loop
        if loop is None or _pid != os.getpid() or loop.is_closed():
            pool = ConnectionPool()  # a fork's inherited entries belong to the parent
            loop = _start()
    return asyncio.run_coroutine_threadsafe(coro, loop).result()


def builder() -> ThreadPoolExecutor:
    """The thread that builds messages for the loop."""
    assert _builder is not None, "pool.run() starts it"
    return _builder
