"""`newsletter inbound`: the SMTP server behind the bounce domain's MX (aiosmtpd).

It takes mail only for the VERP bounce addresses of BOUNCE_DOMAIN and for
UNSUBSCRIBE_MAILTO, and refuses every other recipient at RCPT, so it can never relay.
Messages over INBOUND_MAX_BYTES are refused with the limit in the reply. Each accepted
message is read and recorded (committed) by a writer thread before the 250: the event
loop never waits on the database. Writers record in batches (whatever arrived while the
previous batch was committing shares the next transaction). If recording fails
(database down) the sender gets a 451 and tries again later, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import signal
import threading
from collections.abc import Iterator
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from newsletter.inbound import parse
from newsletter.inbound.process import Incoming, process_batch
from newsletter.settings import settings

log = logging.getLogger("newsletter.inbound")

MAX_RECIPIENTS = 50  # a bounce has one; a long list is somebody probing
MAX_BATCH = 64  # messages per transaction at most


class _Writers:
    """Threads that record messages off the event loop, a batch per transaction: what
    arrived while the last batch was committing goes into the next (group commit)."""

    def __init__(self, count: int) -> None:
        self.queue: queue.SimpleQueue[tuple[Incoming, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue())
        self.in_flight = 0  # messages handed over and not yet answered (event loop only)
        self.threads = [threading.Thread(target=self._run, name=f"inbound-writer-{n}",
                                         daemon=True) for n in range(count)]
        for thread in self.threads:
            thread.start()

    async def record(self, item: Incoming) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.in_flight += 1
        try:
            self.queue.put((item, future))
            return await future
        finally:
            self.in_flight -= 1

    def _run(self) -> None:
        while True:
            first = self.queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < MAX_BATCH:
                try:
                    nxt = self.queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.queue.put(None)  # let the stop reach this thread's next loop
                    break
                batch.append(nxt)
            try:
                results: list[Any] = process_batch([item for item, _ in batch], source="smtp")
            except Exception as exc:  # parsing is guarded; this is a last resort
                results = [exc] * len(batch)
            for (_item, future), result in zip(batch, results, strict=True):
                future.get_loop().call_soon_threadsafe(_settle, future, result)

    def stop(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join(30)


def _settle(future: asyncio.Future[Any], result: Any) -> None:
    if future.done():  # the client went away
        return
    if isinstance(result, BaseException):
        future.set_exception(result)
    else:
        future.set_result(result)


class InboundHandler:
    """aiosmtpd handler: RCPT policy, and DATA recorded by the writer threads."""

    def __init__(self, writers: _Writers) -> None:
        self.writers = writers

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return f"452 4.5.3 Too many recipients ({MAX_RECIPIENTS} at most)"
        if parse.verp_of(address) is not None or parse.is_unsubscribe_address(address):
            envelope.rcpt_tos.append(address)
            return "250 2.1.5 OK"
        log.info("refused RCPT TO:<%s> from %s (MAIL FROM:<%s>): not an address we receive for",
                 address, session.peer, envelope.mail_from)
        return (f"550 5.7.1 <{address}>: relay access denied; this server only receives "
                f"bounces for {settings.bounce_domain} and unsubscribe requests")

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        mail_from = str(envelope.mail_from or "").strip("<>")
        try:
            await asyncio.gather(*(self.writers.record(Incoming(bytes(raw), rcpt, mail_from))
                                   for rcpt in envelope.rcpt_tos))
        except Exception:
            log.exception("could not record a message from <%s> to %s; answered 451",
                          mail_from, envelope.rcpt_tos)
            return "451 4.3.0 Could not record the message right now; please try again later"
        return "250 2.0.0 Recorded"


class InboundSMTP(SMTP):
    """aiosmtpd's SMTP with size refusals that say what the limit is (RFC 5321 4.5.3.1.7
    lets the reply text explain; aiosmtpd's own says only 'Too much mail data')."""

    async def push(self, status: AnyStr) -> None:
        if isinstance(status, str) and status.startswith("500 Line too long"):
            log.warning("refused a message with a line over %s bytes (RFC 5321 4.5.3.1.6)",
                        self.line_length_limit)
        if isinstance(status, str) and status.startswith("552 Error"):
            limit = self.data_size_limit
            envelope = getattr(self, "envelope", None)
            log.warning("refused a message over INBOUND_MAX_BYTES (%s bytes) from <%s> to %s",
                        limit, str(getattr(envelope, "mail_from", "") or "").strip("<>"),
                        getattr(envelope, "rcpt_tos", []))
            status = (f"552 5.3.4 Message too big: this server accepts at most {limit} "
                      "bytes (INBOUND_MAX_BYTES)")
        await super().push(status)  # type: ignore[arg-type]


class InboundServer:
    """The receiver on its own event loop; `serve_forever` in the foreground (the
    `newsletter inbound` process) or `start`/`stop` in a thread (web and demo)."""

    def __init__(self, host: str, port: int, *, workers: int | None = None) -> None:
        self.host, self.port = host, port
        if workers is None:
            # SQLite takes one writer at a time (others sleep in its busy handler, which
            # measured slower than queueing here); a server database overlaps round trips.
            workers = 1 if settings.effective_database_url.startswith("sqlite") else 4
        self.writers = _Writers(workers)
        self.handler = InboundHandler(self.writers)
        self.loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None

    def _factory(self) -> InboundSMTP:
        return InboundSMTP(self.handler, data_size_limit=settings.inbound_max_bytes,
                           enable_SMTPUTF8=True, ident="Roundup inbound",
                           hostname=settings.bounce_domain)

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._factory, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def serve_forever(self, ready: Any = None) -> None:
        async def main() -> None:
            await self._listen()
            if ready is not None:
                ready(self.host, self.port)
            assert self._server is not None
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
            await stop.wait()
            # Stop taking connections, then let messages being recorded get their answer
            # (a message cut off here was not committed: its sender retries it).
            self._server.close()
            for _ in range(100):
                if not self.writers.in_flight:
                    break
                await asyncio.sleep(0.1)
            log.info("inbound SMTP stopped")

        try:
            asyncio.run(main())
        finally:
            self.writers.stop()

    def start(self) -> InboundServer:
        loop = self.loop = asyncio.new_event_loop()
        # Bind here, so a port in use raises OSError to the caller; then serve in a thread.
        try:
            loop.run_until_complete(self._listen())
        except BaseException:
            loop.close()
            self.writers.stop()
            raise
        self._thread = threading.Thread(target=loop.run_forever, name="inbound-smtp",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.loop is None or self._server is None:
            return
        loop, server = self.loop, self._server

        async def close() -> None:
            server.close()
            await server.wait_closed()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self.writers.stop()


@contextlib.contextmanager
def local_inbound(host: str = "127.0.0.1") -> Iterator[InboundServer | None]:
    """For `newsletter web` and `demo`: the receiver on INBOUND_PORT (a free port if that
    one is taken) for as long as they run; None if it could not start."""
    server = None
    for port in (settings.inbound_port, 0):
        try:
            server = InboundServer(host, port).start()
            break
        except OSError as exc:
            log.info("inbound SMTP port %s unavailable (%s)", port, exc)
    try:
        yield server
    finally:
        if server is not None:
            server.stop()
