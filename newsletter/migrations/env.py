"""Alembic environment: runs migrations against the configured database."""

from __future__ import annotations

from alembic import context
from sqlmodel import SQLModel

import newsletter.editors  # noqa: F401 - registers the editor table
import newsletter.models  # noqa: F401 - registers the tables on SQLModel.metadata
from newsletter.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    url = config.attributes.get("engine_url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database URL: run migrations through newsletter.db.migrate()")
    engine = make_engine(str(url))
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run_migrations_online()
