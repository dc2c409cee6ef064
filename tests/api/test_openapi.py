from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from api.auth import Scope
from api.openapi import OPERATIONS, Operation, build_openapi

README = Path(__file__).resolve().parents[2] / "README.md"


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
    assert retry["security"] == [{"operator": []}]
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


def test_an_operation_states_its_credential_and_the_answers_that_follow_from_it() -> None:
    operator = Operation(
        summary="act",
        responses={"200": {"description": "done"}},
        credential=Scope.OPERATOR,
        idempotency_key=True,
    )
    website = Operation(
        summary="read",
        responses={"200": {"description": "ok"}},
        credential=Scope.WEBSITE,
        idempotency_key=True,
    )
    public = Operation(summary="look", responses={"200": {"description": "ok"}})

    acts, reads, looks = (operation.document([]) for operation in (operator, website, public))

    assert acts["security"] == [{"operator": []}]
    assert set(acts["responses"]) == {"200", "401", "403", "428"}
    assert acts["parameters"][0]["name"] == "Idempotency-Key" and acts["parameters"][0]["required"] is True
    # The operator's credential covers the website's routes; a website route never answers 403 or 428.
    assert reads["security"] == [{"website": []}, {"operator": []}]
    assert set(reads["responses"]) == {"200", "401"}
    assert reads["parameters"][0]["required"] is False
    assert "security" not in looks and set(looks["responses"]) == {"200"}


def test_the_document_describes_both_views_of_an_order(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    answer = document["paths"]["/orders/{cfg_id}"]["get"]["responses"]["200"]["content"]["application/json"]
    assert answer["schema"]["anyOf"] == [
        {"$ref": "#/components/schemas/OrderView"},
        {"$ref": "#/components/schemas/OrderStatusView"},
    ]
    status = set(document["components"]["schemas"]["OrderStatusView"]["properties"])
    assert {"cfg_id", "status", "portal_versions"} <= status
    assert not {"portal_url", "downloads", "order", "assets"} & status


def test_the_readme_lists_every_route_with_the_credential_and_key_the_document_names(
    client: TestClient,
) -> None:
    section = README.read_text().split("### Who may call what", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(GET|POST|DELETE) ([^`]+)` \| ([^|]+) \| ([^|]+) \|$", section, re.MULTILINE)
    listed = {
        (method.lower(), path): (re.match(r"\w+", credential).group(), key.strip())  # type: ignore[union-attr]
        for method, path, credential, key in rows
    }

    expected: dict[tuple[str, str], tuple[str, str]] = {}
    for path, item in client.get("/openapi.json").json()["paths"].items():
        for method, operation in item.items():
            security = operation.get("security")
            credential = "none" if not security else "website" if {"website": []} in security else "operator"
            required = [
                p["required"] for p in operation.get("parameters", []) if p["name"] == "Idempotency-Key"
            ]
            key = "-" if not required else "required" if required[0] else "optional"
            expected[(method, path)] = (credential, key)
    assert listed == expected
