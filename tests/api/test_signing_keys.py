"""Signed manifests as a customer checks them: the key from its stable URL, openssl, and a rotation."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from delivery.manifest_signing import ManifestSigner
from tests.api import test_portal
from tests.api.test_portal import Delivered, path_of

pytestmark = pytest.mark.slow

# The portal tests' published order and its app.
delivered = test_portal.delivered
client = test_portal.client


def openssl_verifies(folder: Path, key: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-verify",
            "-pubin",
            "-inkey",
            str(key),
            "-rawin",
            "-in",
            str(folder / "manifest.json"),
            "-sigfile",
            str(folder / "manifest.json.sig"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


def download_version(client: TestClient, delivered: Delivered, version: int, folder: Path) -> None:
    folder.mkdir(parents=True)
    for name in ("manifest.json", "manifest.json.sig"):
        answer = client.get(path_of(delivered.links().artifact(version, name), delivered.settings))
        assert answer.status_code == 200, (name, answer.text)
        (folder / name).write_bytes(answer.content)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_downloaded_manifest_verifies_with_openssl_and_the_published_key(
    delivered: Delivered, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivered.publish("run-1")
    keys = client.get("/signing-keys").json()
    (listed,) = keys["keys"]
    assert keys["current"] == listed["key_id"] == test_portal.SIGNER.key_id
    assert listed["url"] == f"{delivered.settings.api.public_url}/signing-keys/{listed['key_id']}.pem"
    assert listed["fingerprint"] == test_portal.SIGNER.fingerprint
    key_file = tmp_path / "key.pem"
    key_file.write_bytes(client.get(f"/signing-keys/{listed['key_id']}.pem").content)
    page = client.get(path_of(delivered.links().version_page(1), delivered.settings)).text
    assert listed["key_id"] in page and listed["fingerprint"] in page and listed["url"] in page

    download_version(client, delivered, 1, tmp_path / "v1")
    verified = openssl_verifies(tmp_path / "v1", key_file)
    assert verified.returncode == 0 and "Signature Verified Successfully" in verified.stdout

    # A rotated key signs from then on; the old version still verifies with the old key, listed still.
    rotated = ManifestSigner.generate()
    monkeypatch.setattr(test_portal, "SIGNER", rotated)
    delivered.publish("run-2")
    keys = client.get("/signing-keys").json()
    assert [k["key_id"] for k in keys["keys"]] == [listed["key_id"], rotated.key_id]
    assert keys["current"] == rotated.key_id
    download_version(client, delivered, 2, tmp_path / "v2")
    new_key = tmp_path / "new.pem"
    new_key.write_bytes(client.get(f"/signing-keys/{rotated.key_id}.pem").content)
    assert openssl_verifies(tmp_path / "v2", new_key).returncode == 0
    assert openssl_verifies(tmp_path / "v1", key_file).returncode == 0
    assert openssl_verifies(tmp_path / "v2", key_file).returncode != 0, "the old key does not verify the new"

    tampered = tmp_path / "v1" / "manifest.json"
    tampered.write_bytes(tampered.read_bytes().replace(b"cfn.yaml", b"cfm.yaml"))
    assert openssl_verifies(tmp_path / "v1", key_file).returncode != 0


def test_an_unknown_key_id_is_404(client: TestClient) -> None:
    assert client.get("/signing-keys/0123456789abcdef.pem").status_code == 404
    assert client.get("/signing-keys").json() == {"current": None, "keys": []}


def test_a_revoked_key_is_listed_with_the_moment_and_the_reason(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")
    key_id = test_portal.SIGNER.key_id

    answer = client.post(
        f"/signing-keys/{key_id}/revoke",
        json={"reason": "the key file was on a stolen laptop", "compromised_since": "2025-01-02T03:04:05Z"},
        headers={"Idempotency-Key": "revoke-1"},
    )

    assert answer.status_code == 200, answer.text
    assert answer.json()["revoked_at"] == "2025-01-02T03:04:05Z"
    (listed,) = client.get("/signing-keys").json()["keys"]
    assert listed["revoked_at"] == "2025-01-02T03:04:05Z"
    assert listed["revocation_reason"] == "the key file was on a stolen laptop"
    # The list alone is a trust anchor for the verifier: it carries each key itself.
    assert listed["public_key"] == test_portal.SIGNER.public_pem().decode()
    later = client.post(
        f"/signing-keys/{key_id}/revoke",
        json={"reason": "again", "compromised_since": "2025-06-01T00:00:00Z"},
        headers={"Idempotency-Key": "revoke-2"},
    )
    # An earlier revocation stands: the moment only moves back.
    assert later.json()["revoked_at"] == "2025-01-02T03:04:05Z"


def test_revoking_an_unknown_key_or_from_the_future_is_refused(
    delivered: Delivered, client: TestClient
) -> None:
    delivered.publish("run-1")

    unknown = client.post(
        "/signing-keys/0123456789abcdef/revoke",
        json={"reason": "lost"},
        headers={"Idempotency-Key": "revoke-1"},
    )
    future = client.post(
        f"/signing-keys/{test_portal.SIGNER.key_id}/revoke",
        json={"reason": "lost", "compromised_since": "2999-01-01T00:00:00Z"},
        headers={"Idempotency-Key": "revoke-2"},
    )

    assert unknown.status_code == 404
    assert future.status_code == 422 and future.json()["errors"][0]["field"] == "compromised_since"
    assert client.get("/signing-keys").json()["keys"][0]["revoked_at"] is None


def test_the_verify_tool_is_served_as_the_repository_holds_it(client: TestClient) -> None:
    answer = client.get("/tools/portal_verify.py")

    assert answer.status_code == 200
    assert answer.content == (Path(__file__).parents[2] / "portal_verify" / "__main__.py").read_bytes()
