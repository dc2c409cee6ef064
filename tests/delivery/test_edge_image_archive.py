"""The edge images archive: saved from the engine, published with its sha256, loadable from a bundle."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import subprocess
import sys
import tarfile
import uuid
from pathlib import Path
from typing import Any

import pytest

from delivery.airgap import bundle_problems, edge_images_name
from delivery.artifact_store import ArtifactStore
from delivery.edge_bundle import (
    COMPOSE_NAME,
    FIXTURES_IMAGE_NAME,
    GATEWAY_IMAGE_NAME,
    EdgeImages,
    compose_file,
)
from delivery.edge_image_archive import (
    EDGE_IMAGES_CONTENT_TYPE,
    EdgeImagesError,
    main,
    publish_edge_images,
    push_edge_images,
    release_edge_images,
    save_edge_images,
    save_released_images,
)
from delivery.edge_release import (
    LOADED_IMAGES_OVERRIDE_NAME,
    load_edge_release,
    loaded_images_override,
    release_sbom,
)
from industrial_fixtures import load_fixture_dtm, load_manifest
from platform_config.settings import PROJECT_VERSION
from standins.edge_image_ci import LoopbackRegistry, tag_for_registry
from tests.conftest import run_captured
from tests.delivery.conftest import MOTO_BUCKET
from tests.delivery.test_airgap import ARTIFACTS, BundleInputs, readme_command
from tests.docker_engine import BuiltImages, DockerEngine

BUCKET = MOTO_BUCKET
IMAGES = EdgeImages.release("", "0.1.0")
# Above boto3's default multipart threshold (8 MiB): the upload goes in parts.
LARGE = 9 * 1024 * 1024


def tar_of(path: Path, size: int) -> Path:
    """A tar as docker save writes one, with one member of ``size`` bytes."""
    payload = bytes(range(251)) * (size // 251 + 1)
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("blobs/sha256/layer")
        info.size = size
        archive.addfile(info, io.BytesIO(payload[:size]))
    return path


def test_publish_stores_the_archive_with_its_sha256(moto_s3: Any, tmp_path: Path) -> None:
    archive = tar_of(tmp_path / "images.tar", LARGE)
    data = archive.read_bytes()

    stored = publish_edge_images(ArtifactStore(moto_s3, BUCKET), "0.1.0", archive)

    assert stored.key == "edge-images/edge-images-0.1.0.tar" and stored.name == edge_images_name("0.1.0")
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    got = moto_s3.get_object(Bucket=BUCKET, Key=stored.key)
    assert got["Body"].read() == data
    assert got["ContentType"] == EDGE_IMAGES_CONTENT_TYPE
    # As ArtifactStore.put stores every object: what the bundle's builder checks against.
    assert got["Metadata"] == {"sha256": stored.sha256}
    assert got["ETag"].strip('"').endswith("-2"), "a large archive is uploaded in parts"


def test_publish_refuses_what_is_not_a_tar_or_not_a_version(moto_s3: Any, tmp_path: Path) -> None:
    store = ArtifactStore(moto_s3, BUCKET)
    not_tar = tmp_path / "images.tar"
    not_tar.write_bytes(b"not a tar at all")

    with pytest.raises(ValueError, match="not a tar archive"):
        publish_edge_images(store, "0.1.0", not_tar)
    with pytest.raises(ValueError, match="not a release version"):
        publish_edge_images(store, "../0.1.0", tar_of(tmp_path / "ok.tar", 10))
    assert "Contents" not in moto_s3.list_objects_v2(Bucket=BUCKET)


FAKE_DOCKER = """#!{python}
# A docker client as far as the release uses it; the images it knows are in $KNOWN_IMAGES, all
# with one id; a push answers a digest made of the name.
import hashlib, io, json, os, sys, tarfile
args = sys.argv[1:]
known = os.environ.get("KNOWN_IMAGES", "").split()
with open(os.environ["DOCKER_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
def digest(name):
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()
def knows(ref):
    tag, _, pinned = ref.partition("@")
    return tag in known and (not pinned or pinned == digest(tag))
if args[:2] == ["image", "inspect"]:
    if not knows(args[-1]):
        sys.exit(print("Error response from daemon: No such image: " + args[-1], file=sys.stderr) or 1)
    print("sha256:" + "0" * 64)
elif args[0] == "push":
    if args[1] not in known:
        sys.exit(print("An image does not exist locally with the tag: " + args[1], file=sys.stderr) or 1)
    print(args[1].rsplit(":", 1)[1] + ": digest: " + digest(args[1]) + " size: 1578")
elif args[0] == "save":
    out = args[args.index("-o") + 1]
    manifest = [dict(Config="0" * 64 + ".json", RepoTags=[tag], Layers=[]) for tag in args[3:]]
    data = json.dumps(manifest).encode()
    with tarfile.open(out, "w") as archive:
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
else:
    sys.exit(2)
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    script = tmp_path / "docker"
    script.write_text(FAKE_DOCKER.format(python=sys.executable))
    script.chmod(0o755)
    monkeypatch.setenv("DOCKER_LOG", str(tmp_path / "docker.log"))
    return script


def test_save_names_the_image_the_engine_lacks(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KNOWN_IMAGES", IMAGES.gateway)
    out = tmp_path / "images.tar"

    with pytest.raises(EdgeImagesError, match=f"edge image {IMAGES.fixtures} is not on the Docker engine"):
        save_edge_images(IMAGES, out, docker=str(fake_docker))
    assert not out.exists()


def test_save_saves_both_images_into_one_archive(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KNOWN_IMAGES", f"{IMAGES.gateway} {IMAGES.fixtures}")
    out = tmp_path / "images.tar"

    save_edge_images(IMAGES, out, docker=str(fake_docker))

    assert tarfile.is_tarfile(out)
    calls = (tmp_path / "docker.log").read_text().splitlines()
    assert calls[-1] == f"save -o {out} {IMAGES.gateway} {IMAGES.fixtures}"


def test_save_without_docker_says_so(tmp_path: Path) -> None:
    with pytest.raises(EdgeImagesError, match="is not installed"):
        save_edge_images(IMAGES, tmp_path / "images.tar", docker=str(tmp_path / "no-docker"))


def test_the_cli_pushes_pins_saves_and_publishes_under_the_release_version(
    moto_s3: Any, fake_docker: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = EdgeImages.release("ghcr.io/example", PROJECT_VERSION)
    monkeypatch.setenv("KNOWN_IMAGES", f"{images.gateway} {images.fixtures}")

    main(["--bucket", BUCKET, "--registry", "ghcr.io/example", "--docker", str(fake_docker)])

    key = f"edge-images/edge-images-{PROJECT_VERSION}.tar"
    out = capsys.readouterr().out
    assert f"s3://{BUCKET}/{key} " in out
    body = moto_s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert archive.getnames() == ["manifest.json"]
    store = ArtifactStore(moto_s3, BUCKET)
    release = load_edge_release(store, PROJECT_VERSION)
    assert release is not None
    pinned = EdgeImages(
        gateway=f"{images.gateway}@sha256:{hashlib.sha256(images.gateway.encode()).hexdigest()}",
        fixtures=f"{images.fixtures}@sha256:{hashlib.sha256(images.fixtures.encode()).hexdigest()}",
    )
    assert release.images() == pinned
    assert release.archive.key == key and release.archive.sha256 == hashlib.sha256(body).hexdigest()
    assert (
        release.sbom is not None and release.sbom.key == f"edge-images/edge-images-{PROJECT_VERSION}.cdx.json"
    )
    assert (
        json.loads(moto_s3.get_object(Bucket=BUCKET, Key=release.sbom.key)["Body"].read())["bomFormat"]
        == "CycloneDX"
    )
    calls = (fake_docker.parent / "docker.log").read_text().splitlines()
    assert [c for c in calls if c.startswith(("push", "save"))] == [
        f"push {images.gateway}",
        f"push {images.fixtures}",
        f"save -o {calls[-1].split()[2]} {images.gateway} {images.fixtures}",
    ]

    with pytest.raises(SystemExit, match="is not on the Docker engine"):
        main(
            [
                "--bucket",
                BUCKET,
                "--registry",
                "r.example",
                "--version",
                "9.9.9",
                "--docker",
                str(fake_docker),
            ]
        )
    assert load_edge_release(store, "9.9.9") is None
    with pytest.raises(SystemExit):
        main(["--bucket", BUCKET, "--version", "../x"])
    with pytest.raises(SystemExit):
        main(["--bucket", BUCKET, "--registry", "", "--docker", str(fake_docker)])


def test_a_tag_moved_after_the_push_is_not_saved(
    fake_docker: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    images = EdgeImages.release("r.example", "0.1.0")
    monkeypatch.setenv("KNOWN_IMAGES", f"{images.gateway} {images.fixtures}")
    released = push_edge_images(images, docker=str(fake_docker))
    moved = released.model_copy(
        update={"fixtures": released.fixtures.model_copy(update={"image_id": "sha256:" + "1" * 64})}
    )
    out = tmp_path / "images.tar"

    with pytest.raises(
        EdgeImagesError, match=f"holds {images.fixtures} as sha256:0+, the release pushed sha256:1+"
    ):
        save_released_images(moved, out, docker=str(fake_docker))
    assert not out.exists()


def docker(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_captured(["docker", *argv], timeout=timeout)


def image_id(image: str) -> str | None:
    inspected = docker("image", "inspect", "--format", "{{.Id}}", image)
    return inspected.stdout.strip() if inspected.returncode == 0 else None


def canonical(reference: str) -> str:
    """How ``docker image rm`` names a digest reference: the repository and the digest, no tag."""
    if "@" not in reference:
        return reference
    tagged, digest = reference.split("@", 1)
    return f"{tagged.rsplit(':', 1)[0]}@{digest}"


@pytest.mark.slow
@pytest.mark.docker
def test_the_released_archive_holds_exactly_the_pinned_images(
    docker_engine: DockerEngine, built_images: BuiltImages, moto_s3: Any, tmp_path: Path
) -> None:
    """The release as a stage runs it (a registry of the test's own on loopback, moto's S3), then
    an air-gapped site: the archive loaded from a bundle, the stack started pinned by image id."""
    built = EdgeImages(gateway=built_images.edge_gateway, fixtures=built_images.industrial_fixtures)
    store = ArtifactStore(moto_s3, BUCKET)
    registry = LoopbackRegistry()
    names: list[str] = []
    project = f"ems-airgap-{uuid.uuid4().hex[:8]}"
    site = tmp_path / "site"
    try:
        registry.start()
        names += [f"{registry.address}/{GATEWAY_IMAGE_NAME}:{PROJECT_VERSION}"]
        names += [f"{registry.address}/{FIXTURES_IMAGE_NAME}:{PROJECT_VERSION}"]
        images = tag_for_registry(built, registry.address, PROJECT_VERSION)
        release = release_edge_images(images, store, PROJECT_VERSION)
        names += [release.gateway.reference, release.fixtures.reference]

        assert release == load_edge_release(store, PROJECT_VERSION)
        for image, source in ((release.gateway, built.gateway), (release.fixtures, built.fixtures)):
            # Pinned by the digest the registry answered, resolved by the engine, the image built.
            assert image.tag == f"{registry.address}/{source}"
            assert image_id(image.reference) == image.image_id == image_id(source)
        assert release.sbom is not None and release_sbom(store, release)

        name = edge_images_name(PROJECT_VERSION)
        archive = tmp_path / name
        moto_s3.download_file(BUCKET, release.archive.key, str(archive))
        assert hashlib.sha256(archive.read_bytes()).hexdigest() == release.archive.sha256
        others = {n: entry for n, entry in ARTIFACTS.items() if entry[0] != "images"}
        # Streamed from disk into the bundle.
        inputs = BundleInputs(files={**others, name: ("images", archive)}, images=release.images())
        bundle = tmp_path / "bundle.tar"
        with bundle.open("wb") as out:
            inputs.write(out)
        with bundle.open("rb") as stream:
            assert bundle_problems(stream, inputs.manifest, inputs.signer.public_pem()) == []
        with tarfile.open(bundle) as tar:
            tar.extractall(site, filter="data")
        folder = site / f"airgap-v{inputs.version}"
        load = readme_command((folder / "README.txt").read_text(), "docker load")
        assert load == f"docker load -i {name}"

        # The site has none of the release's names: no tag, no digest reference.
        for reference in reversed(names):
            assert docker("image", "rm", "--no-prune", canonical(reference)).returncode == 0
            assert image_id(reference) is None
        loaded = run_captured(shlex.split(load), cwd=folder, timeout=600)

        assert loaded.returncode == 0, loaded.stderr
        assert sorted(
            line for line in loaded.stdout.splitlines() if line.startswith("Loaded image")
        ) == sorted(f"Loaded image: {image.tag}" for image in (release.gateway, release.fixtures))
        for image in (release.gateway, release.fixtures):
            # Exactly the pinned images: the ids the record holds, under their tags.
            assert image_id(image.tag) == image.image_id
            # Docker's classic store records no digest reference on load: the pinned name does not
            # resolve offline, which is why the site starts the stack by image id.
            assert image_id(image.reference) in (None, image.image_id)

        stack = site / "stack"
        stack.mkdir()
        compose = compose_file(
            dtm=load_fixture_dtm(), images=release.images(), fixtures=load_manifest().fixtures
        )
        (stack / COMPOSE_NAME).write_bytes(compose)
        (stack / LOADED_IMAGES_OVERRIDE_NAME).write_bytes(loaded_images_override(compose, release))
        fixture = load_manifest().fixtures[0].hostname
        argv = [*docker_engine.compose, "-p", project, "-f", COMPOSE_NAME, "-f", LOADED_IMAGES_OVERRIDE_NAME]
        started = run_captured(
            [*argv, "--profile", "fixtures", "up", "--detach", "--pull", "never", "--no-deps", fixture],
            cwd=stack,
            timeout=120,
        )
        assert started.returncode == 0, started.stderr
        container = run_captured(
            [*argv, "--profile", "fixtures", "ps", "--quiet", fixture], cwd=stack
        ).stdout.strip()
        assert (
            docker("inspect", "--format", "{{.Image}}", container).stdout.strip() == release.fixtures.image_id
        )
    finally:
        if (site / "stack").is_dir():
            run_captured(
                [
                    *docker_engine.compose,
                    "-p",
                    project,
                    "-f",
                    COMPOSE_NAME,
                    "--profile",
                    "fixtures",
                    "down",
                    "-v",
                ],
                cwd=site / "stack",
                timeout=120,
            )
        for reference in reversed(names):
            docker("image", "rm", "--no-prune", canonical(reference))
        registry.stop()
