"""`newsletter inbound`: the SMTP server behind the bounce domain's MX (aiosmtpd).

It takes mail only for the VERP bounce addresses of BOUNCE_DOMAIN and for
UNSUBSCRIBE_MAILTO, and refuses every other recipient at RCPT, so it can never relay.
Messages over INBOUND_MAX_BYTES are refused with the limit in the reply. Each accepted
message is read and recorded (committed) in a worker thread before the 250: the event
loop never waits on the database. If recording fails (database down) the sender gets a
451 and tries again later, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, AnyStr

from aiosmtpd.smtp import SMTP

from newsletter.inbound import parse
from newsletter.inbound.process import process_message
from newsletter.settings import settings

log = logging.getLogger("newsletter.inbound")

MAX_RECIPIENTS = 50  # a bounce has one; a long list is somebody probing


class InboundHandler:
    """aiosmtpd handler: RCPT policy, and DATA recorded off the event loop."""

    def __init__(self, executor: ThreadPoolExecutor) -> None:
        self.executor = executor

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
        loop = asyncio.get_running_loop()
        try:
            for rcpt in envelope.rcpt_tos:
                await loop.run_in_executor(self.executor, _process, bytes(raw), rcpt,
                                           envelope.mail_from or "")
        except Exception:
            log.exception("could not record a message from %s to %s; answered 451",
                          envelope.mail_from, envelope.rcpt_tos)
            return "451 4.3.0 Could not record the message right now; please try again later"
        return "250 2.0.0 Recorded"


def _process(raw: bytes, rcpt: str, mail_from: str) -> None:
    process_message(raw, recipient=rcpt, mail_from=mail_from, source="smtp")


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
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="inbound")
        self.handler = InboundHandler(self.executor)
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
            async with self._server:
                await self._server.serve_forever()

        try:
            asyncio.run(main())
        finally:
            self.executor.shutdown(wait=True)

    def start(self) -> InboundServer:
        loop = self.loop = asyncio.new_event_loop()
        # Bind here, so a port in use raises OSError to the caller; then serve in a thread.
        try:
            loop.run_until_complete(self._listen())
        except BaseException:
            loop.close()
            self.executor.shutdown(wait=False)
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
        self.executor.shutdown(wait=True)


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
