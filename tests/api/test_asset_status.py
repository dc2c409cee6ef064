"""Asset status of an order, asked of a real Dagster webserver over a real instance with real runs.

Six small assets stand in for the order's: the same keys, partitions and lineage, with switches
to fail a step or hold it while the test looks at the running run. The runs are made in-process
against the instance the webserver serves (tests/api/dagster_webserver.py).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DynamicPartitionsDefinition,
    ExecuteInProcessResult,
    Failure,
    asset,
    instance_for_test,
    materialize,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from api.asset_status import ORDER_ASSETS, AssetStatusReader, AssetStatusView, order_asset_statuses
from api.dagster_graphql import DagsterGraphQL
from order_pipeline.keys import APK, CFN_OR_ISO, CONFIG, EDP_ARTIFACTS, EMAIL, MANIFEST
from platform_config.settings import Settings
from tests.api.dagster_webserver import DagsterWebserver, dagster_webserver, serve_dagster_webserver
from tests.conftest import ORDER_ASSET_NAMES, serve_in_thread

__all__ = ["dagster_webserver"]

orders = DynamicPartitionsDefinition(name="orders")
ARGS: dict[str, Any] = {"key_prefix": "order", "partitions_def": orders}


class Switches:
    """What the stand-in assets do in the next run: ``fail`` step -> exception, ``hold`` step -> wait."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.fail: dict[str, Exception] = {}
        self.hold: dict[str, threading.Event] = {}
        self.holding = threading.Event()

    def step(self, name: str) -> None:
        if name in self.hold:
            self.holding.set()
            assert self.hold[name].wait(30), "the test never released the held step"
        if name in self.fail:
            raise self.fail[name]


SWITCHES = Switches()


@asset(**ARGS)
def config() -> None:
    SWITCHES.step("config")


@asset(**ARGS, deps=[config])
def edp_artifacts() -> None:
    SWITCHES.step("edp_artifacts")


@asset(**ARGS, deps=[edp_artifacts])
def cfn_or_iso() -> None:
    SWITCHES.step("cfn_or_iso")


@asset(**ARGS)
def apk() -> None:
    SWITCHES.step("apk")


@asset(**ARGS, deps=[cfn_or_iso, apk])
def manifest() -> None:
    SWITCHES.step("manifest")


@asset(**ARGS, deps=[manifest])
def email() -> None:
    SWITCHES.step("email")


STAND_INS = [config, edp_artifacts, cfn_or_iso, apk, manifest, email]
ALL = [CONFIG, EDP_ARTIFACTS, CFN_OR_ISO, APK, MANIFEST, EMAIL]
NAMES = [key.to_user_string() for key in ALL]


@pytest.fixture(autouse=True)
def reset_switches() -> Iterator[None]:
    SWITCHES.reset()
    yield
    for event in SWITCHES.hold.values():
        event.set()
    SWITCHES.reset()


@pytest.fixture
def instance(dagster_webserver: DagsterWebserver) -> DagsterInstance:
    """The instance the runs are made in; the webserver serves it."""
    return dagster_webserver.instance


@pytest.fixture
def ask(dagster_webserver: DagsterWebserver) -> Callable[[str], dict[str, AssetStatusView]]:
    """The order's asset statuses, as the webserver's GraphQL API answers them."""
    dagster = DagsterGraphQL(dagster_webserver.graphql_url)
    return lambda cfg_id: order_asset_statuses(dagster, cfg_id)


def new_order(instance: DagsterInstance) -> str:
    cfg_id = str(uuid.uuid4())
    instance.add_dynamic_partitions("orders", [cfg_id])
    return cfg_id


def run(
    instance: DagsterInstance, cfg_id: str, selection: Sequence[AssetKey] = ALL
) -> ExecuteInProcessResult:
    return materialize(
        STAND_INS, selection=list(selection), partition_key=cfg_id, instance=instance, raise_on_error=False
    )


def states(statuses: dict[str, AssetStatusView]) -> dict[str, str]:
    return {name: view.status for name, view in statuses.items()}


def test_the_six_order_assets_in_lineage_order() -> None:
    assert list(ORDER_ASSETS) == ALL
    assert NAMES == ORDER_ASSET_NAMES


Ask = Callable[[str], dict[str, AssetStatusView]]


def test_a_new_order_has_nothing_started(instance: DagsterInstance, ask: Ask) -> None:
    cfg_id = new_order(instance)
    statuses = ask(cfg_id)
    assert list(statuses) == NAMES
    for view in statuses.values():
        assert view.status == "not_started"
        assert view.run_id is None and view.last_materialized_at is None and view.error is None


def test_a_delivered_order_has_every_asset_materialized_by_its_run(
    instance: DagsterInstance, ask: Ask
) -> None:
    cfg_id = new_order(instance)
    before = datetime.now(UTC)
    result = run(instance, cfg_id)
    assert result.success

    statuses = ask(cfg_id)

    for view in statuses.values():
        assert view.status == "materialized"
        assert view.run_id == result.run_id
        assert view.last_materialized_at is not None and before <= view.last_materialized_at <= datetime.now(
            UTC
        )
        assert view.error is None
    # Another partition of the same assets is another order.
    assert set(states(ask(new_order(instance))).values()) == {"not_started"}


def test_a_failed_step_fails_its_asset_with_the_reason_and_the_assets_after_it(
    instance: DagsterInstance, ask: Ask
) -> None:
    cfg_id = new_order(instance)
    SWITCHES.fail["edp_artifacts"] = Failure(description="dtm.json is missing from the EDP artifacts")
    result = run(instance, cfg_id, [CONFIG, EDP_ARTIFACTS, CFN_OR_ISO, MANIFEST, EMAIL])
    assert not result.success

    statuses = ask(cfg_id)

    assert statuses["order/config"].status == "materialized"
    failed = statuses["order/edp_artifacts"]
    assert failed.status == "failed"
    assert failed.run_id == result.run_id
    assert failed.error == "dtm.json is missing from the EDP artifacts"
    for name in ("order/cfn_or_iso", "order/manifest", "order/email"):
        assert statuses[name].status == "failed"
        assert (
            statuses[name].error
            == "not materialized: order/edp_artifacts failed first: dtm.json is missing from the EDP artifacts"
        )
    # Not in the failed run's selection: untouched.
    assert statuses["order/apk"].status == "not_started"


def test_an_exception_in_the_asset_is_reported_without_dagsters_wrapper(
    instance: DagsterInstance, ask: Ask
) -> None:
    cfg_id = new_order(instance)
    SWITCHES.fail["config"] = ValueError("EDP answered 500")
    run(instance, cfg_id, [CONFIG])

    assert ask(cfg_id)["order/config"].error == "ValueError: EDP answered 500"


def test_a_whole_job_run_targets_the_assets_it_planned(instance: DagsterInstance, ask: Ask) -> None:
    cfg_id = new_order(instance)
    SWITCHES.fail["config"] = ValueError("EDP answered 500")
    # No selection: the run names no assets, only its log says which it was to materialize.
    result = materialize([config, apk], partition_key=cfg_id, instance=instance, raise_on_error=False)
    recorded = instance.get_run_by_id(result.run_id)
    assert recorded is not None and not recorded.asset_selection

    statuses = ask(cfg_id)

    assert statuses["order/config"].status == "failed"
    assert statuses["order/config"].error == "ValueError: EDP answered 500"
    assert statuses["order/apk"].status == "materialized"
    assert statuses["order/apk"].run_id == result.run_id
    assert statuses["order/email"].status == "not_started"


def test_a_later_successful_run_clears_the_failure(instance: DagsterInstance, ask: Ask) -> None:
    cfg_id = new_order(instance)
    SWITCHES.fail["manifest"] = RuntimeError("S3 is down")
    first = run(instance, cfg_id)
    assert states(ask(cfg_id))["order/manifest"] == "failed"

    SWITCHES.fail.clear()
    again = run(instance, cfg_id, [MANIFEST, EMAIL])

    statuses = ask(cfg_id)
    assert states(statuses) == dict.fromkeys(NAMES, "materialized")
    assert statuses["order/manifest"].run_id == again.run_id
    assert statuses["order/config"].run_id == first.run_id


def test_a_redelivery_that_fails_keeps_the_last_materialization(instance: DagsterInstance, ask: Ask) -> None:
    cfg_id = new_order(instance)
    delivered = run(instance, cfg_id)
    SWITCHES.fail["email"] = RuntimeError("SES throttled")
    redelivery = run(instance, cfg_id, [MANIFEST, EMAIL])

    statuses = ask(cfg_id)

    assert statuses["order/manifest"].status == "materialized"
    assert statuses["order/manifest"].run_id == redelivery.run_id
    email_view = statuses["order/email"]
    assert email_view.status == "failed" and email_view.run_id == redelivery.run_id
    assert email_view.error == "RuntimeError: SES throttled"
    # When it was last delivered is still known.
    assert email_view.last_materialized_at is not None
    assert statuses["order/config"].run_id == delivered.run_id


def test_a_run_in_progress_shows_its_assets_running(instance: DagsterInstance, ask: Ask) -> None:
    cfg_id = new_order(instance)
    run(instance, cfg_id)
    SWITCHES.hold["email"] = threading.Event()
    results: list[ExecuteInProcessResult] = []
    worker = threading.Thread(target=lambda: results.append(run(instance, cfg_id, [MANIFEST, EMAIL])))
    worker.start()
    try:
        assert SWITCHES.holding.wait(90), "the redelivery run did not reach its email step"
        statuses = ask(cfg_id)
    finally:
        SWITCHES.hold["email"].set()
        worker.join(90)

    [redelivery] = results
    # manifest is done in the running run, email is running in it.
    assert statuses["order/manifest"].status == "materialized"
    assert statuses["order/manifest"].run_id == redelivery.run_id
    assert statuses["order/email"].status == "running"
    assert statuses["order/email"].run_id == redelivery.run_id
    assert statuses["order/email"].last_materialized_at is not None
    assert statuses["order/config"].status == "materialized"
    assert states(ask(cfg_id))["order/email"] == "materialized"


# --- the reader the API uses ----------------------------------------------------------------------


def _closed_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/graphql"


def test_a_webserver_that_does_not_listen_means_no_asset_status() -> None:
    assert AssetStatusReader.for_url(_closed_url()).statuses(str(uuid.uuid4())) is None


@dataclass
class Answering:
    """A GraphQL endpoint that answers every read the same way: ``answer`` (status, body)."""

    url: str
    answer: tuple[int, str] = (502, "Bad Gateway")
    asked: int = 0


@pytest.fixture
def answering() -> Iterator[Answering]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    endpoint = Answering(url=f"{base_url}/graphql")

    async def graphql(request: Request) -> Response:
        endpoint.asked += 1
        status, body = endpoint.answer
        return Response(body, status_code=status, media_type="application/json")

    running = serve_in_thread(
        Starlette(routes=[Route("/graphql", graphql, methods=["POST"])]), sock, base_url
    )
    yield endpoint
    running.stop()


def test_an_unreachable_webserver_is_asked_again_only_after_a_while(answering: Answering) -> None:
    # A proxy in front of a stopped webserver: HTTP 502, no GraphQL result.
    now = [0.0]
    reader = AssetStatusReader(
        DagsterGraphQL(answering.url), ask_again_after_seconds=10, clock=lambda: now[0]
    )

    assert reader.statuses("x") is None
    now[0] = 5.0
    assert reader.statuses("x") is None
    assert answering.asked == 1
    now[0] = 10.0
    assert reader.statuses("x") is None
    assert answering.asked == 2


def test_a_rejected_query_means_no_asset_status_and_is_asked_again_next_time(answering: Answering) -> None:
    answering.answer = (400, json.dumps({"data": None, "errors": [{"message": "Cannot query field"}]}))
    reader = AssetStatusReader(DagsterGraphQL(answering.url), clock=lambda: 0.0)

    assert reader.statuses("x") is None
    assert reader.statuses("x") is None
    assert answering.asked == 2


def test_the_reader_asks_the_webserver_of_the_graphql_url(
    dagster_webserver: DagsterWebserver, instance: DagsterInstance
) -> None:
    cfg_id = new_order(instance)
    run(instance, cfg_id, [CONFIG])

    statuses = AssetStatusReader.for_url(dagster_webserver.graphql_url).statuses(cfg_id)

    assert statuses is not None
    assert statuses["order/config"].status == "materialized"
    assert statuses["order/email"].status == "not_started"


def test_get_order_reports_the_assets_next_to_the_unchanged_fields(
    settings: Settings,
    make_client: Callable[[Settings], TestClient],
    cloud_order: dict[str, Any],
) -> None:
    port = urlsplit(settings.dagster.webserver_graphql_url()).port
    assert port is not None
    with make_client(settings) as client:
        cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
        # No webserver yet: the order still answers, without assets.
        before = client.get(f"/orders/{cfg_id}").json()
    with instance_for_test() as instance, serve_dagster_webserver(instance, port):
        instance.add_dynamic_partitions("orders", [cfg_id])
        SWITCHES.fail["edp_artifacts"] = Failure(description="dtm.json is missing")
        run(instance, cfg_id, [CONFIG, EDP_ARTIFACTS])
        # A new app: the one above remembers for a while that the webserver could not be reached.
        with make_client(settings) as client:
            after = client.get(f"/orders/{cfg_id}").json()

    assert before["assets"] is None
    assert {key: value for key, value in after.items() if key != "assets"} == {
        key: value for key, value in before.items() if key != "assets"
    }
    assets = after["assets"]
    assert list(assets) == NAMES
    assert assets["order/config"]["status"] == "materialized"
    assert assets["order/config"]["last_materialized_at"]
    assert assets["order/edp_artifacts"] == {
        "status": "failed",
        "last_materialized_at": None,
        "run_id": assets["order/config"]["run_id"],
        "error": "dtm.json is missing",
    }
    assert assets["order/email"] == {
        "status": "not_started",
        "last_materialized_at": None,
        "run_id": None,
        "error": None,
    }
    # The API reads Dagster over GraphQL alone: it never makes a Dagster home of its own.
    assert not Path(settings.dagster.home).exists()
