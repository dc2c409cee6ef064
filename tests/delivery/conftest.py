"""Fixtures of the delivery tests."""

from __future__ import annotations

import boto3
import pytest

from delivery.artifact_store import ArtifactStore
from resources.settings import Settings


@pytest.fixture
def store(pipeline_settings: Settings) -> ArtifactStore:
    """The test's own bucket on the embedded S3 (moto's server)."""
    client = boto3.client(
        "s3",
        endpoint_url=pipeline_settings.aws.endpoint_url,
        region_name=pipeline_settings.aws.region,
        **pipeline_settings.aws_credentials(),
    )
    return ArtifactStore(client, pipeline_settings.artifacts.bucket)
