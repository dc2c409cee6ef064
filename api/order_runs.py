"""An order's first run, started by the API right after the order is committed.

Without it an order waits for ``order_sensor``'s next tick (Dagster ticks sensors at most every
5 s) before anything happens. The API claims the start in platform_db, asks Dagster over GraphQL
to add the order's partition and queue its run, and gives the claim back if Dagster cannot be
reached: ``order_sensor`` then starts the run at its next tick. The claim is what keeps the two
from both starting one.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

from api.dagster_graphql import DagsterGraphQL, DagsterLaunchError
from order_pipeline.keys import FIRST_RUN_TAGS, ORDERS_PARTITIONS, first_run_key, first_run_selection
from platform_db import OrderRepository

logger = logging.getLogger(__name__)

# Launches wait on the webserver (about 0.2 s each, seconds under load); on threads of their own they
# never hold the request threads a burst of submits needs to commit its orders.
LAUNCH_THREADS = 2


class FirstRunStarter:
    def __init__(
        self, orders: OrderRepository, dagster: DagsterGraphQL, edp_wait_in_run_seconds: float
    ) -> None:
        self._orders = orders
        self._dagster = dagster
        self._selection = [key.path for key in first_run_selection(edp_wait_in_run_seconds)]
        self._launches = ThreadPoolExecutor(max_workers=LAUNCH_THREADS, thread_name_prefix="first-run")

    def enqueue(self, cfg_id: str) -> None:
        """Start the order's first run soon, on the launch threads; returns at once."""
        self._launches.submit(self.start, cfg_id)

    def close(self) -> None:
        """Drop the launches not begun: their orders are unclaimed, so order_sensor starts them."""
        self._launches.shutdown(wait=False, cancel_futures=True)

    def start(self, cfg_id: str) -> str | None:
        """Queue the order's first run unless someone already did; the run id, or None."""
        if not self._orders.claim_first_run(cfg_id):
            return None
        try:
            run_id = self._dagster.launch_partition_run(
                cfg_id,
                ORDERS_PARTITIONS,
                self._selection,
                # The same run key order_sensor would give it, so the run reads the same in the UI.
                tags={**FIRST_RUN_TAGS, "dagster/run_key": first_run_key(cfg_id)},
            )
        except DagsterLaunchError as exc:
            self._orders.release_first_run(cfg_id)
            logger.warning("order %s: first run not started (%s); order_sensor starts it", cfg_id, exc)
            return None
        logger.info("order %s: first run %s queued", cfg_id, run_id)
        return run_id
