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

from delivery.artifact_store import ArtifactStore
from delivery.edge_bundle import EdgeImages
from delivery.edge_image_archive import release_edge_images
from platform_config.settings import PROJECT_VERSION
from standins.hmi_ci import embedded_stage_s3


def main(argv: list[str] | None = None) -> None:
    """Save the edge images built here and publish them to the current stage's artifact bucket."""
    parser = argparse.ArgumentParser(prog="python -m standins.edge_image_ci", description=main.__doc__)
    parser.add_argument("--docker", default="docker", help="the docker client (default: docker)")
    args = parser.parse_args(argv)
    # In beta the release CI owns edge-images/: an archive of a developer's images would reach customers.
    settings, s3 = embedded_stage_s3("the edge images stand-in")
    images = EdgeImages.release(settings.edge.registry, PROJECT_VERSION)
    release_edge_images(images, ArtifactStore(s3, settings.artifacts.bucket), PROJECT_VERSION, args.docker)


if __name__ == "__main__":
    main()
