from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

import platform_db
from contracts.configurator import ConfiguratorPayload
from platform_db import OrderRepository
from platform_db.migrate import MIGRATIONS_DIR, alembic_config, current_revision, downgrade, upgrade
from platform_db.schema import metadata
from tests.conftest import run_module

PROJECT_ROOT = Path(platform_db.__file__).resolve().parent.parent
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


def table_names(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_there_is_one_head() -> None:
    assert ScriptDirectory.from_config(alembic_config()).get_heads() == [HEAD]


def test_a_new_migration_starts_with_the_header_of_the_others(tmp_path: Path) -> None:
    # Written into a copy of the migrations, so the project's own history stays as it is.
    shutil.copytree(MIGRATIONS_DIR, tmp_path / "migrations", ignore=shutil.ignore_patterns("__pycache__"))
    config = alembic_config()
    config.set_main_option("script_location", str(tmp_path / "migrations"))

    script = command.revision(config, message="orders: something new", rev_id="9999")

    assert script is not None and not isinstance(script, list)
    assert script.revision == "9999" and script.down_revision == HEAD
    written = Path(script.path).read_text()
    assert written.startswith(
        '"""orders: something new"""\n\n'
        "import sqlalchemy as sa\nfrom alembic import op\n\n"
        f'revision = "9999"\ndown_revision = "{HEAD}"\n\n\ndef upgrade() -> None:\n'
    )
    assert ScriptDirectory.from_config(config).get_heads() == ["9999"]


def test_upgrade_creates_the_schema_and_is_idempotent(db_url: str) -> None:
    assert current_revision(db_url) is None

    upgrade(db_url)
    upgrade(db_url)

    assert current_revision(db_url) == HEAD
    assert "orders" in table_names(db_url)


def test_migrated_schema_matches_the_metadata(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_downgrade_to_base_and_upgrade_again(
    migrated_url: str, make_payload: Callable[..., ConfiguratorPayload]
) -> None:
    downgrade(migrated_url, "base")
    assert current_revision(migrated_url) is None
    assert "orders" not in table_names(migrated_url)

    upgrade(migrated_url)

    repo = OrderRepository.from_url(migrated_url)
    try:
        order, created = repo.submit(make_payload(), "key-1")
        assert created and repo.get(order.cfg_id) == order
    finally:
        repo.dispose()


def run_in_project(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m <args>`` from the project root, as an operator runs it."""
    # No check: the tests assert the exit code, and a failure's output is part of what they show.
    return run_module(list(args), cwd=PROJECT_ROOT, env=env, timeout=120)


def test_alembic_cli_upgrades_and_finds_no_pending_changes(db_url: str) -> None:
    ini = str(PROJECT_ROOT / "platform_db" / "alembic.ini")

    upgraded = run_in_project("alembic", "-c", ini, "-x", f"url={db_url}", "upgrade", "head")
    assert upgraded.returncode == 0, upgraded.stderr
    assert current_revision(db_url) == HEAD

    # `alembic check` autogenerates against the metadata and fails when a migration is missing.
    checked = run_in_project("alembic", "-c", ini, "-x", f"url={db_url}", "check")
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _stage_env(tmp_path: Path, platform_db_url: str, **extra: str) -> dict[str, str]:
    customer = tmp_path / "cfg.customer.yml"
    customer.write_text(f"platform_db:\n  url: {platform_db_url}\n")
    env = {key: value for key, value in os.environ.items() if key != "PLATFORM_DB_PASSWORD"}
    env.update(
        ENV="local", CFG_CUSTOMER_PATH=str(customer), SECRETS_PATH=str(tmp_path / "no-secrets.env"), **extra
    )
    return env


def test_module_cli_upgrades_the_stage_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'stage' / 'platform.db'}"

    result = run_in_project("platform_db", "upgrade", env=_stage_env(tmp_path, url))

    assert result.returncode == 0, result.stderr
    assert current_revision(url) == HEAD
    assert HEAD in result.stdout


def test_module_cli_never_shows_the_password(tmp_path: Path) -> None:
    # Nothing listens on port 1, so the upgrade fails fast and both messages name the database.
    env = _stage_env(
        tmp_path,
        "postgresql+psycopg2://platform@127.0.0.1:1/platform",
        PLATFORM_DB_PASSWORD="do-not-print-me",
    )

    result = run_in_project("platform_db", "upgrade", env=env)

    assert result.returncode == 1
    assert "could not be upgraded" in result.stderr
    assert "platform:***@127.0.0.1:1/platform" in result.stdout
    assert "do-not-print-me" not in result.stdout + result.stderr


def test_orders_delivered_before_commissioning_rotation_keep_generation_0(
    migrated_url: str, make_payload: Callable[..., ConfiguratorPayload]
) -> None:
    # An order stored by the schema before orders.commissioning_token_generation existed.
    downgrade(migrated_url, "0011")
    repo = OrderRepository.from_url(migrated_url)
    try:
        with repo.engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO orders (cfg_id, payload_sha256, payload, target, status, created_at, updated_at) "
                    "VALUES (:cfg_id, :sha, :payload, 'cloud', 'delivered', :now, :now)"
                ),
                {
                    "cfg_id": "3f2c1e9a-7b4d-4c8e-9a1f-2b3c4d5e6f70",
                    "sha": "0" * 64,
                    "payload": make_payload().model_dump_json(),
                    "now": "2025-01-01 00:00:00",
                },
            )
    finally:
        repo.dispose()

    upgrade(migrated_url)

    repo = OrderRepository.from_url(migrated_url)
    try:
        order = repo.get("3f2c1e9a-7b4d-4c8e-9a1f-2b3c4d5e6f70")
        assert order is not None and order.commissioning_token_generation == 0
    finally:
        repo.dispose()
