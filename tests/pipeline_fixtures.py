"""What the tests of the pipeline's steps share: clients of the stage's servers, made as the pipeline makes them."""

from __future__ import annotations

from typing import Any

import boto3

from platform_config.settings import Settings


def s3_client(settings: Settings) -> Any:
    """A client of the stage's S3: in the tests the embedded moto server, with the stand-in's credentials."""
    return boto3.client(
        "s3",
        endpoint_url=settings.aws.endpoint_url,
        region_name=settings.aws.region,
        **settings.aws_credentials(),
    )
