import asyncio
import json
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.testclient import TestClient

from api.app import create_app
from api.dagster_graphql import STATUS_OPERATIONS
from platform_config.settings import Settings, load_settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from platform_db.migrate import upgrade

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def cloud_order() -> dict[str, Any]:
    return json.loads((EXAMPLES / "order-cloud.json").read_text())


@pytest.fixture
def onprem_order() -> dict[str, Any]:
    return json.loads((EXAMPLES / "order-onprem.json").read_text())


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    local = load_settings("local", secrets_path=tmp_path / "none.env", environ={})
    return local.model_copy(
        update={
            "platform_db": local.platform_db.model_copy(
                update={"url": f"sqlite:///{tmp_path / 'platform.db'}"}
            ),
            "portal": local.portal.model_copy(
                update={
                    "local_key_file": str(tmp_path / "portal_token.key"),
                    "local_signing_key_file": str(tmp_path / "manifest_signing.key"),
                }
            ),
            # Never a developer's running stack: no Dagster home yet, and nothing at the GraphQL URL.
            "dagster": local.dagster.model_copy(
                update={
                    "home": str(tmp_path / "dagster"),
                    "graphql_url": f"http://127.0.0.1:{_closed_port()}/graphql",
                }
            ),
            # A submit's own run start is tested on its own (test_order_runs.py); elsewhere the
            # stub's received requests are the backfills alone.
            "pipeline": local.pipeline.model_copy(update={"api_starts_first_run": False}),
        }
    )


def build_client(settings: Settings) -> TestClient:
    upgrade(settings.platform_db_url())
    return TestClient(create_app(settings, OrderRepository.from_url(settings.platform_db_url())))


@pytest.fixture
def make_client() -> Callable[[Settings], TestClient]:
    return build_client


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with build_client(settings) as client:
        yield client


Submitted = Callable[[Settings], AbstractContextManager[tuple[TestClient, str]]]


@pytest.fixture
def submitted(make_client: Callable[[Settings], TestClient], cloud_order: dict[str, Any]) -> Submitted:
    """``with submitted(settings) as (client, cfg_id)``: the app under ``settings``, a cloud order in it."""

    @contextmanager
    def serve(settings: Settings) -> Iterator[tuple[TestClient, str]]:
        with make_client(settings) as client:
            yield client, str(client.post("/submit", json=cloud_order).json()["cfg_id"])

    return serve


# The two credentials as beta holds them: the operators' with two values at once, as during a rotation.
WEBSITE_TOKEN = "website-token-of-the-api-tests-0001"
OPERATOR_TOKENS = ("operator-token-of-the-api-tests-0001", "operator-token-of-the-api-tests-0002")
WEBSITE = {"Authorization": f"Bearer {WEBSITE_TOKEN}"}
OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKENS[0]}"}


def token_required(settings: Settings) -> Settings:
    """``settings`` as beta runs: every request but the public ones carries ``WEBSITE`` or ``OPERATOR``."""
    return settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"require_token": True}),
            "secrets": settings.secrets.model_copy(
                update={
                    "WEBSITE_API_TOKENS": SecretStr(WEBSITE_TOKEN),
                    "OPERATOR_API_TOKENS": SecretStr(",".join(OPERATOR_TOKENS)),
                }
            ),
        }
    )


@pytest.fixture
def beta_client(settings: Settings) -> Iterator[TestClient]:
    with build_client(token_required(settings)) as client:
        yield client


# --- a stand-in for the Dagster webserver's GraphQL endpoint ------------------------------------


@dataclass
class StubDagster:
    """Answers ``launchPartitionBackfill`` the way the Dagster webserver does, in the chosen ``mode``.

    success: LaunchBackfillSuccess with backfill ids stub-backfill-1, -2, ...; error_result: a
    PartitionKeysNotFoundError result; python_error: a PythonError result; graphql_error: HTTP 400
    with GraphQL errors; bad_gateway: HTTP 502 plain text (a proxy in front of a stopped webserver);
    slow: success after ``delay_seconds``.
    """

    url: str
    mode: str = "success"
    delay_seconds: float = 0.0
    received: list[dict[str, Any]] = field(default_factory=list)
    launched: int = 0

    def backfill_params(self) -> list[dict[str, Any]]:
        return [body["variables"]["backfillParams"] for body in self.received]

    def assert_refused(self, answer: Any, launch: str) -> None:
        """The API's answer to a launch this stand-in refused: a 503 that says the ``launch`` was not
        launched, with a Retry-After and no traceback."""
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith(f"the {launch} was not launched: ")
        assert "Traceback" not in answer.text
        assert answer.headers["retry-after"]

    def assert_the_key_launches_once_back(
        self, client: TestClient, path: str, headers: dict[str, str]
    ) -> None:
        """The Idempotency-Key of a refused launch stays free: once the stand-in answers again, a POST
        of ``path`` with it launches."""
        self.mode = "success"
        retried = client.post(path, headers=headers)
        assert retried.status_code == 202
        # The first backfill: the refused launch left none behind.
        assert retried.json()["backfill_id"] == "stub-backfill-1"


REPOSITORY = {
    "name": "__repository__",
    "location": {"name": "platform_assets.definitions"},
    "jobs": [{"name": "__ASSET_JOB"}],
}


def _stub_run_answer(stub: StubDagster, query: str) -> Response | None:
    """The answers of an order's first run start (repositories, addDynamicPartition, launchRun)."""
    if "repositoriesOrError" in query:
        return JSONResponse(
            {"data": {"repositoriesOrError": {"__typename": "RepositoryConnection", "nodes": [REPOSITORY]}}}
        )
    if "addDynamicPartition" in query:
        return JSONResponse({"data": {"addDynamicPartition": {"__typename": "AddDynamicPartitionSuccess"}}})
    if "launchRun" in query:
        stub.launched += 1
        result = {"__typename": "LaunchRunSuccess", "run": {"runId": f"stub-run-{stub.launched}"}}
        return JSONResponse({"data": {"launchRun": result}})
    return None


def _stub_answer(stub: StubDagster, query: str) -> Response:
    if stub.mode in ("success", "slow") and (run_answer := _stub_run_answer(stub, query)) is not None:
        return run_answer
    if stub.mode in ("success", "slow"):
        stub.launched += 1
        result = {
            "__typename": "LaunchBackfillSuccess",
            "backfillId": f"stub-backfill-{stub.launched}",
            "launchedRunIds": [],
        }
        return JSONResponse({"data": {"launchPartitionBackfill": result}})
    if stub.mode == "error_result":
        result = {
            "__typename": "PartitionKeysNotFoundError",
            "message": "Partition keys `['nope']` could not be found.",
        }
        return JSONResponse({"data": {"launchPartitionBackfill": result}})
    if stub.mode == "python_error":
        result = {
            "__typename": "PythonError",
            "message": "DagsterInvariantViolationError: no asset order/manifest\n",
        }
        return JSONResponse({"data": {"launchPartitionBackfill": result}})
    if stub.mode == "graphql_error":
        errors = [
            {
                "message": 'Variable "$backfillParams" got invalid value',
                "locations": [{"line": 2, "column": 34}],
            }
        ]
        return JSONResponse({"data": None, "errors": errors}, status_code=400)
    if stub.mode == "bad_gateway":
        return PlainTextResponse("Bad Gateway", status_code=502)
    raise AssertionError(f"unknown stub mode {stub.mode}")


def create_stub_dagster_app(stub: StubDagster) -> Starlette:
    async def graphql(request: Request) -> Response:
        body = await request.json()
        # The API's asset status reads: the stand-in keeps no runs, so it answers as a webserver
        # that is away (GET /orders answers assets null), and they are no launches to record.
        if body.get("operationName") in STATUS_OPERATIONS:
            return PlainTextResponse("Bad Gateway", status_code=502)
        stub.received.append(body)
        if stub.delay_seconds:
            await asyncio.sleep(stub.delay_seconds)
        return _stub_answer(stub, str(body.get("query", "")))

    return Starlette(routes=[Route("/graphql", graphql, methods=["POST"])])


@pytest.fixture
def stub_dagster() -> Iterator[StubDagster]:
    """The stand-in on a free loopback port, over real HTTP."""
    from tests.conftest import serve_in_thread

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    stub = StubDagster(url=f"{base_url}/graphql")
    running = serve_in_thread(create_stub_dagster_app(stub), sock, base_url)
    yield stub
    running.stop()


@pytest.fixture
def stub_settings(settings: Settings, stub_dagster: StubDagster) -> Settings:
    """The settings with the GraphQL URL of ``stub_dagster``."""
    return settings.model_copy(
        update={"dagster": settings.dagster.model_copy(update={"graphql_url": stub_dagster.url})}
    )


@pytest.fixture
def api(stub_settings: Settings, make_client: Callable[[Settings], TestClient]) -> Iterator[TestClient]:
    """The app against ``stub_dagster``."""
    with make_client(stub_settings) as client:
        yield client


@pytest.fixture
def token_api(stub_settings: Settings, make_client: Callable[[Settings], TestClient]) -> Iterator[TestClient]:
    """``api`` as beta and prod run it: requests carry ``TOKEN``."""
    with make_client(token_required(stub_settings)) as client:
        yield client


def answered_status(launch: Callable[[], object]) -> int:
    """The status an endpoint answers for ``launch``: its Problem's, else 202 (accepted)."""
    from service_kit.problems import Problem

    try:
        launch()
    except Problem as problem:
        return problem.status_code
    return 202


RaceLaunches = Callable[[int, Callable[[int], object]], list[int]]


@pytest.fixture
def race_launches(race: Callable[[int, Callable[[int], Any]], list[Any]]) -> RaceLaunches:
    """``race_launches(workers, launch)``: ``launch(0 .. workers-1)`` raced; the status each answers."""
    return lambda workers, launch: race(workers, lambda index: answered_status(lambda: launch(index)))


def new_key() -> dict[str, str]:
    """An Idempotency-Key header of its own, as every operator call needs (428 without): a request
    that is no retry of an earlier one."""
    return {"Idempotency-Key": f"test-{uuid.uuid4()}"}


def assert_only_the_token_is_let_through(
    client: TestClient, path: str, stub: StubDagster, json: dict[str, Any] | None = None
) -> None:
    """A POST to ``path`` launches nothing without a token or with a wrong one (401), with the
    website's (403) or with an operator's but no Idempotency-Key (428); an operator's with a key, 202."""
    key = {"Idempotency-Key": f"only-the-operator-{uuid.uuid4()}"}
    missing = client.post(path, json=json, headers=key)
    wrong = client.post(path, json=json, headers={"Authorization": "Bearer nope", **key})
    website = client.post(path, json=json, headers={**WEBSITE, **key})
    keyless = client.post(path, json=json, headers=OPERATOR)
    assert stub.received == []
    allowed = client.post(path, json=json, headers={**OPERATOR, **key})

    assert missing.status_code == wrong.status_code == 401
    assert missing.headers["www-authenticate"].startswith("Bearer")
    assert website.status_code == 403
    assert "operator scope" in website.json()["detail"]
    assert keyless.status_code == 428
    assert "Idempotency-Key" in keyless.json()["detail"]
    assert allowed.status_code == 202


def record_delivered_version(settings: Settings, cfg_id: str, version: int = 1) -> None:
    """What the manifest asset records when it publishes a portal version."""
    deliveries = DeliveryRepository.from_url(settings.platform_db_url())
    try:
        claimed = deliveries.claim_portal_version(cfg_id, f"run-{version}")
        deliveries.record_publication(
            cfg_id,
            claimed.version,
            manifest_key=f"portal/{cfg_id}/v{claimed.version}/manifest.json",
            artifact_count=3,
        )
    finally:
        deliveries.dispose()
