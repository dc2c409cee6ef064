"""The edge images' release: both images pushed and pinned, saved into the archive, recorded.

``release_edge_images`` pushes the images `make images` built (tagged
``<registry>/<name>:<version>``) to the stage's registry, which answers with the digest each is
pinned by; saves exactly those images into ``edge-images/edge-images-<version>.tar`` (an air-gap
bundle carries it, since an offline site cannot pull); publishes the archive's SBOM
(``delivery.sbom``) and, last, the release record (``delivery.edge_release``) that delivered
compose files take their pinned references from.

    python -m delivery.edge_image_archive --bucket BUCKET --registry R [--version V] [--endpoint-url URL]

The stage's bucket, endpoint and registry are the stage settings' ``artifacts.bucket``,
``aws.endpoint_url`` and ``edge.registry``; delivery reads no settings (see the README's code
layout), so they are passed in. Credentials come from boto3's own chain (``AWS_*`` variables, the
instance role).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import boto3

from delivery.airgap import checked_images_version, edge_images_key
from delivery.artifact_store import ArtifactStore, StoredObject
from delivery.edge_bundle import EdgeImages
from delivery.edge_release import (
    SBOM_CONTENT_TYPE,
    EdgeRelease,
    ReleasedEdgeImages,
    ReleasedImage,
    edge_sbom_key,
    publish_edge_release,
)
from delivery.sbom import edge_images_sbom

EDGE_IMAGES_CONTENT_TYPE = "application/x-tar"
# The project's distribution: its version is pyproject.toml's (the venv is reinstalled when that
# changes), the tag `make images` gives the images.
DISTRIBUTION = "platform-api"
DOCKER_TIMEOUT_SECONDS = 1800
INSPECT_TIMEOUT_SECONDS = 60
CHUNK_SIZE = 1024 * 1024
# The line `docker push` ends with: "<tag>: digest: sha256:<hex> size: <bytes>".
PUSHED_DIGEST = re.compile(r"digest: (sha256:[0-9a-f]{64}) size: \d+")


class EdgeImagesError(RuntimeError):
    """The images cannot be saved: the message says which and what to do."""


def _docker(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except FileNotFoundError:
        raise EdgeImagesError(f"{argv[0]} is not installed: saving the edge images needs Docker") from None
    except subprocess.TimeoutExpired:
        raise EdgeImagesError(f"`{' '.join(argv[:2])}` did not end within {timeout:.0f} s") from None


def image_id(image: str, docker: str = "docker") -> str:
    """The engine's id of ``image`` (the sha256 of its config); an image the engine lacks is named in the error."""
    inspected = _docker([docker, "image", "inspect", "--format", "{{.Id}}", image], INSPECT_TIMEOUT_SECONDS)
    if inspected.returncode == 0:
        return inspected.stdout.strip()
    detail = inspected.stderr.strip() or inspected.stdout.strip()
    if "no such image" in detail.lower():
        raise EdgeImagesError(
            f"edge image {image} is not on the Docker engine: build it with `make images` "
            "(with EDGE_REGISTRY=<registry> when the stack names the images under a registry)"
        )
    raise EdgeImagesError(f"cannot inspect edge image {image}: {detail[-500:]}")


def push_edge_image(image: str, docker: str = "docker") -> ReleasedImage:
    """Push ``image`` (a tag) and pin it by the digest the registry answered.

    The engine records the digest reference with the push, so ``<tag>@<digest>`` resolves on this
    engine from then on, as it does on every engine that pulls it.
    """
    before = image_id(image, docker)
    pushed = _docker([docker, "push", image], DOCKER_TIMEOUT_SECONDS)
    if pushed.returncode != 0:
        detail = pushed.stderr.strip() or pushed.stdout.strip()
        raise EdgeImagesError(f"docker push {image} failed: {detail[-500:]}")
    digests = PUSHED_DIGEST.findall(pushed.stdout)
    if len(digests) != 1:
        raise EdgeImagesError(f"docker push {image} named no one digest: {pushed.stdout.strip()[-500:]}")
    reference = f"{image}@{digests[0]}"
    # What was pushed is what the tag named before, and the engine resolves the pinned reference to it.
    if image_id(reference, docker) != before:
        raise EdgeImagesError(f"{image} changed while it was pushed: release again")
    return ReleasedImage(reference=reference, image_id=before)


def push_edge_images(images: EdgeImages, docker: str = "docker") -> ReleasedEdgeImages:
    """Push both images (tags under the stage's registry) and pin them."""
    if images.is_pinned:
        raise ValueError("push the tags, not pinned references")
    return ReleasedEdgeImages(
        gateway=push_edge_image(images.gateway, docker), fixtures=push_edge_image(images.fixtures, docker)
    )


def archive_image_ids(archive: Path) -> dict[str, str]:
    """Each tag a ``docker save`` archive holds -> the id its image gets when loaded (its config's sha256)."""
    with tarfile.open(archive) as tar:
        member = tar.extractfile("manifest.json")
        if member is None:
            raise EdgeImagesError(f"{archive} has no manifest.json: not a docker save archive")
        entries = json.loads(member.read())
    held: dict[str, str] = {}
    for entry in entries:
        # Docker 20.10 names the config "<hex>.json", OCI archives "blobs/sha256/<hex>".
        config = str(entry["Config"]).removesuffix(".json").rsplit("/", 1)[-1]
        for tag in entry.get("RepoTags") or []:
            held[tag] = f"sha256:{config}"
    return held


def save_edge_images(images: EdgeImages, out: Path, docker: str = "docker") -> None:
    """``docker save`` both edge images to ``out`` under their tags; an image the engine lacks is named in the error."""
    tags = images.tags()
    for image in (tags.gateway, tags.fixtures):
        image_id(image, docker)
    saved = _docker([docker, "save", "-o", str(out), tags.gateway, tags.fixtures], DOCKER_TIMEOUT_SECONDS)
    if saved.returncode != 0:
        out.unlink(missing_ok=True)
        detail = saved.stderr.strip() or saved.stdout.strip()
        raise EdgeImagesError(f"docker save of {tags.gateway} and {tags.fixtures} failed: {detail[-500:]}")


def save_released_images(released: ReleasedEdgeImages, out: Path, docker: str = "docker") -> None:
    """Save the pushed images, and check the archive holds exactly them: a tag moved since the push
    would put other images into the archive than the record pins."""
    save_edge_images(released.tags(), out, docker)
    held = archive_image_ids(out)
    for image in (released.gateway, released.fixtures):
        if held.get(image.tag) != image.image_id:
            out.unlink(missing_ok=True)
            raise EdgeImagesError(
                f"the archive holds {image.tag} as {held.get(image.tag, 'nothing')}, "
                f"the release pushed {image.image_id}: release again"
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
    """Push the edge images `make images` built, save and publish them with their SBOM and release record."""
    parser = argparse.ArgumentParser(prog="python -m delivery.edge_image_archive", description=main.__doc__)
    parser.add_argument("--bucket", required=True, help="the stage's artifact bucket (artifacts.bucket)")
    parser.add_argument(
        "--registry",
        required=True,
        help="registry the stage's stacks pull the images from (edge.registry); the images are pushed there",
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
    if not args.registry.strip("/"):
        parser.error(
            "--registry must name the registry the images are pushed to: a release pins them by digest"
        )
    s3 = boto3.client("s3", endpoint_url=args.endpoint_url, region_name=args.region)
    release_edge_images(
        EdgeImages.release(args.registry, args.version),
        ArtifactStore(s3, args.bucket),
        args.version,
        args.docker,
    )


def release_edge_images(
    images: EdgeImages, store: ArtifactStore, version: str, docker: str = "docker"
) -> EdgeRelease:
    """Push ``images``, save and publish them, their SBOM and the release record; print where, or
    exit naming what is missing."""
    with tempfile.TemporaryDirectory(prefix="edge-images-") as scratch:
        archive = Path(scratch) / "edge-images.tar"
        try:
            released = push_edge_images(images, docker)
            save_released_images(released, archive, docker)
        except EdgeImagesError as error:
            sys.exit(str(error))
        stored = publish_edge_images(store, version, archive)
        sbom = store.put(
            edge_sbom_key(version),
            edge_images_sbom(archive, version=version, images=released.images()),
            SBOM_CONTENT_TYPE,
        )
    release = EdgeRelease(
        version=version,
        gateway=released.gateway,
        fixtures=released.fixtures,
        archive=stored,
        sbom=sbom,
    )
    record = publish_edge_release(store, release)
    for image in (release.gateway, release.fixtures):
        print(f"{image.reference} (image {image.image_id})")
    for obj in (stored, sbom):
        print(f"s3://{store.bucket}/{obj.key} ({obj.size} bytes, sha256 {obj.sha256})")
    print(f"s3://{store.bucket}/{record.key} (release record)")
    return release


if __name__ == "__main__":
    main()
