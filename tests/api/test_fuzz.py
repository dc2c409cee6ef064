"""The fuzz tier of the API: every route of GET /openapi.json, no answer >= 500.

schemathesis generates valid and invalid requests for each operation of the API's own OpenAPI
document and sends them to the Starlette app in-process. A seeded, delivered order lets the
generated requests reach past the 404 (its cfg_id, its portal token); the example order, mutated a
little at a time, reaches past the first validation error into storage. The embedded S3 (moto) and
a Dagster GraphQL stand-in are on loopback; nothing else is reachable while it runs.

The app runs as beta does, with both credentials: the operators' token goes with every request
(the website's with the submits), and every credentialed operation is also sent with the website's
token, where an operator's route answers 403 (never 5xx, never what it would do) and no answer
carries the customer's portal link or address.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.python import asgi
from starlette.testclient import TestClient

from api.app import create_app
from contracts.configurator import OPTION_KEY_PATTERN, ConfiguratorPayload
from delivery.artifact_store import ArtifactStore, order_key
from delivery.manifest_signing import ManifestSigner
from delivery.portal_links import PortalTokens
from delivery.portal_publication import publish_portal_version
from platform_config.settings import Settings
from platform_db import OrderRepository
from platform_db.deliveries import DeliveryRepository
from tests.api.conftest import OPERATOR, WEBSITE, StubDagster, token_required
from tests.fuzzing import MODES, FuzzReport, Outcome, hostile_json, json_poster, loopback_only, mutated

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"
# Rotating the token retires the one the other variants use, so that operation goes last.
LAST = "/orders/{cfg_id}/portal-token"
SIGNER = ManifestSigner.generate()


class FuzzTarget:
    """The app with one delivered order (portal version 1 with two artifacts in S3)."""

    def __init__(self, settings: Settings) -> None:
        self.orders = OrderRepository.from_url(settings.platform_db_url())
        self.app = create_app(settings, self.orders)
        payload = ConfiguratorPayload.model_validate(json.loads(EXAMPLE.read_text()))
        self.cfg_id = self.orders.submit(payload, None)[0].cfg_id
        order = self.orders.get(self.cfg_id)
        assert order is not None
        self.token = PortalTokens(settings.portal_token_key()).token(
            self.cfg_id, order.portal_token_generation
        )
        s3 = boto3.client(
            "s3",
            endpoint_url=settings.aws.endpoint_url,
            region_name=settings.aws.region,
            **settings.aws_credentials(),
        )
        store = ArtifactStore(s3, settings.artifacts.bucket)
        dtm = store.put(order_key(self.cfg_id, "edp", "dtm.json"), b'{"devices": []}')
        cfn = store.put(order_key(self.cfg_id, "cfn", "cfn.yaml"), b"Resources: {}\n")
        publish_portal_version(
            cfg_id=self.cfg_id,
            run_id="fuzz-run-1",
            order=payload,
            flags={"commissioning_required": True},
            artifacts=[("edp", dtm), ("cfn", cfn)],
            store=store,
            deliveries=DeliveryRepository(self.orders.engine),
            signer=SIGNER,
        )


@pytest.fixture
def target(
    pipeline_settings: Settings, stub_dagster: StubDagster, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FuzzTarget]:
    settings = token_required(
        pipeline_settings.model_copy(
            update={"dagster": pipeline_settings.dagster.model_copy(update={"graphql_url": stub_dagster.url})}
        )
    )
    loopback_only(monkeypatch)
    target = FuzzTarget(settings)
    yield target
    target.orders.dispose()


def _known_parameters(path: str, target: FuzzTarget) -> list[dict[str, Any]]:
    """Path parameters that name the delivered order, so generated requests get past the 404."""
    if "{cfg_id}" in path:
        return [{"cfg_id": target.cfg_id}]
    if "{name}" in path:
        named = [
            {"token": target.token, "version": 1, "name": name}
            for name in ("cfn.yaml", "dtm.json", "manifest.json")
        ]
        return [{"token": target.token}, {"token": target.token, "version": 1}, *named]
    if "{version}" in path:
        return [{"token": target.token}, {"token": target.token, "version": 1}]
    if "{token}" in path:
        return [{"token": target.token}]
    return []


def _openapi(client: TestClient) -> Any:
    def send(query: dict[str, str]) -> Outcome:
        answer = client.get("/openapi.json", params=query)
        return answer.status_code, f"GET /openapi.json {query!r} -> {answer.status_code}"

    return send


def _plausible_orders(example: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Orders that pass validation more often than not, with free text and options anywhere in range."""
    text = st.text(min_size=1, max_size=200)
    option_values = st.booleans() | st.integers() | st.floats() | st.text(max_size=1100)
    return st.builds(
        lambda name, company, email, site, options: {
            **example,
            "customer": {"name": name, "company": company, "email": email},
            "site": {"name": site, "timezone": "Europe/Berlin"},
            "options": options,
        },
        text,
        text,
        st.emails(),
        text,
        st.dictionaries(st.from_regex(OPTION_KEY_PATTERN, fullmatch=True), option_values, max_size=8),
    )


def _as_the_website(
    client: Any, operation: Any, target: FuzzTarget, refused: list[str]
) -> Callable[[Any], Outcome]:
    """What sends a case with the website's token; what it must not get back goes to ``refused``."""
    operator_only = operation.definition.raw.get("security") == [{"operator": []}]
    customer_email = json.loads(EXAMPLE.read_text())["customer"]["email"]

    def send(case: Any) -> Outcome:
        response = case.call(session=client, headers=WEBSITE)
        status, text = response.status_code, response.text_lossy()
        description = f"{case.method} {case.formatted_path} with the website's token -> {status}"
        if status >= 500:
            description += f": {response.content[:200]!r}; reproduce: {case.as_curl_command()}"
        # The router's own 404 (a generated path that names no route) is no answer of the operation.
        unrouted = status == 404 and json.loads(text).get("detail") == "Not Found"
        # schemathesis's negative cases may drop the Authorization header: then no token, so 401.
        sent_the_token = response.request.headers.get("Authorization") == WEBSITE["Authorization"]
        expected = 403 if sent_the_token else 401
        if operator_only and status != expected and not unrouted:
            refused.append(f"{description}: an operator's route answered other than {expected}")
        if target.token in text or customer_email in text:
            refused.append(f"{description}: the portal link or the customer's address in the answer")
        return status, description

    return send


def test_no_api_route_answers_5xx(target: FuzzTarget, capsys: pytest.CaptureFixture[str]) -> None:
    report = FuzzReport("API (api.app)")
    schema = schemathesis.openapi.from_asgi("/openapi.json", target.app)
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()), key=lambda op: op.path == LAST
    )
    # Every route of the app is in the document; schemathesis leaves out the document's own path.
    routes = {
        (method, route.path.replace(":int}", "}"))
        for route in target.app.routes
        for method in getattr(route, "methods", None) or ()
        if method != "HEAD"
    }
    documented = {
        (method.upper(), path) for path, item in schema.raw_schema["paths"].items() for method in item
    }
    assert routes == documented
    assert {(op.method.upper(), op.path) for op in operations} == documented - {("GET", "/openapi.json")}
    example = json.loads(EXAMPLE.read_text())
    refused: list[str] = []

    with report.printed(capsys):
        with asgi.get_client(target.app) as client:
            for operation in operations:
                variants: list[tuple[str, dict[str, Any]]] = [("", {})]
                variants += [
                    (
                        " "
                        + ",".join(
                            f"{key}={value}" if key == "name" else key for key, value in known.items()
                        ),
                        known,
                    )
                    for known in _known_parameters(operation.path, target)
                ]
                if "security" in operation.definition.raw:
                    # Before the operator's variants: the last of those rotates the portal token.
                    sends = _as_the_website(client, operation, target, refused)
                    for mode in MODES:
                        report.run(
                            f"{operation.label} {mode.value} website{variants[-1][0]}",
                            operation.as_strategy(
                                generation_mode=mode, path_parameters=variants[-1][1] or None
                            ),
                            sends,
                        )
                for suffix, known in variants:
                    report.run_operation(
                        operation, client, suffix, path_parameters=known or None, headers=OPERATOR
                    )
        with TestClient(target.app, raise_server_exceptions=False) as client:
            submit = json_poster(client, "/submit", headers=WEBSITE)
            report.run("POST /submit mutated example", mutated(example), submit)
            report.run("POST /submit plausible orders", _plausible_orders(example), submit)
            report.run("POST /submit hostile JSON", hostile_json(example), submit)
            report.run(
                "GET /openapi.json with any query", st.dictionaries(st.text(), st.text()), _openapi(client)
            )

    report.assert_no_server_errors()
    assert refused == [], "\n".join(refused[:10])
    # Every credentialed operation was sent with the website's token.
    assert {label.split(" ")[1] for label in report.sent if " website" in label} == {
        path
        for path, item in schema.raw_schema["paths"].items()
        if any("security" in op for op in item.values())
    }
