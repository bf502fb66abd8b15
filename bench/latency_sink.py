"""An SMTP sink that answers the end of DATA after a delay, like a hosted relay.

    .venv/bin/python bench/latency_sink.py PORT [--delay 0.1]

Postfix's smtp-sink can only wait whole seconds; SES, Postmark and Mailgun take
50-300 ms to accept a message. This sink accepts everything, discards it, and waits
`--delay` seconds (default 0.1) before the 250 that ends each DATA; every other
command is answered at once. It offers PIPELINING and reads pipelined commands.
It is an asyncio Protocol that scans for the end-of-data marker in bytes rather
than parsing lines (aiosmtpd reads the body line by line, which would cost more
CPU than the client under test on this 2-core machine). Prints `ready` when it
listens and, on SIGTERM/SIGINT, `messages N` accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

EOD = b"\r\n.\r\n"


class Sink(asyncio.Protocol):
    accepted = 0

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.buffer = bytearray()
        self.in_data = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._send(b"220 latency-sink ESMTP\r\n")

    def _send(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _accept(self) -> None:
        Sink.accepted += 1
        self._send(b"250 2.0.0 Ok: queued\r\n")

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            if self.in_data:
                end = self.buffer.find(EOD)
                if end < 0:
                    # Keep only a tail that could hold the start of the marker.
                    del self.buffer[: max(0, len(self.buffer) - 4)]
                    return
                del self.buffer[: end + len(EOD)]
                self.in_data = False
                asyncio.get_running_loop().call_later(self.delay, self._accept)
                continue
            end = self.buffer.find(b"\r\n")
            if end < 0:
                return
            line = bytes(self.buffer[:end]).upper()
            del self.buffer[: end + 2]
            if line.startswith((b"EHLO", b"HELO")):
                self._send(b"250-latency-sink\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                           b"250 SIZE 100000000\r\n")
            elif line == b"DATA":
                self.in_data = True
                # The body may start right after; a leading "." line needs CRLF before it.
                self.buffer[:0] = b"\r\n"
                self._send(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif line == b"QUIT":
                self._send(b"221 Bye\r\n")
                if self.transport is not None:
                    self.transport.close()
            else:  # MAIL, RCPT, RSET, NOOP
                self._send(b"250 2.0.0 Ok\r\n")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("port", type=int)
    parser.add_argument("--delay", type=float, default=0.1)
    args = parser.parse_args()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Sink(args.delay), "127.0.0.1", args.port,
                                      backlog=1024)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print("ready", flush=True)
    await stop.wait()
    server.close()
    print(f"messages {Sink.accepted}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
