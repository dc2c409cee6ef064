"""The order flow of the beta stage's storage: platform_db and Dagster's instance both on PostgreSQL.

Orders come in through the API over HTTP, the definitions' sensors tick against a Dagster instance
on dagster-postgres, and what each tick requests is done the way the daemon does it (partitions
first, then one in-process run per request). S3, SES and EDP are the same embedded servers as in
tests/platform_assets; the helpers of that flow (``OrderFlow``) and of the sensor tests
(``Platform.tick``) are reused as they are.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests
import yaml
from dagster import DagsterRunStatus, ExecuteInProcessResult, instance_for_test, materialize
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from sqlalchemy import create_engine, text

from contracts.manifest import PER_VERSION_KINDS
from contracts.orders import OrderStatus
from delivery.artifact_store import order_key, portal_key
from order_pipeline.keys import AFTER_EDP, CONFIG, EMAIL, REDELIVERY
from platform_assets.definitions import build_definitions, order_assets
from platform_config.settings import PlatformDbSettings, Settings, load_secrets
from platform_db import OrderRepository
from platform_db.migrate import upgrade
from resources.pipeline import build_resources
from standins.hmi_ci import publish_sample_apk
from tests.platform_assets.conftest import EXAMPLES, OrderFlow, _start_api
from tests.sensors.conftest import Platform

if TYPE_CHECKING:
    from tests.integration.conftest import PostgresServer

pytestmark = pytest.mark.slow

MANIFEST_NODE = "order__manifest"
EMAIL_NODE = "order__email"


@dataclass
class PostgresPipeline:
    """The operator's view (sensors, runs) and the customer's view (API, portal, email) of one stage."""

    flow: OrderFlow
    platform: Platform
    postgres: PostgresServer
    # Each sensor's cursor, kept between ticks as the daemon keeps it.
    cursors: dict[str, str | None] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        return self.flow.settings

    def submit(self, target: str, idempotency_key: str) -> str:
        """POST /submit as the website does; the order is in platform_db when the API answers."""
        response = requests.post(
            f"{self.settings.api.public_url}/submit",
            data=(EXAMPLES / f"order-{target}.json").read_bytes(),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["message"] == "form submitted"
        return str(body["cfg_id"])

    def order_view(self, cfg_id: str) -> dict[str, object]:
        response = requests.get(f"{self.settings.api.public_url}/orders/{cfg_id}", timeout=10)
        assert response.status_code == 200, response.text
        return dict(response.json())

    def tick(self, sensor_name: str) -> list[ExecuteInProcessResult]:
        """One tick of the sensor, then what the daemon does with it: add partitions, launch each run."""
        data = self.platform.tick(sensor_name, cursor=self.cursors.get(sensor_name))
        if data.cursor is not None:
            self.cursors[sensor_name] = data.cursor
        for request in data.dynamic_partitions_requests:
            self.flow.instance.add_dynamic_partitions(
                request.partitions_def_name, list(request.partition_keys)
            )
        return [
            materialize(
                order_assets(self.settings),
                selection=list(request.asset_selection or []),
                partition_key=request.partition_key,
                resources=build_resources(self.settings),
                instance=self.flow.instance,
                tags=dict(request.tags),
            )
            for request in data.run_requests
        ]

    def runs_in_dagster_db(self) -> dict[str, str]:
        """run_id -> status, read straight from the ``dagster`` database."""
        engine = create_engine(self.postgres.url("dagster"))
        try:
            with engine.connect() as connection:
                return dict(connection.execute(text("SELECT run_id, status FROM runs")).all())
        finally:
            engine.dispose()

    def tables(self, database: str) -> set[str]:
        engine = create_engine(self.postgres.url(database))
        try:
            with engine.connect() as connection:
                query = text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                return set(connection.execute(query).scalars())
        finally:
            engine.dispose()

    def assert_delivered_by_email(self, cfg_id: str, version: int, emails: int) -> None:
        """Portal version ``version`` is published, its artifacts download intact, ``emails`` went out."""
        manifest = self.flow.manifest(cfg_id, version)
        assert (manifest.cfg_id, manifest.version) == (cfg_id, version)
        self.flow.assert_downloads_match(manifest)
        assert len(self.flow.emails_sent_by_ses(cfg_id)) == emails
        assert len(self.flow.outbox(cfg_id)) == emails


@pytest.fixture
def pipeline(
    pipeline_settings: Settings,
    postgres: PostgresServer,
    platform_db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[PostgresPipeline]:
    # The one secret, as the compose services get it: in the environment, read by the settings
    # loader (API), by the platform_db resource (runs, sensors) and by dagster.yaml ({"env": ...}).
    monkeypatch.setenv("SECRETS_PATH", str(tmp_path / "no-secrets.env"))
    monkeypatch.delenv("PORTAL_TOKEN_KEY", raising=False)
    monkeypatch.setenv("PLATFORM_DB_PASSWORD", postgres.password)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    public_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = pipeline_settings.model_copy(
        update={
            "api": pipeline_settings.api.model_copy(update={"public_url": public_url}),
            # Beta's shape: the first run submits the EDP job, edp_sensor starts the build.
            "pipeline": pipeline_settings.pipeline.model_copy(update={"edp_wait_in_run_seconds": 0}),
            "platform_db": PlatformDbSettings(url=postgres.url(with_password=False).render_as_string()),
            "secrets": load_secrets(),
        }
    )
    assert settings.platform_db_url().password == postgres.password
    upgrade(settings.platform_db_url())

    storage = postgres.dagster_storage_config()
    orders = OrderRepository.from_url(settings.platform_db_url())
    api = _start_api(settings, OrderRepository.from_url(settings.platform_db_url()), sock)
    try:
        with instance_for_test(overrides={"storage": storage}) as instance:
            yield PostgresPipeline(
                flow=OrderFlow(settings=settings, instance=instance, orders=orders),
                platform=Platform(
                    settings=settings, defs=build_definitions(settings), instance=instance, orders=orders
                ),
                postgres=postgres,
            )
    finally:
        api.stop()
        orders.dispose()


def test_the_instance_stores_runs_events_and_sensor_ticks_in_postgres(pipeline: PostgresPipeline) -> None:
    instance = pipeline.flow.instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
    # Each storage created its tables in the dagster database (and none in platform_db's).
    dagster_tables = {"runs", "event_logs", "dynamic_partitions", "instigators", "job_ticks"}
    assert dagster_tables <= pipeline.tables("dagster")
    platform_tables = pipeline.tables("platform")
    assert {"orders", "portal_versions", "delivery_emails"} <= platform_tables
    assert not dagster_tables & platform_tables
    # The sensors' daemon gets the instance by reference; it must name the same server.
    ref = instance.get_ref()
    assert ref.storage_data is not None
    stored = yaml.safe_load(ref.storage_data.config_yaml)["postgres_db"]
    assert (stored["hostname"], stored["port"], stored["db_name"]) == (
        "127.0.0.1",
        pipeline.postgres.port,
        "dagster",
    )
    # The password stays a reference to the environment in the instance's config.
    assert stored["password"] == {"env": "PLATFORM_DB_PASSWORD"}
    assert stored["scheme"] == "postgresql+psycopg2"


def test_a_cloud_order_from_the_api_through_the_sensors_to_the_customer(pipeline: PostgresPipeline) -> None:
    flow = pipeline.flow
    cfg_id = pipeline.submit("cloud", "cloud-order-1")
    # A retried POST answers the same order: platform_db's unique key holds on PostgreSQL too.
    assert pipeline.submit("cloud", "cloud-order-1") == cfg_id
    assert pipeline.order_view(cfg_id)["status"] == OrderStatus.RECEIVED

    # order_sensor: the order becomes a partition and its config run.
    [config_run] = pipeline.tick("order_sensor")
    assert config_run.success
    assert cfg_id in flow.instance.get_dynamic_partitions("orders")
    assert flow.status(cfg_id) == OrderStatus.EDP_PENDING
    assert order_key(cfg_id, "config.json") in flow.keys(f"orders/{cfg_id}/")
    assert pipeline.tick("order_sensor") == []  # from its cursor on, nothing new

    # edp_sensor: EDP is done, the build runs; no APK yet, so the order waits and nobody is emailed.
    flow.wait_for_edp(cfg_id)
    [waiting] = pipeline.tick("edp_sensor")
    assert waiting.success
    # The manifest step publishes nothing without an APK; the email step does not run.
    assert waiting.asset_materializations_for_node(MANIFEST_NODE) == [] and waiting.is_node_skipped(
        EMAIL_NODE
    )
    assert flow.status(cfg_id) == OrderStatus.WAITING_FOR_APK
    assert order_key(cfg_id, "cfn", "cfn.yaml") in flow.keys(f"orders/{cfg_id}/cfn/")
    assert flow.emails_sent_by_ses(cfg_id) == []
    assert pipeline.tick("apk_sensor") == []

    # apk_sensor: the HMI CI publishes an APK; the waiting order is delivered.
    apk_key = publish_sample_apk(flow.s3(), pipeline.settings.artifacts.bucket, "1.0.0")
    [delivered] = pipeline.tick("apk_sensor")
    assert delivered.success
    assert flow.status(cfg_id) == OrderStatus.DELIVERED
    pipeline.assert_delivered_by_email(cfg_id, 1, emails=1)
    manifest = flow.manifest(cfg_id, 1)
    assert manifest.deployment_target == "cloud"
    assert {a.kind for a in manifest.artifacts} == {"edp", "cfn", "apk", "sbom", "provenance"}
    assert apk_key in {a.key for a in manifest.artifacts}

    # The email's link is the one the API reports, and it opens.
    [mail] = flow.outbox(cfg_id)
    body = mail.get_body(preferencelist=("plain",)).get_content()
    view = pipeline.order_view(cfg_id)
    assert view["status"] == OrderStatus.DELIVERED
    assert view["portal_url"] in body.split()
    assert [v["version"] for v in view["portal_versions"]] == [1]  # type: ignore[attr-defined]
    assert requests.get(str(view["portal_url"]), timeout=10).status_code == 200

    # Every run of the order is in the dagster database, finished.
    runs = pipeline.runs_in_dagster_db()
    for result in (config_run, waiting, delivered):
        assert runs[result.run_id] == DagsterRunStatus.SUCCESS.value


def test_an_onprem_order_is_delivered_and_redelivered(pipeline: PostgresPipeline) -> None:
    flow = pipeline.flow
    publish_sample_apk(flow.s3(), pipeline.settings.artifacts.bucket, "1.2.0")
    cfg_id = pipeline.submit("onprem", "onprem-order-1")

    [config_run] = pipeline.tick("order_sensor")
    assert config_run.success
    flow.wait_for_edp(cfg_id)
    [delivered] = pipeline.tick("edp_sensor")
    assert delivered.success
    assert not delivered.get_step_skipped_events()
    assert flow.status(cfg_id) == OrderStatus.DELIVERED
    pipeline.assert_delivered_by_email(cfg_id, 1, emails=1)
    v1 = flow.manifest(cfg_id, 1)
    assert v1.deployment_target == "onprem"
    # An on-prem order's air-gap bundle, without images: none are published here.
    assert {a.kind for a in v1.artifacts} == {"edp", "iso", "apk", "sbom", "provenance", "bundle"}
    # Nothing waits any more: the sensors request nothing new.
    assert pipeline.tick("edp_sensor") == []
    assert pipeline.tick("apk_sensor") == []

    # Re-delivery (the operator's backfill of manifest + email): version 2, a second email.
    redelivered = flow.materialize(cfg_id, REDELIVERY)
    assert redelivered.success
    [email_event] = redelivered.asset_materializations_for_node(EMAIL_NODE)
    assert email_event.metadata["portal_version"].value == 2
    assert email_event.metadata["sent_now"].value is True
    pipeline.assert_delivered_by_email(cfg_id, 2, emails=2)
    v2 = flow.manifest(cfg_id, 2)
    # The same artifacts again; the bundle, SBOM and provenance are the version's own (they name it).
    assert [(a.kind, a.sha256) for a in v2.artifacts if a.kind not in PER_VERSION_KINDS] == [
        (a.kind, a.sha256) for a in v1.artifacts if a.kind not in PER_VERSION_KINDS
    ]
    assert {a.kind for a in v2.artifacts if a.kind in PER_VERSION_KINDS} == {"bundle", "sbom", "provenance"}
    flow.assert_downloads_match(v1)  # the earlier version stays downloadable
    assert portal_key(cfg_id, 2, "index.html") in flow.keys(f"portal/{cfg_id}/")

    # A retried email step over version 2 sends nothing: the claim in platform_db holds.
    again = flow.materialize(cfg_id, [EMAIL])
    assert again.success
    [again_event] = again.asset_materializations_for_node(EMAIL_NODE)
    assert again_event.metadata["sent_now"].value is False
    assert len(flow.emails_sent_by_ses(cfg_id)) == 2

    view = pipeline.order_view(cfg_id)
    assert view["status"] == OrderStatus.DELIVERED
    assert [v["version"] for v in view["portal_versions"]] == [1, 2]  # type: ignore[attr-defined]
    assert flow.status(cfg_id) == OrderStatus.DELIVERED

    # The materializations of every step, in the dagster database.
    runs = pipeline.runs_in_dagster_db()
    for result in (config_run, delivered, redelivered, again):
        assert runs[result.run_id] == DagsterRunStatus.SUCCESS.value
    latest_email = flow.instance.get_latest_materialization_event(EMAIL)
    assert latest_email is not None and latest_email.run_id == again.run_id
    assert {CONFIG, *AFTER_EDP} <= set(flow.instance.all_asset_keys())
