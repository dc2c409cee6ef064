"""The embedded AWS of the local and demo stages: moto's server mode, serving S3 and SES over HTTP.

``start_aws_standin`` starts the server on ``standins.aws.host/port`` and bootstraps what the
real account has already: the stage's artifact bucket and a verified SES sender. The pipeline
reaches it through ``aws.endpoint_url`` like it reaches real AWS.

Run it with ``python -m standins.aws`` (settings of the stage named by ``ENV``).
"""

from __future__ import annotations

import logging
import signal
import socket
import sys
import threading
from types import FrameType

import boto3
from botocore.exceptions import BotoCoreError, ClientError
from moto.server import ThreadedMotoServer

from resources.settings import ConfigError, Settings, load_settings

START_TIMEOUT_SECONDS = 15.0
US_EAST_1 = "us-east-1"


class AwsStandinError(RuntimeError):
    """The embedded AWS could not be started or bootstrapped."""


def _quiet_request_log() -> None:
    # werkzeug logs every request at INFO unless someone configured its logger; keep the stage's output readable.
    logger = logging.getLogger("werkzeug")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.WARNING)


def _ensure_port_free(host: str, port: int) -> None:
    # Same socket options as werkzeug's server, so this bind fails exactly when moto's would.
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise AwsStandinError(f"the embedded AWS cannot listen on {host}:{port}: {exc.strerror}") from None


def _start(server: ThreadedMotoServer, host: str, port: int) -> None:
    # ThreadedMotoServer.start() waits forever when the bind fails inside its thread (werkzeug
    # exits that thread and the ready event is never set). The port is probed first for a clear
    # error; a start that still stalls (the port taken in between) is given up on after a timeout.
    starter = threading.Thread(target=server.start, name="aws-standin-start", daemon=True)
    starter.start()
    starter.join(START_TIMEOUT_SECONDS)
    if starter.is_alive():
        raise AwsStandinError(f"the embedded AWS did not start on {host}:{port} (is the port in use?)")


def bootstrap(settings: Settings) -> None:
    """Create the stage's artifact bucket and verify the SES sender; safe to repeat."""
    client_args = {
        "endpoint_url": settings.aws.endpoint_url,
        "region_name": settings.aws.region,
        **settings.aws_credentials(),
    }
    s3 = boto3.client("s3", **client_args)
    create_args: dict[str, object] = {"Bucket": settings.artifacts.bucket}
    if settings.aws.region != US_EAST_1:
        create_args["CreateBucketConfiguration"] = {"LocationConstraint": settings.aws.region}
    try:
        s3.create_bucket(**create_args)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise

    sender = settings.email.sender
    try:
        boto3.client("sesv2", **client_args).create_email_identity(EmailIdentity=sender)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") != "AlreadyExistsException":
            raise
    # The classic API is verified too, so code on either SES API can send from the sender.
    boto3.client("ses", **client_args).verify_email_identity(EmailAddress=sender)


def start_aws_standin(settings: Settings) -> ThreadedMotoServer:
    """Start the embedded S3/SES on ``standins.aws.host/port`` and bootstrap it; ``stop()`` ends it."""
    if settings.aws.endpoint_url is None:
        raise AwsStandinError("aws.endpoint_url is unset: this stage talks to real AWS, not the embedded one")
    host, port = settings.standins.aws.host, settings.standins.aws.port
    _quiet_request_log()
    _ensure_port_free(host, port)
    server = ThreadedMotoServer(ip_address=host, port=port, verbose=False)
    _start(server, host, port)
    try:
        bootstrap(settings)
    except Exception:
        server.stop()
        raise
    return server


def main() -> None:
    """Serve the embedded AWS of the current stage (``ENV``) until SIGTERM or SIGINT."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    if not settings.standins.aws.enabled:
        sys.exit(f"the embedded AWS is disabled for stage {settings.stage!r} (standins.aws.enabled)")

    stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # Installed before the start: a supervisor may signal as soon as the bucket shows up.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        server = start_aws_standin(settings)
    except (AwsStandinError, BotoCoreError, ClientError) as exc:
        sys.exit(f"embedded AWS: {exc}")
    # A wait without timeout is not interrupted by signals on every platform; a short tick always is.
    while not stop.wait(1.0):
        pass
    server.stop()


if __name__ == "__main__":
    main()
