"""The fuzz tier of the edge gateway: every route, no answer >= 500.

The gateway publishes no OpenAPI document, so the test writes one for its four routes, with the
DTM's JSON schema (from the pydantic model) as the body of POST /topology; schemathesis generates
valid and invalid requests from it, sent to the app in-process. Mutated copies of a real DTM and
arbitrary JSON bodies go to POST /topology as well. The gateway runs with a supervisor that takes
every topology but polls nothing: a generated DTM names arbitrary hosts, and no traffic may leave
the machine (the loopback guard would refuse it anyway).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import strategies as st
from pydantic.json_schema import models_json_schema
from schemathesis.python import asgi
from starlette.applications import Starlette
from starlette.testclient import TestClient

from contracts.configurator import ModbusTcpConnection
from contracts.device_catalog import POINT_CATALOG
from contracts.dtm import DeviceTopologyModel, DtmDevice
from edge_gateway.app import create_app
from edge_gateway.polling import PollingSupervisor
from edge_gateway.settings import GatewaySettings
from tests.edge_gateway.conftest import device_document, dtm_document
from tests.fuzzing import JSON_VALUES, FuzzReport, Outcome, hostile_json, json_poster, loopback_only, mutated

pytestmark = pytest.mark.slow

REF = "#/components/schemas/{model}"


class QuietSupervisor(PollingSupervisor):
    """Takes every topology (health reports each device not_connected) but never contacts a device."""

    def _start(self, device: DtmDevice, connection: ModbusTcpConnection) -> None:
        pass


def gateway_openapi(app: Starlette) -> dict[str, Any]:
    """Every route of the app as an OpenAPI operation; POST /topology takes the DTM, other bodies any object."""
    _, defs = models_json_schema([(DeviceTopologyModel, "validation")], ref_template=REF)
    answer = {"description": "any answer", "content": {"application/json": {"schema": {}}}}
    bodies = {"/topology": {"$ref": REF.format(model="DeviceTopologyModel")}}
    paths: dict[str, dict[str, Any]] = {}
    for route in app.routes:
        for method in sorted(set(getattr(route, "methods", None) or ()) - {"HEAD"}):
            operation: dict[str, Any] = {"responses": {"default": answer}}
            parameters = [
                {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                for name in getattr(route, "param_convertors", {})
            ]
            if parameters:
                operation["parameters"] = parameters
            if method in ("POST", "PUT", "PATCH"):
                schema = bodies.get(route.path, {"type": "object"})
                operation["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": schema}},
                }
            paths.setdefault(route.path, {})[method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": "edge gateway", "version": "1"},
        "components": {"schemas": defs["$defs"]},
        "paths": paths,
    }


def _bearer(settings: GatewaySettings) -> dict[str, str]:
    """The commissioning token's header where the gateway has one, so requests get past the check."""
    token = getattr(getattr(settings, "secrets", None), "COMMISSIONING_TOKEN", None)
    return {"Authorization": f"Bearer {token.get_secret_value()}"} if token is not None else {}


@pytest.fixture
def gateway(
    gateway_settings: Callable[..., GatewaySettings], monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Starlette, dict[str, str]]]:
    loopback_only(monkeypatch)
    settings = gateway_settings()
    app = create_app(settings)
    state = app.state.gateway
    state.supervisor = QuietSupervisor(settings.polling, state.supervisor.store)
    yield app, _bearer(settings)
    # schemathesis keeps an app's lifespan running for the process; this one ends with its test.
    asgi.shutdown_lifespans()


def _dtm() -> dict[str, Any]:
    points = list(POINT_CATALOG["power_meter"])
    return dtm_document([device_document("meter-1", points, port=1502), device_document("meter-2", points)])


def test_no_gateway_route_answers_5xx(
    gateway: tuple[Starlette, dict[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    app, auth = gateway
    report = FuzzReport("edge gateway (edge_gateway.app)")
    schema = schemathesis.openapi.from_dict(gateway_openapi(app))
    schema.app = app
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {
        ("GET", "/topology"),
        ("POST", "/topology"),
    }
    # With the credentials where the gateway asks for them (deeper), and without (the refusal).
    credentials = [(" authorized", auth), ("", {})] if auth else [("", {})]

    with report.printed(capsys):
        with asgi.get_client(app) as client:
            for operation in operations:
                for suffix, headers in credentials:
                    report.run_operation(operation, client, suffix, headers=headers)
        with TestClient(app, raise_server_exceptions=False) as client:
            post_topology = json_poster(client, "/topology", auth)
            report.run("POST /topology mutated DTM", mutated(_dtm()), post_topology)
            report.run("POST /topology any JSON", JSON_VALUES, post_topology)
            report.run("POST /topology hostile JSON", hostile_json(_dtm()), post_topology)
            # What the fuzz left behind as the topology is still served.
            for operation in operations:
                if operation.method.upper() == "GET" and "{" not in operation.path:
                    path = operation.path
                    report.run(
                        f"GET {path} after the fuzz",
                        st.just(None),
                        lambda _, path=path: _get(client, path, auth),
                    )

    report.assert_no_server_errors()


def _get(client: TestClient, path: str, auth: dict[str, str]) -> Outcome:
    answer = client.get(path, headers=auth)
    return answer.status_code, f"GET {path} -> {answer.status_code}: {answer.text[:200]}"
