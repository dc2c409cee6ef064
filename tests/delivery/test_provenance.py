"""Provenance: the in-toto statement's fields, and DSSE envelopes that another implementation checks."""

from __future__ import annotations

import base64
import json
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

import delivery.provenance as provenance
from delivery.manifest_signing import ManifestSigner, key_id_of
from delivery.provenance import (
    BUILD_TYPE,
    PAYLOAD_TYPE,
    dsse_envelope,
    platform_source_revision,
    provenance_statement,
    verify_dsse,
)

CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
CREATED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
COMMIT = "7222a47d781ae6272e852c3636ca36f944a4e776"
GATEWAY_DIGEST = "f" * 64


def sha(char: str) -> str:
    return char * 64


def statement(**overrides: Any) -> bytes:
    arguments: dict[str, Any] = {
        "subjects": [("edp.tar.gz", sha("a")), ("cfn.yaml", sha("b")), ("sbom.cdx.json", sha("0"))],
        "cfg_id": CFG_ID,
        "version": 3,
        "created_at": CREATED_AT,
        "config_sha256": sha("c"),
        "edp_job_id": "job-42",
        "dtm_sha256": sha("d"),
        "apk_key": "hmi/hmi-2.3.0.apk",
        "apk_sha256": sha("e"),
        "platform_version": "0.1.0",
        "source_revision": COMMIT,
        "image_references": {
            "gateway": f"registry.example:5000/ems/ems-edge-gateway:0.1.0@sha256:{GATEWAY_DIGEST}",
            "fixtures": "ems-industrial-fixtures:0.1.0",
        },
        "run_ids": ["run-b", "run-a"],
        "builder_id": "https://ems.example/platform-api/dagster",
    }
    return provenance_statement(**{**arguments, **overrides})


def dependencies(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in document["predicate"]["buildDefinition"]["resolvedDependencies"]}


def test_statement_fields() -> None:
    document = json.loads(statement())
    assert document["_type"] == "https://in-toto.io/Statement/v1"
    assert document["predicateType"] == "https://slsa.dev/provenance/v1"
    assert document["subject"] == [
        {"name": "cfn.yaml", "digest": {"sha256": sha("b")}},
        {"name": "edp.tar.gz", "digest": {"sha256": sha("a")}},
        {"name": "sbom.cdx.json", "digest": {"sha256": sha("0")}},
    ]
    build = document["predicate"]["buildDefinition"]
    assert build["buildType"] == BUILD_TYPE
    assert build["externalParameters"] == {"cfg_id": CFG_ID, "portalVersion": 3}
    assert build["internalParameters"] == {"platformVersion": "0.1.0"}
    resolved = dependencies(document)
    assert resolved["config.json"] == {"name": "config.json", "digest": {"sha256": sha("c")}}
    assert resolved["edp-job"]["uri"] == "edp-job:job-42"
    assert resolved["dtm.json"]["digest"] == {"sha256": sha("d")}
    assert resolved["hmi/hmi-2.3.0.apk"]["digest"] == {"sha256": sha("e")}
    assert resolved["platform-api"] == {"name": "platform-api", "digest": {"gitCommit": COMMIT}}
    assert resolved["gateway"] == {
        "name": "gateway",
        "uri": "pkg:docker/ems/ems-edge-gateway@0.1.0?repository_url=registry.example:5000",
        "digest": {"sha256": GATEWAY_DIGEST},
    }
    # Not pinned by digest (a local build): named only.
    assert resolved["fixtures"] == {"name": "fixtures", "uri": "pkg:docker/ems-industrial-fixtures@0.1.0"}

    run = document["predicate"]["runDetails"]
    assert run["builder"] == {"id": "https://ems.example/platform-api/dagster"}
    assert run["metadata"] == {
        "invocationId": "run-b",
        "startedOn": "2025-03-01T12:00:00Z",
        "finishedOn": "2025-03-01T12:00:00Z",
    }
    assert [b["uri"] for b in run["byproducts"]] == ["dagster-run:run-b", "dagster-run:run-a"]


def test_statement_without_apk_or_commit() -> None:
    document = json.loads(
        statement(apk_key=None, apk_sha256=None, source_revision="unknown", image_references={})
    )
    resolved = dependencies(document)
    assert set(resolved) == {"config.json", "edp-job", "dtm.json", "platform-api"}
    assert resolved["platform-api"] == {
        "name": "platform-api",
        "uri": "pkg:generic/platform-api@0.1.0",
        "annotations": {"revision": "unknown"},
    }


def test_statement_is_canonical_and_deterministic() -> None:
    first = statement()
    assert statement() == first
    assert first == json.dumps(json.loads(first), sort_keys=True, separators=(",", ":")).encode()
    # The caller's subject order does not matter; the instant's time zone does not either.
    reordered = statement(
        subjects=[("sbom.cdx.json", sha("0")), ("edp.tar.gz", sha("a")), ("cfn.yaml", sha("b"))],
        created_at=CREATED_AT.astimezone(timezone(timedelta(hours=2))),
    )
    assert reordered == first


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"subjects": [("edp.tar.gz", "ABC")]}, "the sha256 of subject 'edp.tar.gz'"),
        ({"subjects": []}, "subject: List should have at least 1 item"),
        ({"subjects": [("a", sha("a")), ("a", sha("b"))]}, "subjects named more than once: a"),
        ({"config_sha256": "nope"}, "config_sha256 is not a sha256"),
        ({"apk_sha256": None}, "apk_key and apk_sha256 come together"),
        ({"run_ids": []}, "run_ids is empty"),
        ({"created_at": datetime(2025, 3, 1)}, "created_at has no time zone"),
    ],
)
def test_statement_refuses(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        statement(**overrides)


def test_source_revision(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("PLATFORM_SOURCE_REVISION", COMMIT)
    assert platform_source_revision() == COMMIT
    monkeypatch.delenv("PLATFORM_SOURCE_REVISION")
    if (provenance.PROJECT_ROOT / ".git").exists():
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=provenance.PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert platform_source_revision() == head
    monkeypatch.setattr(provenance, "PROJECT_ROOT", tmp_path)
    assert platform_source_revision() == "unknown"


# --- DSSE -----------------------------------------------------------------------------------


def sslib_key(signer: ManifestSigner) -> SSlibKey:
    """The signer's public key as securesystemslib names an ed25519 key: raw 32 bytes in hex."""
    public = serialization.load_pem_public_key(signer.public_pem())
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return SSlibKey(
        keyid=key_id_of(signer.public_pem()),
        keytype="ed25519",
        scheme="ed25519",
        keyval={"public": raw.hex()},
    )


def sslib_verify(envelope: bytes, key: SSlibKey) -> bytes:
    parsed = Envelope.from_dict(json.loads(envelope))
    parsed.verify([key], 1)
    return parsed.payload


def tampered(envelope: bytes) -> bytes:
    document = json.loads(envelope)
    payload = json.loads(base64.b64decode(document["payload"]))
    payload["subject"][0]["digest"]["sha256"] = sha("9")
    document["payload"] = base64.b64encode(json.dumps(payload).encode()).decode()
    return json.dumps(document).encode()


def test_envelope_verifies_with_securesystemslib_and_here() -> None:
    signer = ManifestSigner.generate()
    payload = statement()
    envelope = dsse_envelope(payload, PAYLOAD_TYPE, signer)
    document = json.loads(envelope)
    assert set(document) == {"payload", "payloadType", "signatures"}
    assert document["payloadType"] == "application/vnd.in-toto+json"
    assert document["signatures"][0]["keyid"] == signer.key_id
    assert len(base64.b64decode(document["signatures"][0]["sig"])) == 64
    assert sslib_verify(envelope, sslib_key(signer)) == payload
    assert verify_dsse(envelope, signer.public_pem()) == payload
    # The same key signs the same payload to the same bytes (Ed25519 is deterministic).
    assert dsse_envelope(payload, PAYLOAD_TYPE, signer) == envelope


def test_tampered_payload_fails_both_verifiers() -> None:
    signer = ManifestSigner.generate()
    envelope = tampered(dsse_envelope(statement(), PAYLOAD_TYPE, signer))
    with pytest.raises(VerificationError):
        sslib_verify(envelope, sslib_key(signer))
    with pytest.raises(ValueError, match=f"no signature of the envelope verifies under key {signer.key_id}"):
        verify_dsse(envelope, signer.public_pem())


def test_another_key_fails_both_verifiers() -> None:
    signer, other = ManifestSigner.generate(), ManifestSigner.generate()
    envelope = dsse_envelope(statement(), PAYLOAD_TYPE, signer)
    # Under the other key's id too, so securesystemslib does try it rather than skip it.
    impostor = SSlibKey(
        keyid=signer.key_id, keytype="ed25519", scheme="ed25519", keyval=sslib_key(other).keyval
    )
    for key in (sslib_key(other), impostor):
        with pytest.raises(VerificationError):
            sslib_verify(envelope, key)
    with pytest.raises(ValueError, match="no signature of the envelope verifies"):
        verify_dsse(envelope, other.public_pem())


def test_payload_type_is_signed() -> None:
    signer = ManifestSigner.generate()
    document = json.loads(dsse_envelope(b"{}", PAYLOAD_TYPE, signer))
    document["payloadType"] = "application/json"
    retyped = json.dumps(document).encode()
    with pytest.raises(ValueError, match="payloadType is 'application/json'"):
        verify_dsse(retyped, signer.public_pem())
    with pytest.raises(ValueError, match="no signature of the envelope verifies"):
        verify_dsse(retyped, signer.public_pem(), payload_type=None)
    with pytest.raises(VerificationError):
        sslib_verify(retyped, sslib_key(signer))


def test_an_envelope_from_securesystemslib_verifies_here() -> None:
    """The other direction: securesystemslib signs, verify_dsse checks (URL-safe base64 and all)."""
    from securesystemslib.signer import CryptoSigner

    signer = ManifestSigner.generate()
    private = serialization.load_pem_private_key(signer.private_pem(), password=None)
    crypto_signer = CryptoSigner(private, sslib_key(signer))
    envelope = Envelope(payload=b'{"x":1}', payload_type=PAYLOAD_TYPE, signatures={})
    envelope.sign(crypto_signer)
    document = envelope.to_dict()
    document["payload"] = document["payload"].replace("+", "-").replace("/", "_").rstrip("=")
    assert verify_dsse(json.dumps(document).encode(), signer.public_pem()) == b'{"x":1}'


@pytest.mark.parametrize(
    ("envelope", "message"),
    [
        (b"[]", "not a JSON object"),
        (b"{", "not JSON"),
        (
            b'{"payloadType": "application/vnd.in-toto+json", "payload": "!!", "signatures": []}',
            "payload is not base64",
        ),
        (
            b'{"payloadType": "application/vnd.in-toto+json", "payload": "", "signatures": []}',
            "no signatures",
        ),
        (
            b'{"payloadType": "application/vnd.in-toto+json", "payload": "", "signatures": [{"sig": 1}]}',
            "signature 0's sig is not a base64 string",
        ),
    ],
)
def test_malformed_envelopes(envelope: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        verify_dsse(envelope, ManifestSigner.generate().public_pem())
