"""CSV imports started from the console: a preview first, then a job with progress.

The file is kept in DATA_DIR/imports/ until the job ends. The job commits every
CHUNK rows, so its progress is visible to every web process and a crash keeps what
was imported (re-running skips addresses that already exist: they come back as
"already subscribed" in the error report, nothing is duplicated).
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import update
from sqlmodel import Session, col

from newsletter import db
from newsletter.audience.search import safe_cell
from newsletter.models import ImportJob, utcnow
from newsletter.settings import settings
from newsletter.subscribers import SubscriberError, import_row, read_csv

log = logging.getLogger(__name__)

MAX_IMPORT_BYTES = 20 * 1024 * 1024
PREVIEW_ROWS = 5
CHUNK = 200
PREVIEW_COLUMNS = ["email", "name", "topics", "timezone", "only_my_topics"]


class ImportError_(SubscriberError):  # noqa: N801 - ImportError is a builtin
    """A file that can't be imported, with a sentence saying why."""


@dataclass
class Preview:
    """What the editor sees before starting: the columns found and the first rows."""

    job_id: int
    filename: str
    total: int
    columns: list[str]
    rows: list[tuple[int, dict[str, str]]]
    ignored_columns: list[str]


def _path(job_id: int) -> Path:
    return settings.data_dir / "imports" / f"{job_id}.csv"


def stage(*, session: Session, data: bytes, filename: str, editor_id: int | None) -> Preview:
    """Keep an uploaded CSV and read it once: the preview, or a clear error."""
    name = Path(filename or "subscribers.csv").name[-200:]
    if len(data) > MAX_IMPORT_BYTES:
        raise ImportError_(f"{name} is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB; "
                           "split it into smaller files.")
    job = ImportJob(filename=name, editor_id=editor_id, status="preview")
    session.add(job)
    session.flush()
    assert job.id is not None
    path = _path(job.id)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    try:
        rows = read_csv(path, label=name)
    except SubscriberError:
        path.unlink(missing_ok=True)
        raise
    if not rows:
        path.unlink(missing_ok=True)
        raise ImportError_(f"{name} has a header row but no subscribers.")
    header = list(rows[0][1].keys())
    job.total = len(rows)
    session.add(job)
    return Preview(job_id=job.id, filename=name, total=len(rows),
                   columns=[c for c in PREVIEW_COLUMNS if c in header], rows=rows[:PREVIEW_ROWS],
                   ignored_columns=[c for c in header if c not in PREVIEW_COLUMNS])


def start(*, session: Session, job_id: int, confirmed: bool) -> bool:
    """preview -> running, once (a double click starts one job). False if not startable."""
    result = session.exec(  # type: ignore[call-overload]
        update(ImportJob).where(col(ImportJob.id) == job_id, col(ImportJob.status) == "preview")
        .values(status="running", confirmed=confirmed))
    return bool(result.rowcount)


def run_in_background(job_id: int) -> threading.Thread:
    """Run a started job off the request (the page polls its progress)."""
    thread = threading.Thread(target=run, args=(job_id,), name=f"import-{job_id}", daemon=True)
    thread.start()
    return thread


def run(job_id: int) -> None:
    """Import every row of a running job, committing progress every CHUNK rows."""
    path = _path(job_id)
    with Session(db.get_engine(), expire_on_commit=False) as session:
        job = session.get(ImportJob, job_id)
        if job is None or job.status != "running":
            return
        errors = io.StringIO()
        writer = csv.writer(errors)
        writer.writerow(["line", "email", "reason"])
        try:
            rows = read_csv(path, label=job.filename)
            job.total = len(rows)
            for index, (line, row) in enumerate(rows, start=1):
                reason = import_row(session=session, row=row, confirmed=job.confirmed,
                                    source_data={"file": job.filename})
                if reason is None:
                    job.added += 1
                else:
                    job.rejected += 1
                    writer.writerow([line, safe_cell(row.get("email", "")), safe_cell(reason)])
                job.done = index
                if index % CHUNK == 0:
                    job.errors_csv = errors.getvalue()
                    session.add(job)
                    session.commit()
            job.status = "done"
        except Exception as exc:  # the job must end visibly, whatever happened
            log.exception("import %s failed", job_id)
            session.rollback()
            job = session.get(ImportJob, job_id) or job
            job.status = "failed"
            job.message = f"The import stopped: {exc}"[:1000]
        job.errors_csv = errors.getvalue()
        job.finished_at = utcnow()
        session.add(job)
        session.commit()
    path.unlink(missing_ok=True)


