"""An EDP that lists what it must not, or answers what it should not: edp_artifacts fails the order.

The reason names the artifact and the rule; neither the order's error nor GET /orders/{cfg_id}
nor the step's failure repeats a URL's query (presigned credentials) or EDP's body.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import requests
from dagster import materialize

from contracts.orders import OrderStatus
from order_pipeline.keys import CONFIG, EDP_ARTIFACTS
from platform_assets.definitions import order_assets
from platform_config.settings import Settings
from resources.pipeline import build_resources

if TYPE_CHECKING:
    from tests.conftest import ScriptedEdp
    from tests.platform_assets.conftest import OrderFlow

pytestmark = pytest.mark.slow

QUERY = "?X-Amz-Credential=AKIDSECRETCREDENTIAL&X-Amz-Signature=deadbeefsignature"
SECRETS = ("AKIDSECRETCREDENTIAL", "deadbeefsignature", "X-Amz", "SECRET-BODY")
DTM_CAP = 64


def _complete(*artifacts: dict[str, Any]) -> tuple[int, bytes]:
    return 200, json.dumps({"status": "complete", "edp_artifacts": list(artifacts), "flags": {}}).encode()


def _loopback_service(edp: ScriptedEdp, settings: Settings) -> None:
    # The embedded S3 on 127.0.0.1: private targets are allowed in local, other ports are not.
    edp.job_answer = _complete(
        {"name": "dtm.json", "url": f"{settings.aws.endpoint_url}/{settings.artifacts.bucket}/x{QUERY}"}
    )


def _redirect_elsewhere(edp: ScriptedEdp, settings: Settings) -> None:
    edp.files["dtm.json"] = (
        302,
        {"Location": f"{settings.aws.endpoint_url}/{settings.artifacts.bucket}/x{QUERY}"},
        b"",
    )
    edp.job_answer = _complete({"name": "dtm.json", "url": f"{edp.base_url}/files/dtm.json{QUERY}"})


def _dtm_too_big(edp: ScriptedEdp, settings: Settings) -> None:
    edp.files["dtm.json"] = (200, {}, b'{"SECRET-BODY": "' + b"x" * 10_000 + b'"}')
    edp.job_answer = _complete({"name": "dtm.json", "url": f"{edp.base_url}/files/dtm.json{QUERY}"})


def _artifact_answers_an_error(edp: ScriptedEdp, settings: Settings) -> None:
    edp.files["dtm.json"] = (403, {}, b"<Error>SECRET-BODY AccessDenied AKIDSECRETCREDENTIAL</Error>")
    edp.job_answer = _complete({"name": "dtm.json", "url": f"{edp.base_url}/files/dtm.json{QUERY}"})


def _job_answers_an_error(edp: ScriptedEdp, settings: Settings) -> None:
    edp.job_answer = (502, b"SECRET-BODY upstream https://s3.example.com/b/k" + QUERY.encode())


def _job_answer_is_not_a_job(edp: ScriptedEdp, settings: Settings) -> None:
    edp.job_answer = (
        200,
        json.dumps(
            {
                "status": "SECRET-BODY",
                "edp_artifacts": [{"name": "../dtm.json", "url": f"https://s3.example.com/k{QUERY}"}],
            }
        ).encode(),
    )


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (_loopback_service, ["dtm.json", "edp.artifact_hosts"]),
        (_redirect_elsewhere, ["dtm.json", "redirect 1", "edp.artifact_hosts"]),
        (_dtm_too_big, ["dtm.json", "edp.max_dtm_bytes"]),
        (_artifact_answers_an_error, ["dtm.json", "HTTP 403"]),
        (_job_answers_an_error, ["job-1", "HTTP 502"]),
        (_job_answer_is_not_a_job, ["job-1", "status", "edp_artifacts.0.name"]),
    ],
    ids=lambda value: value.__name__.strip("_") if callable(value) else None,
)
def test_a_refused_edp_answer_fails_the_order_readably_and_without_secrets(
    flow: OrderFlow,
    scripted_edp: ScriptedEdp,
    script: Callable[[ScriptedEdp, Settings], None],
    expected: list[str],
) -> None:
    settings = flow.settings.model_copy(
        update={
            "edp": flow.settings.edp.model_copy(
                update={"base_url": scripted_edp.base_url, "max_dtm_bytes": DTM_CAP}
            )
        }
    )
    cfg_id = flow.submit("cloud")

    def run(selection: list[Any]) -> Any:
        return materialize(
            order_assets(settings),
            selection=selection,
            partition_key=cfg_id,
            resources=build_resources(settings),
            instance=flow.instance,
            raise_on_error=False,
        )

    assert run([CONFIG]).success
    script(scripted_edp, settings)
    result = run([EDP_ARTIFACTS])

    assert not result.success
    order = flow.order(cfg_id)
    assert order.status == OrderStatus.FAILED
    assert order.last_error is not None
    for part in expected:
        assert part in order.last_error, order.last_error
    [failure] = result.get_step_failure_events()
    step_error = failure.step_failure_data.user_failure_data
    assert step_error is not None and step_error.description == order.last_error
    answer = requests.get(f"{settings.api.public_url}/orders/{cfg_id}", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["error"] == order.last_error
    for secret in SECRETS:
        assert secret not in order.last_error
        assert secret not in answer.text
    assert "?" not in order.last_error
    assert flow.keys(f"orders/{cfg_id}/edp/") == []
