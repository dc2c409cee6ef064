"""deploy/dagster.beta.yaml, deploy/dagster.ecs.yaml and local_stack/dagster.local.yaml, validated by Dagster itself.

`dagster_instance_config` is what DagsterInstance.from_config runs before it builds anything:
it checks the file against the instance schema without connecting to PostgreSQL. The pluggable
classes (run coordinator, run launcher, compute logs) are then resolved and their config checked
against each class's own config_type(), as the instance does when it first uses them. Every file
is also loaded into a real DagsterInstance (storage swapped for SQLite under a tmp dir), which
builds the run launcher and reads run monitoring and run retries as the daemon does.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from dagster._config import process_config
from dagster._core.errors import DagsterInvalidConfigError
from dagster._core.instance import DagsterInstance
from dagster._core.instance.config import dagster_instance_config
from dagster._core.launcher import RunLauncher
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster._core.storage.config import pg_config
from dagster._core.workspace.config_schema import ensure_workspace_config
from dagster._serdes import ConfigurableClassData, class_from_code_pointer
from dagster_aws.ecs import EcsRunLauncher
from dagster_aws.s3.compute_log_manager import S3ComputeLogManager
from dagster_postgres.utils import pg_url_from_config
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from platform_config.settings import load_settings
from platform_instance.run_launcher import (
    QUIET_SECONDS,
    UNREACHABLE_CHECKS_TO_FAIL,
    MonitoredDefaultRunLauncher,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
INSTANCE_FILES = ["dagster.beta.yaml", "dagster.ecs.yaml"]
# Every instance the platform runs under: the local/demo stage's (SQLite, `dagster dev`) too.
ALL_INSTANCE_PATHS = {
    "local": ROOT / "local_stack" / "dagster.local.yaml",
    "beta": DEPLOY / "dagster.beta.yaml",
    "ecs": DEPLOY / "dagster.ecs.yaml",
}
# The stages whose runs are subprocesses of a code server (the platform's launcher).
CODE_SERVER_STAGES = ["local", "beta"]
# An order's run normally ends within a minute or two; the ceiling is generous, never unbounded.
MAX_RUNTIME_RANGE = (300, 3600)
EDP_LIMITS = [
    {"key": "platform/edp", "value": "submit", "limit": 4},
    {"key": "order/edp_job_id", "limit": 4},
    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1},
]
ECS_ENV = {
    "PLATFORM_DB_PASSWORD": "instance-test-password",
    "DAGSTER_ECS_RUN_TASK_DEFINITION": "platform-run",
    "DAGSTER_ECS_RUN_CONTAINER": "run",
    "DAGSTER_COMPUTE_LOGS_BUCKET": "platform-dagster-logs",
}


@pytest.fixture(autouse=True)
def instance_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in ECS_ENV.items():
        monkeypatch.setenv(key, value)


def load_instance_config(filename: str, directory: Path = DEPLOY) -> dict[str, Any]:
    config, custom_instance_class = dagster_instance_config(str(directory), config_filename=filename)
    assert custom_instance_class is None
    return dict(config)


def load_stage_config(stage: str) -> dict[str, Any]:
    path = ALL_INSTANCE_PATHS[stage]
    return load_instance_config(path.name, path.parent)


def class_config(section: dict[str, Any], expected: type) -> dict[str, Any]:
    """Resolve module/class as the instance does and validate the config against the class."""
    resolved = class_from_code_pointer(section["module"], section["class"])
    assert resolved is expected
    result = process_config(resolved.config_type(), section.get("config") or {})
    assert result.success, [error.message for error in result.errors or []]
    return dict(result.value or {})


@pytest.mark.parametrize("filename", INSTANCE_FILES)
def test_storage_is_the_compose_postgres(filename: str) -> None:
    db = load_instance_config(filename)["storage"]["postgres"]["postgres_db"]
    assert db["hostname"] == "postgres"
    assert db["username"] == "platform"
    assert db["db_name"] == "dagster"
    assert db["port"] == 5432
    # The password is read from the environment at start, never written in the file.
    assert db["password"] == {"env": "PLATFORM_DB_PASSWORD"}


@pytest.mark.parametrize("filename", INSTANCE_FILES)
def test_storage_shares_the_server_not_the_database_with_platform_db(filename: str) -> None:
    """Same server, user and driver as platform_db.url; its own database, since platform_db's
    migrations and Dagster's both keep their revision in an `alembic_version` table."""
    db = load_instance_config(filename)["storage"]["postgres"]["postgres_db"]
    secrets = {
        "WEBSITE_API_TOKENS": "instance-config-website-token-0123456789",
        "OPERATOR_API_TOKENS": "instance-config-operator-token-0123456789",
        "PORTAL_TOKEN_KEY": "k",
        "MANIFEST_SIGNING_KEY": "s",
    }
    url = load_settings("beta", environ=secrets, secrets_path=DEPLOY / "absent.env").platform_db_url()
    assert (url.host, url.port, url.username, url.drivername) == (
        db["hostname"],
        db["port"],
        db["username"],
        db["scheme"],
    )
    assert db["db_name"] != url.database


@pytest.mark.parametrize("filename", INSTANCE_FILES)
def test_storage_driver_is_installed(filename: str) -> None:
    """dagster-postgres's engine, built as at start (create_engine imports the driver, connects not)."""
    # Resolves the password from the environment, as the instance does when it builds the storage.
    storage = process_config(pg_config(), load_instance_config(filename)["storage"]["postgres"])
    assert storage.success, storage.errors
    url = make_url(pg_url_from_config(storage.value))
    assert url.password == ECS_ENV["PLATFORM_DB_PASSWORD"]
    assert url.drivername == "postgresql+psycopg2"
    engine = create_engine(url)
    try:
        assert engine.dialect.driver == "psycopg2"
    finally:
        engine.dispose()


@pytest.mark.parametrize("filename", INSTANCE_FILES)
def test_runs_wait_in_a_queue_with_edp_limits(filename: str) -> None:
    config = load_instance_config(filename)
    assert "run_queue" not in config
    queue = class_config(config["run_coordinator"], QueuedRunCoordinator)
    assert queue["max_concurrent_runs"] == 10
    limits = [{k: v for k, v in limit.items() if v is not None} for limit in queue["tag_concurrency_limits"]]
    assert limits == EDP_LIMITS
    assert all(limit["limit"] < queue["max_concurrent_runs"] for limit in limits)


def test_queue_is_built_from_the_config() -> None:
    section = load_instance_config("dagster.beta.yaml")["run_coordinator"]
    coordinator = ConfigurableClassData(
        section["module"], section["class"], yaml.safe_dump(section["config"])
    ).rehydrate(QueuedRunCoordinator)
    run_queue = coordinator.get_run_queue_config()
    assert run_queue.max_concurrent_runs == 10
    assert {limit["key"] for limit in run_queue.tag_concurrency_limits} == {
        "platform/edp",
        "order/edp_job_id",
        "dagster/partition",
    }


@pytest.mark.parametrize("filename", INSTANCE_FILES)
def test_telemetry_is_off(filename: str) -> None:
    assert load_instance_config(filename)["telemetry"] == {"enabled": False}


def test_beta_launches_runs_in_the_code_location() -> None:
    config = load_instance_config("dagster.beta.yaml")
    # Dagster's default launcher (each run a subprocess of the gRPC code server) with health checks.
    class_config(config["run_launcher"], MonitoredDefaultRunLauncher)
    assert "compute_logs" not in config


@pytest.mark.parametrize("stage", CODE_SERVER_STAGES)
def test_code_server_stages_launch_with_worker_health_checks(stage: str) -> None:
    section = load_stage_config(stage)["run_launcher"]
    # The same (empty) config as Dagster's DefaultRunLauncher.
    assert class_config(section, MonitoredDefaultRunLauncher) == {}
    launcher = ConfigurableClassData(
        section["module"], section["class"], yaml.safe_dump(section.get("config") or {})
    ).rehydrate(RunLauncher)
    assert type(launcher) is MonitoredDefaultRunLauncher
    assert launcher.supports_check_run_worker_health
    assert not launcher.supports_resume_run


@pytest.mark.parametrize("stage", ALL_INSTANCE_PATHS)
def test_run_monitoring_bounds_every_run(stage: str) -> None:
    """A run whose worker died, never started or hangs ends failed in bounded time."""
    monitoring = load_stage_config(stage)["run_monitoring"]
    assert monitoring["enabled"] is True
    assert MAX_RUNTIME_RANGE[0] <= monitoring["max_runtime_seconds"] <= MAX_RUNTIME_RANGE[1]
    assert monitoring["start_timeout_seconds"] > 0
    assert monitoring["cancel_timeout_seconds"] > 0
    assert monitoring["poll_interval_seconds"] > 0
    # Resume is not supported by either launcher: a run with a dead worker is failed, then retried.
    assert monitoring.get("max_resume_run_attempts", 0) == 0


def test_an_orphaned_run_is_failed_in_bounded_time() -> None:
    """Local: the daemon sees the worker's pid, the first check after the restart decides (within
    about a minute, the restart included). Beta: the run's silence, or a code server unreachable on
    several checks in a row, decides (within about 3 minutes)."""
    local = load_stage_config("local")["run_monitoring"]["poll_interval_seconds"]
    assert local <= 20
    beta = load_stage_config("beta")["run_monitoring"]["poll_interval_seconds"]
    assert max(QUIET_SECONDS + beta, UNREACHABLE_CHECKS_TO_FAIL * beta) <= 180


@pytest.mark.parametrize("stage", ALL_INSTANCE_PATHS)
def test_only_crashed_runs_are_retried_automatically(stage: str) -> None:
    retries = load_stage_config(stage)["run_retries"]
    assert retries == {"enabled": True, "max_retries": 1, "retry_on_asset_or_op_failure": False}


@pytest.mark.parametrize("stage", ALL_INSTANCE_PATHS)
def test_instance_loads_with_monitoring_and_retries(stage: str, tmp_path: Path) -> None:
    """The file as a DagsterInstance reads it (storage and compute logs on SQLite/local disk)."""
    config = yaml.safe_load(ALL_INSTANCE_PATHS[stage].read_text())
    config.pop("storage", None)
    config.pop("compute_logs", None)
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(config))
    with DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.run_monitoring_enabled
        assert instance.run_monitoring_max_runtime_seconds == config["run_monitoring"]["max_runtime_seconds"]
        assert (
            instance.run_monitoring_poll_interval_seconds == config["run_monitoring"]["poll_interval_seconds"]
        )
        assert instance.run_monitoring_max_resume_run_attempts == 0
        assert instance.run_retries_enabled
        assert instance.run_retries_max_retries == 1
        assert instance.run_retries_retry_on_asset_or_op_failure is False
        if stage in CODE_SERVER_STAGES:
            assert type(instance.run_launcher) is MonitoredDefaultRunLauncher
            assert instance.run_launcher.supports_check_run_worker_health


def test_ecs_run_launcher_config_validates() -> None:
    config = load_instance_config("dagster.ecs.yaml")
    launcher = class_config(config["run_launcher"], EcsRunLauncher)
    assert launcher["task_definition"] == {"env": "DAGSTER_ECS_RUN_TASK_DEFINITION"}
    # StringSource: resolved from the environment by the config system.
    assert launcher["container_name"] == ECS_ENV["DAGSTER_ECS_RUN_CONTAINER"]
    assert launcher["include_sidecars"] is False
    assert launcher["secrets_tag"] is None
    assert launcher["use_current_ecs_task_config"] is True
    assert launcher["env_vars"] == ["ENV"]
    # The ECS launcher checks its tasks itself (DescribeTasks): run monitoring needs no help there.
    assert (
        EcsRunLauncher.supports_check_run_worker_health.fget
        is not RunLauncher.supports_check_run_worker_health.fget
    )


def test_ecs_compute_logs_go_to_s3() -> None:
    config = load_instance_config("dagster.ecs.yaml")
    logs = class_config(config["compute_logs"], S3ComputeLogManager)
    assert logs["bucket"] == ECS_ENV["DAGSTER_COMPUTE_LOGS_BUCKET"]
    assert config["run_monitoring"]["enabled"] is True


def test_ecs_and_beta_share_storage_and_queue() -> None:
    beta, ecs = (load_instance_config(name) for name in INSTANCE_FILES)
    assert ecs["storage"] == beta["storage"]
    assert ecs["run_coordinator"] == beta["run_coordinator"]


def test_validation_rejects_wrong_keys(tmp_path: Path) -> None:
    """The checks above are real: Dagster refuses a misspelt storage key and run-queue key."""
    broken = yaml.safe_load((DEPLOY / "dagster.beta.yaml").read_text())
    db = broken["storage"]["postgres"]["postgres_db"]
    db["hostnme"] = db.pop("hostname")
    (tmp_path / "dagster.yaml").write_text(yaml.safe_dump(broken))
    with pytest.raises(DagsterInvalidConfigError):
        dagster_instance_config(str(tmp_path))

    queue = dict(load_instance_config("dagster.beta.yaml")["run_coordinator"]["config"])
    queue["max_concurent_runs"] = queue.pop("max_concurrent_runs")
    assert not process_config(QueuedRunCoordinator.config_type(), queue).success


def test_workspace_points_at_the_code_location() -> None:
    path = DEPLOY / "workspace.compose.yaml"
    workspace = ensure_workspace_config(yaml.safe_load(path.read_text()), str(path))
    assert workspace["load_from"] == [
        {"grpc_server": {"host": "code-location", "port": 4000, "location_name": "platform"}}
    ]
