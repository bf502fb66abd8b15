"""`newsletter demo`: the whole pipeline on the seed roundups, end to end.

Ingest seeds -> demo subscribers -> approve the newest issue -> plan -> a real
Celery worker on (embedded) Redis -> the local mail catcher -> a report.
"""

from __future__ import annotations

import email
import email.policy
import shutil
import time
import tomllib
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from sqlalchemy import update
from sqlmodel import Session, col, select

from newsletter import db
from newsletter.composer import Composition, compose, load_issue
from newsletter.models import Delivery, Issue, IssueStatus, Subscriber, utcnow
from newsletter.settings import REPO_ROOT, settings
from newsletter.subscribers import add_subscriber, topics_by_subscriber

SEEDS_DIR = REPO_ROOT / "seeds"
MARKER = ".roundup-demo"


class DemoError(RuntimeError):
    """The demo cannot run as asked (the message says why)."""

# (email, name, topics, only my topics, confirmed): varied on purpose, so the
# report shows different orders, shared compositions, a skip and a pending address.
DEMO_PEOPLE: list[tuple[str, str, list[str], bool, bool]] = [
    ("amara@example.org", "Amara Okafor", ["africa", "entrepreneurs-education"], False, True),
    ("bruno@example.org", "Bruno Keller", ["luxury-fashion", "europe"], False, True),
    ("chen@example.org", "Chen Wei", ["logistics"], False, True),
    ("dana@example.org", "Dana Rossi", ["luxury-fashion"], True, True),
    ("emeka@example.org", "Emeka Obi", ["africa"], True, True),
    ("farah@example.org", "Farah Khan", ["south-southeast-asia", "logistics"], False, True),
    ("gus@example.org", "Gus Lindqvist", [], False, True),
    ("hana@example.org", "Hana Sato", ["shopping-festivals", "livestreaming"], False, True),
    ("ines@example.org", "Inês Duarte", ["europe", "luxury-fashion"], False, True),
    ("jon@example.org", "Jon Park", ["fintech"], True, True),
    ("kofi@example.org", "Kofi Mensah", ["cloud-ai", "sustainability"], False, True),
    ("lena@example.org", "Lena Novak", ["travel"], False, False),  # pending: gets nothing
]


@dataclass
class DemoResult:
    """What the demo did, for the CLI to print."""

    issue_id: int
    issue_title: str
    counts: dict[str, int]
    # email, what they follow, delivery status, their composition, their HTML file
    rows: list[tuple[str, str, str, Composition | None, str]]
    mail_dir: Path
    html_dir: Path


def seed_files() -> list[tuple[Path, date]]:
    manifest = tomllib.loads((SEEDS_DIR / "manifest.toml").read_text(encoding="utf-8"))
    return [(SEEDS_DIR / entry["file"], date.fromisoformat(entry["date"]))
            for entry in manifest["seed"]]


def load_demo_data(*, session: Session) -> int:
    """Ingest every seed and add the demo subscribers; returns the newest issue's id."""
    from newsletter.ingest import ingest_file

    newest: tuple[date, int] | None = None
    for path, issue_date in seed_files():
        result = ingest_file(session=session, path=path, issue_date=issue_date)
        if newest is None or issue_date >= newest[0]:
            newest = (issue_date, result.issue_id)
    known = set(session.exec(select(Subscriber.email)).all())
    for address, name, topics, only_mine, confirmed in DEMO_PEOPLE:
        if address not in known:
            add_subscriber(session=session, email=address, name=name, topics=topics,
                           only_my_topics=only_mine, confirmed=confirmed, source="demo")
    assert newest is not None
    return newest[1]


def run_demo(*, data_dir: Path, progress=None, timeout: float = 300.0) -> DemoResult:  # type: ignore[no-untyped-def]
    """Run the pipeline in `data_dir` (wiped first: the demo always starts fresh)."""
    from newsletter.cli.local.mailcatcher import mail_catcher
    from newsletter.cli.local.services import redis_service, worker_process
    from newsletter.delivery import enqueue_batches, plan_send, status_counts

    if data_dir.exists() and any(data_dir.iterdir()) and not (data_dir / MARKER).exists():
        # The demo wipes its directory; never wipe one it did not create (say, var/).
        raise DemoError(f"{data_dir} holds files the demo did not write; "
                        "pass an empty or new --data-dir")
    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / MARKER).write_text("Created by `newsletter demo`; wiped by its next run.\n")
    settings.data_dir = data_dir
    settings.database_url = ""  # the demo keeps its own SQLite file, whatever DATABASE_URL says
    db.reset_engine()
    db.migrate()
    from newsletter.topics import sync_topics

    with db.session_scope() as session:
        sync_topics(session=session)
    with db.session_scope() as session:
        issue_id = load_demo_data(session=session)
        session.exec(update(Issue).where(col(Issue.id) == issue_id)  # type: ignore[call-overload]
                     .values(status=IssueStatus.approved, approved_at=utcnow()))

    mail_dir = settings.mail_dir
    with redis_service(), mail_catcher(mail_dir), worker_process(concurrency=2):
        with db.session_scope() as session:
            plan_send(session=session, issue_id=issue_id)
        enqueue_batches(issue_id)  # only after the plan is committed
        deadline = time.monotonic() + timeout
        while True:
            with db.session_scope() as session:
                counts = status_counts(session=session, issue_id=issue_id)
            if progress:
                progress(counts)
            if not counts.get("pending") and not counts.get("sending"):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"the send did not finish in {timeout:.0f}s: {counts}")
            time.sleep(0.2)
    return _report(issue_id=issue_id, counts=counts, mail_dir=mail_dir,
                   html_dir=data_dir / "html")


def _report(*, issue_id: int, counts: dict[str, int], mail_dir: Path,
            html_dir: Path) -> DemoResult:
    """Pair each subscriber with their composition and the HTML they actually received."""
    html_dir.mkdir(parents=True, exist_ok=True)
    received: dict[str, str] = {}
    for eml in sorted(mail_dir.glob("*.eml")):
        msg = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
        to = str(msg["To"]).split("<")[-1].rstrip(">").strip().lower()
        body = msg.get_body(("html",))  # type: ignore[attr-defined]
        if body is not None:
            target = html_dir / f"{to}.html"
            target.write_text(body.get_content(), encoding="utf-8")
            received[to] = str(target)
    rows = []
    with Session(db.get_engine()) as session:
        issue = session.get(Issue, issue_id)
        assert issue is not None
        content = load_issue(session=session, issue_id=issue_id)
        statuses = dict(session.exec(
            select(Delivery.subscriber_id, Delivery.status).where(Delivery.issue_id == issue_id)
        ).all())
        topics = topics_by_subscriber(session=session)
        for sub in session.exec(select(Subscriber).order_by(col(Subscriber.id))).all():
            assert sub.id is not None
            followed = topics.get(sub.id, [])
            comp = compose(content, followed=followed, only_my_topics=sub.only_my_topics,
                           max_items=settings.digest_max_items)
            status = statuses.get(sub.id, f"not planned ({sub.status})")
            follows = ", ".join(content.topic_names.get(t, t) for t in followed) or "nothing"
            if sub.only_my_topics:
                follows += " (only my topics)"
            rows.append((sub.email, follows, status, comp, received.get(sub.email, "")))
        title = issue.title
    return DemoResult(issue_id=issue_id, issue_title=title, counts=counts, rows=rows,
                      mail_dir=mail_dir, html_dir=html_dir)
