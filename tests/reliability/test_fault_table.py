"""The fault table: the local stack (``python -m local_stack``) under each fault, and how every order ends.

One stack on free ports serves every row, in order. The pipeline reaches the embedded AWS (S3 and
SES) through a fault proxy (``standins.fault_proxy``), so S3 can be refused and SES's answer
dropped; EDP's faults are the stand-in's own; processes are killed with SIGKILL. Each row asserts
what a customer and an operator would notice: every order ends ``delivered`` (or ``failed`` with a
reason a person can read) within a bound, no order is lost, and moto's SES holds exactly the emails
each order should have had (0 duplicates). A summary of the rows with their figures is printed at
the end of the module.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests

from local_stack.isolated import PROJECT_ROOT, IsolatedStack, free_loopback_ports
from standins.fault_proxy import FaultMode, FaultProxy
from tests.docker_engine import report_line

pytestmark = pytest.mark.slow

EXAMPLES = PROJECT_ROOT / "examples"
HTTP_TIMEOUT = 10.0
# Every order ends within this bound after its fault ended (the step retries take up to ~1.5 min).
END_BOUND = 300.0
SES_SEND_PATH = "/v2/email/outbound-emails"
# Short waits everywhere a test can make them short; the bound on each row stays what it is.
OVERRIDES: dict[str, Any] = {
    "standins": {"edp": {"queued_seconds": 0.5, "running_seconds": 0.5}},
    "edp": {"timeout_seconds": 2, "retries": 1},
    # 6 retries from 2 s wait 2+4+8+16+32+64 s: a 60 s EDP or 30 s S3 outage ends inside them.
    # The sweeper resumes an order a killed process left with no run (a retry Dagster gave up on, a
    # run created and never submitted) within the rows' bounds, not after the stage's 10 minutes.
    "pipeline": {
        "step_retries": 6,
        "step_retry_delay_seconds": 2,
        "stuck_received_seconds": 60,
        "stuck_building_seconds": 120,
        "sweep_interval_seconds": 10,
    },
    "email": {"send_backoff_seconds": 0.2},
}


@dataclass
class Row:
    fault: str
    outcome: str = ""
    seconds: float = 0.0


@dataclass
class FaultStack:
    stack: IsolatedStack
    proxy: FaultProxy
    moto_url: str
    rows: list[Row] = field(default_factory=list)
    # Orders of every row, with the emails each should have had by the end.
    expected_emails: dict[str, int] = field(default_factory=dict)

    # --- talking to the stack --------------------------------------------------------------------

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Idempotency-Key": key} if key else {}

    def submit(self, target: str = "cloud") -> str:
        payload = json.loads((EXAMPLES / f"order-{target}.json").read_text(encoding="utf-8"))
        cfg_id = self.stack.submit(payload)
        self.expected_emails[cfg_id] = 1
        return cfg_id

    def post(self, path: str, body: dict[str, Any], key: str) -> requests.Response:
        return requests.post(
            f"{self.stack.api_url}{path}", json=body, headers=self.headers(key), timeout=HTTP_TIMEOUT
        )

    def status(self, cfg_id: str) -> str:
        return str(self.stack.order(cfg_id)["status"])

    def wait_until(
        self, cfg_ids: list[str], statuses: set[str], timeout: float = END_BOUND
    ) -> dict[str, dict[str, Any]]:
        """Poll until every order is in one of ``statuses``; the orders as GET /orders shows them."""
        deadline = time.monotonic() + timeout
        while True:
            seen = {cfg_id: self.stack.order(cfg_id) for cfg_id in cfg_ids}
            if all(order["status"] in statuses for order in seen.values()):
                return seen
            if time.monotonic() > deadline:
                where = {cfg_id: (order["status"], order.get("error")) for cfg_id, order in seen.items()}
                raise AssertionError(
                    f"not all in {sorted(statuses)} within {timeout:.0f} s: {where}\n{self.stack.output()}"
                )
            time.sleep(1.0)

    def ses_messages(self, cfg_id: str) -> int:
        data = requests.get(f"{self.moto_url}/moto-api/data.json", timeout=HTTP_TIMEOUT).json()
        return len([m for m in data.get("ses", {}).get("RawMessage", []) if cfg_id in m["raw_data"]])

    def edp_faults(self, **faults: Any) -> None:
        edp = self.stack.settings.edp.base_url  # type: ignore[union-attr]
        requests.put(f"{edp}/_standin/faults", json=faults, timeout=HTTP_TIMEOUT).raise_for_status()

    def delete_artifacts(self, prefix: str) -> None:
        """Delete every object of the artifact bucket under ``prefix``."""
        s3 = self.stack.boto3_client("s3")
        bucket = self.stack.settings.artifacts.bucket  # type: ignore[union-attr]
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        # Listed to the end first: no page is read after a delete.
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        for key in keys:
            s3.delete_object(Bucket=bucket, Key=key)

    def assert_all_delivered(self, ended: dict[str, dict[str, Any]]) -> None:
        where = {
            cfg_id: (order["status"], order.get("error"))
            for cfg_id, order in ended.items()
            if order["status"] != "delivered"
        }
        assert not where, where

    @contextmanager
    def row(self, fault: str) -> Iterator[Row]:
        """The table's row of ``fault``, timed over the block that sets its outcome."""
        row = Row(fault)
        self.rows.append(row)
        started = time.monotonic()
        yield row
        row.seconds = time.monotonic() - started


@pytest.fixture(scope="module")
def faults(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[FaultStack]:
    state_dir = tmp_path_factory.mktemp("fault-table")
    moto_port, proxy_port = free_loopback_ports(2)
    moto_url = f"http://127.0.0.1:{moto_port}"
    overrides = {
        **OVERRIDES,
        # The pipeline (and the API's reads) go through the proxy; customers' presigned links go to moto.
        "aws": {"endpoint_url": f"http://127.0.0.1:{proxy_port}", "public_endpoint_url": moto_url},
        "standins": {**OVERRIDES["standins"], "aws": {"host": "127.0.0.1", "port": moto_port}},
    }
    proxy = FaultProxy("127.0.0.1", moto_port, port=proxy_port).start()
    stack = IsolatedStack(state_dir, overrides=overrides, env={"AWS_EC2_METADATA_DISABLED": "true"})
    try:
        stack.start()
        stack.publish_apk("1.0.0")
        fault_stack = FaultStack(stack=stack, proxy=proxy, moto_url=moto_url)
        yield fault_stack
        for line in _table(fault_stack.rows):
            report_line(request, line)
    finally:
        stack.stop(quiet=True)
        proxy.stop()


def _table(rows: list[Row]) -> list[str]:
    lines = [
        "",
        "fault table (tests/reliability/test_fault_table.py):",
        "| fault | outcome | seconds |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {row.fault} | {row.outcome} | {row.seconds:.0f} |" for row in rows]
    return lines


# --- the rows, in the order they run --------------------------------------------------------------


def test_a_30_s_s3_outage_and_a_minute_of_edp_500s_end_delivered(faults: FaultStack) -> None:
    with faults.row(
        "S3 refused for 30 s and EDP answering 500 for 60 s, 3 orders submitted as they start"
    ) as row:
        cfg_ids = [faults.submit("cloud"), faults.submit("onprem"), faults.submit("cloud")]
        faults.proxy.set_mode(FaultMode.REFUSE)
        faults.edp_faults(failure="http_500")
        time.sleep(30)
        faults.proxy.set_mode(FaultMode.PASS)
        time.sleep(30)
        faults.edp_faults(failure="none")
        ended = faults.wait_until(cfg_ids, {"delivered", "failed"})
        faults.assert_all_delivered(ended)
        assert [faults.ses_messages(cfg_id) for cfg_id in cfg_ids] == [1, 1, 1]
        row.outcome = "3 of 3 delivered, 1 email each"


def test_a_lost_ses_answer_is_an_unknown_outcome_never_a_second_email(faults: FaultStack) -> None:
    with faults.row("SES accepted the email, its answer dropped by a proxy") as row:
        faults.proxy.set_mode(FaultMode.DROP_RESPONSE, times=1, paths=(SES_SEND_PATH,))
        cfg_id = faults.submit("cloud")
        [order] = faults.wait_until([cfg_id], {"email_unknown", "delivered", "failed"}).values()
        assert order["status"] == "email_unknown", order
        assert order["portal_versions"][0]["email"]["state"] == "unknown"
        assert faults.proxy.counts.dropped == 1
        assert faults.ses_messages(cfg_id) == 1
        # The operator confirms with the customer and marks it sent: delivered, still one email.
        answer = faults.post(
            f"/orders/{cfg_id}/email", {"version": 1, "action": "mark_sent"}, f"mark-{cfg_id}"
        )
        assert answer.status_code == 200, answer.text
        assert faults.status(cfg_id) == "delivered"
        assert faults.ses_messages(cfg_id) == 1
        row.outcome = (
            "email_unknown (shown in GET /orders and the UI), 1 email in SES; marked sent -> delivered"
        )


def test_a_failed_edp_job_then_a_fixed_edp_is_one_retry_call(faults: FaultStack) -> None:
    with faults.row("EDP job_fails, then EDP fixed") as row:
        faults.edp_faults(failure="job_fails")
        cfg_id = faults.submit("onprem")
        [failed] = faults.wait_until([cfg_id], {"failed", "delivered"}).values()
        assert failed["status"] == "failed" and "EDP job" in (failed["error"] or ""), failed
        faults.edp_faults(failure="none")
        # The step failed the order while its run was still ending: the API asks to wait for it.
        deadline = time.monotonic() + END_BOUND
        while (answer := faults.post(f"/orders/{cfg_id}/retry", {}, f"retry-{cfg_id}")).status_code == 409:
            assert "still in progress" in answer.text and time.monotonic() < deadline, answer.text
            time.sleep(1)
        assert answer.status_code == 202, answer.text
        assert answer.json()["new_edp_job"] is True
        [delivered] = faults.wait_until([cfg_id], {"delivered", "failed"}).values()
        assert delivered["status"] == "delivered", delivered
        assert delivered["edp_job_id"] != failed["edp_job_id"]
        assert faults.ses_messages(cfg_id) == 1
        row.outcome = "failed with EDP's reason; POST /retry -> new EDP job -> delivered, 1 email"


def test_ses_rejecting_fails_the_order_with_ses_reason_and_a_retry_delivers_it(faults: FaultStack) -> None:
    with faults.row("SES rejecting the sender (identity not verified)") as row:
        sesv2 = faults.stack.boto3_client("sesv2")
        sender = faults.stack.settings.email.sender  # type: ignore[union-attr]
        sesv2.delete_email_identity(EmailIdentity=sender)
        faults.stack.boto3_client("ses").delete_identity(Identity=sender)
        cfg_id = faults.submit("cloud")
        [failed] = faults.wait_until([cfg_id], {"failed", "delivered"}).values()
        error = failed["error"] or ""
        assert failed["status"] == "failed" and "SES" in error, failed
        assert "Error occurred while executing" not in error
        sesv2.create_email_identity(EmailIdentity=sender)
        faults.stack.boto3_client("ses").verify_email_identity(EmailAddress=sender)
        answer = faults.post(f"/orders/{cfg_id}/retry", {}, f"retry-{cfg_id}")
        assert answer.status_code == 202, answer.text
        assert answer.json()["assets"] == ["order/email"]
        [delivered] = faults.wait_until([cfg_id], {"delivered", "failed"}).values()
        assert delivered["status"] == "delivered", delivered
        assert faults.ses_messages(cfg_id) == 1
        row.outcome = f"failed: {error[:60]}...; retry -> delivered, 1 email"


def test_a_redelivery_that_fails_leaves_a_delivered_order_delivered(faults: FaultStack) -> None:
    with faults.row("/redeliver of a delivered order whose artifacts were lost") as row:
        # An order delivered by an earlier row.
        cfg_id = next(cfg_id for cfg_id in faults.expected_emails if faults.status(cfg_id) == "delivered")
        faults.delete_artifacts(f"orders/{cfg_id}/")
        answer = faults.post(f"/orders/{cfg_id}/redeliver", {}, f"redeliver-{cfg_id}")
        assert answer.status_code == 202, answer.text
        deadline = time.monotonic() + END_BOUND
        while not (order := faults.stack.order(cfg_id)).get("last_attempt_error"):
            assert time.monotonic() < deadline, order
            time.sleep(1)
        assert order["status"] == "delivered"
        assert "gone from the bucket" in order["last_attempt_error"]
        assert [v["version"] for v in order["portal_versions"]] == [1]
        assert faults.ses_messages(cfg_id) == 1
        row.outcome = f"stays delivered; last_attempt_error: {order['last_attempt_error'][:50]}..."


def test_kill_9_of_the_whole_dagster_group_mid_burst_ends_every_order_delivered(faults: FaultStack) -> None:
    with faults.row("kill -9 of the whole dagster dev process group mid-burst (5 orders)") as row:
        cfg_ids = [faults.submit("cloud" if i % 2 else "onprem") for i in range(5)]
        deadline = time.monotonic() + 120
        while not any(faults.status(cfg_id) in ("edp_pending", "building") for cfg_id in cfg_ids):
            assert time.monotonic() < deadline
            time.sleep(0.3)
        os.killpg(faults.stack.service_pids()["dagster"], signal.SIGKILL)
        ended = faults.wait_until(cfg_ids, {"delivered", "failed"}, timeout=END_BOUND + 120)
        faults.assert_all_delivered(ended)
        assert [faults.ses_messages(cfg_id) for cfg_id in cfg_ids] == [1] * 5
        restarts = faults.stack.output().count("restarting it")
        row.outcome = f"supervisor restarted dagster ({restarts}x); 5 of 5 delivered, 1 email each"


def test_a_restart_of_the_whole_stack_loses_nothing(faults: FaultStack) -> None:
    with faults.row(
        "make run stopped (SIGTERM) with orders waiting for EDP and for an APK, started again"
    ) as row:
        faults.delete_artifacts("apk/")
        waiting = [faults.submit("cloud"), faults.submit("onprem")]
        faults.wait_until(waiting, {"waiting_for_apk"})
        # Jobs accepted now stay queued past the stop: the orders are edp_pending when it comes.
        faults.edp_faults(queued_seconds=8)
        pending = [faults.submit("cloud"), faults.submit("onprem")]
        faults.wait_until(pending, {"edp_pending"})
        delivered = [
            cfg_id
            for cfg_id, emails in faults.expected_emails.items()
            if faults.status(cfg_id) == "delivered"
        ]
        faults.stack.stop()
        faults.stack.start()
        faults.edp_faults(queued_seconds=0.5)
        faults.stack.publish_apk("1.1.0")
        ended = faults.wait_until(waiting + pending, {"delivered", "failed"})
        faults.assert_all_delivered(ended)
        # Portals delivered before the restart still serve their downloads.
        for cfg_id in delivered[:2]:
            order = faults.stack.order(cfg_id)
            assert order["status"] in ("delivered",)
            page = requests.get(order["portal_versions"][-1]["url"], timeout=HTTP_TIMEOUT)
            assert page.status_code == 200
        row.outcome = f"4 of 4 resumed and delivered; {len(delivered)} delivered portals still served"


def test_no_order_is_lost_and_no_email_is_sent_twice(faults: FaultStack) -> None:
    with faults.row("every order of the table") as row:
        ended = {cfg_id: faults.stack.order(cfg_id) for cfg_id in faults.expected_emails}
        faults.assert_all_delivered(ended)
        emails = {cfg_id: faults.ses_messages(cfg_id) for cfg_id in faults.expected_emails}
        assert emails == faults.expected_emails
        row.outcome = f"{len(ended)} orders, 0 lost, 0 duplicate emails"
