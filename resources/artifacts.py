"""The stage's artifact bucket as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from delivery.artifact_store import ArtifactStore
from resources.s3 import S3Resource


class ArtifactBucketResource(ConfigurableResource):
    s3: S3Resource
    bucket: str = Field(description="The stage's artifact bucket.")

    def get_store(self) -> ArtifactStore:
        return ArtifactStore(self.s3.get_client(), self.bucket)
