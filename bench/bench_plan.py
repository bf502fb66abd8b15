"""Planning a send at scale on PostgreSQL, against a bare INSERT ... SELECT of as many rows.

    .venv/bin/python bench/bench_plan.py                       # 100,000 then 1,000,000
    .venv/bin/python bench/bench_plan.py -n 100000 --old /tmp/old_planning.py

A private database (created and dropped) on PostgreSQL, migrated; the seed roundups
ingested and combined into one issue (32 items, every topic the seeds carry); N
confirmed subscribers bulk-created with generate_series, following 0-3 topics each,
20 % "only my topics". For each N, in the same run:

  reference   one bare INSERT INTO delivery ... SELECT FROM subscriber of N rows
              (same table, same indexes, constant values, no grouping), committed
  plan_send   the real planner, committed (status change, grouping, compose once per
              group, INSERT ... SELECT with the batch numbering)
  old         optionally, an older planning.py given with --old (for example
              `git show ef44112:newsletter/delivery/planning.py > /tmp/old_planning.py`)
  sweep       EXPLAIN ANALYZE of the sweep's expired-lease query over the N-row ledger
              (rows pending, one batch's leases held, 5 of them expired), then the
              time of a steady-state sweep_expired_leases (the one after the sweep that
              returned those 5), as beat runs it every SEND_SWEEP_SECONDS

The delivery table is emptied between measurements. Timings on the shared 2-core
machine vary; compare the ratio to the reference of the same run.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import select, text, update  # noqa: E402

from newsletter import db  # noqa: E402
from newsletter.cli.local.services import private_redis  # noqa: E402
from newsletter.models import Delivery, IssueStatus, utcnow  # noqa: E402
from newsletter.settings import settings  # noqa: E402

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def private_database(admin_url: str) -> Iterator[str]:
    name = f"roundup_bench_plan_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + "/" + name
    finally:
        db.reset_engine()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def bench_issue() -> int:
    """Every seed roundup ingested, their items copied into one approved issue."""
    from newsletter.ingest import ingest_file
    from newsletter.topics import sync_topics

    with db.session_scope() as session:
        sync_topics(session=session)
    manifest = tomllib.loads((REPO / "seeds" / "manifest.toml").read_text())
    with db.session_scope() as session:
        seeds = [ingest_file(session=session, path=REPO / "seeds" / e["file"],
                             issue_date=date.fromisoformat(e["date"])).issue_id
                 for e in manifest["seed"]]
    with db.session_scope() as session:
        issue_id = session.execute(text(
            "INSERT INTO issue (title, intro, issue_date, status, source_name, created_at, "
            "updated_at, approved_at, status_reason) SELECT 'Bench', intro, issue_date, "
            ":approved, 'bench', now(), now(), now(), '' FROM issue WHERE id = :first "
            "RETURNING id"), {"approved": IssueStatus.approved, "first": seeds[0]}).scalar_one()
        session.execute(text(
            "INSERT INTO item (issue_id, position, pinned, hidden, headline, body, link_text, "
            "link_url, kind) SELECT :bench, row_number() OVER (ORDER BY issue_id, position), "
            "false, false, headline, body, link_text, link_url, kind FROM item "
            "WHERE issue_id = ANY(:seeds)"), {"bench": issue_id, "seeds": seeds})
        session.execute(text(
            "INSERT INTO itemtopic (item_id, topic_id, source) SELECT copy.id, t.topic_id, "
            "t.source FROM item orig JOIN itemtopic t ON t.item_id = orig.id "
            "JOIN item copy ON copy.issue_id = :bench AND copy.headline = orig.headline "
            "WHERE orig.issue_id = ANY(:seeds) ON CONFLICT DO NOTHING"),
            {"bench": issue_id, "seeds": seeds})
    return int(issue_id)


def add_subscribers(n: int) -> None:
    """N confirmed subscribers and their topics, all in SQL (generate_series)."""
    with db.session_scope() as session:
        session.execute(text(
            "INSERT INTO subscriber (email, name, timezone, only_my_topics, status, paused, "
            "source, created_at, updated_at, track_clicks) SELECT 'reader' || g || "
            "'@bench.example', 'Reader ' || g, 'UTC', g % 5 = 0, 'confirmed', false, 'bench', "
            "now(), now(), true FROM generate_series(1, :n) g"), {"n": n})
        topics = list(session.execute(text("SELECT id FROM topic ORDER BY id")).scalars())
        for j, prime in enumerate((7, 13, 31), start=1):
            # Subscriber s follows s % 4 topics: 0-3, picked by s in a spread-out way.
            session.execute(text(
                "INSERT INTO subscribertopic (subscriber_id, topic_id) SELECT s.id, "
                "(:topics)[1 + (s.id * :prime + :j * 5) % :k] FROM subscriber s "
                "WHERE s.id % 4 >= :j ON CONFLICT DO NOTHING"),
                {"topics": topics, "prime": prime, "j": j, "k": len(topics)})
    # Settled tables, as on a site whose list was not loaded a second ago: the first
    # reader of freshly written rows would pay their hint bits and skew one side.
    with db.get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE subscriber"))
        conn.execute(text("VACUUM ANALYZE subscribertopic"))


def empty_ledger() -> None:
    with db.session_scope() as session:
        session.execute(text("TRUNCATE delivery"))
        session.execute(text("UPDATE issue SET status = 'approved', send_started_at = NULL "
                             "WHERE title = 'Bench'"))
    with db.get_engine().connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE delivery"))


def reference(issue_id: int) -> tuple[float, int]:
    started = time.perf_counter()
    with db.session_scope() as session:
        rows = session.execute(text(
            "INSERT INTO delivery (issue_id, subscriber_id, status, composition_key, batch, "
            "attempts, claim_token, message_id, error, created_at, updated_at) SELECT :issue, "
            "id, 'pending', 'reference', 1, 0, '', '', '', now(), now() FROM subscriber"),
            {"issue": issue_id}).rowcount
    return time.perf_counter() - started, rows


def planned(issue_id: int, plan_send: Any) -> tuple[float, int]:
    started = time.perf_counter()
    with db.session_scope() as session:
        rows = plan_send(session=session, issue_id=issue_id)
    return time.perf_counter() - started, rows


def sweep(issue_id: int) -> tuple[float, str]:
    from newsletter.delivery import sweep_expired_leases
    from newsletter.delivery.control import expired_leases

    now = utcnow()
    with db.session_scope() as session:
        held = select(Delivery.id).where(Delivery.issue_id == issue_id,
                                         Delivery.batch == 1).scalar_subquery()
        session.execute(update(Delivery).where(Delivery.id.in_(held)).values(
            status="sending", claim_token="bench", lease_until=now + timedelta(minutes=5)))
        five = select(Delivery.id).where(Delivery.status == "sending").limit(5).scalar_subquery()
        session.execute(update(Delivery).where(Delivery.id.in_(five)).values(
            lease_until=now - timedelta(minutes=1)))
    with db.session_scope() as session:
        session.execute(text("ANALYZE delivery"))
        query = select(Delivery.id).where(expired_leases(utcnow()))
        sql = str(query.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
        explain = "\n".join(session.execute(text("EXPLAIN ANALYZE " + sql)).scalars())
    with db.session_scope() as session:  # returns the 5 rows, re-publishes their batch
        sweep_expired_leases(session=session)
    started = time.perf_counter()
    with db.session_scope() as session:  # what beat pays every SEND_SWEEP_SECONDS
        sweep_expired_leases(session=session)
    return time.perf_counter() - started, explain


def load_module(path: str) -> Any:
    spec = importlib.util.spec_from_file_location("old_planning", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.plan_send


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, action="append",
                        help="subscribers (repeatable; default 100000 and 1000000)")
    parser.add_argument("--admin-url", default=ADMIN_URL,
                        help="PostgreSQL URL allowed to create a database")
    parser.add_argument("--old", help="an older planning.py to time as well")
    args = parser.parse_args()
    from newsletter.delivery import plan_send

    old = load_module(args.old) if args.old else None
    with private_redis() as redis_url, private_database(args.admin_url) as url:
        settings.redis_url = redis_url  # the sweep re-publishes the expired leases' batch
        settings.database_url = url
        db.reset_engine()
        db.migrate(url)
        issue_id = bench_issue()
        have = 0
        for n in sorted(args.n or [100_000, 1_000_000]):
            add_subscribers_from = n - have
            if add_subscribers_from > 0:
                with db.session_scope() as session:
                    session.execute(text("DELETE FROM subscribertopic"))
                    session.execute(text("DELETE FROM subscriber"))
                add_subscribers(n)
                have = n
            empty_ledger()
            ref_s, ref_rows = reference(issue_id)
            empty_ledger()
            plan_s, plan_rows = planned(issue_id, plan_send)
            with db.session_scope() as session:
                groups = session.execute(text(
                    "SELECT count(DISTINCT composition_key), count(*), max(n), "
                    "count(*) FILTER (WHERE n > :size) FROM (SELECT composition_key, batch, "
                    "count(*) AS n FROM delivery WHERE status = 'pending' "
                    "GROUP BY composition_key, batch) b"),
                    {"size": settings.send_batch_size}).one()
            line = (f"N={n:>9,}  reference INSERT...SELECT {ref_rows:,} rows {ref_s:6.2f}s  "
                    f"plan_send {plan_rows:,} rows {plan_s:6.2f}s  "
                    f"ratio {plan_s / ref_s:4.2f}x  ({groups[0]} compositions in "
                    f"{groups[1]} batches of at most {groups[2]} rows, {groups[3]} over "
                    f"SEND_BATCH_SIZE)")
            print(line, flush=True)
            sweep_s, explain = sweep(issue_id)
            print(f"  steady-state sweep over a {n:,}-row ledger: {sweep_s * 1000:.0f} ms; "
                  "its expired-lease query:\n    " + explain.replace("\n", "\n    "), flush=True)
            if old is not None:
                empty_ledger()
                old_s, old_rows = planned(issue_id, old)
                print(f"  old plan_send {old_rows:,} rows {old_s:6.2f}s "
                      f"({old_s / plan_s:.1f}x the new one)", flush=True)


if __name__ == "__main__":
    main()
