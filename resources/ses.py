"""SES (v2) as a Dagster resource, with the local outbox a person can read.

The client makes exactly one attempt per request: botocore's own retries would send an email
again when SES accepted it but its answer was lost (a read timeout, a dropped connection).
``delivery.email_dispatch`` retries only what certainly did not reach SES, with
``send_attempts`` and ``send_backoff_seconds`` (:meth:`SesResource.send_policy`).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from dagster import ConfigurableResource
from pydantic import Field

from delivery.email_dispatch import SendPolicy


def single_attempt_config(*, connect_timeout_seconds: float, read_timeout_seconds: float) -> Config:
    """botocore client settings for sending: one attempt per request, bounded waits."""
    return Config(
        retries={"total_max_attempts": 1},
        connect_timeout=connect_timeout_seconds,
        read_timeout=read_timeout_seconds,
    )


class SesResource(ConfigurableResource):
    region_name: str = Field(description="AWS region of the SES identity.")
    endpoint_url: str | None = Field(
        default=None, description="SES endpoint; set only for the embedded stand-in."
    )
    aws_access_key_id: str | None = Field(
        default=None,
        description="Only the stand-in's placeholder key; real keys come from the environment or role.",
    )
    aws_secret_access_key: str | None = Field(
        default=None, description="Only the stand-in's placeholder secret."
    )
    sender: str = Field(description="Verified SES identity delivery emails come from.")
    outbox_dir: str | None = Field(
        default=None, description="When set, every sent email is also written here as .eml."
    )
    send_attempts: int = Field(
        default=4,
        ge=1,
        description="SES requests per email at most, when the earlier ones certainly did not reach SES.",
    )
    send_backoff_seconds: float = Field(
        default=1.0, ge=0, description="Wait before the 2nd attempt; doubled before each further one."
    )
    connect_timeout_seconds: float = Field(
        default=5.0, gt=0, description="Connect timeout of one SES request."
    )
    read_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description="Read timeout of one SES request; past it the email's outcome is unknown.",
    )

    def get_client(self) -> Any:
        """A sesv2 client that makes one attempt per request (see the module doc)."""
        return boto3.session.Session().client(
            "sesv2",
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.aws_access_key_id,
            aws_secret_access_key=self.aws_secret_access_key,
            config=single_attempt_config(
                connect_timeout_seconds=self.connect_timeout_seconds,
                read_timeout_seconds=self.read_timeout_seconds,
            ),
        )

    def send_policy(self) -> SendPolicy:
        return SendPolicy(attempts=self.send_attempts, backoff_seconds=self.send_backoff_seconds)
