"""The EDP client's job answers: read streamed, and refused past ``edp.max_job_answer_bytes``."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from contracts.configurator import ConfiguratorPayload
from platform_config.settings import EdpStandinSettings
from resources.edp import EdpClient, EdpError
from tests.conftest import LoopbackHTTPServer, QuietHandler

pytestmark = pytest.mark.slow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "order-cloud.json"
CAP = 64 * 1024
# What a hostile or broken EDP offers to send; a client reading it whole would hold all of it.
OFFERED = 256 * 1024 * 1024
CHUNK = 64 * 1024
# The cap, plus what the loopback's socket buffers take in before the client has read anything.
MOST_SENT = 32 * 1024 * 1024


def payload() -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(json.loads(EXAMPLE.read_text(encoding="utf-8")))


class FloodingEdp(LoopbackHTTPServer):
    """Answers every job request with a valid job padded to ``OFFERED`` bytes, counting what it got out."""

    def __init__(self, *, announce_length: bool) -> None:
        self.sent = 0
        self.done = threading.Event()
        server = self

        class Handler(QuietHandler):
            def answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                head = b'{"job_id": "job-1", "status": "complete", "edp_artifact_urls": [], "flags": {"p": "'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                if announce_length:
                    self.send_header("Content-Length", str(OFFERED))
                else:
                    self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(head)
                    server.sent += len(head)
                    while server.sent < OFFERED:
                        self.wfile.write(b"x" * CHUNK)
                        server.sent += CHUNK
                except OSError:
                    pass  # the client hung up: what this test wants to see
                finally:
                    server.done.set()
                    self.close_connection = True

            do_GET = answer
            do_POST = answer

        super().__init__(Handler)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(params=[True, False], ids=["content-length", "no-content-length"])
def flooding_edp(request: pytest.FixtureRequest) -> Iterator[FloodingEdp]:
    server = FloodingEdp(announce_length=request.param)
    yield server
    server.stop()


@pytest.mark.parametrize("call", ["get_job", "submit_job"])
def test_an_oversized_job_answer_fails_naming_the_cap_and_is_not_read_to_its_end(
    flooding_edp: FloodingEdp, call: str
) -> None:
    client = EdpClient(flooding_edp.base_url, timeout_seconds=5, retries=0, max_answer_bytes=CAP)
    ask: Callable[[], Any] = (
        (lambda: client.get_job("job-1"))
        if call == "get_job"
        else (lambda: client.submit_job(payload(), idempotency_key="order-1"))
    )
    started = time.monotonic()

    with pytest.raises(EdpError) as refused:
        ask()

    assert time.monotonic() - started < 5
    message = str(refused.value)
    assert f"{CAP} bytes" in message and "edp.max_job_answer_bytes" in message
    assert "xxxx" not in message, "nothing EDP answered is quoted"
    assert flooding_edp.done.wait(10), "the client hung up, so the server stopped sending"
    assert flooding_edp.sent < MOST_SENT


def test_the_edp_stand_in_flooding_a_job_answer_is_refused_and_a_normal_answer_still_read(
    start_edp: Callable[..., Any], edp_settings: EdpStandinSettings
) -> None:
    server = start_edp(edp_settings)
    client = EdpClient(server.base_url, timeout_seconds=5, retries=0, max_answer_bytes=CAP)
    job_id = client.submit_job(payload(), idempotency_key="order-2").job_id
    assert client.get_job(job_id).status in ("queued", "running", "complete")

    faults = requests.put(
        f"{server.base_url}/_standin/faults", json={"failure": "huge_job_answer"}, timeout=5
    )
    assert faults.status_code == 200
    started = time.monotonic()
    with pytest.raises(EdpError, match=rf"EDP job {job_id}: the answer is larger than {CAP} bytes"):
        client.get_job(job_id)
    assert time.monotonic() - started < 5
