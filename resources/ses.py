"""SES (v2) as a Dagster resource, with the local outbox a person can read."""

from __future__ import annotations

from typing import Any

import boto3
from dagster import ConfigurableResource
from pydantic import Field


class SesResource(ConfigurableResource):
    region_name: str = Field(description="AWS region of the SES identity.")
    endpoint_url: str | None = Field(default=None, description="SES endpoint; set only for the embedded stand-in.")
    aws_access_key_id: str | None = Field(default=None, description="Only the stand-in's placeholder key; real keys come from the environment or role.")
    aws_secret_access_key: str | None = Field(default=None, description="Only the stand-in's placeholder secret.")
    sender: str = Field(description="Verified SES identity delivery emails come from.")
    outbox_dir: str | None = Field(default=None, description="When set, every sent email is also written here as .eml.")

    def get_client(self) -> Any:
        return boto3.session.Session().client(
            "sesv2",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
        )
