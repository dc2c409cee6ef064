"""The edge images archive: a ``docker save`` of both edge images, published once per release.

An air-gap bundle carries the images its stack runs, since an offline site cannot pull them. The
release publishes ``edge-images/<version>.tar`` to the stage's bucket (the images `make images`
built, under the names the delivered compose files give them), and each bundle copies it in.

    python -m delivery.edge_image_archive --bucket BUCKET [--registry R] [--version V] [--endpoint-url URL]

The stage's bucket, endpoint and registry are the stage settings' ``artifacts.bucket``,
``aws.endpoint_url`` and ``edge.registry``; delivery reads no settings (see the README's code
layout), so they are passed in. Credentials come from boto3's own chain (``AWS_*`` variables, the
instance role).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import boto3

from delivery.airgap import checked_images_version, edge_images_key
from delivery.artifact_store import ArtifactStore, StoredObject
from delivery.edge_bundle import EdgeImages

EDGE_IMAGES_CONTENT_TYPE = "application/x-tar"
# The project's distribution: its version is pyproject.toml's (the venv is reinstalled when that
# changes), the tag `make images` gives the images.
DISTRIBUTION = "platform-api"
DOCKER_TIMEOUT_SECONDS = 1800
INSPECT_TIMEOUT_SECONDS = 60
CHUNK_SIZE = 1024 * 1024


class EdgeImagesError(RuntimeError):
    """The images cannot be saved: the message says which and what to do."""


def _docker(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise EdgeImagesError(f"{argv[0]} is not installed: saving the edge images needs Docker") from None
    except subprocess.TimeoutExpired:
        raise EdgeImagesError(f"`{' '.join(argv[:2])}` did not end within {timeout:.0f} s") from None


def save_edge_images(images: EdgeImages, out: Path, docker: str = "docker") -> None:
    """``docker save`` both edge images to ``out``; an image the engine lacks is named in the error."""
    for image in (images.gateway, images.fixtures):
        inspected = _docker(
            [docker, "image", "inspect", "--format", "{{.Id}}", image], INSPECT_TIMEOUT_SECONDS
        )
        if inspected.returncode == 0:
            continue
        detail = inspected.stderr.strip() or inspected.stdout.strip()
        if "no such image" in detail.lower():
            raise EdgeImagesError(
                f"edge image {image} is not on the Docker engine: build it with `make images` "
                "(with EDGE_REGISTRY=<registry> when the stack names the images under a registry)"
            )
        raise EdgeImagesError(f"cannot inspect edge image {image}: {detail[-500:]}")
    saved = _docker([docker, "save", "-o", str(out), images.gateway, images.fixtures], DOCKER_TIMEOUT_SECONDS)
    if saved.returncode != 0:
        out.unlink(missing_ok=True)
        detail = saved.stderr.strip() or saved.stdout.strip()
        raise EdgeImagesError(
            f"docker save of {images.gateway} and {images.fixtures} failed: {detail[-500:]}"
        )


def publish_edge_images(store: ArtifactStore, version: str, archive: Path) -> StoredObject:
    """Upload ``archive`` to ``edge_images_key(version)`` with its sha256, as ``ArtifactStore.put`` stores it.

    Metadata is fixed when an upload starts, so the file is hashed first (read in chunks), then
    uploaded by boto3's transfer manager (multipart for a large file), never held in memory.
    """
    key = edge_images_key(version)
    if not tarfile.is_tarfile(archive):
        raise ValueError(f"{archive} is not a tar archive (docker save writes one)")
    with archive.open("rb") as stream:
        return store.put_file(key, stream, EDGE_IMAGES_CONTENT_TYPE)


def _version_arg(value: str) -> str:
    try:
        return checked_images_version(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> None:
    """Save the edge images `make images` built and publish them to the stage's artifact bucket."""
    parser = argparse.ArgumentParser(prog="python -m delivery.edge_image_archive", description=main.__doc__)
    parser.add_argument("--bucket", required=True, help="the stage's artifact bucket (artifacts.bucket)")
    parser.add_argument(
        "--registry",
        default="",
        help="registry the stage's stacks name the images under (edge.registry; default '': local names)",
    )
    parser.add_argument(
        "--version",
        type=_version_arg,
        default=importlib.metadata.version(DISTRIBUTION),
        help="release version, the images' tag (default: the project's version)",
    )
    parser.add_argument("--endpoint-url", help="S3 endpoint (aws.endpoint_url; default: AWS's)")
    parser.add_argument("--region", help="AWS region (aws.region; default: boto3's)")
    parser.add_argument("--docker", default="docker", help="the docker client (default: docker)")
    args = parser.parse_args(argv)
    s3 = boto3.client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
    release_edge_images(
        EdgeImages.release(args.registry, args.version),
        ArtifactStore(s3, args.bucket),
        args.version,
        args.docker,
    )


def release_edge_images(
    images: EdgeImages, store: ArtifactStore, version: str, docker: str = "docker"
) -> None:
    """Save ``images`` and publish the archive to ``store``; print where, or exit naming what is missing."""
    with tempfile.TemporaryDirectory(prefix="edge-images-") as scratch:
        archive = Path(scratch) / "edge-images.tar"
        try:
            save_edge_images(images, archive, docker=docker)
        except EdgeImagesError as error:
            sys.exit(str(error))
        stored = publish_edge_images(store, version, archive)
    print(f"s3://{store.bucket}/{stored.key} ({stored.size} bytes, sha256 {stored.sha256})")


if __name__ == "__main__":
    main()
