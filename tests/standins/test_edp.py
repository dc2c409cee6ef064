"""The EDP stand-in over real HTTP: the contract, the fault modes, and persistence across a restart."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from contracts.configurator import ConfiguratorPayload
from contracts.dtm import DeviceTopologyModel
from contracts.edp import EdpJob, EdpJobAccepted
from platform_config.settings import PROJECT_ROOT, EdpStandinSettings
from standins.edp import HUGE_JOB_ANSWER_BYTES, build_artifacts
from tests.conftest import serving_module

pytestmark = pytest.mark.slow

HTTP_TIMEOUT = 5.0
PAYLOAD: dict[str, Any] = {
    "schema_version": 1,
    "customer": {"name": "Ada Lovelace", "company": "Analytical Engines Ltd", "email": "ada@example.com"},
    "deployment": {"target": "onprem"},
    "site": {"name": "Plant North", "timezone": "Europe/Berlin"},
    "devices": [
        {
            "id": "meter-1",
            "type": "power_meter",
            "model": "UMG 604",
            "connection": {"protocol": "modbus_tcp", "host": "10.0.0.10", "port": 502, "unit_id": 1},
        },
        {"id": "pv-1", "type": "pv_inverter", "model": "STP 25000"},
        {
            "id": "bat-1",
            "type": "battery",
            "model": "HVS 10.2",
            "connection": {"protocol": "modbus_tcp", "host": "battery.plant.example", "unit_id": 3},
        },
    ],
    "options": {},
}

# start_edp(settings, port=0) -> a running server with .base_url and .stop(); see conftest.py.
StartEdp = Callable[..., Any]


def submit(base_url: str, key: str | None, payload: Any = PAYLOAD) -> requests.Response:
    headers = {"Idempotency-Key": key} if key is not None else {}
    return requests.post(f"{base_url}/edp-api/jobs", json=payload, headers=headers, timeout=HTTP_TIMEOUT)


def job_status(base_url: str, job_id: str) -> EdpJob:
    response = requests.get(f"{base_url}/edp-api/jobs/{job_id}", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return EdpJob.model_validate(response.json())


def accept(base_url: str, key: str, payload: Any = PAYLOAD) -> EdpJobAccepted:
    response = submit(base_url, key, payload)
    assert response.status_code == 202, response.text
    return EdpJobAccepted.model_validate(response.json())


def wait_finished(base_url: str, job_id: str, timeout: float = 10.0) -> tuple[EdpJob, list[str]]:
    """Poll until the job is complete or failed; also return the distinct statuses seen, in order."""
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = job_status(base_url, job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        if job.status in ("complete", "failed"):
            return job, seen
        time.sleep(0.03)
    raise AssertionError(f"job {job_id} did not finish; statuses seen: {seen}")


def set_faults(base_url: str, **faults: Any) -> dict[str, Any]:
    response = requests.put(f"{base_url}/_standin/faults", json=faults, timeout=HTTP_TIMEOUT)
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_job_goes_queued_running_complete_and_serves_verified_artifacts(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings)
    accepted = accept(server.base_url, "cfg-0001")
    assert len(accepted.job_id) == 32
    assert sorted(accepted.edp_artifact_urls) == sorted(
        f"{server.base_url}/edp-api/jobs/{accepted.job_id}/artifacts/{name}"
        for name in ("dtm.json", "edp-report.json")
    )

    job, seen = wait_finished(server.base_url, accepted.job_id)
    assert seen == ["queued", "running", "complete"]
    assert job.error is None
    assert job.flags == {"commissioning_required": True, "device_count": 3}
    assert {artifact.name for artifact in job.edp_artifacts} == {"dtm.json", "edp-report.json"}
    assert {artifact.url for artifact in job.edp_artifacts} == set(accepted.edp_artifact_urls)

    downloaded: dict[str, bytes] = {}
    for artifact in job.edp_artifacts:
        response = requests.get(artifact.url, timeout=HTTP_TIMEOUT)
        assert response.status_code == 200
        assert hashlib.sha256(response.content).hexdigest() == artifact.sha256
        downloaded[artifact.name] = response.content

    dtm = DeviceTopologyModel.model_validate_json(downloaded["dtm.json"])
    assert dtm.site.name == "Plant North" and dtm.site.timezone == "Europe/Berlin"
    by_id = {device.id: device for device in dtm.devices}
    assert set(by_id) == {"meter-1", "pv-1", "bat-1"}
    assert by_id["pv-1"].connection is None
    assert by_id["bat-1"].connection is not None and by_id["bat-1"].connection.unit_id == 3
    assert {point.name for point in by_id["meter-1"].points} >= {
        "active_power",
        "voltage_l1",
        "energy_import",
    }
    assert {point.name for point in by_id["bat-1"].points} == {"state_of_charge", "power"}

    report = json.loads(downloaded["edp-report.json"])
    assert report["devices_per_type"] == {"power_meter": 1, "pv_inverter": 1, "battery": 1}
    assert report["devices_without_connection"] == ["pv-1"]
    # Canonical JSON: sorted keys, indent 2.
    for data in downloaded.values():
        assert (
            data
            == (json.dumps(json.loads(data), sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()
        )


def test_artifacts_are_reproducible(start_edp: StartEdp, edp_settings: EdpStandinSettings) -> None:
    server = start_edp(edp_settings)
    first = wait_finished(server.base_url, accept(server.base_url, "cfg-a").job_id)[0]
    second = wait_finished(server.base_url, accept(server.base_url, "cfg-b").job_id)[0]
    assert {a.name: a.sha256 for a in first.edp_artifacts} == {a.name: a.sha256 for a in second.edp_artifacts}
    local = build_artifacts(ConfiguratorPayload.model_validate(PAYLOAD))
    assert {name: hashlib.sha256(data).hexdigest() for name, data in local.items()} == {
        a.name: a.sha256 for a in first.edp_artifacts
    }


def test_artifacts_are_not_served_before_complete(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings.model_copy(update={"queued_seconds": 30.0}))
    accepted = accept(server.base_url, "cfg-slow")
    job = job_status(server.base_url, accepted.job_id)
    assert job.status == "queued" and job.edp_artifacts == [] and job.flags == {}
    response = requests.get(accepted.edp_artifact_urls[0], timeout=HTTP_TIMEOUT)
    assert response.status_code == 404


def test_same_idempotency_key_answers_the_same_job(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings)
    first = accept(server.base_url, "cfg-0002")
    again = accept(server.base_url, "cfg-0002")
    other = accept(server.base_url, "cfg-0003")
    assert again.job_id == first.job_id
    assert again.edp_artifact_urls == first.edp_artifact_urls
    assert other.job_id != first.job_id
    jobs = list((Path(edp_settings.state_dir) / "jobs").glob("*.json"))
    assert len(jobs) == 2


def test_reused_idempotency_key_with_another_payload_is_a_conflict(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings)
    first = accept(server.base_url, "cfg-0004")
    changed = copy.deepcopy(PAYLOAD)
    changed["site"]["name"] = "Plant South"
    response = submit(server.base_url, "cfg-0004", changed)
    assert response.status_code == 409
    assert response.json()["job_id"] == first.job_id


def test_missing_idempotency_key_and_malformed_json_are_400(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings)
    response = submit(server.base_url, None)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]

    response = requests.post(
        f"{server.base_url}/edp-api/jobs",
        data=b"{not json",
        headers={"Idempotency-Key": "cfg-0005", "Content-Type": "application/json"},
        timeout=HTTP_TIMEOUT,
    )
    assert response.status_code == 400
    assert "malformed JSON" in response.json()["error"]


def test_invalid_payload_is_422_naming_the_fields(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings)
    bad = copy.deepcopy(PAYLOAD)
    bad["devices"][1]["type"] = "wind_turbine"
    bad["customer"]["email"] = "not-an-email"
    bad["surprise"] = True
    response = submit(server.base_url, "cfg-0006", bad)
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["detail"]}
    assert {"devices.1.type", "customer.email", "surprise"} <= fields
    assert "not-an-email" not in response.text
    assert not list((Path(edp_settings.state_dir) / "jobs").glob("*.json"))


def test_unknown_jobs_and_artifacts_are_404(start_edp: StartEdp, edp_settings: EdpStandinSettings) -> None:
    server = start_edp(edp_settings)
    assert requests.get(f"{server.base_url}/edp-api/jobs/{'0' * 32}", timeout=HTTP_TIMEOUT).status_code == 404
    assert (
        requests.get(f"{server.base_url}/edp-api/jobs/..%2F..%2Fetc", timeout=HTTP_TIMEOUT).status_code == 404
    )
    accepted = accept(server.base_url, "cfg-0007")
    assert wait_finished(server.base_url, accepted.job_id)[0].status == "complete"
    url = f"{server.base_url}/edp-api/jobs/{accepted.job_id}/artifacts"
    assert requests.get(f"{url}/secret.txt", timeout=HTTP_TIMEOUT).status_code == 404
    assert (
        requests.get(
            f"{server.base_url}/edp-api/jobs/{'0' * 32}/artifacts/dtm.json", timeout=HTTP_TIMEOUT
        ).status_code
        == 404
    )


def test_job_fails_mode_from_settings(start_edp: StartEdp, edp_settings: EdpStandinSettings) -> None:
    server = start_edp(edp_settings.model_copy(update={"failure": "job_fails"}))
    accepted = accept(server.base_url, "cfg-0008")
    job, seen = wait_finished(server.base_url, accepted.job_id)
    assert seen == ["queued", "running", "failed"]
    assert job.error is not None and job.error.startswith("EDP engineering failed:")
    assert job.edp_artifacts == []
    assert requests.get(accepted.edp_artifact_urls[0], timeout=HTTP_TIMEOUT).status_code == 404


def test_faults_can_be_injected_into_a_running_server(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings)
    before = accept(server.base_url, "cfg-0009")
    state = requests.get(f"{server.base_url}/_standin/faults", timeout=HTTP_TIMEOUT).json()
    assert state == {"failure": "none", "queued_seconds": 0.4, "running_seconds": 0.4, "hang_seconds": 2.0}

    assert set_faults(server.base_url, failure="job_fails")["failure"] == "job_fails"
    during = accept(server.base_url, "cfg-0010")
    # The fault applies to jobs accepted after it; a job already accepted keeps its outcome.
    assert wait_finished(server.base_url, before.job_id)[0].status == "complete"
    assert wait_finished(server.base_url, during.job_id)[0].status == "failed"

    assert set_faults(server.base_url, failure="http_500")["failure"] == "http_500"
    response = submit(server.base_url, "cfg-0011")
    assert response.status_code == 500 and "error" in response.json()
    assert (
        requests.get(f"{server.base_url}/edp-api/jobs/{before.job_id}", timeout=HTTP_TIMEOUT).status_code
        == 500
    )
    assert requests.get(f"{server.base_url}/healthz", timeout=HTTP_TIMEOUT).json() == {"status": "ok"}

    bad = requests.put(
        f"{server.base_url}/_standin/faults", json={"failure": "explode"}, timeout=HTTP_TIMEOUT
    )
    assert bad.status_code == 422 and bad.json()["detail"][0]["field"] == "failure"
    unknown = requests.put(f"{server.base_url}/_standin/faults", json={"latency": 1}, timeout=HTTP_TIMEOUT)
    assert unknown.status_code == 422

    assert set_faults(server.base_url, failure="none")["failure"] == "none"
    assert job_status(server.base_url, before.job_id).status == "complete"


def test_hang_mode_times_out_a_client(start_edp: StartEdp, edp_settings: EdpStandinSettings) -> None:
    server = start_edp(edp_settings)
    accepted = accept(server.base_url, "cfg-0012")
    set_faults(server.base_url, failure="hang", hang_seconds=2.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{server.base_url}/edp-api/jobs/{accepted.job_id}", timeout=0.5)
    # A patient client gets the normal answer once the hang is over.
    started = time.monotonic()
    response = requests.get(f"{server.base_url}/edp-api/jobs/{accepted.job_id}", timeout=HTTP_TIMEOUT)
    assert response.status_code == 200 and time.monotonic() - started >= 1.9
    set_faults(server.base_url, failure="none")


def test_jobs_survive_a_restart(start_edp: StartEdp, edp_settings: EdpStandinSettings) -> None:
    first = start_edp(edp_settings)
    accepted = accept(first.base_url, "cfg-0013")
    before, _ = wait_finished(first.base_url, accepted.job_id)
    port = int(first.base_url.rsplit(":", 1)[1])
    first.stop()

    second = start_edp(edp_settings, port=port)
    after = job_status(second.base_url, accepted.job_id)
    assert after == before
    again = accept(second.base_url, "cfg-0013")
    assert again.job_id == accepted.job_id
    for artifact in after.edp_artifacts:
        data = requests.get(artifact.url, timeout=HTTP_TIMEOUT).content
        assert hashlib.sha256(data).hexdigest() == artifact.sha256


def test_cli_serves_the_stage_settings(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    customer = tmp_path / "cfg.customer.yml"
    customer.write_text(
        yaml.safe_dump(
            {
                "edp": {"base_url": f"http://127.0.0.1:{port}"},
                "standins": {"edp": {"port": port, "state_dir": str(tmp_path / "edp-state")}},
            }
        )
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_") and key not in ("API_TOKEN", "PORTAL_TOKEN_KEY", "PLATFORM_DB_PASSWORD")
    }
    env.update(ENV="local", CFG_CUSTOMER_PATH=str(customer), SECRETS_PATH=str(tmp_path / "no-secrets.env"))

    def healthy() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except requests.ConnectionError:
            return False

    with serving_module(
        "standins.edp", cwd=PROJECT_ROOT, env=env, ready=healthy, timeout=20, stop_signal=signal.SIGINT
    ):
        accepted = accept(f"http://127.0.0.1:{port}", "cfg-cli")
        assert accepted.edp_artifact_urls[0].startswith(f"http://127.0.0.1:{port}/edp-api/jobs/")
        assert (tmp_path / "edp-state" / "jobs" / f"{accepted.job_id}.json").is_file()


def test_huge_job_answer_mode_streams_a_valid_job_far_past_any_cap(
    start_edp: StartEdp, edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings.model_copy(update={"failure": "huge_job_answer"}))
    accepted = accept(server.base_url, "cfg-0013")
    with requests.get(
        f"{server.base_url}/edp-api/jobs/{accepted.job_id}", stream=True, timeout=HTTP_TIMEOUT
    ) as response:
        assert response.status_code == 200
        # No length announced: only a client that counts while reading can stop in time.
        assert "content-length" not in response.headers
        body = response.content
    assert len(body) == HUGE_JOB_ANSWER_BYTES
    job = EdpJob.model_validate_json(body)
    assert job.status in ("queued", "running", "complete") and set(job.flags) == {"padding"}
    # Only the job answer floods: submitting and the artifacts answer as usual.
    assert submit(server.base_url, "cfg-0013").status_code == 202
    set_faults(server.base_url, failure="none")
    assert (
        len(requests.get(f"{server.base_url}/edp-api/jobs/{accepted.job_id}", timeout=HTTP_TIMEOUT).content)
        < 4096
    )
