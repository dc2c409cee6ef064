"""Bring a platform_db database to the newest schema, from code.

The alembic config is built here rather than read from an alembic.ini, so an installed package
(a wheel, a container image) migrates without any file next to it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import URL

from platform_db.repository import create_platform_db_engine

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def upgrade(url: URL | str, revision: str = "head") -> None:
    """Migrate the database at ``url`` up to ``revision``; a database already there is left alone."""
    _run(url, lambda config: command.upgrade(config, revision))


def downgrade(url: URL | str, revision: str) -> None:
    """Migrate the database at ``url`` down to ``revision`` (``"base"`` drops every table)."""
    _run(url, lambda config: command.downgrade(config, revision))


def current_revision(url: URL | str) -> str | None:
    """The revision the database is at, or ``None`` before the first migration."""
    engine = create_platform_db_engine(url)
    try:
        with engine.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()
    finally:
        engine.dispose()


def _run(url: URL | str, operation: Callable[[Config], None]) -> None:
    # The same engine set-up as the repository, so SQLite is in WAL mode from the first migration.
    engine = create_platform_db_engine(url)
    try:
        with engine.begin() as connection:
            config = alembic_config()
            config.attributes["connection"] = connection
            operation(config)
    finally:
        engine.dispose()
