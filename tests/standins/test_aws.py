"""The embedded AWS (moto's server mode): it starts, bootstraps the bucket and sender, and serves S3/SES."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml
from botocore.exceptions import ClientError

from resources.settings import PROJECT_ROOT, Settings
from standins import aws as aws_standin
from standins.aws import AwsStandinError, bootstrap, start_aws_standin

pytestmark = pytest.mark.slow

RECIPIENT = "customer@example.org"


def client(settings: Settings, service: str) -> Any:
    return boto3.client(
        service, endpoint_url=settings.aws.endpoint_url, region_name=settings.aws.region, **settings.aws_credentials()
    )


@pytest.fixture
def aws_settings(make_settings: Callable[[dict[str, Any]], Settings]) -> Settings:
    return make_settings({})


@pytest.fixture
def running_aws(aws_settings: Settings) -> Iterator[Settings]:
    server = start_aws_standin(aws_settings)
    try:
        yield aws_settings
    finally:
        server.stop()


def test_bucket_exists_and_stores_objects(running_aws: Settings) -> None:
    s3 = client(running_aws, "s3")
    bucket = running_aws.artifacts.bucket
    location = s3.get_bucket_location(Bucket=bucket)["LocationConstraint"]
    assert location == running_aws.aws.region
    s3.put_object(Bucket=bucket, Key="orders/cfg-1/config.json", Body=b'{"ok": true}\n')
    assert s3.get_object(Bucket=bucket, Key="orders/cfg-1/config.json")["Body"].read() == b'{"ok": true}\n'


def test_sender_is_verified_for_both_ses_apis(running_aws: Settings) -> None:
    sender = running_aws.email.sender
    sent = client(running_aws, "sesv2").send_email(
        FromEmailAddress=sender,
        Destination={"ToAddresses": [RECIPIENT]},
        Content={"Simple": {"Subject": {"Data": "Your delivery"}, "Body": {"Text": {"Data": "See the portal."}}}},
    )
    assert sent["MessageId"]
    classic = client(running_aws, "ses").send_email(
        Source=sender,
        Destination={"ToAddresses": [RECIPIENT]},
        Message={"Subject": {"Data": "Your delivery"}, "Body": {"Text": {"Data": "See the portal."}}},
    )
    assert classic["MessageId"]

    with pytest.raises(ClientError) as rejected:
        client(running_aws, "sesv2").send_email(
            FromEmailAddress="stranger@elsewhere.example.net",
            Destination={"ToAddresses": [RECIPIENT]},
            Content={"Simple": {"Subject": {"Data": "x"}, "Body": {"Text": {"Data": "x"}}}},
        )
    assert rejected.value.response["Error"]["Code"] == "MessageRejected"


def test_bootstrap_can_be_repeated(running_aws: Settings) -> None:
    bootstrap(running_aws)
    buckets = [bucket["Name"] for bucket in client(running_aws, "s3").list_buckets()["Buckets"]]
    assert buckets.count(running_aws.artifacts.bucket) == 1


def test_us_east_1_bucket_needs_no_location_constraint(
    make_settings: Callable[[dict[str, Any]], Settings],
) -> None:
    settings = make_settings({"aws": {"region": "us-east-1"}, "artifacts": {"bucket": "platform-artifacts-use1"}})
    server = start_aws_standin(settings)
    try:
        s3 = client(settings, "s3")
        assert s3.get_bucket_location(Bucket="platform-artifacts-use1")["LocationConstraint"] in (None, "")
    finally:
        server.stop()


def test_taken_port_fails_instead_of_hanging(aws_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aws_standin, "START_TIMEOUT_SECONDS", 2.0)
    with socket.socket() as squatter:
        squatter.bind((aws_settings.standins.aws.host, aws_settings.standins.aws.port))
        squatter.listen()
        started = time.monotonic()
        with pytest.raises(AwsStandinError, match="cannot listen"):
            start_aws_standin(aws_settings)
        assert time.monotonic() - started < 10


def test_cli_bootstraps_and_stops_on_sigterm(tmp_path: Path, free_port: Callable[[], int]) -> None:
    port = free_port()
    customer = tmp_path / "cfg.customer.yml"
    customer.write_text(
        yaml.safe_dump(
            {
                "aws": {"endpoint_url": f"http://127.0.0.1:{port}", "public_endpoint_url": f"http://127.0.0.1:{port}"},
                "standins": {"aws": {"port": port}},
            }
        )
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(ENV="local", CFG_CUSTOMER_PATH=str(customer), SECRETS_PATH=str(tmp_path / "no-secrets.env"))
    process = subprocess.Popen(
        [sys.executable, "-m", "standins.aws"], cwd=PROJECT_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        s3 = boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name="eu-central-1",
            aws_access_key_id="standin",
            aws_secret_access_key="standin",
        )
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
                if "platform-artifacts-local" in names:
                    break
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            assert time.monotonic() < deadline, "the embedded AWS did not come up"
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=20)
    assert process.returncode == 0, stderr.decode()
    assert stdout == b""
