from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.openapi import OPERATIONS, build_openapi


async def order_artifact(request: Request) -> JSONResponse:
    """One artifact of an order's portal version.

    A longer explanation that the summary leaves out.
    """
    return JSONResponse({})


def _paths(routes: list[Route]) -> dict[str, Any]:
    return build_openapi(routes, [])["paths"]


def test_every_route_of_the_app_is_described_and_every_description_has_a_route(client: TestClient) -> None:
    app = client.app
    assert isinstance(app, Starlette)
    assert {route.name for route in app.routes if isinstance(route, Route)} == set(OPERATIONS)


def test_paths_and_path_parameters_come_from_the_routes(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    assert "/portal/{token}/v{version}/{name}" in paths
    download = paths["/portal/{token}/v{version}/{name}"]["get"]
    assert download["parameters"] == [
        {"name": "token", "in": "path", "required": True, "schema": {"type": "string"}},
        {"name": "version", "in": "path", "required": True, "schema": {"type": "integer", "minimum": 1}},
        {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}},
    ]
    retry = paths["/orders/{cfg_id}/retry"]["post"]
    assert [parameter["name"] for parameter in retry["parameters"]] == ["cfg_id", "Idempotency-Key"]
    assert retry["parameters"][0]["schema"] == {"type": "string", "format": "uuid"}
    assert retry["security"] == [{"bearer": []}]
    assert "parameters" not in paths["/healthz"]["get"]
    assert "security" not in paths["/portal/{token}"]["get"]
    # HEAD, which Starlette answers for every GET route, is not an operation of its own.
    assert all(set(item) <= {"get", "post", "put", "delete", "patch"} for item in paths.values())


def test_a_route_added_to_the_app_is_documented_without_a_description() -> None:
    paths = _paths([Route("/orders/{cfg_id}/artifacts/{number:int}", order_artifact, methods=["GET", "PUT"])])

    assert set(paths) == {"/orders/{cfg_id}/artifacts/{number}"}
    item = paths["/orders/{cfg_id}/artifacts/{number}"]
    assert set(item) == {"get", "put"}
    assert item["get"] == item["put"]
    assert item["get"]["summary"] == "One artifact of an order's portal version."
    assert item["get"]["parameters"] == [
        {"name": "cfg_id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}},
        {"name": "number", "in": "path", "required": True, "schema": {"type": "integer"}},
    ]
    assert set(item["get"]["responses"]) == {"default"}


def test_routes_sharing_a_path_share_its_path_item() -> None:
    paths = _paths(
        [
            Route("/faults", order_artifact, methods=["GET"], name="read"),
            Route("/faults", order_artifact, methods=["PUT"], name="update"),
        ]
    )
    assert set(paths["/faults"]) == {"get", "put"}
