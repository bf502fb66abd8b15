"""Engine, sessions and migrations. SQLite by default, PostgreSQL through DATABASE_URL."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, create_engine

from newsletter.settings import settings

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    # WAL lets the web app read while workers write; busy_timeout makes two
    # workers queue on the write lock instead of failing with "database is locked".
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    return create_engine(url, pool_pre_ping=True)


@lru_cache(maxsize=4)
def _engine_for(url: str) -> Engine:
    return make_engine(url)


def get_engine() -> Engine:
    return _engine_for(settings.effective_database_url)


def reset_engine() -> None:
    """Forget cached engines (tests and forked workers call this)."""
    for engine in list(_engines()):
        engine.dispose()
    _engine_for.cache_clear()


def _engines() -> Iterator[Engine]:
    # lru_cache exposes no values; rebuild the ones we know of cheaply.
    if _engine_for.cache_info().currsize:
        yield _engine_for(settings.effective_database_url)


@contextmanager
def session_scope() -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def migrate(url: str | None = None, revision: str = "head") -> None:
    """Apply Alembic migrations (what `newsletter init` and the Procfile's release run)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", url or settings.effective_database_url)
    cfg.attributes["engine_url"] = url or settings.effective_database_url
    command.upgrade(cfg, revision)
