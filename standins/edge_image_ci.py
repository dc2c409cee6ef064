"""Stand-in for the edge images' release CI, which publishes the archive air-gap bundles carry.

A release saves the delivered stack's images (``docker save`` of ems-edge-gateway and
ems-industrial-fixtures under ``edge.registry``) and puts the archive at
``edge-images/edge-images-<version>.tar`` in the artifact bucket (``python -m
delivery.edge_image_archive --bucket ...`` with the release's AWS credentials). Locally that is
this command: it saves the images `make images` built on this engine and publishes them to the
stage's embedded S3, as the HMI CI stand-in does with an APK. Run it with
``python -m standins.edge_image_ci`` (or ``make edge-images``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import boto3

from delivery.artifact_store import ArtifactStore
from delivery.edge_bundle import EdgeImages
from delivery.edge_image_archive import EdgeImagesError, publish_edge_images, save_edge_images
from platform_config.settings import PROJECT_VERSION, ConfigError, load_settings


def main(argv: list[str] | None = None) -> None:
    """Save the edge images built here and publish them to the current stage's artifact bucket."""
    parser = argparse.ArgumentParser(prog="python -m standins.edge_image_ci", description=main.__doc__)
    parser.add_argument("--docker", default="docker", help="the docker client (default: docker)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    # In beta the release CI owns edge-images/: an archive of a developer's images would reach customers.
    if not settings.standins.aws.enabled:
        sys.exit(
            f"the edge images stand-in only publishes to the embedded AWS; stage {settings.stage!r} uses real AWS"
        )
    s3 = boto3.client(
        "s3",
        endpoint_url=settings.aws.endpoint_url,
        region_name=settings.aws.region,
        **settings.aws_credentials(),
    )
    images = EdgeImages.release(settings.edge.registry, PROJECT_VERSION)
    with tempfile.TemporaryDirectory(prefix="edge-images-") as scratch:
        archive = Path(scratch) / "edge-images.tar"
        try:
            save_edge_images(images, archive, docker=args.docker)
        except EdgeImagesError as error:
            sys.exit(str(error))
        stored = publish_edge_images(ArtifactStore(s3, settings.artifacts.bucket), PROJECT_VERSION, archive)
    print(f"s3://{settings.artifacts.bucket}/{stored.key} ({stored.size} bytes, sha256 {stored.sha256})")


if __name__ == "__main__":
    main()
