from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

import pytest

from contracts.edp import EdpArtifact, EdpJob
from delivery.artifact_store import ArtifactStore, StoredObject
from delivery.edp_artifact_policy import ByteLimit, EdpArtifactDownloader, EdpArtifactPolicy
from delivery.edp_intake import EdpArtifactError, take_over_edp_artifacts
from tests.delivery.conftest import QUERY, QUERY_SECRETS, ArtifactServer, artifact_policy

CFG_ID = "0b7c3f2e-1c9a-4d7e-9a51-6f1f2b3c4d5e"
JOB_ID = "job-42"
EDP = "http://edp.example.com"
BASE = f"{EDP}/edp-api/jobs/job-42/artifacts"
# Generous caps: the tests of the caps set their own.
POLICY = artifact_policy(EDP, max_artifact_bytes=10_000, max_dtm_bytes=10_000, max_job_bytes=100_000)

DTM: dict[str, Any] = {
    "schema_version": 1,
    "site": {"name": "Plant Nord", "timezone": "Europe/Berlin"},
    "devices": [
        {
            "id": "meter-main",
            "type": "power_meter",
            "model": "PM5560",
            "connection": {"protocol": "modbus_tcp", "host": "10.20.0.11", "port": 502, "unit_id": 1},
            "points": [
                {"name": "active_power", "address": 3059, "data_type": "int32", "scale": 0.1, "unit": "kW"}
            ],
        }
    ],
}


def dtm_bytes(document: dict[str, Any] = DTM) -> bytes:
    return json.dumps(document).encode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FakeDownloads:
    """EDP's artifact URLs served from a dict, whatever the limit; remembers what was fetched."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = {f"{BASE}/{name}": data for name, data in files.items()}
        self.fetched: list[str] = []
        self.limits: list[ByteLimit] = []

    def __call__(self, artifact: EdpArtifact, limit: ByteLimit) -> bytes:
        self.fetched.append(artifact.url)
        self.limits.append(limit)
        return self.files[artifact.url]


def job_for(
    files: dict[str, bytes],
    *,
    status: str = "complete",
    with_sha: bool = True,
    base: str = BASE,
    **extra: Any,
) -> EdpJob:
    return EdpJob.model_validate(
        {
            "status": status,
            "edp_artifacts": [
                {"name": name, "url": f"{base}/{name}", **({"sha256": sha(data)} if with_sha else {})}
                for name, data in files.items()
            ],
            **extra,
        }
    )


def take_over(
    job: EdpJob,
    downloads: Callable[[EdpArtifact, ByteLimit], bytes],
    store: ArtifactStore,
    policy: EdpArtifactPolicy = POLICY,
) -> Any:
    return take_over_edp_artifacts(
        cfg_id=CFG_ID, job_id=JOB_ID, job=job, policy=policy, download=downloads, store=store
    )


def assert_readable(error: pytest.ExceptionInfo[EdpArtifactError], *expected: str) -> None:
    message = str(error.value)
    for part in expected:
        assert part in message, message
    for secret in QUERY_SECRETS:
        assert secret not in message, message


@pytest.mark.slow
def test_complete_job_stores_every_artifact_with_its_sha256(store: ArtifactStore) -> None:
    files = {
        "dtm.json": dtm_bytes(),
        "register-map.csv": b"name,address\nactive_power,3059\n",
        "notes.bin": b"\x00\xff" * 50,
    }
    job = job_for(files, flags={"needs_vpn": True, "gateway_profile": "small"})

    result = take_over(job, FakeDownloads(files), store)

    assert result.job_id == JOB_ID
    assert result.flags == {"needs_vpn": True, "gateway_profile": "small"}
    assert result.objects == [
        StoredObject(key=f"orders/{CFG_ID}/edp/{name}", size=len(data), sha256=sha(data))
        for name, data in files.items()
    ]
    assert result.dtm.key == f"orders/{CFG_ID}/edp/dtm.json"
    assert {key for key, _ in store.keys(f"orders/{CFG_ID}/edp/")} == {
        f"orders/{CFG_ID}/edp/{name}" for name in files
    }
    for name, data in files.items():
        key = f"orders/{CFG_ID}/edp/{name}"
        assert store.get(key) == data
        head = store.head(key)
        assert head is not None and head["Metadata"]["sha256"] == sha(data)
    dtm_head = store.head(f"orders/{CFG_ID}/edp/dtm.json")
    assert dtm_head is not None and dtm_head["ContentType"] == "application/json"


@pytest.mark.slow
def test_artifacts_without_announced_sha256_are_stored_with_the_computed_one(store: ArtifactStore) -> None:
    files = {"dtm.json": dtm_bytes(), "extra.txt": b"hello"}

    result = take_over(job_for(files, with_sha=False), FakeDownloads(files), store)

    assert [obj.sha256 for obj in result.objects] == [sha(files["dtm.json"]), sha(b"hello")]
    head = store.head(f"orders/{CFG_ID}/edp/extra.txt")
    assert head is not None and head["Metadata"]["sha256"] == sha(b"hello")


@pytest.mark.slow
@pytest.mark.parametrize("status", ["queued", "running", "failed"])
def test_job_that_is_not_complete_is_refused_and_nothing_is_stored(store: ArtifactStore, status: str) -> None:
    files = {"dtm.json": dtm_bytes()}
    downloads = FakeDownloads(files)

    with pytest.raises(EdpArtifactError, match=status):
        take_over(job_for(files, status=status), downloads, store)

    assert downloads.fetched == []
    assert store.keys(f"orders/{CFG_ID}/") == []


@pytest.mark.slow
def test_job_without_dtm_json_is_refused_naming_dtm_json(store: ArtifactStore) -> None:
    files = {"register-map.csv": b"x", "dtm.yaml": b"schema_version: 1"}
    downloads = FakeDownloads(files)

    with pytest.raises(EdpArtifactError, match=r"dtm\.json") as caught:
        take_over(job_for(files), downloads, store)

    assert "register-map.csv" in str(caught.value)
    assert downloads.fetched == []
    assert store.keys(f"orders/{CFG_ID}/") == []


@pytest.mark.slow
def test_job_with_no_artifacts_at_all_is_refused(store: ArtifactStore) -> None:
    with pytest.raises(EdpArtifactError, match=r"dtm\.json"):
        take_over(job_for({}), FakeDownloads({}), store)


@pytest.mark.slow
def test_sha256_mismatch_is_refused_and_the_corrupt_copy_not_stored(store: ArtifactStore) -> None:
    files = {"dtm.json": dtm_bytes(), "firmware.bin": b"the real firmware"}
    job = job_for(files)
    downloads = FakeDownloads({**files, "firmware.bin": b"truncated firm"})

    with pytest.raises(EdpArtifactError, match=r"firmware\.bin.*sha256"):
        take_over(job, downloads, store)

    assert store.head(f"orders/{CFG_ID}/edp/firmware.bin") is None


@pytest.mark.slow
@pytest.mark.parametrize("payload", [b"{not json", b"", b"\xff\xfe\x00garbage", b'{"schema_version": 1, '])
def test_dtm_that_is_not_json_is_refused(store: ArtifactStore, payload: bytes) -> None:
    files = {"dtm.json": payload}

    with pytest.raises(EdpArtifactError, match=r"dtm\.json is not valid JSON"):
        take_over(job_for(files), FakeDownloads(files), store)

    assert store.head(f"orders/{CFG_ID}/edp/dtm.json") is None


def _broken(change: Any) -> dict[str, Any]:
    document = json.loads(json.dumps(DTM))
    change(document)
    return document


@pytest.mark.slow
@pytest.mark.parametrize(
    ("document", "field"),
    [
        (_broken(lambda d: d["devices"][0].pop("points")), "devices.0.points"),
        (_broken(lambda d: d["devices"][0]["points"][0].update(address=70000)), "devices.0.points.0.address"),
        (_broken(lambda d: d["site"].pop("timezone")), "site.timezone"),
        (_broken(lambda d: d.update(schema_version=2)), "schema_version"),
        (_broken(lambda d: d["devices"][0].update(colour="red")), "devices.0.colour"),
        (_broken(lambda d: d["devices"][0]["connection"].update(port=0)), "devices.0.connection.port"),
    ],
)
def test_dtm_with_invalid_schema_is_refused_naming_the_field(
    store: ArtifactStore, document: dict[str, Any], field: str
) -> None:
    files = {"dtm.json": dtm_bytes(document)}

    with pytest.raises(EdpArtifactError) as caught:
        take_over(job_for(files), FakeDownloads(files), store)

    message = str(caught.value)
    assert "dtm.json" in message
    assert field in message
    assert store.head(f"orders/{CFG_ID}/edp/dtm.json") is None


@pytest.mark.slow
def test_dtm_with_duplicate_device_ids_is_refused(store: ArtifactStore) -> None:
    document = _broken(lambda d: d["devices"].append(dict(d["devices"][0])))
    files = {"dtm.json": dtm_bytes(document)}

    with pytest.raises(EdpArtifactError, match="unique"):
        take_over(job_for(files), FakeDownloads(files), store)


# --- the artifact policy, applied to a job ----------------------------------------------------


@pytest.mark.slow
def test_too_many_artifacts_are_refused_before_any_is_fetched(store: ArtifactStore) -> None:
    files = {"dtm.json": dtm_bytes(), **{f"part-{n}.bin": b"x" for n in range(4)}}
    downloads = FakeDownloads(files)

    with pytest.raises(EdpArtifactError) as caught:
        take_over(job_for(files), downloads, store, artifact_policy(EDP, max_artifacts=4))

    assert_readable(caught, JOB_ID, "5 artifacts", "edp.max_artifacts")
    assert downloads.fetched == []
    assert store.keys(f"orders/{CFG_ID}/") == []


@pytest.mark.slow
def test_one_foreign_url_refuses_the_job_before_anything_is_fetched(store: ArtifactStore) -> None:
    files = {"dtm.json": dtm_bytes(), "notes.txt": b"notes"}
    job = EdpJob.model_validate(
        {
            "status": "complete",
            "edp_artifacts": [
                {"name": "dtm.json", "url": f"{BASE}/dtm.json{QUERY}"},
                {"name": "notes.txt", "url": f"http://127.0.0.1:5000/platform-artifacts-local/secret{QUERY}"},
            ],
        }
    )
    downloads = FakeDownloads(files)

    with pytest.raises(EdpArtifactError) as caught:
        take_over(job, downloads, store)

    assert_readable(caught, "notes.txt", "127.0.0.1:5000", "edp.artifact_hosts")
    assert downloads.fetched == []
    assert store.keys(f"orders/{CFG_ID}/") == []


@pytest.mark.slow
def test_the_job_total_bounds_each_next_artifact(store: ArtifactStore) -> None:
    files = {"dtm.json": dtm_bytes(), "a.bin": b"a" * 600, "b.bin": b"b" * 600}
    downloads = FakeDownloads(files)
    policy = artifact_policy(
        EDP, max_artifact_bytes=1000, max_dtm_bytes=1000, max_job_bytes=len(files["dtm.json"]) + 1000
    )

    with pytest.raises(EdpArtifactError) as caught:
        take_over(job_for(files), downloads, store, policy)

    # The fake ignores its limit; the intake holds the job to it all the same.
    assert_readable(caught, "b.bin", "edp.max_job_bytes")
    assert [limit.max_bytes for limit in downloads.limits] == [1000, 1000, 400]
    assert store.head(f"orders/{CFG_ID}/edp/b.bin") is None


@pytest.mark.slow
def test_a_dtm_over_its_own_cap_is_refused_while_it_streams(
    store: ArtifactStore, edp_host: ArtifactServer
) -> None:
    big_dtm = dtm_bytes({**DTM, "devices": DTM["devices"] * 1}) + b" " * 2000
    edp_host.stream("/artifacts/dtm.json", total=len(big_dtm))
    policy = artifact_policy(
        edp_host.base_url, max_artifact_bytes=100_000, max_dtm_bytes=1000, max_job_bytes=100_000
    )
    job = job_for({"dtm.json": big_dtm}, base=f"{edp_host.base_url}/artifacts", with_sha=False)

    with pytest.raises(EdpArtifactError) as caught:
        take_over(job, EdpArtifactDownloader(policy).download, store, policy)

    assert_readable(caught, "dtm.json", "1000 bytes", "edp.max_dtm_bytes")
    assert store.keys(f"orders/{CFG_ID}/") == []


@pytest.mark.slow
def test_a_download_whose_sha256_differs_is_refused(store: ArtifactStore, edp_host: ArtifactServer) -> None:
    files = {"dtm.json": dtm_bytes(), "firmware.bin": b"the real firmware"}
    for name, data in files.items():
        edp_host.body(f"/artifacts/{name}", data)
    edp_host.body("/artifacts/firmware.bin", b"a swapped firmware")
    policy = artifact_policy(
        edp_host.base_url, max_artifact_bytes=10_000, max_dtm_bytes=10_000, max_job_bytes=100_000
    )
    job = job_for(files, base=f"{edp_host.base_url}/artifacts")

    with pytest.raises(EdpArtifactError) as caught:
        take_over(job, EdpArtifactDownloader(policy).download, store, policy)

    assert_readable(caught, "firmware.bin", "sha256")
    assert store.head(f"orders/{CFG_ID}/edp/firmware.bin") is None


@pytest.mark.slow
def test_artifacts_over_real_http_are_taken_over(store: ArtifactStore, edp_host: ArtifactServer) -> None:
    files = {"dtm.json": dtm_bytes(), "register-map.csv": b"name,address\nactive_power,3059\n"}
    # EDP hands out a URL that redirects to its storage on the same host, as presigned ones do.
    edp_host.redirect("/artifacts/dtm.json", f"/storage/dtm.json{QUERY}")
    edp_host.body("/storage/dtm.json", files["dtm.json"])
    edp_host.body("/artifacts/register-map.csv", files["register-map.csv"])
    policy = artifact_policy(
        edp_host.base_url, max_artifact_bytes=10_000, max_dtm_bytes=10_000, max_job_bytes=100_000
    )

    result = take_over(
        job_for(files, base=f"{edp_host.base_url}/artifacts"),
        EdpArtifactDownloader(policy).download,
        store,
        policy,
    )

    assert [obj.sha256 for obj in result.objects] == [sha(data) for data in files.values()]
    assert store.get(f"orders/{CFG_ID}/edp/dtm.json") == files["dtm.json"]
