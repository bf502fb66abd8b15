"""One asyncio SMTP connection to the relay: aiosmtplib opens it, our protocol pipelines on it.

aiosmtplib does the session set-up: connect, greeting, EHLO, STARTTLS with certificate
checks, AUTH. It cannot pipeline (RFC 2920): its protocol expects one reply per
command awaited and ignores data that arrives while a parsed reply waits to be picked
up, so MAIL, RCPT and DATA written together lose replies. Once the session is set up
we therefore hand the (possibly TLS) transport to `_Replies`, a small protocol that
queues every reply it parses; a transaction is then two writes and two waits when the
relay offers PIPELINING, four round trips when it does not. Measured against Postfix's
smtp-sink, the pipelined path takes half the CPU per message of aiosmtplib.sendmail
(see bench/README.md): that CPU, not the network, bounds a worker process.
"""

from __future__ import annotations

import asyncio
import collections
import re
import ssl
from dataclasses import dataclass

import aiosmtplib

from newsletter.delivery.replies import DOWN, Verdict, classify, connection_lost
from newsletter.settings import settings


def relay_name() -> str:
    """host:port of the configured relay, for error messages an operator will read."""
    return f"{settings.smtp_host or '(SMTP_HOST unset)'}:{settings.smtp_port}"


@dataclass(frozen=True)
class Reply:
    code: int
    text: str

    def __str__(self) -> str:
        return f"{self.code} {self.text}"


class ConnectionLost(Exception):
    """The relay closed the connection, or did not answer within SMTP_TIMEOUT."""


class SessionRefused(Exception):
    """The session could not be set up; `verdict` says whose trouble it is (pause or down)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reply)
        self.verdict = verdict


class _Replies(asyncio.Protocol):
    """Parses replies off the wire into a queue; waiters take them in order."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._lines: list[str] = []
        self._ready: collections.deque[Reply] = collections.deque()
        self._waiters: collections.deque[asyncio.Future[Reply]] = collections.deque()
        self.lost: str = ""

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        while (end := self._buffer.find(b"\n")) >= 0:
            line = bytes(self._buffer[: end + 1])
            del self._buffer[: end + 1]
            self._lines.append(line[4:].strip().decode("utf-8", "replace"))
            if line[3:4] == b"-":
                continue  # a multi-line reply goes on
            try:
                code = int(line[:3])
            except ValueError:
                code = 0
            reply = Reply(code, " ".join(self._lines))
            self._lines = []
            if self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(reply)
            else:
                self._ready.append(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = str(exc) if exc else "the relay closed the connection"
        self.transport = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionLost(self.lost))

    def eof_received(self) -> bool:
        return False  # close our side too

    def reply(self) -> asyncio.Future[Reply]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        if self._ready:
            waiter.set_result(self._ready.popleft())
        elif self.transport is None:
            waiter.set_exception(ConnectionLost(self.lost or "not connected"))
        else:
            self._waiters.append(waiter)
        return waiter

    def write(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            raise ConnectionLost(self.lost or "the connection is closed")
        self.transport.write(data)


_BARE_LF = re.compile(rb"(?<!\r)\n")


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload with its terminating `.` line (RFC 5321 4.5.2)."""
    if data.count(b"\n") != data.count(b"\r\n"):
        data = _BARE_LF.sub(b"\r\n", data.replace(b"\r\n", b"\n"))
    body = data.replace(b"\r\n.", b"\r\n..")
    if body.startswith(b"."):
        body = b"." + body
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    return body + b".\r\n"


class RelayConnection:
    """One session with SMTP_HOST, reused for many transactions until it breaks."""

    def __init__(self, protocol: _Replies, pipelining: bool) -> None:
        self._wire = protocol
        self.pipelining = pipelining

    @property
    def closed(self) -> bool:
        return self._wire.transport is None or self._wire.transport.is_closing()

    @classmethod
    async def open(cls) -> RelayConnection:
        """Connect, EHLO, STARTTLS and AUTH as the SMTP_* settings say.

        Raises SessionRefused: `pause` when the relay refuses us (5xx greeting, EHLO,
        STARTTLS or AUTH), `down` when it cannot be reached or is busy (4xx, timeout).
        """
        if not settings.smtp_host:
            raise SessionRefused(Verdict("pause", "SMTP_HOST is not set"))
        client = aiosmtplib.SMTP(
            hostname=settings.smtp_host, port=settings.smtp_port, timeout=settings.smtp_timeout,
            start_tls=settings.smtp_starttls, use_tls=False,
            username=settings.smtp_username or None, password=settings.smtp_password or None,
        )
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:  # connect() greets only for STARTTLS/AUTH
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SessionRefused(classify(exc.code, exc.message, stage="auth")) from exc
        except aiosmtplib.SMTPHeloError as exc:
            raise SessionRefused(classify(exc.code, exc.message, stage="helo")) from exc
        except aiosmtplib.SMTPConnectResponseError as exc:
            raise SessionRefused(classify(exc.code, exc.message, stage="connect")) from exc
        except aiosmtplib.SMTPResponseException as exc:
            raise SessionRefused(classify(exc.code, exc.message, stage="starttls")) from exc
        except (ssl.SSLError, aiosmtplib.SMTPException) as exc:
            kind = "down" if isinstance(exc, aiosmtplib.SMTPConnectError | TimeoutError) \
                else "pause"
            raise SessionRefused(Verdict(kind, f"{type(exc).__name__}: {exc}")) from exc
        except OSError as exc:
            raise SessionRefused(Verdict("down", f"{type(exc).__name__}: {exc}")) from exc
        transport = client.transport
        if transport is None:  # pragma: no cover - connect() returned without a transport
            raise SessionRefused(Verdict("down", "connection closed during set-up"))
        wire = _Replies()
        wire.transport = transport  # type: ignore[assignment]
        transport.set_protocol(wire)
        return cls(wire, client.supports_extension("pipelining"))

    async def send(self, sender: str, rcpt: str, data: bytes, *,
                   wire_ready: bool = False) -> Verdict:
        """One message to one recipient; the verdict on it (never raises for SMTP trouble).

        `wire_ready`: the caller guarantees `data` has CRLF line ends only, no line
        starting with "." and a final CRLF (OutgoingMessage.wire_ready), so it goes out
        as it is.
        """
        if "\r" in sender + rcpt or "\n" in sender + rcpt:
            raise ValueError("an SMTP address contains a line break")
        stage = "mail"
        replies: list[Reply] = []
        try:
            async with asyncio.timeout(settings.smtp_timeout):
                mail = f"MAIL FROM:<{sender}>\r\n".encode()
                rcpt_to = f"RCPT TO:<{rcpt}>\r\n".encode()
                if self.pipelining:
                    self._wire.write(mail + rcpt_to + b"DATA\r\n")
                    for _ in range(3):
                        replies.append(await self._wire.reply())
                else:
                    for command in (mail, rcpt_to, b"DATA\r\n"):
                        self._wire.write(command)
                        replies.append(await self._wire.reply())
                        if replies[-1].code not in (250, 251, 354):
                            break
                for stage, reply, ok in zip(("mail", "rcpt", "data"), replies,
                                            ((250,), (250, 251), (354,)), strict=False):
                    if reply.code not in ok:
                        await self._abandon(replies)
                        return classify(reply.code, reply.text, stage=stage)
                stage = "data"
                self._wire.write(data + b".\r\n" if wire_ready else _dot_stuffed(data))
                final = await self._wire.reply()
        except (ConnectionLost, TimeoutError) as exc:
            self.close()
            detail = str(exc) or "no answer within SMTP_TIMEOUT"
            if not replies:  # not even MAIL FROM was answered: nothing was tried
                return Verdict(DOWN, f"connection lost before the transaction: {detail}")
            return connection_lost(detail)
        if final.code == 421:
            self.close()
        return classify(final.code, final.text, stage=stage)

    async def _abandon(self, replies: list[Reply]) -> None:
        """After a refusal mid-transaction: end a DATA the server accepted, then RSET.

        The refusal is the verdict; if the connection breaks meanwhile it is just closed.
        """
        if any(r.code == 421 for r in replies):
            self.close()  # 421: the server is closing this connection
            return
        try:
            if replies[-1].code == 354:
                self._wire.write(b".\r\n")  # an empty message, which we then reset
                await self._wire.reply()
            self._wire.write(b"RSET\r\n")
            if (await self._wire.reply()).code != 250:
                self.close()
        except ConnectionLost:
            self.close()

    async def quit(self) -> None:
        """QUIT politely (briefly); close in any case."""
        if not self.closed:
            try:
                async with asyncio.timeout(2):
                    self._wire.write(b"QUIT\r\n")
                    await self._wire.reply()
            except (ConnectionLost, TimeoutError):
                pass
        self.close()

    def close(self) -> None:
        if self._wire.transport is not None:
            self._wire.transport.close()
