"""The embedded AWS (moto's server mode): it starts, bootstraps the bucket and sender, and serves S3/SES."""

from __future__ import annotations

import os
import pickle
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests
import yaml
from botocore.exceptions import BotoCoreError, ClientError

from platform_config.settings import PROJECT_ROOT, Settings
from standins.aws import AwsStandinError, bootstrap, start_aws_standin
from tests.conftest import serving_module

pytestmark = pytest.mark.slow

RECIPIENT = "customer@example.org"


def client(settings: Settings, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=settings.aws.endpoint_url,
        region_name=settings.aws.region,
        **settings.aws_credentials(),
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
        Content={
            "Simple": {"Subject": {"Data": "Your delivery"}, "Body": {"Text": {"Data": "See the portal."}}}
        },
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
    settings = make_settings(
        {"aws": {"region": "us-east-1"}, "artifacts": {"bucket": "platform-artifacts-use1"}}
    )
    server = start_aws_standin(settings)
    try:
        s3 = client(settings, "s3")
        assert s3.get_bucket_location(Bucket="platform-artifacts-use1")["LocationConstraint"] in (None, "")
    finally:
        server.stop()


def test_taken_port_fails_instead_of_hanging(aws_settings: Settings) -> None:
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
                "aws": {
                    "endpoint_url": f"http://127.0.0.1:{port}",
                    "public_endpoint_url": f"http://127.0.0.1:{port}",
                },
                # In memory: the local stage's .local/aws is the developer's, not the test's.
                "standins": {"aws": {"port": port, "state_dir": None}},
            }
        )
    )
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env.update(ENV="local", CFG_CUSTOMER_PATH=str(customer), SECRETS_PATH=str(tmp_path / "no-secrets.env"))
    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        region_name="eu-central-1",
        aws_access_key_id="standin",
        aws_secret_access_key="standin",
    )

    def bootstrapped() -> bool:
        try:
            return "platform-artifacts-local" in [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
        except Exception:  # noqa: BLE001 - not listening yet
            return False

    with serving_module("standins.aws", cwd=PROJECT_ROOT, env=env, ready=bootstrapped, timeout=30) as server:
        pass
    assert server.process.returncode == 0, server.stderr.decode()
    assert server.stdout == b""


# --- durability: `python -m standins.aws` with standins.aws.state_dir ----------------------------

BUCKET = "platform-artifacts-local"
SENDER = "deliveries@platform.example.com"


class AwsCli:
    """``python -m standins.aws`` on a free port; S3/SES kept in ``state_dir`` (None: in memory)."""

    def __init__(self, tmp_path: Path, port: int, state_dir: Path | None) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.state_dir = state_dir
        self.customer = tmp_path / "cfg.customer.yml"
        self.customer.write_text(
            yaml.safe_dump(
                {
                    "aws": {"endpoint_url": self.url, "public_endpoint_url": self.url},
                    "standins": {"aws": {"port": port, "state_dir": str(state_dir) if state_dir else None}},
                }
            )
        )
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
        self.env.update(
            ENV="local",
            CFG_CUSTOMER_PATH=str(self.customer),
            SECRETS_PATH=str(tmp_path / "no-secrets.env"),
            AWS_EC2_METADATA_DISABLED="true",
        )
        self.process: subprocess.Popen[bytes] | None = None

    def launch(self) -> subprocess.Popen[bytes]:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "standins.aws"],
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        return self.process

    def start(self) -> None:
        """Launch and wait until the bucket is there (as local_stack's health check would)."""
        process = self.launch()
        deadline = time.monotonic() + 30
        while not self._bootstrapped():
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the embedded AWS did not come up"
            time.sleep(0.1)

    def _bootstrapped(self) -> bool:
        try:
            self.client("s3").head_bucket(Bucket=BUCKET)
        except (BotoCoreError, ClientError):  # not listening, or the bucket is not there yet
            return False
        return True

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything that was not on disk already."""
        assert self.process is not None
        self.process.kill()
        self.process.communicate(timeout=10)

    def client(self, service: str) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.url,
            region_name="eu-central-1",
            aws_access_key_id="standin",
            aws_secret_access_key="standin",
        )

    def ses_data(self) -> dict[str, list[dict[str, Any]]]:
        """SES as moto's dashboard data shows it (what tests/deploy counts messages with)."""
        data: dict[str, Any] = requests.get(f"{self.url}/moto-api/data.json", timeout=10).json()
        return data.get("ses", {})


@pytest.fixture
def aws_cli(tmp_path: Path, free_port: Callable[[], int]) -> Iterator[Callable[[Path | None], AwsCli]]:
    started: list[AwsCli] = []

    def make(state_dir: Path | None) -> AwsCli:
        cli = AwsCli(tmp_path, free_port(), state_dir)
        started.append(cli)
        return cli

    yield make
    for cli in started:
        if cli.process is not None and cli.process.poll() is None:
            cli.process.kill()
            cli.process.communicate(timeout=10)


def _raw_email(subject: str) -> bytes:
    return f"From: {SENDER}\r\nTo: {RECIPIENT}\r\nSubject: {subject}\r\n\r\nYour portal: cfg-1\r\n".encode()


def test_objects_buckets_and_ses_messages_survive_kill_9_and_restart(
    aws_cli: Callable[[Path | None], AwsCli], tmp_path: Path
) -> None:
    state_dir = tmp_path / "aws"
    cli = aws_cli(state_dir)
    cli.start()
    s3 = cli.client("s3")
    pickled = os.urandom(300_000)
    objects = {
        "orders/cfg-1/config.json": (b'{"cfg_id": "cfg-1"}\n', "application/json"),
        "portal/cfg-1/index.html": (b"<html>portal</html>", "text/html; charset=utf-8"),
        "dagster-io/order/config/cfg-1": (pickled, "binary/octet-stream"),
    }
    for key, (body, content_type) in objects.items():
        s3.put_object(Bucket=BUCKET, Key=key, Body=body, ContentType=content_type)
    s3.create_bucket(
        Bucket="platform-artifacts-other", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"}
    )
    s3.put_object(Bucket="platform-artifacts-other", Key="a", Body=b"other")
    s3.put_object(Bucket=BUCKET, Key="tmp/gone", Body=b"deleted before the kill")
    s3.delete_object(Bucket=BUCKET, Key="tmp/gone")
    cli.client("sesv2").send_email(
        FromEmailAddress=SENDER,
        Destination={"ToAddresses": [RECIPIENT]},
        Content={"Raw": {"Data": _raw_email("v1")}},
    )
    cli.client("ses").send_email(
        Source=SENDER,
        Destination={"ToAddresses": [RECIPIENT]},
        Message={"Subject": {"Data": "classic"}, "Body": {"Text": {"Data": "x"}}},
    )
    # Killed right after the last acknowledgement: whatever was answered must be on disk already.
    cli.kill()

    cli.start()
    for key, (body, content_type) in objects.items():
        stored = s3.get_object(Bucket=BUCKET, Key=key)
        assert (stored["Body"].read(), stored["ContentType"]) == (body, content_type), key
    assert s3.get_object(Bucket="platform-artifacts-other", Key="a")["Body"].read() == b"other"
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket=BUCKET, Key="tmp/gone")
    names = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    assert sorted(names) == ["platform-artifacts-local", "platform-artifacts-other"]
    ses = cli.ses_data()
    assert [m["raw_data"] for m in ses["RawMessage"]] == [_raw_email("v1").decode()]
    assert [m["subject"] for m in ses["Message"]] == ["classic"]
    # One blob per stored object: the deleted one's bytes went with it.
    assert len(list((state_dir / "blobs").iterdir())) == 4

    # What was restored is written on like anything else, and survives the next kill too.
    s3.put_object(Bucket=BUCKET, Key="orders/cfg-2/config.json", Body=b"{}", ContentType="application/json")
    cli.client("sesv2").send_email(
        FromEmailAddress=SENDER,
        Destination={"ToAddresses": [RECIPIENT]},
        Content={"Raw": {"Data": _raw_email("v2")}},
    )
    cli.kill()
    cli.start()
    assert s3.get_object(Bucket=BUCKET, Key="orders/cfg-2/config.json")["Body"].read() == b"{}"
    assert s3.get_object(Bucket=BUCKET, Key="dagster-io/order/config/cfg-1")["Body"].read() == pickled
    assert len(cli.ses_data()["RawMessage"]) == 2


def test_multipart_versions_and_acl_changes_survive_a_restart(
    aws_cli: Callable[[Path | None], AwsCli], tmp_path: Path
) -> None:
    cli = aws_cli(tmp_path / "aws")
    cli.start()
    s3 = cli.client("s3")
    big = os.urandom(5 * 1024 * 1024 + 1000)
    upload = s3.create_multipart_upload(
        Bucket=BUCKET, Key="iso/iso.img", ContentType="application/octet-stream"
    )
    parts = []
    for number, chunk in enumerate((big[: 5 * 1024 * 1024], big[5 * 1024 * 1024 :]), start=1):
        etag = s3.upload_part(
            Bucket=BUCKET, Key="iso/iso.img", UploadId=upload["UploadId"], PartNumber=number, Body=chunk
        )
        parts.append({"ETag": etag["ETag"], "PartNumber": number})
    s3.complete_multipart_upload(
        Bucket=BUCKET, Key="iso/iso.img", UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    pending = s3.create_multipart_upload(Bucket=BUCKET, Key="pending.bin")["UploadId"]
    s3.upload_part(Bucket=BUCKET, Key="pending.bin", UploadId=pending, PartNumber=1, Body=b"p" * 1000)
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    first = s3.put_object(Bucket=BUCKET, Key="versioned", Body=b"one")["VersionId"]
    second = s3.put_object(Bucket=BUCKET, Key="versioned", Body=b"two")["VersionId"]
    # Changed in place, after its first snapshot.
    s3.put_object_acl(Bucket=BUCKET, Key="versioned", ACL="public-read")
    cli.kill()

    cli.start()
    assert s3.get_object(Bucket=BUCKET, Key="iso/iso.img")["Body"].read() == big
    assert [
        part["PartNumber"]
        for part in s3.list_parts(Bucket=BUCKET, Key="pending.bin", UploadId=pending)["Parts"]
    ] == [1]
    versions = s3.list_object_versions(Bucket=BUCKET, Prefix="versioned")["Versions"]
    assert sorted(version["VersionId"] for version in versions) == sorted([first, second])
    assert s3.get_object(Bucket=BUCKET, Key="versioned", VersionId=first)["Body"].read() == b"one"
    assert s3.get_object(Bucket=BUCKET, Key="versioned")["Body"].read() == b"two"
    grants = s3.get_object_acl(Bucket=BUCKET, Key="versioned")["Grants"]
    assert any(
        grant["Permission"] == "READ" and "AllUsers" in grant["Grantee"].get("URI", "") for grant in grants
    )


def test_without_state_dir_a_restart_starts_empty(
    aws_cli: Callable[[Path | None], AwsCli], tmp_path: Path
) -> None:
    cli = aws_cli(None)
    cli.start()
    cli.client("s3").put_object(Bucket=BUCKET, Key="kept-in-memory", Body=b"x")
    cli.kill()
    cli.start()
    # Bootstrapped again, and nothing else: moto's in-memory behaviour, with nothing on disk.
    assert cli.client("s3").list_objects_v2(Bucket=BUCKET).get("KeyCount") == 0
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cfg.customer.yml"]


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"\x00 not a pickle at all", "cannot read"),
        (pickle.dumps({"format": 1, "moto": "0.0.1"}), "written by moto 0.0.1"),
    ],
    ids=["garbage", "other-moto-version"],
)
def test_an_unreadable_state_file_stops_the_start_and_names_the_file(
    aws_cli: Callable[[Path | None], AwsCli], tmp_path: Path, content: bytes, reason: str
) -> None:
    state_dir = tmp_path / "aws"
    state_dir.mkdir()
    (state_dir / "state.pickle").write_bytes(content)
    process = aws_cli(state_dir).launch()
    _, stderr = process.communicate(timeout=30)
    assert process.returncode != 0
    message = stderr.decode()
    assert str(state_dir / "state.pickle") in message
    assert reason in message
    # Left as it was, for the operator to look at; nothing was started on top of it.
    assert (state_dir / "state.pickle").read_bytes() == content
