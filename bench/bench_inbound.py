"""Inbound benchmark: DSNs per second through `newsletter inbound`, end to end.

A real SMTP client (smtplib, several connections in threads) sends N RFC 3464 DSNs, one
per subscriber of a sent issue, to the receiver running as its own process (`python -m
newsletter inbound --port 0`); each is parsed, matched to its ledger row, recorded by the
bounce policy and committed before the 250. The rate is N / (first MAIL to last 250).

As a reference measured in the same run, the same clients send the same messages to an
aiosmtpd server that only answers 250 (in a process of its own too): the ratio says how
much of the SMTP conversation's ceiling the receiver keeps on this (shared) machine.

    .venv/bin/python bench/bench_inbound.py                     # N = 2,000, SQLite
    .venv/bin/python bench/bench_inbound.py -n 5000 --connections 8
    .venv/bin/python bench/bench_inbound.py --database-url postgresql://postgres@127.0.0.1:5432/roundup_bench_inbound
"""

from __future__ import annotations

import argparse
import os
import smtplib
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from email.utils import formatdate
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

SECRET = "bench-inbound-secret-0123456789abcdef0123456789"  # noqa: S105

SINK = """
import asyncio, sys
from aiosmtpd.smtp import SMTP
class Sink:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
async def main():
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: SMTP(Sink(), data_size_limit=None),
                                      "127.0.0.1", 0)
    print(f"listening on 127.0.0.1:{server.sockets[0].getsockname()[1]} ", flush=True)
    await server.serve_forever()
asyncio.run(main())
"""


def prepare(n: int, database_url: str) -> tuple[int, list[tuple[int, str, str]]]:
    """An issue sent to n subscribers: (issue id, [(subscriber id, email, message id)])."""
    from sqlalchemy import insert
    from sqlmodel import SQLModel

    from newsletter import db
    from newsletter.models import (
        Delivery,
        DeliveryStatus,
        Issue,
        IssueStatus,
        Subscriber,
        SubscriberStatus,
        utcnow,
    )

    if database_url.startswith("postgresql"):
        from sqlalchemy import text

        engine = db.make_engine(database_url)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        engine.dispose()
    db.migrate(database_url)
    engine = db.make_engine(database_url)
    now = utcnow()
    with engine.begin() as conn:
        issue_id = conn.execute(insert(Issue).values(
            title="Bench", intro="", issue_date=date(2026, 11, 30), status=IssueStatus.sent,
            created_at=now, updated_at=now, status_reason="")).inserted_primary_key[0]
        conn.execute(insert(Subscriber), [
            {"email": f"reader{i}@example.org", "name": "", "timezone": "UTC",
             "only_my_topics": False, "status": SubscriberStatus.confirmed, "paused": False,
             "source": "bench", "created_at": now, "updated_at": now, "track_clicks": True}
            for i in range(n)])
        rows = conn.execute(SQLModel.metadata.tables["subscriber"].select()).all()
        people = [(r.id, r.email, f"<{1700000000 + r.id}.{r.id:020x}@roundup.example>")
                  for r in rows]
        conn.execute(insert(Delivery), [
            {"issue_id": issue_id, "subscriber_id": sid, "status": DeliveryStatus.sent,
             "message_id": mid, "composition_key": "", "batch": 1, "attempts": 1,
             "claim_token": "", "error": "", "created_at": now, "updated_at": now,
             "sent_at": now} for sid, _email, mid in people])
    engine.dispose()
    return int(issue_id), people


def dsn(verp: str, email: str, message_id: str, n: int) -> bytes:
    status = "5.1.1" if n % 10 == 0 else "4.2.2"  # mostly soft: the costlier policy path
    return (
        f"From: MAILER-DAEMON@mx.example.org\r\nTo: {verp}\r\n"
        f"Subject: Undelivered Mail Returned to Sender\r\nDate: {formatdate()}\r\n"
        f"Message-ID: <bench.{n}.{time.time_ns()}@mx.example.org>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="b"\r\n\r\n'
        "--b\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--b\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\n"
        f"Final-Recipient: rfc822; {email}\r\nAction: failed\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <{email}>: rejected\r\n\r\n"
        "--b\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"Message-ID: {message_id}\r\nTo: {email}\r\nSubject: Weekly roundup\r\n\r\n--b--\r\n"
    ).encode()


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + 120
    while b"listening on" not in line and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            raise SystemExit(f"{args} exited with {proc.returncode}")
    port = int(line.split(b"listening on ", 1)[1].split(b" ", 1)[0].rsplit(b":", 1)[1])
    return proc, port


def blast(port: int, messages: list[tuple[str, bytes]], connections: int) -> float:
    """Send every message (rcpt, data), `connections` SMTP sessions in parallel; seconds."""
    errors: list[str] = []
    chunks = [messages[i::connections] for i in range(connections)]

    def run(chunk: list[tuple[str, bytes]]) -> None:
        with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
            for rcpt, data in chunk:
                try:
                    client.sendmail("", [rcpt], data)
                except smtplib.SMTPException as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=run, args=(c,)) for c in chunks]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    if errors:
        raise SystemExit(f"{len(errors)} messages refused, e.g. {errors[0]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="DSNs to send (one per subscriber)")
    parser.add_argument("--connections", type=int, default=4, help="parallel SMTP sessions")
    parser.add_argument("--database-url", default="", help="default: a fresh SQLite file")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-inbound-"))
    database_url = opts.database_url or f"sqlite:///{work / 'bench.db'}"
    env = {**os.environ, "DATABASE_URL": database_url, "DATA_DIR": str(work / "var"),
           "SECRET_KEY": SECRET, "ENVIRONMENT": "test", "BOUNCE_DOMAIN": "bounces.bench.example"}
    os.environ.update(env)
    from newsletter.message import verp_address

    t0 = time.perf_counter()
    issue_id, people = prepare(opts.n, database_url)
    print(f"prepared issue {issue_id} sent to {len(people)} subscribers in "
          f"{time.perf_counter() - t0:.1f} s ({database_url.split(':')[0]})")
    messages = [(verp_address(sid, issue_id), dsn(verp_address(sid, issue_id), email, mid, i))
                for i, (sid, email, mid) in enumerate(people)]

    sink, sink_port = start([sys.executable, "-c", SINK], env)
    try:
        ref = blast(sink_port, messages, opts.connections)
    finally:
        sink.terminate()
        sink.wait()

    import psutil

    receiver, port = start([sys.executable, "-m", "newsletter", "inbound", "--port", "0"], env)
    try:
        cpu = psutil.Process(receiver.pid)
        before = sum(cpu.cpu_times()[:2])
        took = blast(port, messages, opts.connections)
        cpu_seconds = sum(cpu.cpu_times()[:2]) - before
    finally:
        receiver.terminate()
        receiver.wait()

    from sqlalchemy import func, select

    from newsletter import db
    from newsletter.models import Event, InboundMessage

    with db.session_scope() as session:
        recorded = session.execute(select(func.count()).select_from(InboundMessage)).scalar()
        kinds = dict(session.execute(select(Event.kind, func.count()).where(
            Event.issue_id == issue_id).group_by(Event.kind)).all())
    if recorded != len(messages):
        raise SystemExit(f"only {recorded} of {len(messages)} DSNs were recorded")
    rate, ref_rate = len(messages) / took, len(messages) / ref
    print(f"reference (aiosmtpd that only says 250): {ref_rate:,.0f} msg/s")
    print(f"newsletter inbound: {len(messages)} DSNs in {took:.2f} s = {rate:,.0f} DSNs/s "
          f"({rate / ref_rate:.0%} of the reference); recorded {recorded}, events {kinds}")
    # On a shared machine the wall clock depends on the neighbours; the receiver's own
    # CPU time per DSN says what one free core would carry.
    print(f"receiver CPU: {cpu_seconds / len(messages) * 1000:.2f} ms per DSN = "
          f"{len(messages) / cpu_seconds:,.0f} DSNs per CPU-second; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
