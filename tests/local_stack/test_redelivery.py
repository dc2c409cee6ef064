"""Re-delivery on the whole local stack: Dagster backfills of manifest + email publish version N+1.

Two orders are delivered (an APK is published first, so they go straight through). One backfill
over both partitions, launched through the webserver's GraphQL API as the UI does, publishes
portal version 2 of each and emails it. Then ``POST /orders/{cfg_id}/redeliver`` with one
Idempotency-Key, sent twice, launches one backfill: exactly one version 3 and one more email.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import requests

from api.dagster_graphql import DagsterGraphQL
from local_stack.isolated import PROJECT_ROOT, IsolatedStack
from platform_config.settings import Settings
from tests.conftest import BACKFILL_DONE, BACKFILL_GAVE_UP, ORDER_ASSET_NAMES, backfill_status, wait_for

pytestmark = pytest.mark.slow

T = TypeVar("T")
EXAMPLES = PROJECT_ROOT / "examples"
TIMEOUT = 240.0
FAST_EDP = {"standins": {"edp": {"queued_seconds": 0.5, "running_seconds": 0.5}}}
TARGETS = ("cloud", "onprem")
MANIFEST_AND_EMAIL = [["order", "manifest"], ["order", "email"]]


def _example(target: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((EXAMPLES / f"order-{target}.json").read_text())
    return payload


def _settings(stack: IsolatedStack) -> Settings:
    assert stack.settings is not None, "the stack is not started"
    return stack.settings


def _versions(order: dict[str, Any]) -> list[int]:
    return [version["version"] for version in order["portal_versions"]]


@dataclass
class Redelivery:
    stack: IsolatedStack
    cfg_ids: list[str]
    graphql_backfill_id: str
    after_backfill: dict[str, dict[str, Any]]
    outbox_after_backfill: list[str]
    api_answers: list[requests.Response]
    after_api: dict[str, Any]
    outbox_final: list[str]
    ses_messages: dict[str, int]


class Waiter:
    def __init__(self, stack: IsolatedStack) -> None:
        self.stack = stack

    def until(self, what: str, check: Callable[[], T | None], timeout: float = TIMEOUT) -> T:
        return wait_for(what, check, timeout, self.stack.output, interval=1.0)

    def backfill_done(self, backfill_id: str) -> str:
        url = _settings(self.stack).dagster.webserver_graphql_url()

        def status() -> str | None:
            current = backfill_status(url, backfill_id, timeout=10)
            assert current not in BACKFILL_GAVE_UP, (
                f"backfill {backfill_id}: {current}\n{self.stack.output()}"
            )
            return current if current in BACKFILL_DONE else None

        return self.until(f"backfill {backfill_id} completes", status)

    def versions(self, cfg_ids: list[str], versions: list[int]) -> dict[str, dict[str, Any]]:
        outbox = self.stack.outbox_dir
        newest = versions[-1]

        def delivered() -> dict[str, dict[str, Any]] | None:
            orders = {cfg_id: self.stack.order(cfg_id) for cfg_id in cfg_ids}
            if all(
                _versions(order) == versions and (outbox / f"{cfg_id}-v{newest}.eml").is_file()
                for cfg_id, order in orders.items()
            ):
                return orders
            return None

        return self.until(f"portal versions {versions} and the v{newest} email of {cfg_ids}", delivered)


def _ses_messages(stack: IsolatedStack, cfg_id: str) -> int:
    endpoint = _settings(stack).aws.endpoint_url
    data = requests.get(f"{endpoint}/moto-api/data.json", timeout=10).json()
    return sum(cfg_id in message["raw_data"] for message in data.get("ses", {}).get("RawMessage", []))


@pytest.fixture(scope="module")
def redelivery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redelivery]:
    with IsolatedStack(tmp_path_factory.mktemp("stack"), overrides=FAST_EDP) as stack:
        wait = Waiter(stack)
        stack.publish_apk("1.0.0")
        cfg_ids = [
            stack.submit(_example(target), idempotency_key=f"redelivery-{target}") for target in TARGETS
        ]
        stack.wait_for_status(cfg_ids, "delivered", timeout=TIMEOUT)

        # One backfill over both orders, as an operator launches it from the Dagster UI.
        graphql_url = _settings(stack).dagster.webserver_graphql_url()
        backfill = DagsterGraphQL(graphql_url).launch(cfg_ids, MANIFEST_AND_EMAIL)
        after_backfill = wait.versions(cfg_ids, [1, 2])
        wait.backfill_done(backfill.backfill_id)
        outbox_after_backfill = sorted(path.name for path in stack.outbox_dir.glob("*.eml"))

        # The same re-delivery requested twice through the API (a client retrying).
        cfg_id = cfg_ids[0]
        headers = {"Idempotency-Key": f"redeliver-{cfg_id}"}
        url = f"{stack.api_url}/orders/{cfg_id}/redeliver"
        answers = [requests.post(url, headers=headers, timeout=60) for _ in range(2)]
        assert [answer.status_code for answer in answers] == [202, 202], [answer.text for answer in answers]
        wait.versions([cfg_id], [1, 2, 3])
        wait.backfill_done(answers[0].json()["backfill_id"])

        yield Redelivery(
            stack=stack,
            cfg_ids=cfg_ids,
            graphql_backfill_id=backfill.backfill_id,
            after_backfill=after_backfill,
            outbox_after_backfill=outbox_after_backfill,
            api_answers=answers,
            after_api=stack.order(cfg_id),
            outbox_final=sorted(path.name for path in stack.outbox_dir.glob("*.eml")),
            ses_messages={each: _ses_messages(stack, each) for each in cfg_ids},
        )


def test_one_backfill_over_two_orders_publishes_and_emails_version_2_of_each(redelivery: Redelivery) -> None:
    assert redelivery.graphql_backfill_id
    for cfg_id in redelivery.cfg_ids:
        order = redelivery.after_backfill[cfg_id]
        assert _versions(order) == [1, 2]
        assert order["status"] == "delivered"
    assert redelivery.outbox_after_backfill == sorted(
        f"{cfg_id}-v{version}.eml" for cfg_id in redelivery.cfg_ids for version in (1, 2)
    )


def test_a_retried_redeliver_request_launches_one_backfill_and_one_v3_email(redelivery: Redelivery) -> None:
    first, again = (answer.json() for answer in redelivery.api_answers)
    cfg_id, other = redelivery.cfg_ids
    assert first == again
    assert first == {
        "cfg_id": cfg_id,
        "backfill_id": first["backfill_id"],
        "assets": ["order/manifest", "order/email"],
        "apk": False,
    }
    assert first["backfill_id"] != redelivery.graphql_backfill_id
    # Exactly one more version and one more email, for that order only.
    assert redelivery.outbox_final == sorted([*redelivery.outbox_after_backfill, f"{cfg_id}-v3.eml"])
    assert redelivery.ses_messages == {cfg_id: 3, other: 2}


def test_the_order_shows_its_versions_and_assets_from_dagster(redelivery: Redelivery) -> None:
    order = redelivery.after_api
    assert order["status"] == "delivered"
    assert _versions(order) == [1, 2, 3]
    assets = order["assets"]
    assert assets is not None, "the API could not read the Dagster webserver"
    assert list(assets) == ORDER_ASSET_NAMES
    for name, view in assets.items():
        assert view["status"] == "materialized", (name, view)
        assert view["last_materialized_at"] and view["run_id"] and view["error"] is None
    # manifest and email come from the re-delivery's run, the rest from the first delivery.
    assert assets["order/manifest"]["run_id"] == assets["order/email"]["run_id"]
    assert assets["order/manifest"]["run_id"] != assets["order/cfn_or_iso"]["run_id"]
