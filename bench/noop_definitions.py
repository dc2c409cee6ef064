"""The floor of bench/order_latency.py: one partitioned asset that does nothing, and a sensor.

Shaped like the order pipeline (a dynamic partitions definition, a partitioned asset, a sensor
that adds partitions and requests runs), without any work in the asset, so a run of it measures
Dagster's own cost: queueing, launching the run process, the step subprocess, event writes.

The sensor turns each file in ``$BENCH_NOOP_TRIGGER_DIR`` into a partition and a run of it (the
file name is the partition key), as order_sensor does with new rows; it ticks every
``$BENCH_SENSOR_INTERVAL_SECONDS`` (the stack's ``pipeline.sensor_interval_seconds``).
"""

import os
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    DefaultSensorStatus,
    Definitions,
    DynamicPartitionsDefinition,
    MaterializeResult,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    sensor,
)

noop_partitions = DynamicPartitionsDefinition(name="noop")
TRIGGER_DIR = os.environ.get("BENCH_NOOP_TRIGGER_DIR")
SENSOR_INTERVAL_SECONDS = int(os.environ.get("BENCH_SENSOR_INTERVAL_SECONDS", "5"))


@asset(key_prefix="bench", partitions_def=noop_partitions)
def noop(context: AssetExecutionContext) -> MaterializeResult:
    """Nothing: no I/O manager output, no external call."""
    return MaterializeResult(metadata={"partition": context.partition_key})


noop_job = define_asset_job("noop_job", selection=[noop], partitions_def=noop_partitions)


@sensor(
    job=noop_job, minimum_interval_seconds=SENSOR_INTERVAL_SECONDS, default_status=DefaultSensorStatus.RUNNING
)
def noop_trigger_sensor(context: SensorEvaluationContext) -> SensorResult | SkipReason:
    if TRIGGER_DIR is None:
        return SkipReason("BENCH_NOOP_TRIGGER_DIR is not set")
    seen = set(filter(None, (context.cursor or "").split(",")))
    new = sorted(path.name for path in Path(TRIGGER_DIR).glob("*") if path.name not in seen)
    if not new:
        return SkipReason("no new trigger files")
    return SensorResult(
        run_requests=[RunRequest(partition_key=key, run_key=f"noop:{key}") for key in new],
        dynamic_partitions_requests=[noop_partitions.build_add_request(new)],
        cursor=",".join(sorted(seen | set(new))),
    )


defs = Definitions(assets=[noop], jobs=[noop_job], sensors=[noop_trigger_sensor])
