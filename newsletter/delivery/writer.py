"""The one thread that talks to the database while a batch sends.

The event loop never waits on SQL: it drops each outcome into a queue and goes on.
This thread owns one database connection and, in turn:

* writes the outcomes in small group commits (a `sent` mark lands a few milliseconds
  after its 250; a worker killed in between costs at most those few a duplicate);
* reads the issue's status every POLL_SECONDS, so a pause or cancel stops new
  transactions within ~50 ms (`status`, read by every connection before each one);
* every REFRESH_SECONDS extends the lease on the rows still ours and re-reads them:
  rows the sweep handed on (`held`) and subscribers who left meanwhile (`ineligible`).

A cut connection (PostgreSQL restarted, the backend terminated) is re-opened and the
same group written again while our claim is still valid. Every write is guarded by the
claim token, so a group written twice changes nothing the second time.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, select, update
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session

from newsletter.delivery.control import pause_send
from newsletter.delivery.ledger import (
    D,
    I,
    finish_rows,
    load_claimed,
    release_rows,
)
from newsletter.models import DeliveryStatus, IssueStatus, utcnow
from newsletter.settings import settings

log = logging.getLogger("newsletter.delivery")

POLL_SECONDS = 0.05  # how often the issue's status is read
REFRESH_SECONDS = 2.0  # how often the lease is extended and the held rows re-read
GROUP_MAX = 500  # outcomes per commit at most
TICK_SECONDS = 0.01  # how long outcomes wait to be written, at most (plus the write)

_MARK_SENT = (
    update(D)
    .where(D.c.id == bindparam("row_id"), D.c.claim_token == bindparam("token"))
    .values(status=DeliveryStatus.sent, message_id=bindparam("mid"), sent_at=bindparam("at"),
            updated_at=bindparam("at"), lease_until=None, error="")
)
_STOP = object()


class LedgerWriter(threading.Thread):
    """Group-commits a batch's outcomes; keeps `status`, `held`, `ineligible` fresh."""

    def __init__(self, engine: Engine, issue_id: int, token: str, lease_until: datetime) -> None:
        super().__init__(name=f"ledger-writer-{issue_id}", daemon=True)
        self.engine = engine
        self.issue_id = issue_id
        self.token = token
        self.status: str = IssueStatus.sending
        self.held: frozenset[int] | None = None  # None: not re-read yet (all claimed are ours)
        self.ineligible: frozenset[int] = frozenset()
        self.lost_marks = 0
        self._lease_until = lease_until
        self._ops: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn: Connection | None = None
        self._polled = self._refreshed = time.monotonic()
        # Stop starting transactions this long before the lease ends unrefreshed: the
        # sweep may hand the rows on after it (another machine's clock may be ahead).
        self._margin = timedelta(seconds=settings.send_lease_seconds / 3)

    # --- called from the event loop (thread-safe, never blocks) -------------------------

    @property
    def may_start(self) -> bool:
        """May a new transaction start? The issue is sending and our claim is safe."""
        return self.status == IssueStatus.sending and utcnow() < self._lease_until - self._margin

    def sent(self, row_id: int, message_id: str) -> None:
        self._ops.put(("sent", {"row_id": row_id, "token": self.token,
                                "mid": message_id[:255], "at": utcnow()}))

    def finish(self, row_ids: Sequence[int], status: str, error: str = "", *,
               charge: bool = False, next_attempt_at: datetime | None = None) -> None:
        self._ops.put(("finish", (list(row_ids), status, error, charge, next_attempt_at)))

    def release(self, row_ids: Sequence[int], why: str = "") -> None:
        """Hand back untried rows (pending untouched, or cancelled with the issue)."""
        self._ops.put(("release", (list(row_ids), why)))

    def bounce(self, email: str, reason: str) -> None:
        self._ops.put(("bounce", (email, reason)))

    def pause(self, reason: str) -> None:
        """Pause the issue because the relay refuses us; stops new transactions at once."""
        self.status = IssueStatus.paused
        self._ops.put(("pause", reason))

    def close(self) -> None:
        """Write everything queued, then stop."""
        self._ops.put(_STOP)
        self.join()

    # --- the thread --------------------------------------------------------------------

    def run(self) -> None:
        stopping = False
        try:
            while not stopping:
                # Wake on a tick rather than on every outcome: each wake-up takes the
                # GIL from the event loop (measured: waking per message halved the rate).
                time.sleep(TICK_SECONDS)
                group: list[Any] = []
                try:
                    while len(group) < GROUP_MAX:
                        group.append(self._ops.get_nowait())
                except queue.Empty:
                    pass
                if _STOP in group:
                    group.remove(_STOP)
                    stopping = True
                now = time.monotonic()
                poll = now - self._polled >= POLL_SECONDS
                refresh = now - self._refreshed >= REFRESH_SECONDS and not stopping
                if group or poll or refresh:
                    self._with_retries(lambda g=group, p=poll, r=refresh: self._write(g, p, r))
        except Exception:
            log.exception("ledger writer for issue %s stopped", self.issue_id)
            self.status = "unknown"  # stop the sends: nothing more can be recorded
        finally:
            self._close_connection()

    def _with_retries(self, action: Any) -> None:
        """Run `action` on a live connection; re-open it while the claim still holds."""
        delay = 0.1
        while True:
            try:
                if self._conn is None:
                    self._conn = self.engine.connect()
                action()
                return
            except DBAPIError as exc:
                self._drop_connection()
                if utcnow() >= self._lease_until:
                    log.error("issue %s: database unavailable until our lease ended (%s); "
                              "the sweep will hand these rows on", self.issue_id, exc.orig)
                    self.status = "unknown"
                    return
                log.warning("issue %s: database connection lost (%s); re-opening it",
                            self.issue_id, exc.orig)
                time.sleep(delay)
                delay = min(2.0, delay * 2)

    def _write(self, group: list[Any], poll: bool, refresh: bool) -> None:
        conn = self._conn
        assert conn is not None
        marks = [args for kind, args in group if kind == "sent"]
        if marks:
            done = conn.execute(_MARK_SENT, marks)
            if 0 <= done.rowcount < len(marks):
                refresh = True  # the sweep handed rows on: find out which, at once
                self.lost_marks += len(marks) - done.rowcount
                log.error("issue %s: %d rows were sent after their lease was lost "
                          "(they may get a second copy)", self.issue_id,
                          len(marks) - done.rowcount)
        bounces = []
        for kind, args in group:
            if kind == "finish":
                ids, status, error, charge, at = args
                finish_rows(conn, self.token, ids, status, error, charge=charge,
                            next_attempt_at=at)
            elif kind == "release":
                ids, why = args
                status = (IssueStatus.cancelled if self.status == IssueStatus.cancelled
                          else IssueStatus.paused)
                release_rows(conn, self.token, ids, status, why)
            elif kind == "pause":
                # BatchSend._pause has logged it; pause_send logs it once it took.
                pause_send(session=conn, issue_id=self.issue_id, reason=args)
            elif kind == "bounce":
                bounces.append(args)
        if refresh:
            self._refresh(conn)
        if poll:
            status = conn.execute(select(I.c.status).where(I.c.id == self.issue_id)).scalar()
            if self.status == IssueStatus.sending or status != IssueStatus.sending:
                self.status = str(status)
            self._polled = time.monotonic()
        conn.commit()  # also ends the read: PostgreSQL must not sit idle in a transaction
        for email, reason in bounces:
            self._bounce(email, reason)

    def _refresh(self, conn: Connection) -> None:
        lease_until = utcnow() + timedelta(seconds=settings.send_lease_seconds)
        conn.execute(update(D).where(D.c.claim_token == self.token,
                                     D.c.status == DeliveryStatus.sending)
                     .values(lease_until=lease_until))
        rows = load_claimed(conn, self.token)
        self.held = frozenset(r.id for r in rows)
        self.ineligible = frozenset(r.id for r in rows if not r.eligible)
        self._lease_until = lease_until
        self._refreshed = time.monotonic()

    def _bounce(self, email: str, reason: str) -> None:
        """Suppress the address and mark the subscriber bounced (with an event)."""
        from newsletter.subscribers import mark_bounced

        with Session(self.engine) as session:
            try:
                mark_bounced(session=session, email=email, reason=reason)
                session.commit()
            except IntegrityError:  # another worker suppressed it a moment ago
                session.rollback()
            except DBAPIError as exc:
                log.error("could not record the bounce of %s: %s", email, exc.orig)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.invalidate()
                self._conn.close()
            except Exception:  # noqa: S110 - it is already broken; we only let go of it
                pass
            self._conn = None

    def _close_connection(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(DBAPIError):
                self._conn.close()
            self._conn = None
