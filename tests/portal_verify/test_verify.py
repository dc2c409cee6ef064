"""The customer's verify command on a downloaded portal version: a folder or an air-gap bundle .tar."""

from __future__ import annotations

import ast
import hashlib
import io
import json
import shutil
import sys
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pytest

from contracts.manifest import Manifest, ManifestArtifact
from delivery.manifest_signing import PUBLIC_KEY_NAME, SIGNATURE_NAME, ManifestSigner
from delivery.portal import MANIFEST_NAME, manifest_json
from portal_verify.__main__ import main
from tests.conftest import run_captured, run_module

PROJECT_ROOT = Path(__file__).resolve().parents[2]
VERIFY_SCRIPT = PROJECT_ROOT / "portal_verify" / "__main__.py"
CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
# How a bundle may come: a plain tar, or compressed by whoever copied it.
TarMode = Literal["w", "w:gz"]
FILES = {
    "edp.tar.gz": b"the edp archive " * 4096,
    "stack.cfn.yaml": b"Resources: {}\n",
    "seed.iso": b"\x00iso image\x00" * 100,
}


@dataclass
class Version:
    folder: Path
    signer: ManifestSigner

    def manifest(self) -> dict[str, object]:
        loaded: dict[str, object] = json.loads((self.folder / MANIFEST_NAME).read_bytes())
        return loaded


def sign_version(folder: Path, signer: ManifestSigner, files: dict[str, bytes]) -> None:
    """What the portal stores for a version (manifest, signature, public key), and the files beside it."""
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        cfg_id=CFG_ID,
        version=3,
        created_at=datetime(2025, 3, 1, 12, 0, tzinfo=UTC),
        deployment_target="onprem",
        artifacts=[
            ManifestArtifact(
                kind="edp" if name.startswith("edp") else "cfn" if name.endswith("yaml") else "iso",
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
    """The per-file lines of the output: file name -> status."""
    lines: dict[str, str] = {}
    for line in output.splitlines():
        status, _, rest = line.partition("  ")
        name = rest.strip().split(" ")[0]
        if name in FILES:
            lines[name] = status.strip()
    return lines


def test_a_complete_good_folder_verifies(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(version.folder), "--key", str(published_key), "--complete"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert status_lines(out) == dict.fromkeys(FILES, "OK")
    assert version.signer.key_id in out and version.signer.fingerprint in out
    assert "warning" not in err


def test_without_key_the_shipped_key_is_used_with_a_warning_naming_it(
    version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([str(version.folder)])

    out, err = capsys.readouterr()
    assert code == 0
    assert "warning" in err and "--key" in err and "signing-keys" in err
    # What the customer compares with the portal's published key.
    assert version.signer.key_id in out and version.signer.fingerprint in out


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


def test_a_file_not_downloaded_is_reported_and_fails_only_with_complete(
    version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / "seed.iso").unlink()

    partial = main([str(version.folder), "--key", str(published_key)])
    out, _ = capsys.readouterr()
    complete = main([str(version.folder), "--key", str(published_key), "--complete"])
    complete_out, _ = capsys.readouterr()

    assert partial == 0
    assert status_lines(out) == {"edp.tar.gz": "OK", "stack.cfn.yaml": "OK", "seed.iso": "not downloaded"}
    assert complete == 1
    assert status_lines(complete_out)["seed.iso"] == "not downloaded"
    assert "FAILED" in complete_out


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


def test_a_folder_re_signed_by_someone_else_fails_against_the_published_key(
    tmp_path: Path, version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Someone swaps files, manifest, signature and the shipped signing-key.pem for their own.
    forger = ManifestSigner.generate()
    sign_version(version.folder, forger, {**FILES, "stack.cfn.yaml": b"Resources: {Evil: {}}\n"})

    shipped = main([str(version.folder)])
    shipped_out, _ = capsys.readouterr()
    checked = main([str(version.folder), "--key", str(published_key)])
    _, checked_err = capsys.readouterr()

    # With the shipped key only the key id tells: it is not the portal's.
    assert shipped == 0
    assert forger.key_id in shipped_out and version.signer.key_id not in shipped_out
    assert checked == 1
    assert "BAD SIGNATURE" in checked_err


def test_a_key_file_that_is_no_public_key_fails(
    tmp_path: Path, version: Version, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_key = tmp_path / "key.pem"
    not_a_key.write_text("not a key\n")

    code = main([str(version.folder), "--key", str(not_a_key)])

    _, err = capsys.readouterr()
    assert code == 1
    assert "public key" in err


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

    code = main([str(archive), "--key", str(published_key), "--complete"])

    out, err = capsys.readouterr()
    assert code == 0, err
    assert status_lines(out) == dict.fromkeys(FILES, "OK")
    assert set(tmp_path.iterdir()) == {archive, published_key.parent}


def test_a_changed_file_in_a_bundle_is_a_mismatch(
    tmp_path: Path, version: Version, published_key: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (version.folder / "stack.cfn.yaml").write_bytes(b"Resources: {Evil: {}}\n")
    (version.folder / "seed.iso").unlink()
    archive = bundle_of(version.folder, tmp_path / "bundle.tar")

    code = main([str(archive), "--key", str(published_key)])

    out, _ = capsys.readouterr()
    assert code == 1
    assert status_lines(out) == {
        "edp.tar.gz": "OK",
        "stack.cfn.yaml": "MISMATCH",
        "seed.iso": "not in archive",
    }


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

    assert main([str(tmp_path / "absent")]) == 1
    assert main([str(not_tar)]) == 1
    _, err = capsys.readouterr()
    assert "absent" in err and "notes.txt" in err


def test_python_dash_m_portal_verify_runs(version: Version, published_key: Path) -> None:
    run = run_module(
        ["portal_verify", str(version.folder), "--key", str(published_key), "--complete"], cwd=PROJECT_ROOT
    )

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


def test_the_file_alone_runs_without_the_project(
    tmp_path: Path, version: Version, published_key: Path
) -> None:
    alone = tmp_path / "customer" / "portal_verify.py"
    alone.parent.mkdir()
    shutil.copy(VERIFY_SCRIPT, alone)
    project_packages = sorted(path.parent.name for path in PROJECT_ROOT.glob("*/__init__.py"))

    good = run_captured(
        [sys.executable, "-I", "-c", ALONE, ",".join(project_packages), str(alone), str(version.folder)],
        cwd=alone.parent,
    )
    (version.folder / "edp.tar.gz").write_bytes(b"changed")
    bad = run_captured(
        [sys.executable, "-I", "-c", ALONE, ",".join(project_packages), str(alone), str(version.folder)],
        cwd=alone.parent,
    )

    assert good.returncode == 0, good.stderr
    assert status_lines(good.stdout) == dict.fromkeys(FILES, "OK")
    assert bad.returncode == 1
    assert status_lines(bad.stdout)["edp.tar.gz"] == "MISMATCH"


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
