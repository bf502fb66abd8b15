"""The event-loop side of a batch: many SMTP transactions in flight, each row's verdict.

A batch sends over up to SMTP_MAX_CONNECTIONS connections at once, on the worker
process's asyncio event loop (pool.py). A producer builds messages ahead of the
connections on the builder thread (so DKIM signing never stalls the loop); each
connection takes the next built message, waits for the shared rate limit, sends it,
and hands the verdict to the ledger writer thread (writer.py), which records it within
milliseconds. Before every new transaction a connection looks at the writer's view of
the issue (refreshed every 50 ms): once the issue is paused or cancelled no
transaction starts, and the untried rows go back untouched. A row is charged an
attempt only when its own transaction failed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from newsletter.composer import Composition, IssueContent
from newsletter.delivery import pool, replies
from newsletter.delivery.connection import RelayConnection, SessionRefused, relay_name
from newsletter.delivery.ledger import ClaimedRow
from newsletter.delivery.ratelimit import RelayRateLimit, relay_rate_limit
from newsletter.delivery.replies import Verdict
from newsletter.delivery.writer import LedgerWriter
from newsletter.models import DeliveryStatus, IssueStatus, utcnow
from newsletter.settings import settings

if TYPE_CHECKING:
    from newsletter.message import MessageFactory, OutgoingMessage

log = logging.getLogger("newsletter.delivery")

MAX_RETRY_DELAY = 600.0  # seconds: no ETA longer than this, or Redis redelivers it
BUILD_CHUNK = 8  # messages built per trip to the builder thread
BUSY_RETRY_SECONDS = 2.0  # a relay refusing more connections (4xx at connect): try again
SUPPRESSED = "not confirmed, paused or suppressed at send time"


def backoff_seconds(attempts: int) -> float:
    """4xx backoff: SEND_RETRY_BASE_SECONDS, doubling per attempt, capped."""
    return min(MAX_RETRY_DELAY, settings.send_retry_base_seconds * 2 ** max(0, attempts - 1))


# --- renders, cached per worker process ---------------------------------------------------


class LRU:
    """A small process-level cache: renders are expensive, memory must stay flat."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any) -> Any:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


_factories = LRU(256)  # (issue_id, version, composition key) -> MessageFactory


def _factory(issue: IssueContent, composition: Composition) -> MessageFactory:
    from newsletter.message import MessageFactory
    from newsletter.render import render_digest

    key = (issue.id, issue.version, composition.key)
    factory = _factories.get(key)
    if factory is None:
        factory = MessageFactory(digest=render_digest(issue, composition), issue_id=issue.id)
        _factories.put(key, factory)
    return factory


@dataclass
class BatchOutcome:
    """What run_batch did; `retry_in` is set when rows were deferred."""

    counts: dict[str, int] = field(default_factory=dict)
    retry_in: float | None = None
    retry_at: datetime | None = None  # the one next_attempt_at of every row deferred here
    last_error: str = ""

    def add(self, kind: str, n: int = 1) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


class BatchSend:
    """The event-loop side of a batch: connections taking rows from one shared queue."""

    def __init__(self, writer: LedgerWriter, issue: IssueContent, outcome: BatchOutcome) -> None:
        self.writer = writer
        self.issue = issue
        self.outcome = outcome
        self.queue: deque[tuple[ClaimedRow, Composition]] = deque()  # not built yet
        self.ready: deque[tuple[ClaimedRow, OutgoingMessage]] = deque()  # built, not sent
        self.producing = True  # _produce may add to `ready`
        self.ahead = 1  # built messages waiting, at most (one per connection)
        self.connections_left = 0  # connection tasks still running
        self._more = asyncio.Event()  # `ready` grew, or the producer stopped
        self._space = asyncio.Event()  # `ready` shrank
        self.limit: RelayRateLimit | None = relay_rate_limit(relay_name())
        self.down: Verdict | None = None  # the relay could not be reached
        self.open_connections = 0
        self.opening = 0  # connections being opened right now
        self.most_open = 0  # connections open at once, at most, in this batch
        self.refused_more = False  # the relay refused one beyond those we had open
        # 5xx refusals since the relay last accepted a message, held back until it does:
        # a relay refusing everyone is refusing us, and those rows must not fail.
        self.suspects: list[tuple[ClaimedRow, Verdict]] = []
        self.retried: set[int] = set()  # rows given their one uncharged retry (_connection)

    async def run(self, work: list[tuple[ClaimedRow, Composition]]) -> None:
        self.queue.extend(work)
        n = min(pool.pool.most(), len(work))
        self.ahead = self.connections_left = n
        async with asyncio.TaskGroup() as group:  # a crash in one cancels the others
            group.create_task(self._produce())
            for _ in range(n):
                group.create_task(self._connection())
        if self.suspects and self.writer.may_start:
            self._settle_suspects()  # fewer than the threshold: they are the recipients' own
        self._hand_back_untried()
        if self.refused_more:  # the next batches open no more than the relay allowed
            pool.pool.refused_beyond(self.most_open)
            log.info("issue %s: the relay let this worker have %d connection(s) at once; "
                     "its batches keep to that for %.0f s", self.writer.issue_id,
                     self.most_open, pool.CAP_SECONDS)

    # --- one connection ---------------------------------------------------------------

    async def _produce(self) -> None:
        """Build messages ahead of the connections, BUILD_CHUNK per trip to the builder
        thread (each trip costs ~40 us of CPU in wake-ups: per message, that was 5 %)."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                while len(self.ready) >= self.ahead:
                    if not self.connections_left:
                        return  # every connection gave up (refused, paused): build no more
                    self._space.clear()
                    await self._space.wait()
                chunk: list[tuple[ClaimedRow, Composition]] = []
                while len(chunk) < BUILD_CHUNK and (item := self._take()) is not None:
                    chunk.append(item)
                if not chunk:
                    return
                built = await loop.run_in_executor(pool.builder(), self._build_all, chunk)
                for row, message, error in built:
                    if message is None:
                        self.writer.finish([row.id], DeliveryStatus.failed,
                                           f"could not build message: {error}")
                        self.outcome.add("failed")
                    else:
                        self.ready.append((row, message))
                self._more.set()
        finally:
            self.producing = False
            self._more.set()

    async def _next(self) -> tuple[ClaimedRow, OutgoingMessage] | None:
        """The next built message to send, or None when there is none or we must stop."""
        while self.down is None:
            if self.ready:
                self._space.set()
                return self.ready.popleft()
            if not self.producing:
                return None
            self._more.clear()
            await self._more.wait()
        return None

    async def _connection(self) -> None:
        conn: RelayConnection | None = None
        finished = False
        knocks = 0  # times in a row the relay refused this one a connection
        try:
            while (item := await self._next()) is not None:
                row, message = item
                if conn is None or conn.closed:
                    if conn is not None:
                        self.open_connections -= 1
                        conn = None
                    self.opening += 1
                    try:
                        conn = await pool.pool.get()
                    except SessionRefused as exc:
                        self.opening -= 1
                        self.ready.appendleft(item)
                        self._refused_session(exc.verdict)
                        if not (self.down is None and replies.relay_busy(exc.verdict)):
                            return
                        # Full for now while others of ours send: knock again shortly
                        # (another worker's connections come free as its batch ends),
                        # less often each time it says no.
                        knocks += 1
                        await self._wait_for_a_turn(BUSY_RETRY_SECONDS * 2 ** min(knocks, 3))
                        continue
                    self.opening -= 1
                    knocks = 0
                    self.open_connections += 1
                    self.most_open = max(self.most_open, self.open_connections)
                if self.limit is not None:
                    await self.limit.acquire()
                if not self.writer.may_start:  # paused or cancelled while we waited
                    self.ready.appendleft(item)
                    return
                if not self._still_ours(row):
                    continue
                verdict = await conn.send(message.envelope_from, message.to, message.data,
                                          wire_ready=message.wire_ready)
                if verdict.kind == replies.DOWN and row.id not in self.retried:
                    # The connection died before the relay answered MAIL FROM (an idle
                    # one the relay had just dropped): nothing was tried. Once, free.
                    self.retried.add(row.id)
                    self.ready.appendleft(item)  # the same message: nothing of it went out
                    continue
                self._record(row, message, verdict)
            finished = True
        finally:
            self.connections_left -= 1
            self._space.set()  # the producer must not wait for a connection that is gone
            if conn is not None:
                self.open_connections -= 1
                if finished:
                    pool.pool.put(conn)  # for the next batch in this process
                else:
                    conn.close()

    async def _wait_for_a_turn(self, seconds: float) -> None:
        """Up to `seconds`, less if the batch runs out of work or must stop."""
        deadline = asyncio.get_running_loop().time() + seconds
        while asyncio.get_running_loop().time() < deadline and self.writer.may_start \
                and self.down is None and (self.ready or self.producing):
            await asyncio.sleep(0.1)

    def _take(self) -> tuple[ClaimedRow, Composition] | None:
        """The next row to try, or None when there is none or we must stop."""
        while self.queue and self.writer.may_start and self.down is None:
            row, composition = self.queue.popleft()
            if self._still_ours(row):
                return row, composition
        return None

    def _still_ours(self, row: ClaimedRow) -> bool:
        """Is the row still ours to send, and its reader still subscribed? (Looked at
        when its message is built and again just before it is sent.)"""
        held = self.writer.held
        if held is not None and row.id not in held:
            log.warning("delivery %s was handed on by the sweep; not sending it", row.id)
            self.outcome.add("lost_lease")
            return False
        if row.id in self.writer.ineligible:
            self.writer.finish([row.id], DeliveryStatus.suppressed, SUPPRESSED)
            self.outcome.add("suppressed")
            return False
        return True

    def _build_all(self, chunk: list[tuple[ClaimedRow, Composition]],
                   ) -> list[tuple[ClaimedRow, OutgoingMessage | None, str]]:
        """On the builder thread: each row's message, or None and why (it fails alone)."""
        from newsletter.message import Recipient

        built: list[tuple[ClaimedRow, OutgoingMessage | None, str]] = []
        for row, composition in chunk:
            try:
                built.append((row, _factory(self.issue, composition).build(
                    Recipient(subscriber_id=row.subscriber_id, email=row.email,
                              name=row.name)), ""))
            except Exception as exc:  # a template/content bug: fail the row, keep going
                log.exception("building the message for delivery %s failed", row.id)
                built.append((row, None, str(exc)))
        return built

    # --- what a verdict does ----------------------------------------------------------

    def _refused_session(self, verdict: Verdict) -> None:
        error = f"cannot open a session with the SMTP relay {relay_name()}: {verdict.reply}"
        self.outcome.last_error = error
        if verdict.kind == replies.PAUSE:
            self._pause(error)
        elif self.open_connections == 0 and self.opening == 0:
            # Nobody got through: the relay is down or unreachable. If others did, or
            # may yet (a relay with a per-client limit refuses the connections beyond it
            # before the first sessions have finished EHLO), carry on with fewer.
            self.down = verdict
            log.error("issue %s: %s", self.writer.issue_id, error)
        else:
            if not self.refused_more:  # once a batch: refused ones knock again (4-16 s)
                log.info("issue %s: the relay refused one more connection (%s); carrying "
                         "on with %d", self.writer.issue_id, verdict.reply,
                         self.open_connections)
            self.refused_more = True

    def _record(self, row: ClaimedRow, message: OutgoingMessage, verdict: Verdict) -> None:
        kind = verdict.kind
        if kind == replies.SENT:
            self.writer.sent(row.id, message.message_id)
            self.outcome.add("sent")
            if self.suspects:
                self._settle_suspects()
            return
        self.outcome.last_error = verdict.reply
        if kind == replies.PAUSE:
            self._pause(f"the relay {relay_name()} refused us: {verdict.reply}")
            self.writer.release([row.id], f"not tried: the relay refused us: {verdict.reply}")
            self.outcome.add("released")
        elif verdict.permanent:
            self.suspects.append((row, verdict))
            if len(self.suspects) >= settings.smtp_refusals_before_pause:
                rows = [r.id for r, _ in self.suspects]
                self._pause(f"the relay {relay_name()} refused {len(rows)} recipients in a row "
                            f"and accepted none; the last said: {verdict.reply}")
                self.writer.release(rows, "not charged: the relay refused every recipient")
                self.outcome.add("released", len(rows))
                self.suspects = []
        else:  # retry, or down a second time for this row: tried and failed
            self._defer(row, verdict.reply)

    def _settle_suspects(self) -> None:
        """The relay accepts others, so these refusals were about those recipients."""
        for row, verdict in self.suspects:
            if verdict.kind == replies.SOFT:
                self._defer(row, verdict.reply)
                continue
            error = verdict.reply
            if verdict.kind == replies.POLICY:
                error = f"refused by the relay's policy (not the subscriber's fault): {error}"
            self.writer.finish([row.id], DeliveryStatus.failed, error, charge=True)
            self.outcome.add("failed")
            if verdict.kind == replies.BOUNCE:
                self.writer.bounce(row.email, verdict.reply)
                self.outcome.add("bounced")
        self.suspects = []

    def _defer(self, row: ClaimedRow, error: str) -> None:
        """Tried and failed for now (4xx, mailbox full, connection lost): +1 attempt.

        Out of attempts (SEND_MAX_RETRIES + 1) it fails. Every row deferred in one run
        gets the same next_attempt_at (the first deferral's backoff), so the task's one
        retry finds them all due instead of a trickle.
        """
        allowed = settings.send_max_retries + 1
        if row.attempts + 1 >= allowed:
            self.writer.finish([row.id], DeliveryStatus.failed,
                               f"out of retries after {allowed} attempts: {error}", charge=True)
            self.outcome.add("failed")
            return
        if self.outcome.retry_at is None:
            self.outcome.retry_at = utcnow() + timedelta(
                seconds=backoff_seconds(row.attempts + 1))
        self.writer.finish([row.id], DeliveryStatus.pending, error, charge=True,
                           next_attempt_at=self.outcome.retry_at)
        self.outcome.add("deferred")

    def _pause(self, reason: str) -> None:
        if self.writer.status == IssueStatus.sending:
            log.error("issue %s: pausing the send: %s", self.writer.issue_id, reason)
            self.writer.pause(reason)

    def _hand_back_untried(self) -> None:
        """Rows never tried go back as they were: nothing is charged for them."""
        rows = ([row.id for row, _ in self.queue] + [row.id for row, _ in self.ready]
                + [row.id for row, _ in self.suspects])
        self.queue.clear()
        self.ready.clear()
        if not rows:
            return
        if self.writer.status != IssueStatus.sending:
            self.writer.release(rows)
            self.outcome.add("released", len(rows))
            log.info("issue %s is %s: handed back %d untried rows", self.writer.issue_id,
                     self.writer.status, len(rows))
            return
        # The relay is down, or our lease ran short: try them again soon, uncharged. A
        # relay that answered 4xx at connect is alive but full (often our other workers
        # hold every connection it allows): a turn comes within seconds, not minutes.
        wait = 0.0
        if self.down is not None:
            wait = (BUSY_RETRY_SECONDS if replies.relay_busy(self.down)
                    else settings.send_retry_base_seconds)
        at = utcnow() + timedelta(seconds=wait)
        error = (f"not tried: cannot open a session with the SMTP relay {relay_name()}: "
                 f"{self.down.reply}" if self.down is not None else "not tried: lease ran short")
        self.writer.finish(rows, DeliveryStatus.pending, error, next_attempt_at=at)
        self.outcome.add("deferred", len(rows))
        if self.outcome.retry_at is None or at < self.outcome.retry_at:
            self.outcome.retry_at = at
