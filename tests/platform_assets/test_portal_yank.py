"""The operator's yank from the Dagster UI: the job yank_portal_version on an order's partition."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from dagster import DagsterEventType, EventRecordsFilter

from order_pipeline.keys import AFTER_EDP, CONFIG, MANIFEST
from platform_assets.portal_yank import build_yank_job
from resources.pipeline import build_resources
from standins.hmi_ci import publish_sample_apk
from tests.platform_assets.conftest import OrderFlow

pytestmark = pytest.mark.slow


def yank(flow: OrderFlow, cfg_id: str, **config: Any) -> Any:
    return build_yank_job().execute_in_process(
        run_config={"ops": {"yank_portal_version_op": {"config": config}}},
        partition_key=cfg_id,
        resources=build_resources(flow.settings),
        instance=flow.instance,
        raise_on_error=False,
    )


def test_the_yank_job_withdraws_a_version_and_tells_the_customer_once(flow: OrderFlow) -> None:
    publish_sample_apk(flow.s3(), flow.settings.artifacts.bucket, "1.2.0")
    cfg_id = flow.submit("cloud")
    assert flow.materialize(cfg_id, [CONFIG]).success
    flow.wait_for_edp(cfg_id)
    assert flow.materialize(cfg_id, AFTER_EDP).success
    links = flow.portal_links(cfg_id)

    result = yank(flow, cfg_id, version=1, reason="recalled: wrong meter map", notify_customer=True)
    assert result.success
    [observation] = [
        record.event_log_entry.asset_observation
        for record in flow.instance.get_event_records(
            EventRecordsFilter(event_type=DagsterEventType.ASSET_OBSERVATION, asset_key=MANIFEST)
        )
    ]
    assert observation is not None and observation.partition == cfg_id
    assert observation.metadata["yanked"].value is True
    assert observation.metadata["current_version"].value == "none"
    assert str(observation.metadata["customer_notified"].value).startswith("sent")
    download = requests.get(links.artifact(1, "cfn.yaml"), allow_redirects=False, timeout=10)
    assert download.status_code == 410 and "recalled: wrong meter map" in download.json()["detail"]
    assert yank(flow, cfg_id, version=1, reason="recalled", notify_customer=True).success
    yanked_mails = [m for m in flow.emails_sent_by_ses(cfg_id) if "withdrawn" in str(m)]
    assert len(yanked_mails) == 1, "the customer is told once"

    assert yank(flow, cfg_id, version=1, undo=True).success
    assert requests.get(links.artifact(1, "cfn.yaml"), allow_redirects=False, timeout=10).status_code == 303

    refused = yank(flow, cfg_id, version=7, reason="x")
    assert not refused.success
    assert flow.order(cfg_id).status.value == "delivered", "an operator job's failure is not the order's"
    assert yank(flow, cfg_id, version=1).success is False, "a yank without a reason is refused"
