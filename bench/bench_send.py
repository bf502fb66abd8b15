"""Send one issue to N subscribers through real Celery workers and measure it.

    .venv/bin/python bench/bench_send.py                 # N=20000, then N/4
    .venv/bin/python bench/bench_send.py -n 5000 --no-quarter
    .venv/bin/python bench/bench_send.py --database-url postgresql://postgres@127.0.0.1/test
    .venv/bin/python bench/bench_send.py -n 20000 --no-quarter --sink latency --reference
    .venv/bin/python bench/bench_send.py -n 20000 --no-quarter --dkim --reference

Everything is real: the seed roundups ingested and combined into one issue whose
digests are 40-60 KB (--max-items), subscribers with mixed topic choices,
plan_send, a private redis-server, a Celery prefork worker (2 processes), and a local
SMTP sink: Postfix's smtp-sink (zero latency; an aiosmtpd sink that discards if
Postfix is missing) or, with --sink latency, bench/latency_sink.py, which answers the
end of DATA after 100 ms like a hosted relay. --dkim signs with a fresh 2048-bit RSA
key. --reference also runs Postfix's smtp-source into the same sink in the same run
(4 sessions against smtp-sink, 300 against the latency sink, -d: connections reused,
50,000-byte messages) and prints the ratio. Prints end-to-end messages/s, planning
time and peak worker RSS.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402
from sqlmodel import col, select  # noqa: E402

from newsletter import db  # noqa: E402
from newsletter.cli.local.services import free_port, private_redis, worker_process  # noqa: E402
from newsletter.models import (  # noqa: E402
    Issue,
    IssueStatus,
    Item,
    ItemTopic,
    Subscriber,
    SubscriberStatus,
    SubscriberTopic,
    Topic,
    utcnow,
)
from newsletter.settings import settings  # noqa: E402

DEFAULT_MAX_ITEMS = 12

SINK_CODE = """
import asyncio, sys
from aiosmtpd.controller import Controller
class Discard:
    async def handle_DATA(self, server, session, envelope):
        return "250 OK"
c = Controller(Discard(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
print("ready", flush=True)
try:
    asyncio.get_event_loop().run_forever()
except KeyboardInterrupt:
    pass
"""


def _wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"SMTP sink did not listen on {port}")


def _postfix(tool: str) -> str | None:
    return shutil.which(tool) or (f"/usr/sbin/{tool}" if Path(f"/usr/sbin/{tool}").exists()
                                  else None)


@contextlib.contextmanager
def smtp_sink(kind: str = "smtp-sink", delay: float = 0.1) -> Iterator[tuple[int, str]]:
    """Postfix smtp-sink if installed (C, fast), else an aiosmtpd sink; yields (port, name).

    kind="latency": bench/latency_sink.py, answering the end of DATA after `delay` s.
    """
    port = free_port()
    binary = _postfix("smtp-sink")
    if kind == "latency":
        cmd = [sys.executable, str(REPO / "bench" / "latency_sink.py"), str(port),
               "--delay", str(delay)]
        name = f"latency sink ({delay * 1000:.0f} ms)"
    elif binary:
        cmd = [binary, "-u", "nobody", f"127.0.0.1:{port}", "1024"]
        name = "postfix smtp-sink"
    else:
        cmd = [sys.executable, "-c", SINK_CODE, str(port)]
        name = "aiosmtpd discard sink"
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield port, name
    finally:
        proc.terminate()
        proc.wait(5)


def load_data(n: int, seed: int = 7) -> int:
    """Ingest the seeds, build the bench issue, approve it, add `n` confirmed subscribers."""
    from newsletter.ingest import ingest_file
    from newsletter.topics import sync_topics

    with db.session_scope() as session:
        sync_topics(session=session)
    manifest = tomllib.loads((REPO / "seeds" / "manifest.toml").read_text())
    ids: list[int] = []
    with db.session_scope() as session:
        for entry in manifest["seed"]:
            d = date.fromisoformat(entry["date"])
            ids.append(ingest_file(session=session, path=REPO / "seeds" / entry["file"],
                                   issue_date=d).issue_id)
    issue_id = combined_issue(ids)
    rng = random.Random(seed)
    now = utcnow()
    with db.session_scope() as session:
        session.execute(Issue.__table__.update().where(  # type: ignore[attr-defined]
            Issue.__table__.c.id == issue_id).values(  # type: ignore[attr-defined]
            status=IssueStatus.approved, approved_at=now))
        topic_ids = [t for t in session.execute(text("SELECT id FROM topic")).scalars()]
        session.execute(Subscriber.__table__.insert(), [  # type: ignore[attr-defined]
            {"email": f"reader{i}@bench.example", "name": f"Reader {i}", "timezone": "UTC",
             "only_my_topics": rng.random() < 0.2, "status": SubscriberStatus.confirmed,
             "paused": False, "source": "bench", "created_at": now, "updated_at": now}
            for i in range(n)
        ])
        ids = list(session.execute(text("SELECT id FROM subscriber ORDER BY id")).scalars())
        links = [
            {"subscriber_id": sid, "topic_id": tid}
            for sid in ids
            for tid in rng.sample(topic_ids, rng.choice([0, 1, 1, 2, 2, 3]))
        ]
        session.execute(SubscriberTopic.__table__.insert(), links)  # type: ignore[attr-defined]
        assert session.get(Topic, topic_ids[0]) is not None
    return issue_id


def combined_issue(seed_issue_ids: list[int]) -> int:
    """A new issue holding every seed issue's items (and topics), newest seed first.

    One seed week makes 27-33 KB messages; the brief's floor is for 40-60 KB ones, so
    the bench issue draws on several weeks and DIGEST_MAX_ITEMS decides how many go
    into each digest.
    """
    with db.session_scope() as session:
        newest = max((session.get(Issue, i) for i in seed_issue_ids),
                     key=lambda issue: issue.issue_date if issue else date.min)
        assert newest is not None
        bench = Issue(title=newest.title, intro=newest.intro, issue_date=newest.issue_date,
                      source_name="bench: every seed roundup")
        session.add(bench)
        session.flush()
        assert bench.id is not None
        position = 0
        for source in sorted(seed_issue_ids, reverse=True):
            for item in session.exec(select(Item).where(Item.issue_id == source)
                                     .order_by(col(Item.position))).all():
                copy = Item(issue_id=bench.id, position=position, headline=item.headline,
                            body=item.body, link_text=item.link_text, link_url=item.link_url,
                            kind=item.kind)
                session.add(copy)
                session.flush()
                assert copy.id is not None
                for tag in session.exec(select(ItemTopic).where(ItemTopic.item_id == item.id)):
                    session.add(ItemTopic(item_id=copy.id, topic_id=tag.topic_id,
                                          source=tag.source))
                position += 1
        assert bench.id is not None
        return bench.id


def message_sizes(issue_id: int, samples: int = 40, seed: int = 3) -> tuple[int, int]:
    """Smallest and largest message (bytes) over random topic choices, as sent."""
    from newsletter.composer import compose, load_issue
    from newsletter.message import MessageFactory, Recipient
    from newsletter.render import render_digest

    with db.session_scope() as session:
        issue = load_issue(session=session, issue_id=issue_id)
        slugs = list(session.execute(text("SELECT slug FROM topic")).scalars())
    rng = random.Random(seed)
    sizes = []
    for i in range(samples):
        followed = rng.sample(slugs, rng.choice([0, 1, 2, 3]))
        comp = compose(issue, followed=followed, max_items=settings.digest_max_items)
        if comp is None:
            continue
        factory = MessageFactory(digest=render_digest(issue, comp), issue_id=issue_id)
        message = factory.build(Recipient(subscriber_id=i + 1, email=f"reader{i}@bench.example",
                                          name=f"Reader {i}"))
        sizes.append(len(message.data))
    return min(sizes), max(sizes)


def smtp_source(port: int, *, sessions: int, messages: int, size: int = 50_000) -> float:
    """Postfix's smtp-source into the sink: messages per second (the reference)."""
    binary = _postfix("smtp-source")
    if binary is None:
        return float("nan")
    started = time.perf_counter()
    subprocess.run([binary, "-d", "-s", str(sessions), "-m", str(messages), "-l", str(size),
                    "-f", "bench@bench.example", "-t", "sink@bench.example",
                    f"127.0.0.1:{port}"], check=True, stdout=subprocess.DEVNULL)
    return messages / (time.perf_counter() - started)


def dkim_env(tmp: str) -> dict[str, str]:
    """A fresh 2048-bit RSA key; the settings that make every message DKIM-signed."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = Path(tmp) / "dkim.pem"
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    settings.dkim_private_key_path = path
    settings.dkim_domain = "roundup.example"
    return {"DKIM_PRIVATE_KEY_PATH": str(path), "DKIM_DOMAIN": "roundup.example"}


def run(n: int, *, database_url: str | None, concurrency: int, sink_kind: str = "smtp-sink",
        dkim: bool = False, reference: bool = False,
        env: dict[str, str] | None = None) -> dict[str, Any]:
    from newsletter.delivery import enqueue_batches, plan_send, status_counts

    with tempfile.TemporaryDirectory(prefix="roundup-bench-") as tmp:
        settings.data_dir = Path(tmp)
        settings.database_url = database_url or f"sqlite:///{tmp}/bench.db"
        db.reset_engine()
        if database_url:
            with db.get_engine().begin() as conn:
                conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
        db.migrate()
        issue_id = load_data(n)
        extra = {"CELERY_LOG_LEVEL": "WARNING", **(env or {})}
        if dkim:
            extra.update(dkim_env(tmp))
        smallest, largest = message_sizes(issue_id)

        with private_redis() as redis_url, smtp_sink(sink_kind) as (port, sink):
            ref = float("nan")
            if reference:
                sessions = 300 if sink_kind == "latency" else 4
                ref = smtp_source(port, sessions=sessions, messages=min(n, 20_000))
            settings.redis_url = redis_url
            settings.smtp_host, settings.smtp_port = "127.0.0.1", port
            started = time.perf_counter()
            with db.session_scope() as session:
                planned = plan_send(session=session, issue_id=issue_id)
            plan_seconds = time.perf_counter() - started
            with worker_process(concurrency=concurrency, extra_env=extra) as proc:
                parent = psutil.Process(proc.pid)
                peak = 0
                t0 = time.perf_counter()
                enqueue_batches(issue_id)
                while True:
                    with contextlib.suppress(psutil.Error):
                        rss = [c.memory_info().rss for c in parent.children(recursive=True)]
                        peak = max([peak, *rss])
                    with db.session_scope() as session:
                        counts = status_counts(session=session, issue_id=issue_id)
                    if not counts["pending"] and not counts["sending"]:
                        break
                    time.sleep(0.25)
                elapsed = time.perf_counter() - t0
        sent = counts["sent"]
        return {
            "subscribers": n, "planned": planned, "sent": sent, "failed": counts["failed"],
            "skipped": counts["skipped"], "plan_s": plan_seconds, "send_s": elapsed,
            "msg_per_s": sent / elapsed, "peak_rss_mb": peak / 2**20,
            "msg_kb": f"{smallest / 1024:.0f}-{largest / 1024:.0f}",
            "sink": sink, "reference": ref, "dkim": dkim,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=20_000, help="subscribers (default 20000)")
    parser.add_argument("--no-quarter", action="store_true", help="skip the N/4 run")
    parser.add_argument("--database-url", default=None, help="PostgreSQL URL (schema is wiped)")
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-items", type=int, default=DEFAULT_MAX_ITEMS,
                        help=f"DIGEST_MAX_ITEMS (default {DEFAULT_MAX_ITEMS}: 40-60 KB messages)")
    parser.add_argument("--sink", choices=["smtp-sink", "latency"], default="smtp-sink",
                        help="Postfix smtp-sink (zero latency) or the 100 ms latency sink")
    parser.add_argument("--dkim", action="store_true", help="sign with a 2048-bit RSA key")
    parser.add_argument("--reference", action="store_true",
                        help="also run Postfix smtp-source into the same sink")
    parser.add_argument("--connections", type=int, default=None,
                        help="SMTP_MAX_CONNECTIONS for the worker (default: the setting's)")
    parser.add_argument("--batch-size", type=int, default=None, help="SEND_BATCH_SIZE")
    args = parser.parse_args()
    settings.digest_max_items = args.max_items  # the worker inherits it through its env
    env = {}
    if args.connections:
        env["SMTP_MAX_CONNECTIONS"] = str(args.connections)
    if args.batch_size:
        # Planning (in this process) cuts the batches; the worker's copy only matters
        # for re-planned rows. Both must agree, or the flag changes nothing.
        settings.send_batch_size = args.batch_size
        env["SEND_BATCH_SIZE"] = str(args.batch_size)
    sizes = [args.n] if args.no_quarter else [args.n // 4, args.n]
    for n in sizes:
        r = run(n, database_url=args.database_url, concurrency=args.concurrency,
                sink_kind=args.sink, dkim=args.dkim, reference=args.reference, env=env)
        ratio = (f"  reference smtp-source {r['reference']:.0f} msg/s, "
                 f"ratio {r['msg_per_s'] / r['reference']:.2f}") if args.reference else ""
        print(f"N={r['subscribers']:>6}  planned {r['planned']} in {r['plan_s']:.2f}s  "
              f"sent {r['sent']} (skipped {r['skipped']}, failed {r['failed']}) "
              f"in {r['send_s']:.1f}s = {r['msg_per_s']:.0f} msg/s  "
              f"peak worker RSS {r['peak_rss_mb']:.0f} MB  "
              f"messages {r['msg_kb']} KB  DKIM {'on' if r['dkim'] else 'off'}  "
              f"sink: {r['sink']}{ratio}", flush=True)


if __name__ == "__main__":
    main()
