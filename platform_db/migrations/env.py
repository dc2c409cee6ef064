"""Alembic environment of platform_db.

Where the database comes from, first match wins:
1. ``config.attributes["connection"]``: an open connection (``platform_db.migrate`` passes one);
2. ``-x url=...`` on the alembic command line;
3. the ``sqlalchemy.url`` option of the config;
4. the stage settings (``ENV``, cfg.defaults.yml, secrets.env), as the running services see them.
"""

from __future__ import annotations

import logging.config

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.engine import URL, make_url

from platform_db.repository import create_platform_db_engine
from platform_db.schema import metadata

config = context.config
target_metadata = metadata

# Only the alembic CLI has a config file; programmatic upgrades must not reset the caller's logging.
if config.config_file_name is not None and config.file_config.has_section("loggers"):
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> URL | str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from platform_config.settings import load_settings

    return load_settings().platform_db_url()


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most of a table; batch mode rebuilds it (copy, drop, rename) instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )


def run_migrations_offline() -> None:
    """Emit SQL instead of running it (``alembic upgrade head --sql``), e.g. for a DBA to review."""
    url = _url()
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        render_as_batch=make_url(url).get_backend_name() == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return

    engine = create_platform_db_engine(_url())
    try:
        with engine.connect() as connection:
            _configure(connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
