"""S3 for the pipeline's steps: a boto3 client as a resource, and the IO manager that keeps outputs in S3.

The shape of dagster-aws's ``S3Resource`` and ``S3PickleIOManager`` (the same object keys, the
same retry mode), without importing dagster-aws: its package import pulls in Dagster's components
framework, about 1 s of CPU in every process that loads the code location (the code server and
each run worker). dagster-aws stays the deployment's library for ECS and the S3 compute logs.
"""

from __future__ import annotations

import functools
import io
import pickle
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from dagster import (
    ConfigurableIOManagerFactory,
    ConfigurableResource,
    InitResourceContext,
    InputContext,
    MetadataValue,
    OutputContext,
    UPathIOManager,
)
from pydantic import Field
from upath import UPath

PICKLE_PROTOCOL = 4


class S3Resource(ConfigurableResource):
    region_name: str | None = Field(default=None, description="AWS region of the S3 client.")
    endpoint_url: str | None = Field(
        default=None, description="S3 endpoint; unset: AWS's own (the embedded S3 locally)."
    )
    max_attempts: int = Field(
        default=5, description="Attempts of one request, the first included (botocore's standard retry mode)."
    )
    aws_access_key_id: str | None = Field(
        default=None,
        description="Only for the embedded stand-in's placeholder key; elsewhere the environment or role.",
    )
    aws_secret_access_key: str | None = Field(default=None, description="As aws_access_key_id.")

    def get_client(self) -> Any:
        return _s3_client(
            self.region_name,
            self.endpoint_url,
            self.max_attempts,
            self.aws_access_key_id,
            self.aws_secret_access_key,
        )


@functools.cache
def _s3_client(
    region_name: str | None,
    endpoint_url: str | None,
    max_attempts: int,
    key_id: str | None,
    secret: str | None,
) -> Any:
    # One client per process and configuration: making one costs 0.1 to 0.5 s of CPU (botocore
    # loads and parses the service model), and every step of a run asks for S3 several times.
    # botocore clients are safe to share between threads.
    return boto3.session.Session().client(
        "s3",
        region_name=region_name,
        endpoint_url=endpoint_url,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        config=Config(retries={"max_attempts": max_attempts, "mode": "standard"}),
    )


class PickledObjectS3IOManager(UPathIOManager):
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client = client
        self.bucket = bucket
        super().__init__(base_path=UPath(prefix))

    def load_from_path(self, context: InputContext, path: UPath) -> Any:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=path.as_posix())["Body"].read()
        except self.client.exceptions.NoSuchKey:
            raise FileNotFoundError(f"Could not find file {path} in S3 bucket {self.bucket}") from None
        # Our own steps wrote it, into the platform's own bucket.
        return pickle.loads(body)

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        self.client.upload_fileobj(
            io.BytesIO(pickle.dumps(obj, PICKLE_PROTOCOL)), self.bucket, path.as_posix()
        )

    def path_exists(self, path: UPath) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=path.as_posix())
        except ClientError:
            return False
        return True

    def unlink(self, path: UPath) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=path.as_posix())

    def make_directory(self, path: UPath) -> None:
        # S3 has no directories.
        return None

    def get_metadata(self, context: OutputContext, obj: Any) -> dict[str, MetadataValue]:
        return {"uri": MetadataValue.path(f"s3://{self.bucket}/{self._get_path(context).as_posix()}")}


class S3PickleIOManager(ConfigurableIOManagerFactory):
    """Outputs pickled to ``s3://<s3_bucket>/<s3_prefix>/<asset key>/<partition>``, as dagster-aws's."""

    s3_resource: S3Resource
    s3_bucket: str = Field(description="Bucket the outputs are kept in.")
    s3_prefix: str = Field(default="dagster", description="Key prefix of the outputs.")

    def create_io_manager(self, context: InitResourceContext) -> PickledObjectS3IOManager:
        return PickledObjectS3IOManager(self.s3_resource.get_client(), self.s3_bucket, self.s3_prefix)
