"""Shared fixtures. Every database test runs on SQLite, and on PostgreSQL too when
TEST_DATABASE_URL is set (`.ci/run` points it at the machine's PostgreSQL).

Fixtures for the real services (Redis, SMTP server, Celery worker, web app, browser)
live in tests/fixtures/ and are loaded as plugins below.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from newsletter import db
from newsletter.delivery import pool as relay_pool
from newsletter.settings import settings
from tests.fixtures import TEST_SECRET

pytest_plugins = [
    "tests.fixtures.factories",
    "tests.fixtures.services",
    "tests.fixtures.mail",
    "tests.fixtures.web",
    "tests.fixtures.editor",
]

REPO = Path(__file__).resolve().parent.parent
SEEDS = REPO / "seeds"


@pytest.fixture(scope="session", autouse=True)
def _no_machine_redis() -> Iterator[None]:
    """No test counts in a Redis the machine's environment (or a .env) points at: it
    would be shared by the xdist workers. Tests that want Redis ask for `redis_url`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(settings, "redis_url", "")
        patch.delenv("REDIS_URL", raising=False)
        yield


@pytest.fixture(autouse=True)
def _no_inherited_relay_cap() -> Iterator[None]:
    """A connection cap learnt from one test's relay (held CAP_SECONDS, keyed by host
    and port) must not limit a later test whose relay got the same port."""
    yield
    relay_pool.pool._caps.clear()


def _backends() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file copied for each test: migrating once keeps tests fast."""
    path = tmp_path_factory.mktemp("template") / "template.db"
    db.migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def _postgres_url() -> Iterator[str]:
    """A private PostgreSQL database for this test run, migrated once, dropped at the end."""
    base = os.environ["TEST_DATABASE_URL"]
    name = f"roundup_test_{uuid.uuid4().hex[:8]}"
    admin = db.make_engine(base).execution_options(isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = base.rsplit("/", 1)[0] + "/" + name
    db.migrate(url)
    yield url
    db.reset_engine()
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=_backends())
def database_url(request: pytest.FixtureRequest, tmp_path: Path, _sqlite_template: Path) -> str:
    """A migrated, empty database for one test; settings point at it."""
    if request.param == "sqlite":
        path = tmp_path / "newsletter.db"
        shutil.copy(_sqlite_template, path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("_postgres_url")
        engine = db.make_engine(url)
        with engine.begin() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE schemaname='public' "
                     "AND tablename <> 'alembic_version'")
            ).scalars().all()
            if tables:
                conn.execute(text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables)
                                  + " RESTART IDENTITY CASCADE"))
        engine.dispose()
    return url


@pytest.fixture
def app_settings(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """The global settings pointed at this test's database and a private data dir."""
    monkeypatch.setattr(settings, "database_url", database_url)
    monkeypatch.setattr(settings, "data_dir", tmp_path / "var")
    monkeypatch.setattr(settings, "environment", "test")
    monkeypatch.setattr(settings, "secret_key", TEST_SECRET)
    monkeypatch.setenv("SECRET_KEY", TEST_SECRET)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("ENVIRONMENT", "test")
    db.reset_engine()
    yield settings
    db.reset_engine()


@pytest.fixture
def session(app_settings) -> Iterator[Session]:
    """A session on this test's database, with the default taxonomy loaded."""
    from newsletter.topics import sync_topics

    with Session(db.get_engine(), expire_on_commit=False) as s:
        sync_topics(session=s)
        s.commit()
        yield s


@pytest.fixture
def seed_paths() -> list[Path]:
    return sorted(SEEDS.glob("*.txt"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Browser tests run once, on SQLite: they test pages and flows, and every database
    behaviour they touch is tested on both engines by the tests without a browser."""
    kept, dropped = [], []
    for item in items:
        on_postgres = "[postgresql" in item.nodeid
        (dropped if on_postgres and item.get_closest_marker("browser") else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept
