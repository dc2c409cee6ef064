"""platform_db on PostgreSQL, the beta stage's database.

The platform_db suite written against SQLite (tests/platform_db) runs here unchanged against the
real server: its test functions are imported, and the fixtures they need (tests/integration/conftest.py,
with ``db_url`` at the ``platform`` database) point them at the server. Behaviour that differs between the two
engines (locking, time zones, types) is what those tests would catch. The tests after them cover
what only PostgreSQL has: the password from secrets, conditional updates racing on row locks, the
column types the migrations create.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml
from sqlalchemy import create_engine, inspect, text

from contracts.configurator import ConfiguratorPayload
from contracts.orders import OrderStatus
from platform_config.settings import load_settings
from platform_db import OrderRepository
from platform_db.migrate import current_revision, upgrade

# The SQLite suite, run again on PostgreSQL. Imported names are collected as this module's tests.
from tests.platform_db.conftest import Connect
from tests.platform_db.test_claims import (  # noqa: F401 - fixtures and tests
    claims,
    test_a_claim_being_launched_is_in_progress_until_released,
    test_a_recorded_claim_is_not_released,
    test_a_stale_claim_is_taken_over_by_one_retry,
    test_concurrent_requests_with_one_key_make_one_claim,
    test_the_same_key_answers_the_recorded_backfill,
    test_without_a_key_every_claim_is_new,
)
from tests.platform_db.test_deliveries import (  # noqa: F401 - fixtures and tests
    cfg_id,
    deliveries,
    published,
    test_a_claim_survives_a_new_connection,
    test_a_claimed_version_keeps_its_publication_on_retry,
    test_a_new_run_gets_the_next_version,
    test_concurrent_email_claims_let_exactly_one_sender_through,
    test_concurrent_runs_get_distinct_consecutive_versions,
    test_each_version_has_its_own_email_claim,
    test_email_of_a_version_is_claimed_once,
    test_first_claim_of_an_order_is_version_1,
    test_only_published_versions_are_listed_oldest_first,
    test_published_versions_of_other_orders_are_not_listed,
    test_recording_a_publication_of_an_unclaimed_version_fails,
    test_released_claim_can_be_claimed_again,
    test_retry_of_the_same_run_gets_the_same_version,
    test_sent_email_is_never_released,
    test_versions_are_counted_per_order,
)
from tests.platform_db.test_migrate import (  # noqa: F401 - tests
    HEAD,
    run_in_project,
    test_alembic_cli_upgrades_and_finds_no_pending_changes,
    test_downgrade_to_base_and_upgrade_again,
    test_migrated_schema_matches_the_metadata,
    test_upgrade_creates_the_schema_and_is_idempotent,
)
from tests.platform_db.test_repository import (  # noqa: F401 - tests
    test_a_failure_keeps_its_reason_until_a_retry_moves_the_order_on,
    test_an_order_survives_a_restart,
    test_changing_an_unknown_order_is_a_key_error,
    test_concurrent_submits_with_one_key_store_one_order,
    test_get_unknown_order_is_none,
    test_key_of_invalid_length_is_rejected,
    test_losing_the_insert_race_returns_the_winner,
    test_losing_the_insert_race_with_another_payload_is_a_conflict,
    test_onprem_target_is_stored,
    test_order_repr_leaves_out_the_customer_data,
    test_orders_after_pages_through_orders_in_seq_order,
    test_orders_after_rejects_an_empty_page,
    test_orders_with_status,
    test_record_edp_job,
    test_rotating_the_portal_token_moves_to_the_next_generation,
    test_same_key_and_payload_returns_the_existing_order,
    test_same_key_with_another_payload_is_a_conflict,
    test_stored_payload_validates_back_into_the_model,
    test_submit_stores_a_received_order,
    test_without_key_every_submit_is_a_new_order,
)

if TYPE_CHECKING:
    from tests.integration.conftest import PostgresServer

pytestmark = pytest.mark.slow

MakePayload = Callable[..., ConfiguratorPayload]


# --- what the SQLite suite has no test for -------------------------------------------------------


def test_concurrent_conditional_moves_let_exactly_one_through(
    connect: Connect, make_payload: MakePayload, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    """PostgreSQL re-checks the WHERE of an UPDATE that waited on a row lock: one writer moves the order."""
    workers = 8
    repositories = [connect(OrderRepository) for _ in range(workers)]
    order, _ = repositories[0].submit(make_payload(), None)
    repositories[0].fail(order.cfg_id, "EDP job failed")

    # Two operators retry the same failed order at once: one retry starts, with one new EDP attempt.
    moved = race(
        workers,
        lambda index: repositories[index].start_retry(order.cfg_id, OrderStatus.RECEIVED, new_edp_job=True),
    )

    assert sorted(moved) == [False] * (workers - 1) + [True]
    retried = repositories[0].get(order.cfg_id)
    assert retried is not None
    assert retried.status is OrderStatus.RECEIVED and retried.edp_attempt == 1


def test_concurrent_submits_without_a_key_get_distinct_increasing_seqs(
    connect: Connect, make_payload: MakePayload, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    workers = 8
    repositories = [connect(OrderRepository) for _ in range(workers)]

    results = race(workers, lambda index: repositories[index].submit(make_payload(), None)[0])

    seqs = sorted(order.seq for order in results)
    assert len(set(seqs)) == workers
    # The sensors' cursor sees every one of them once, in seq order.
    assert [order.seq for order in repositories[0].orders_after(0)] == seqs


def test_timestamps_come_back_in_utc_whatever_the_session_time_zone(
    migrated_url: str, make_payload: MakePayload
) -> None:
    engine = create_engine(migrated_url, connect_args={"options": "-c timezone=America/New_York"})
    repository = OrderRepository(engine)
    try:
        before = datetime.now(UTC)
        order, _ = repository.submit(make_payload(), None)
        stored = repository.get(order.cfg_id)
        assert stored is not None
        assert stored.created_at.utcoffset() == timedelta(0)
        assert stored.created_at == order.created_at
        assert before <= stored.created_at <= datetime.now(UTC)
    finally:
        repository.dispose()


def test_the_migrations_create_postgresql_types(migrated_url: str) -> None:
    engine = create_engine(migrated_url)
    try:
        columns = {column["name"]: column for column in inspect(engine).get_columns("orders")}
        with engine.connect() as connection:
            types = dict(
                connection.execute(
                    text(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name IN ('orders', 'portal_versions', 'delivery_emails') "
                        "AND column_name IN ('created_at', 'updated_at', 'claimed_at', 'sent_at', 'payload')"
                    )
                ).all()
            )
    finally:
        engine.dispose()
    # seq is backed by a sequence; timestamps keep their offset.
    assert "nextval" in str(columns["seq"]["default"])
    assert types == {
        "created_at": "timestamp with time zone",
        "updated_at": "timestamp with time zone",
        "claimed_at": "timestamp with time zone",
        "sent_at": "timestamp with time zone",
        "payload": "json",
    }


# --- the beta stage's settings: the password comes from secrets, never from a file or a log ------


def _beta_customer_file(tmp_path: Path, postgres: PostgresServer) -> Path:
    customer = tmp_path / "cfg.customer.yml"
    url = postgres.url(with_password=False).render_as_string(hide_password=False)
    customer.write_text(yaml.safe_dump({"platform_db": {"url": url}}))
    return customer


def _beta_secrets(password: str) -> dict[str, str]:
    return {
        "PLATFORM_DB_PASSWORD": password,
        "WEBSITE_API_TOKENS": "integration-website-token-0123456789",
        "OPERATOR_API_TOKENS": "integration-operator-token-0123456789",
        "PORTAL_TOKEN_KEY": "integration-portal-key",
        "MANIFEST_SIGNING_KEY": "integration-signing-key",
    }


def test_beta_settings_reach_the_database_with_the_secret_password(
    tmp_path: Path, postgres: PostgresServer, platform_db_url: str, make_payload: MakePayload
) -> None:
    customer = _beta_customer_file(tmp_path, postgres)
    assert postgres.password not in customer.read_text()

    from_environment = load_settings(
        "beta",
        customer_path=customer,
        secrets_path=tmp_path / "no-secrets.env",
        environ=_beta_secrets(postgres.password),
    )
    secrets_file = tmp_path / "secrets.env"
    secrets_file.write_text(
        "".join(f"{key}={value}\n" for key, value in _beta_secrets(postgres.password).items())
    )
    from_file = load_settings("beta", customer_path=customer, secrets_path=secrets_file, environ={})

    for index, settings in enumerate((from_environment, from_file)):
        url = settings.platform_db_url()
        assert url.password == postgres.password
        assert (url.host, url.port, url.username, url.database) == (
            postgres.host,
            postgres.port,
            "platform",
            "platform",
        )
        assert postgres.password not in repr(settings) + str(url)
        upgrade(url)
        repository = OrderRepository.from_url(url)
        try:
            order, created = repository.submit(make_payload(), f"beta-key-{index}")
            assert created and repository.get(order.cfg_id) == order
        finally:
            repository.dispose()


def _platform_db_cli(
    tmp_path: Path, postgres: PostgresServer, password: str
) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key not in _beta_secrets("")}
    env.update(
        ENV="beta",
        CFG_CUSTOMER_PATH=str(_beta_customer_file(tmp_path, postgres)),
        SECRETS_PATH=str(tmp_path / "no-secrets.env"),
        **_beta_secrets(password),
    )
    return run_in_project("platform_db", "upgrade", env=env)


def test_module_cli_upgrades_the_beta_database_without_showing_the_password(
    tmp_path: Path, postgres: PostgresServer, platform_db_url: str
) -> None:
    assert current_revision(platform_db_url) is None

    result = _platform_db_cli(tmp_path, postgres, postgres.password)

    output = result.stdout + result.stderr
    assert result.returncode == 0, output.replace(postgres.password, "***")
    assert postgres.password not in output
    assert f"platform:***@{postgres.host}:{postgres.port}/platform" in result.stdout
    assert HEAD in result.stdout
    assert current_revision(platform_db_url) == HEAD


def test_module_cli_with_a_wrong_password_fails_without_showing_either(
    tmp_path: Path, postgres: PostgresServer, platform_db_url: str
) -> None:
    wrong = "wrong-" + postgres.password[::-1]

    result = _platform_db_cli(tmp_path, postgres, wrong)

    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "could not be upgraded" in result.stderr
    assert "password authentication failed" in result.stderr
    assert wrong not in output and postgres.password not in output
    assert current_revision(platform_db_url) is None
