"""The code location of the run launcher's tests: one asset per order partition that takes a while.

Its first attempt sleeps for the seconds at the end of the partition key (``"<case>-<seconds>"``)
after writing its pid to ``$ORPHAN_STATE_DIR/<run_id>.pid``, so that a test can kill its worker
mid-step; an automatic retry (tag ``dagster/parent_run_id``) sleeps a second and succeeds.
"""

# No `from __future__ import annotations`: Dagster checks the context type hint at definition time.
import os
import time
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    Definitions,
    DynamicPartitionsDefinition,
    asset,
    define_asset_job,
    in_process_executor,
)

PARTITIONS = DynamicPartitionsDefinition(name="orders")
JOB_NAME = "order_job"


@asset(partitions_def=PARTITIONS)
def order_step(context: AssetExecutionContext) -> None:
    state_dir = os.environ.get("ORPHAN_STATE_DIR")
    if state_dir:
        Path(state_dir, f"{context.run.run_id}.pid").write_text(str(os.getpid()))
    retry = context.run.parent_run_id is not None
    seconds = 1.0 if retry else float(context.partition_key.rsplit("-", 1)[1])
    context.log.info(f"working for {seconds} s (retry: {retry})")
    time.sleep(seconds)


defs = Definitions(
    assets=[order_step],
    jobs=[define_asset_job(JOB_NAME, selection=[order_step], partitions_def=PARTITIONS)],
    # As platform_assets.definitions: the steps run in the run worker's own process.
    executor=in_process_executor,
)
