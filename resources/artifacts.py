"""The stage's artifact bucket as a Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from dagster_aws.s3 import S3Resource
from pydantic import Field

from delivery.artifact_store import ArtifactStore


class ArtifactBucketResource(ConfigurableResource):
    s3: S3Resource
    bucket: str = Field(description="The stage's artifact bucket.")
    public_endpoint_url: str | None = Field(
        default=None, description="Endpoint presigned download URLs name (the embedded S3's address as a browser sees it)."
    )

    def get_store(self) -> ArtifactStore:
        return ArtifactStore(self.s3.get_client(), self.bucket)

    def get_presigning_store(self) -> ArtifactStore:
        """A store whose presigned URLs point where the customer's browser can reach."""
        if self.public_endpoint_url is None or self.public_endpoint_url == self.s3.endpoint_url:
            return self.get_store()
        public = self.s3.model_copy(update={"endpoint_url": self.public_endpoint_url})
        return ArtifactStore(public.get_client(), self.bucket)
