"""The demo stage's bundled seed: a sample APK and sample orders submitted through the API.

Idempotent: the APK has a fixed version and every sample order a fixed Idempotency-Key, so
starting the demo again finds what the first start created instead of adding to it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import boto3
import requests

from platform_config.settings import Settings
from standins.hmi_ci import publish_sample_apk

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SAMPLE_ORDERS = ("order-cloud.json", "order-onprem.json", "order-cloud-bare.json")
FOLLOW_SECONDS = 900.0


def publish_demo_apk(settings: Settings) -> str:
    client = boto3.client(
        "s3",
        endpoint_url=settings.aws.endpoint_url,
        region_name=settings.aws.region,
        **settings.aws_credentials(),
    )
    return publish_sample_apk(client, settings.artifacts.bucket, settings.seed.apk_version)


def submit_sample_orders(api_url: str) -> dict[str, str]:
    """cfg_id per sample file, submitted (or found again) under ``demo-<file>`` keys."""
    submitted: dict[str, str] = {}
    for name in SAMPLE_ORDERS:
        answer = requests.post(
            f"{api_url}/submit",
            data=(EXAMPLES / name).read_bytes(),
            headers={
                "Content-Type": "application/json",
                "Idempotency-Key": f"demo-{name.removesuffix('.json')}",
            },
            timeout=10,
        )
        answer.raise_for_status()
        submitted[name] = answer.json()["cfg_id"]
    return submitted


def follow_deliveries(
    api_url: str,
    outbox_dir: str | None,
    cfg_ids: dict[str, str],
    say: Callable[[str], None],
    stop: threading.Event,
) -> None:
    """Print each sample order's portal link and email file once it is delivered (or its error)."""
    pending = dict(cfg_ids)
    deadline = time.monotonic() + FOLLOW_SECONDS
    while pending and not stop.is_set() and time.monotonic() < deadline:
        for name, cfg_id in list(pending.items()):
            try:
                order = requests.get(f"{api_url}/orders/{cfg_id}", timeout=5).json()
            except (requests.RequestException, ValueError):
                continue
            site = json.loads((EXAMPLES / name).read_text())["site"]["name"]
            if order["status"] == "delivered":
                email = sorted(Path(outbox_dir).glob(f"{cfg_id}-v*.eml"))[-1] if outbox_dir else None
                say(
                    f"delivered: {site} ({order['target']}) portal {order['portal_url']} email {email or '-'}"
                )
                del pending[name]
            elif order["status"] == "failed":
                say(f"failed: {site}: {order['error']}")
                del pending[name]
        stop.wait(2.0)


def start_demo_seed(
    settings: Settings, say: Callable[[str], None], stop: threading.Event
) -> threading.Thread:
    api_url = f"http://{settings.api.host}:{settings.api.port}"
    apk_key = publish_demo_apk(settings)
    say(f"demo: sample APK at s3://{settings.artifacts.bucket}/{apk_key}")
    cfg_ids = submit_sample_orders(api_url)
    for name, cfg_id in cfg_ids.items():
        say(f"demo: order {cfg_id} from examples/{name}")
    follower = threading.Thread(
        target=follow_deliveries,
        args=(api_url, settings.email.outbox_dir, cfg_ids, say, stop),
        name="demo-follower",
        daemon=True,
    )
    follower.start()
    return follower
