"""The API's two credentials: the website's (submit, an order's status) and the operators' (the rest).

The OpenAPI document says per operation which credential it takes and whether it needs an
Idempotency-Key; these tests hold every route of the app to what its document says.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import SecretStr
from starlette.testclient import TestClient

from platform_config.settings import Settings
from tests.api.conftest import (
    OPERATOR,
    OPERATOR_TOKENS,
    WEBSITE,
    WEBSITE_TOKEN,
    build_client,
    new_key,
    token_required,
)

# Path parameters that reach each handler: a real order, its first portal version, any key id.
KEY_ID = "0123456789abcdef"


@pytest.fixture
def scoped(settings: Settings) -> Settings:
    return token_required(settings)


@pytest.fixture
def api(scoped: Settings) -> Iterator[TestClient]:
    with build_client(scoped) as client:
        yield client


@pytest.fixture
def cfg_id(api: TestClient, cloud_order: dict[str, Any]) -> str:
    return str(api.post("/submit", json=cloud_order, headers=WEBSITE).json()["cfg_id"])


def _operations(client: TestClient) -> list[tuple[str, str, dict[str, Any]]]:
    """(method, path template, operation) of every operation in the app's document."""
    paths = client.get("/openapi.json").json()["paths"]
    return [(method, path, operation) for path, item in paths.items() for method, operation in item.items()]


def _credentialed(client: TestClient, scheme: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """The operations that need a credential; with ``scheme``, those that take only that one."""
    return [
        (method, path, operation)
        for method, path, operation in _operations(client)
        if "security" in operation and (scheme is None or operation["security"] == [{scheme: []}])
    ]


def _send(client: TestClient, method: str, path: str, cfg_id: str, headers: dict[str, str]) -> Any:
    url = path.format(cfg_id=cfg_id, version=1, key_id=KEY_ID, token="no-such-token", name="cfn.yaml")
    return client.request(method.upper(), url, headers=headers)


def test_the_document_names_a_credential_for_every_route_but_the_public_ones(api: TestClient) -> None:
    public = {(method, path) for method, path, operation in _operations(api) if "security" not in operation}
    website = {
        (method, path)
        for method, path, operation in _operations(api)
        if {"website": []} in operation.get("security", [])
    }

    assert public == {
        ("get", "/portal/{token}"),
        ("get", "/portal/{token}/v{version}"),
        ("get", "/portal/{token}/v{version}/{name}"),
        ("get", "/signing-keys"),
        ("get", "/signing-keys/{key_id}.pem"),
        ("get", "/tools/portal_verify.py"),
        ("get", "/healthz"),
        ("get", "/openapi.json"),
    }
    assert website == {("post", "/submit"), ("get", "/orders/{cfg_id}")}
    schemes = api.get("/openapi.json").json()["components"]["securitySchemes"]
    assert "WEBSITE_API_TOKENS" in schemes["website"]["description"]
    assert "OPERATOR_API_TOKENS" in schemes["operator"]["description"]


def test_the_website_credential_on_any_operator_route_is_403_naming_the_operator_scope(
    api: TestClient, cfg_id: str
) -> None:
    operator_only = _credentialed(api, "operator")
    assert {(method, path) for method, path, _ in operator_only} == {
        ("post", "/orders/{cfg_id}/portal-token"),
        ("post", "/orders/{cfg_id}/commissioning-token"),
        ("post", "/orders/{cfg_id}/redeliver"),
        ("post", "/orders/{cfg_id}/retry"),
        ("post", "/orders/{cfg_id}/email"),
        ("post", "/orders/{cfg_id}/portal-versions/{version}/yank"),
        ("delete", "/orders/{cfg_id}/portal-versions/{version}/yank"),
        ("post", "/signing-keys/{key_id}/revoke"),
    }

    for method, path, _ in operator_only:
        answer = _send(api, method, path, cfg_id, {**WEBSITE, **new_key()})

        assert answer.status_code == 403, (method, path, answer.text)
        assert "needs the operator scope" in answer.json()["detail"]
        assert "OPERATOR_API_TOKENS" in answer.json()["detail"]
        assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
        assert WEBSITE_TOKEN not in answer.text
    # Nothing of the order was touched: the link it had still opens the same portal generation.
    assert api.app.state.api.orders.get(cfg_id).portal_token_generation == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "authorization",
    [None, "Bearer", "Bearer nope", f"Basic {OPERATOR_TOKENS[0]}", f"Bearer {OPERATOR_TOKENS[0]}x"],
)
def test_without_a_valid_token_every_credentialed_route_is_401(
    api: TestClient, cfg_id: str, authorization: str | None
) -> None:
    headers = {**new_key(), **({"Authorization": authorization} if authorization is not None else {})}

    for method, path, _ in _credentialed(api):
        answer = _send(api, method, path, cfg_id, headers)

        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "WEBSITE_API_TOKENS" in answer.json()["detail"]
        assert OPERATOR_TOKENS[0] not in answer.text


def test_the_public_routes_need_no_token(api: TestClient, cfg_id: str) -> None:
    for method, path, operation in _operations(api):
        if "security" not in operation:
            assert _send(api, method, path, cfg_id, {}).status_code != 401, path


def test_an_operator_call_without_an_idempotency_key_is_428_naming_the_header(
    api: TestClient, cfg_id: str, cloud_order: dict[str, Any]
) -> None:
    keyed = [
        (method, path)
        for method, path, operation in _credentialed(api, "operator")
        if any(p["name"] == "Idempotency-Key" and p["required"] for p in operation.get("parameters", []))
    ]
    # Every operator call that changes state; GET /orders/{cfg_id} changes nothing.
    assert {method for method, _ in keyed} == {"post", "delete"}
    assert len(keyed) == len(_credentialed(api, "operator"))

    for method, path in keyed:
        answer = _send(api, method, path, cfg_id, OPERATOR)

        assert answer.status_code == 428, (method, path, answer.text)
        assert "send an Idempotency-Key header" in answer.json()["detail"]
    # The website's submit may leave it out.
    assert api.post("/submit", json=cloud_order, headers=WEBSITE).status_code == 200


def test_every_value_of_a_credential_is_valid_so_it_rotates_without_downtime(
    scoped: Settings, cloud_order: dict[str, Any]
) -> None:
    old, new = OPERATOR_TOKENS
    with build_client(scoped) as during:
        cfg_id = during.post("/submit", json=cloud_order, headers=WEBSITE).json()["cfg_id"]
        both = [
            during.get(f"/orders/{cfg_id}", headers={"Authorization": f"Bearer {token}"})
            for token in (old, new)
        ]
    assert [answer.status_code for answer in both] == [200, 200]
    assert all("portal_url" in answer.json() for answer in both), "each value is the operator's"

    # The old value removed from OPERATOR_API_TOKENS (and the API restarted): only the new one works.
    after = scoped.model_copy(
        update={"secrets": scoped.secrets.model_copy(update={"OPERATOR_API_TOKENS": SecretStr(new)})}
    )
    with build_client(after) as rotated:
        assert rotated.get(f"/orders/{cfg_id}", headers={"Authorization": f"Bearer {old}"}).status_code == 401
        assert rotated.get(f"/orders/{cfg_id}", headers={"Authorization": f"Bearer {new}"}).status_code == 200


def test_where_the_stage_needs_no_credential_every_caller_is_an_operator(
    client: TestClient, cloud_order: dict[str, Any]
) -> None:
    cfg_id = client.post("/submit", json=cloud_order).json()["cfg_id"]
    # local: the API listens on loopback alone and any header, or none, is the operator's.
    for headers in ({}, WEBSITE, {"Authorization": "Bearer nope"}):
        assert "order" in client.get(f"/orders/{cfg_id}", headers=headers).json()
    assert client.post(f"/orders/{uuid.uuid4()}/retry", headers=new_key()).status_code == 404
