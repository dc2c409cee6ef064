"""The edge images archive: saved from the engine, published with its sha256, loadable from a bundle."""

from __future__ import annotations

import hashlib
import io
import shlex
import subprocess
import sys
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from delivery.airgap import bundle_problems, edge_images_name
from delivery.artifact_store import ArtifactStore
from delivery.edge_bundle import EdgeImages
from delivery.edge_image_archive import (
    EDGE_IMAGES_CONTENT_TYPE,
    EdgeImagesError,
    main,
    publish_edge_images,
    save_edge_images,
)
from platform_config.settings import PROJECT_VERSION
from tests.conftest import run_captured
from tests.delivery.test_airgap import ARTIFACTS, BundleInputs, readme_command
from tests.docker_engine import BuiltImages, DockerEngine

BUCKET = "platform-artifacts-test"
REGION = "eu-central-1"
IMAGES = EdgeImages.release("", "0.1.0")
# Above boto3's default multipart threshold (8 MiB): the upload goes in parts.
LARGE = 9 * 1024 * 1024


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "standin",
        "AWS_SECRET_ACCESS_KEY": "standin",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
        yield client


def tar_of(path: Path, size: int) -> Path:
    """A tar as docker save writes one, with one member of ``size`` bytes."""
    payload = bytes(range(251)) * (size // 251 + 1)
    with tarfile.open(path, "w") as archive:
        info = tarfile.TarInfo("blobs/sha256/layer")
        info.size = size
        archive.addfile(info, io.BytesIO(payload[:size]))
    return path


def test_publish_stores_the_archive_with_its_sha256(s3: Any, tmp_path: Path) -> None:
    archive = tar_of(tmp_path / "images.tar", LARGE)
    data = archive.read_bytes()

    stored = publish_edge_images(ArtifactStore(s3, BUCKET), "0.1.0", archive)

    assert stored.key == "edge-images/edge-images-0.1.0.tar" and stored.name == edge_images_name("0.1.0")
    assert (stored.size, stored.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    got = s3.get_object(Bucket=BUCKET, Key=stored.key)
    assert got["Body"].read() == data
    assert got["ContentType"] == EDGE_IMAGES_CONTENT_TYPE
    # As ArtifactStore.put stores every object: what the bundle's builder checks against.
    assert got["Metadata"] == {"sha256": stored.sha256}
    assert got["ETag"].strip('"').endswith("-2"), "a large archive is uploaded in parts"


def test_publish_refuses_what_is_not_a_tar_or_not_a_version(s3: Any, tmp_path: Path) -> None:
    store = ArtifactStore(s3, BUCKET)
    not_tar = tmp_path / "images.tar"
    not_tar.write_bytes(b"not a tar at all")

    with pytest.raises(ValueError, match="not a tar archive"):
        publish_edge_images(store, "0.1.0", not_tar)
    with pytest.raises(ValueError, match="not a release version"):
        publish_edge_images(store, "../0.1.0", tar_of(tmp_path / "ok.tar", 10))
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET)


FAKE_DOCKER = """#!{python}
# A docker client as far as save_edge_images uses it; the images it knows are in $KNOWN_IMAGES.
import os, sys, tarfile
args = sys.argv[1:]
known = os.environ.get("KNOWN_IMAGES", "").split()
with open(os.environ["DOCKER_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[:2] == ["image", "inspect"]:
    if args[-1] not in known:
        sys.exit(print("Error response from daemon: No such image: " + args[-1], file=sys.stderr) or 1)
    print("sha256:" + "0" * 64)
elif args[0] == "save":
    out = args[args.index("-o") + 1]
    with tarfile.open(out, "w") as archive:
        archive.addfile(tarfile.TarInfo("manifest.json"))
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


def test_the_cli_saves_and_publishes_under_the_release_version(
    s3: Any, fake_docker: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    images = EdgeImages.release("ghcr.io/example", PROJECT_VERSION)
    monkeypatch.setenv("KNOWN_IMAGES", f"{images.gateway} {images.fixtures}")

    main(["--bucket", BUCKET, "--registry", "ghcr.io/example", "--docker", str(fake_docker)])

    key = f"edge-images/edge-images-{PROJECT_VERSION}.tar"
    assert capsys.readouterr().out.startswith(f"s3://{BUCKET}/{key} ")
    body = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
    with tarfile.open(fileobj=io.BytesIO(body)) as archive:
        assert archive.getnames() == ["manifest.json"]

    with pytest.raises(SystemExit, match="is not on the Docker engine"):
        main(["--bucket", BUCKET, "--version", "9.9.9", "--docker", str(fake_docker)])
    with pytest.raises(SystemExit):
        main(["--bucket", BUCKET, "--version", "../x"])


def docker(*argv: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return run_captured(["docker", *argv], timeout=timeout)


def image_id(image: str) -> str | None:
    inspected = docker("image", "inspect", "--format", "{{.Id}}", image)
    return inspected.stdout.strip() if inspected.returncode == 0 else None


@pytest.mark.slow
@pytest.mark.docker
def test_the_archive_in_a_bundle_loads_into_an_engine(
    docker_engine: DockerEngine, built_images: BuiltImages, tmp_path: Path
) -> None:
    # The built images under a registry of the test's own, as a stage's stack names them: the
    # copies can be removed and loaded again without touching what `make images` built.
    images = EdgeImages.release(f"localhost/airgap-test-{uuid.uuid4().hex[:8]}", PROJECT_VERSION)
    tagged = {images.gateway: built_images.edge_gateway, images.fixtures: built_images.industrial_fixtures}
    try:
        for copy, built in tagged.items():
            assert docker("tag", built, copy).returncode == 0
        archive = tmp_path / "saved.tar"
        save_edge_images(images, archive)

        name = edge_images_name(PROJECT_VERSION)
        others = {n: entry for n, entry in ARTIFACTS.items() if entry[0] != "images"}
        # Streamed from disk into the bundle: the archive is hundreds of MB.
        inputs = BundleInputs(files={**others, name: ("images", archive)}, images=images)
        bundle = tmp_path / "bundle.tar"
        with bundle.open("wb") as out:
            inputs.write(out)
        with bundle.open("rb") as stream:
            assert bundle_problems(stream, inputs.manifest) == []

        with tarfile.open(bundle) as tar:
            tar.extractall(tmp_path / "site", filter="data")
        folder = tmp_path / "site" / f"airgap-v{inputs.version}"
        load = readme_command((folder / "README.txt").read_text(), "docker load")
        assert load == f"docker load -i {name}"
        for copy in tagged:
            assert docker("rmi", copy).returncode == 0
            assert image_id(copy) is None

        loaded = run_captured(shlex.split(load), cwd=folder, timeout=600)

        assert loaded.returncode == 0, loaded.stderr
        for copy, built in tagged.items():
            assert f"Loaded image: {copy}" in loaded.stdout
            assert image_id(copy) == image_id(built)
    finally:
        for copy in tagged:
            docker("rmi", copy)
