import re
from pathlib import Path

import pytest

from local_stack.demo_seed import SAMPLE_ORDERS
from local_stack.isolated import IsolatedStack
from platform_db import OrderRepository

pytestmark = pytest.mark.slow

DELIVERED_RE = re.compile(r"^delivered: .+ portal (http\S+/portal/\S+) email (\S+\.eml)$")
SUBMITTED_RE = re.compile(r"^demo: order (\S+) from examples/")
QUICK_EDP = {"standins": {"edp": {"queued_seconds": 0.5, "running_seconds": 0.5}}}


def test_the_demo_seeds_sample_orders_once_and_shows_them_delivered(tmp_path: Path) -> None:
    with IsolatedStack(tmp_path, stage="demo", overrides=QUICK_EDP) as stack:
        submitted = stack.wait_for_output(SUBMITTED_RE, count=len(SAMPLE_ORDERS))
        cfg_ids = [SUBMITTED_RE.match(line).group(1) for line in submitted]  # type: ignore[union-attr]
        stack.wait_for_status(cfg_ids, "delivered")
        for line in stack.wait_for_output(DELIVERED_RE, count=len(SAMPLE_ORDERS)):
            portal_url, email = DELIVERED_RE.match(line).groups()  # type: ignore[union-attr]
            assert Path(email).is_file()
            assert any(portal_url == stack.order(cfg_id)["portal_url"] for cfg_id in cfg_ids)

    with IsolatedStack(tmp_path, stage="demo", overrides=QUICK_EDP) as again:
        again_submitted = again.wait_for_output(SUBMITTED_RE, count=len(SAMPLE_ORDERS))
        assert [SUBMITTED_RE.match(line).group(1) for line in again_submitted] == cfg_ids  # type: ignore[union-attr]
        assert again.settings is not None
        repository = OrderRepository.from_url(again.settings.platform_db_url())
        try:
            assert len(repository.orders_after(0)) == len(SAMPLE_ORDERS), "a second start adds no orders"
        finally:
            repository.dispose()
