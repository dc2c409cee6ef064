from __future__ import annotations

import hashlib
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from delivery.artifact_store import (
    PRESIGN_MAX_SECONDS,
    ArtifactStore,
    StoredObject,
    order_key,
    portal_key,
)

CFG_ID = "0b7c3f2e-1c9a-4d7e-9a51-6f1f2b3c4d5e"


# --- keys -------------------------------------------------------------------------------------


def test_order_and_portal_keys_follow_the_layout() -> None:
    assert order_key(CFG_ID, "config.json") == f"orders/{CFG_ID}/config.json"
    assert order_key(CFG_ID, "edp", "dtm.json") == f"orders/{CFG_ID}/edp/dtm.json"
    assert portal_key(CFG_ID, 3, "manifest.json") == f"portal/{CFG_ID}/v3/manifest.json"
    assert portal_key(CFG_ID, None, "index.html") == f"portal/{CFG_ID}/index.html"


@pytest.mark.parametrize(
    "cfg_id",
    [
        "not-a-uuid",
        "",
        "..",
        f"../{CFG_ID}",
        f"{CFG_ID}/x",
        CFG_ID.upper(),  # a UUID, but not in its canonical form: two keys for one order
        CFG_ID.replace("-", ""),
        f"{{{CFG_ID}}}",
        f" {CFG_ID}",
    ],
)
def test_keys_refuse_a_cfg_id_that_is_not_a_canonical_uuid(cfg_id: str) -> None:
    with pytest.raises(ValueError):
        order_key(cfg_id, "config.json")
    with pytest.raises(ValueError):
        portal_key(cfg_id, 1, "index.html")


@pytest.mark.parametrize(
    "name",
    [
        "..",
        "a..b",
        "../config.json",
        "edp/dtm.json",
        "dtm\\json",
        "my file.json",
        " dtm.json",
        "",
        ".hidden",
        "-x",
        "x" * 129,
    ],
)
def test_keys_refuse_names_that_could_escape_or_alter_the_layout(name: str) -> None:
    with pytest.raises(ValueError):
        order_key(CFG_ID, name)
    with pytest.raises(ValueError):
        portal_key(CFG_ID, 1, name)


# --- objects ----------------------------------------------------------------------------------


@pytest.mark.slow
def test_put_returns_size_and_sha256_of_what_get_returns(store: ArtifactStore) -> None:
    data = b"\x00\x01binary\xff" * 1000
    key = order_key(CFG_ID, "edp", "blob.bin")

    stored = store.put(key, data)

    assert stored == StoredObject(key=key, size=len(data), sha256=hashlib.sha256(data).hexdigest())
    assert stored.name == "blob.bin"
    fetched = store.get(key)
    assert fetched == data
    assert len(fetched) == stored.size
    assert hashlib.sha256(fetched).hexdigest() == stored.sha256


@pytest.mark.slow
def test_put_records_sha256_and_content_type_on_the_object(store: ArtifactStore) -> None:
    data = b'{"a": 1}\n'
    key = order_key(CFG_ID, "config.json")

    stored = store.put(key, data, "application/json")

    head = store.head(key)
    assert head is not None
    assert head["Metadata"]["sha256"] == stored.sha256 == hashlib.sha256(data).hexdigest()
    assert head["ContentLength"] == len(data)
    assert head["ContentType"] == "application/json"


@pytest.mark.slow
def test_put_again_replaces_object_and_its_sha256(store: ArtifactStore) -> None:
    key = order_key(CFG_ID, "cfn", "cfn.yaml")
    store.put(key, b"old")

    stored = store.put(key, b"new contents")

    assert store.get(key) == b"new contents"
    head = store.head(key)
    assert head is not None and head["Metadata"]["sha256"] == stored.sha256


@pytest.mark.slow
def test_head_of_a_missing_key_is_none(store: ArtifactStore) -> None:
    assert store.head(order_key(CFG_ID, "does-not-exist.json")) is None


@pytest.mark.slow
def test_keys_lists_only_objects_under_the_prefix(store: ArtifactStore) -> None:
    other = str(uuid.uuid4())
    wanted = {order_key(CFG_ID, "edp", f"file-{i}.bin") for i in range(5)}
    for key in wanted:
        store.put(key, key.encode())
    store.put(order_key(CFG_ID, "config.json"), b"{}")
    store.put(order_key(other, "edp", "file-0.bin"), b"x")
    store.put("apk/ems-hmi-1.0.0.apk", b"apk")

    listed = store.keys(f"orders/{CFG_ID}/edp/")

    assert {key for key, _ in listed} == wanted
    assert len(listed) == len(wanted)
    assert all(modified is not None and modified.tzinfo is not None for _, modified in listed)
    assert [key for key, _ in store.keys("apk/")] == ["apk/ems-hmi-1.0.0.apk"]
    assert store.keys(f"orders/{uuid.uuid4()}/") == []


# --- presigned URLs ---------------------------------------------------------------------------


@pytest.mark.slow
def test_presigned_url_downloads_the_same_bytes_without_credentials(store: ArtifactStore) -> None:
    data = bytes(range(256)) * 64
    key = order_key(CFG_ID, "iso", "iso.img")
    store.put(key, data)

    url = store.presigned_url(key, expires_seconds=600)

    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.content == data
    assert hashlib.sha256(response.content).hexdigest() == hashlib.sha256(data).hexdigest()


def _expires(url: str) -> int:
    return int(parse_qs(urlsplit(url).query)["X-Amz-Expires"][0])


@pytest.mark.slow
def test_presigned_url_lives_at_most_seven_days(store: ArtifactStore) -> None:
    key = order_key(CFG_ID, "a.bin")
    store.put(key, b"a")

    assert PRESIGN_MAX_SECONDS == 7 * 24 * 3600
    assert _expires(store.presigned_url(key)) == PRESIGN_MAX_SECONDS
    assert _expires(store.presigned_url(key, expires_seconds=30 * 24 * 3600)) == PRESIGN_MAX_SECONDS
    assert _expires(store.presigned_url(key, expires_seconds=3600)) == 3600
