"""What ``make run`` runs, end to end: ``python -m local_stack`` in a subprocess, driven over HTTP.

Both example orders go from POST /submit to a delivered portal: they wait for an APK, the HMI CI
stand-in publishes one, each gets its email, and every artifact its manifest lists downloads with
the listed sha256. Then the stack restarts on the same state and still knows the orders.
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import pytest
import requests
import yaml

from contracts.manifest import Manifest
from delivery.artifact_store import portal_key
from local_stack.isolated import PROJECT_ROOT, IsolatedStack, port_is_listening

pytestmark = pytest.mark.slow

EXAMPLES = PROJECT_ROOT / "examples"
ORDER_TIMEOUT = 240.0
# Short EDP latencies: a job completes a second after it is accepted.
FAST_EDP = {"standins": {"edp": {"queued_seconds": 0.5, "running_seconds": 0.5}}}
TARGETS = ("cloud", "onprem")
BUILT_KIND = {"cloud": "cfn", "onprem": "iso"}


def _example(target: str) -> dict[str, Any]:
    payload: dict[str, Any] = json.loads((EXAMPLES / f"order-{target}.json").read_text())
    return payload


@dataclass
class Flow:
    stack: IsolatedStack
    cfg_ids: dict[str, str]
    keys: dict[str, str]
    waiting: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox_before_apk: list[str] = field(default_factory=list)
    delivered: dict[str, dict[str, Any]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def flow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    """Both examples submitted, waited for at waiting_for_apk, an APK published, both delivered."""
    state_dir = tmp_path_factory.mktemp("stack")
    with IsolatedStack(state_dir, overrides=FAST_EDP) as stack:
        keys = {target: f"make-run-flow-{target}" for target in TARGETS}
        cfg_ids = {target: stack.submit(_example(target), idempotency_key=keys[target]) for target in TARGETS}
        result = Flow(stack=stack, cfg_ids=cfg_ids, keys=keys)
        result.waiting = stack.wait_for_status(cfg_ids.values(), "waiting_for_apk", timeout=ORDER_TIMEOUT)
        result.outbox_before_apk = sorted(path.name for path in stack.outbox_dir.glob("*.eml"))
        stack.publish_apk("1.0.0")
        result.delivered = stack.wait_for_status(cfg_ids.values(), "delivered", timeout=ORDER_TIMEOUT)
        yield result


def test_orders_wait_for_an_apk_then_are_delivered(flow: Flow) -> None:
    for target, cfg_id in flow.cfg_ids.items():
        assert flow.waiting[cfg_id]["status"] == "waiting_for_apk"
        assert flow.waiting[cfg_id]["target"] == target
        assert flow.waiting[cfg_id]["edp_job_id"]
        assert flow.delivered[cfg_id]["status"] == "delivered"
        assert flow.delivered[cfg_id]["error"] is None
        assert flow.delivered[cfg_id]["portal_url"]
    # Without an APK nothing was published, so nobody was emailed yet.
    assert flow.outbox_before_apk == []


RUNS_OF_ORDER = """
query($key: String!) { runsOrError(filter: {tags: [{key: "dagster/partition", value: $key}]}) {
  ... on Runs { results { runId status tags { key value } } } } }
"""


def test_the_api_queued_each_orders_first_run_itself(flow: Flow) -> None:
    """No sensor tick before an order's first run: the API launched it over GraphQL after the commit."""
    for cfg_id in flow.cfg_ids.values():
        answer = requests.post(
            f"{flow.stack.urls['dagster']}/graphql",
            json={"query": RUNS_OF_ORDER, "variables": {"key": cfg_id}},
            timeout=30,
        )
        runs = answer.json()["data"]["runsOrError"]["results"]
        # Newest first: the first run, then apk_sensor's resume once the APK was published.
        first, resumed = runs[-1], runs[:-1]
        tags = {tag["key"]: tag["value"] for tag in first["tags"]}
        assert tags["dagster/run_key"] == f"config:{cfg_id}"
        assert "dagster/sensor_name" not in tags
        assert first["status"] == "SUCCESS"
        assert [
            {tag["key"]: tag["value"] for tag in run["tags"]}.get("dagster/sensor_name") for run in resumed
        ] == ["apk_sensor"]


def _read_email(path: Path) -> EmailMessage:
    message = email.message_from_bytes(path.read_bytes(), policy=default_policy)
    assert isinstance(message, EmailMessage)
    return message


@pytest.mark.parametrize("target", TARGETS)
def test_delivery_email_names_the_site_and_links_the_portal(flow: Flow, target: str) -> None:
    cfg_id = flow.cfg_ids[target]
    order = flow.delivered[cfg_id]
    message = _read_email(flow.stack.outbox_dir / f"{cfg_id}-v1.eml")
    site = order["order"]["site"]["name"]
    assert site in message["Subject"]
    assert message["To"].addresses[0].addr_spec == order["order"]["customer"]["email"]
    text_part = message.get_body(preferencelist=("plain",))
    html_part = message.get_body(preferencelist=("html",))
    assert text_part is not None and html_part is not None
    portal_url = order["portal_url"]
    assert portal_url in text_part.get_content()
    assert portal_url in html_part.get_content()


@pytest.mark.parametrize("target", TARGETS)
def test_every_manifest_artifact_downloads_with_its_sha256(flow: Flow, target: str) -> None:
    cfg_id = flow.cfg_ids[target]
    settings = flow.stack.settings
    assert settings is not None
    s3 = flow.stack.boto3_client("s3")
    body = s3.get_object(Bucket=settings.artifacts.bucket, Key=portal_key(cfg_id, 1, "manifest.json"))[
        "Body"
    ].read()
    manifest = Manifest.model_validate_json(body)
    assert manifest.cfg_id == cfg_id
    assert manifest.version == 1
    assert manifest.deployment_target == target

    kinds = {artifact.kind for artifact in manifest.artifacts}
    assert {"edp", "apk", BUILT_KIND[target]} <= kinds
    assert {"cfn", "iso"} - {BUILT_KIND[target]} & kinds == set()
    assert "dtm.json" in {artifact.name for artifact in manifest.artifacts if artifact.kind == "edp"}
    # The stored manifest keeps no link; the portal serves the signed bytes themselves, and each
    # download link is the artifact's name beside manifest.json.
    assert all(artifact.url is None for artifact in manifest.artifacts)
    manifest_url = f"{flow.delivered[cfg_id]['portal_url']}/v1/manifest.json"
    served = requests.get(manifest_url, timeout=30)
    assert served.status_code == 200 and served.content == body
    for artifact in manifest.artifacts:
        # Portal links answering 303 to a presigned S3 URL: the bytes arrive.
        url = urljoin(manifest_url, artifact.name)
        answer = requests.get(url, allow_redirects=True, timeout=30)
        assert answer.status_code == 200, f"{artifact.name}: {answer.status_code} from {url}"
        assert len(answer.content) == artifact.size, artifact.name
        assert hashlib.sha256(answer.content).hexdigest() == artifact.sha256, artifact.name


def test_same_idempotency_key_answers_the_same_cfg_id(flow: Flow) -> None:
    for target in TARGETS:
        again = flow.stack.submit(_example(target), idempotency_key=flow.keys[target])
        assert again == flow.cfg_ids[target]
    answer = requests.post(
        f"{flow.stack.api_url}/submit",
        json=_example("onprem"),
        headers={"Idempotency-Key": flow.keys["cloud"]},
        timeout=10,
    )
    assert answer.status_code == 409


def test_orders_survive_a_restart_of_the_whole_stack(flow: Flow) -> None:
    # Runs last: it stops the module's stack and starts a new one on the same state directory.
    flow.stack.stop()
    with IsolatedStack(flow.stack.state_dir, overrides=FAST_EDP) as restarted:
        for target, cfg_id in flow.cfg_ids.items():
            order = restarted.order(cfg_id)
            assert order["cfg_id"] == cfg_id
            assert order["target"] == target
            assert order["status"] == "delivered"
            assert [version["version"] for version in order["portal_versions"]] == [1]
            assert restarted.submit(_example(target), idempotency_key=flow.keys[target]) == cfg_id
        settings = restarted.settings
        assert settings is not None
    # Stopped means stopped: none of the stack's ports has a listener left.
    ports = [settings.api.port, settings.standins.aws.port, settings.standins.edp.port, settings.dagster.port]
    assert not [port for port in ports if port_is_listening(port)]


def test_bad_customer_file_fails_with_the_key_path_and_starts_nothing(tmp_path: Path) -> None:
    stack = IsolatedStack(tmp_path / "state", overrides={"api": {"prot": 8000}})
    config = stack.write_customer_file()
    assert yaml.safe_load(stack.customer_path.read_text())["api"]["prot"] == 8000
    done = subprocess.run(
        [sys.executable, "-m", "local_stack"],
        cwd=PROJECT_ROOT,
        env=stack.child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "api.prot: unknown key" in done.stderr
    assert str(stack.customer_path) in done.stderr
    assert "http://" not in done.stdout
    ports = [
        config["api"]["port"],
        config["standins"]["aws"]["port"],
        config["standins"]["edp"]["port"],
        config["dagster"]["port"],
    ]
    assert not [port for port in ports if port_is_listening(port)]
    # Nothing was prepared either: no Dagster home, outbox or EDP state.
    assert sorted(os.listdir(stack.state_dir)) == ["cfg.customer.yml"]
