"""How many distinct digests (composition keys, so renders) ordering-that-learns costs.

    .venv/bin/python bench/bench_compositions.py            # 20,000 readers, SQLite
    .venv/bin/python bench/bench_compositions.py -n 5000 --database-url postgresql://.../empty_db

The seed roundups are ingested; N confirmed readers get 0-3 followed topics (20 %
"only my topics", as in bench_send.py). 55 % of them are clickers with a taste of 1-2
topics (half the time one they follow): over the last 8 weeks they opened each seed
story on a taste topic with p=0.5 and any other with p=0.04. Then, for every seed week
as "this week" and for all 32 seed stories as one issue (12 per digest), it counts
distinct composition keys:

* today: compose(followed, only_my_topics)
* learned: + learned=interests_by_subscriber(...) (the defaults: the top 2 unfollowed
  topics scoring >= 2.5, about three recent clicks)
* the same with only the top 1, with a threshold of 1.5 (two clicks), and unquantised
  (every clicked topic in score order: what we avoid)

and times interests_by_subscriber against topics_by_subscriber (the same kind of
bulk query planning already runs) in the same run, as a ratio.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
import tomllib
from collections.abc import Callable
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sqlalchemy import insert  # noqa: E402
from sqlmodel import Session, col, select  # noqa: E402

from newsletter import db  # noqa: E402
from newsletter.composer import IssueContent, compose, load_issue  # noqa: E402
from newsletter.engagement.interests import interests_by_subscriber  # noqa: E402
from newsletter.models import (  # noqa: E402
    Click,
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
from newsletter.subscribers import topics_by_subscriber  # noqa: E402

CLICKERS = 0.55


def populate(session: Session, n: int, seed: int) -> list[int]:
    """Seeds, readers and their clicks; returns the seed issue ids, oldest first."""
    from newsletter.ingest import ingest_file
    from newsletter.topics import sync_topics

    sync_topics(session=session)
    manifest = tomllib.loads((REPO / "seeds" / "manifest.toml").read_text())
    issue_ids = [ingest_file(session=session, path=REPO / "seeds" / e["file"],
                             issue_date=date.fromisoformat(e["date"])).issue_id
                 for e in manifest["seed"]]
    session.execute(Issue.__table__.update().values(status=IssueStatus.sent))  # type: ignore[attr-defined]
    rng, now = random.Random(seed), utcnow()
    topic_ids = list(session.exec(select(Topic.id)).all())
    session.execute(insert(Subscriber), [
        {"email": f"r{i}@bench.example", "status": SubscriberStatus.confirmed,
         "only_my_topics": rng.random() < 0.2, "source": "bench", "track_clicks": True,
         "created_at": now, "updated_at": now} for i in range(n)])
    sub_ids = list(session.exec(select(Subscriber.id).order_by(col(Subscriber.id))).all())
    follows = {sid: rng.sample(topic_ids, rng.choice([0, 1, 1, 2, 2, 3])) for sid in sub_ids}
    session.execute(insert(SubscriberTopic), [
        {"subscriber_id": sid, "topic_id": tid} for sid, tids in follows.items() for tid in tids])
    stories = [(item_id, issue_id, {t for _i, t in group})
               for item_id, issue_id, group in _stories(session)]
    clicks = []
    for sid in sub_ids:
        if rng.random() >= CLICKERS:
            continue
        taste = set(rng.sample(topic_ids, rng.choice([1, 2])))
        if follows[sid] and rng.random() < 0.5:
            taste.add(rng.choice(follows[sid]))
        for item_id, issue_id, tags in stories:
            if rng.random() < (0.5 if tags & taste else 0.04):
                clicks.append({"subscriber_id": sid, "issue_id": issue_id, "item_id": item_id,
                               "at": now - timedelta(days=rng.uniform(0, 56))})
    session.execute(insert(Click), clicks)
    session.commit()
    return issue_ids


def _stories(session: Session) -> list[tuple[int, int, list[tuple[int, int]]]]:
    rows = session.exec(select(Item.id, Item.issue_id, ItemTopic.topic_id)
                        .join(ItemTopic, col(ItemTopic.item_id) == col(Item.id))).all()
    grouped: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for item_id, issue_id, topic_id in rows:
        grouped.setdefault((item_id or 0, issue_id), []).append((item_id or 0, topic_id))
    return [(k[0], k[1], v) for k, v in grouped.items()]


def distinct(issue: IssueContent, readers: list[tuple[int, bool]],
             topics: dict[int, list[str]], learned: dict[int, list[str]]) -> int:
    keys = set()
    for sid, only in readers:
        c = compose(issue, followed=topics.get(sid, ()), only_my_topics=only,
                    max_items=settings.digest_max_items, learned=learned.get(sid, ()))
        keys.add(c.key if c else "nothing")
    return len(keys)


def timed(fn, repeat: int = 3):  # type: ignore[no-untyped-def]
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def measure(session: Session, n: int, seed: int, show: Callable[[str], None] = print,
            *, compare: bool = True) -> float:
    """Populate, print the table, and return the worst ratio learned/today (`compare`:
    also the variants that show why the defaults are what they are)."""
    t0 = time.perf_counter()
    issue_ids = populate(session, n, seed)
    clicks = len(session.exec(select(Click.id)).all())
    show(f"{n} readers, {clicks} clicks, seeds loaded in {time.perf_counter() - t0:.1f}s")
    readers = [(s.id or 0, s.only_my_topics) for s in session.exec(select(Subscriber))]
    t_topics, topics = timed(lambda: topics_by_subscriber(session=session))
    t_learned, learned = timed(lambda: interests_by_subscriber(session=session))
    variants = {
        "top 1": interests_by_subscriber(session=session, top=1),
        ">= 1.5": interests_by_subscriber(session=session, threshold=1.5),
        "unquantised": interests_by_subscriber(session=session, threshold=0.0, top=99),
    } if compare else {}
    show(f"interests_by_subscriber {t_learned * 1000:.0f} ms vs topics_by_subscriber "
         f"{t_topics * 1000:.0f} ms (ratio {t_learned / t_topics:.1f}x); "
         f"{len(learned)} readers have a learned interest")
    weeks = [load_issue(session=session, issue_id=i) for i in issue_ids]
    every = replace(weeks[-1], id=0, items=tuple(
        replace(item, position=k) for k, item in
        enumerate(i for w in reversed(weeks) for i in w.items)))
    show(f"{'this week':<34}{'today':>7}{'learned':>9}{'ratio':>7}"
         + "".join(f"{name:>13}" for name in variants))
    worst = 0.0
    for issue in [*weeks, every]:
        base = distinct(issue, readers, topics, {})
        with_learning = distinct(issue, readers, topics, learned)
        others = [distinct(issue, readers, topics, v) for v in variants.values()]
        worst = max(worst, with_learning / base)
        label = "all 32 seed stories (12 shown)" if issue.id == 0 else \
            f"#{issue.id} {issue.issue_date} ({len(issue.items)} stories)"
        show(f"{label:<34}{base:>7}{with_learning:>9}{with_learning / base:>6.2f}x"
             + "".join(f"{k:>8} {k / base:>3.1f}x" for k in others))
    show(f"worst ratio {worst:.2f}x (floor: 2x)")
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--database-url", default="", help="an EMPTY database (default: "
                        "a temporary SQLite file)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/bench.db"
        db.migrate(url)
        settings.database_url = url
        db.reset_engine()
        with Session(db.get_engine(), expire_on_commit=False) as session:
            measure(session, args.n, args.seed)


if __name__ == "__main__":
    main()
