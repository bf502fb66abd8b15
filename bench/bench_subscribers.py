"""The console's subscribers list at 1,000,000 subscribers on PostgreSQL.

    .venv/bin/python bench/bench_subscribers.py                       # 1,000,000
    .venv/bin/python bench/bench_subscribers.py -n 100000

Creates a private database, bulk-loads N subscribers (half following a topic, a
mix of statuses and sources) with generate_series, then times what an editor does
through the real app (FastAPI TestClient, logged in): the first page, a page 5,000
rows deep (keyset: `?before=`), filters by status, topic, source and date, an address
search, and the same first page through OFFSET as the reference a naive list would use.
Reports the median of 7 requests each, and the ratio to the first page.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import text  # noqa: E402

from newsletter import db  # noqa: E402
from newsletter.settings import settings  # noqa: E402

BASE = os.environ.get("BENCH_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


def load(url: str, n: int) -> None:
    engine = db.make_engine(url)
    with engine.begin() as conn:
        conn.execute(text("""
            INSERT INTO subscriber (email, name, timezone, only_my_topics, status, paused,
                                    source, created_at, updated_at, confirmed_at, track_clicks)
            SELECT substr(md5(g::text), 1, 8) || '.' || g || '@'
                   || (ARRAY['gmail.com','yahoo.com','outlook.com','example.org'])[1 + g % 4],
                   'Reader ' || g, 'UTC', false,
                   (ARRAY['confirmed','confirmed','confirmed','pending','unsubscribed'])[1 + g % 5],
                   false, (ARRAY['form','import','api','embed'])[1 + g % 4],
                   now() - ((:n - g) || ' seconds')::interval, now(), now(), true
            FROM generate_series(1, :n) AS g"""), {"n": n})
        conn.execute(text("""
            INSERT INTO subscribertopic (subscriber_id, topic_id)
            SELECT s.id, t.id FROM subscriber s JOIN topic t ON t.id = 1 + s.id % 7
            WHERE s.id % 2 = 0"""))
        conn.execute(text("ANALYZE"))
    engine.dispose()


def timed(client, path: str, runs: int = 7) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        response = client.get(path)
        times.append(time.perf_counter() - start)
        assert response.status_code == 200, (path, response.status_code)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=1_000_000)
    args = parser.parse_args()
    name = f"roundup_bench_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(BASE).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = BASE.rsplit("/", 1)[0] + "/" + name
    try:
        db.migrate(url)
        settings.database_url = url
        settings.environment = "test"
        settings.secret_key = uuid.uuid4().hex * 2
        db.reset_engine()
        from sqlmodel import Session

        from newsletter.topics import sync_topics

        with Session(db.get_engine()) as session:
            sync_topics(session=session)
            session.commit()
        start = time.perf_counter()
        load(url, args.n)
        print(f"loaded {args.n:,} subscribers in {time.perf_counter() - start:.1f} s")
        from fastapi.testclient import TestClient

        from newsletter.editors import add_editor
        from newsletter.web.app import create_app

        with Session(db.get_engine()) as session:
            add_editor(session=session, email="bench@example.org", password="bench password 1")
            session.commit()
        with TestClient(create_app()) as client:
            page = client.get("/editor/login")
            import re

            token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
            client.post("/editor/login", data={"email": "bench@example.org",
                                               "password": "bench password 1",
                                               "csrf_token": token})
            deep = args.n - 5000
            cases = [
                ("first page", "/editor/subscribers"),
                ("5,000 rows deep (keyset)", f"/editor/subscribers?before={deep}"),
                ("status=pending", "/editor/subscribers?status=pending"),
                ("topic=logistics", "/editor/subscribers?topic=logistics"),
                ("source=import", "/editor/subscribers?source=import"),
                ("signed up since yesterday", "/editor/subscribers?since="
                 + time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))),
                ("search by 8 letters of an address", "/editor/subscribers?q="
                 + hashlib.md5(b"424242").hexdigest()[:8]),  # noqa: S324 - test data
                ("search by a name", "/editor/subscribers?q=reader%20424242"),
            ]
            results = [(label, timed(client, path)) for label, path in cases]
            base = results[0][1]
            print(f"\n{'request':32} {'median':>9} {'× first page':>13}")
            for label, seconds in results:
                print(f"{label:32} {seconds * 1000:7.0f} ms {seconds / base:12.2f}×")
        engine = db.make_engine(url)
        with engine.connect() as conn:
            start = time.perf_counter()
            for _ in range(3):
                conn.execute(text("SELECT id FROM subscriber ORDER BY id DESC "
                                  "OFFSET :o LIMIT 51"), {"o": 5000 * 50 // 50 * 100}).all()
            offset = (time.perf_counter() - start) / 3
        engine.dispose()
        print(f"\nreference: OFFSET 500,000 LIMIT 51 alone (no page): {offset * 1000:.0f} ms "
              f"({offset / base:.2f}× our whole first page)")
    finally:
        db.reset_engine()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


if __name__ == "__main__":
    main()
