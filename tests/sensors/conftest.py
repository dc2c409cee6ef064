"""Sensors of the real Definitions, evaluated against a real Dagster instance and the real servers."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from dagster import DagsterInstance, Definitions, build_sensor_context, instance_for_test
from dagster._core.definitions.sensor_definition import SensorExecutionData

from contracts.configurator import ConfiguratorPayload
from contracts.orders import OrderStatus
from contracts.records import Order
from platform_assets.definitions import build_definitions
from platform_config.settings import Settings
from platform_db import OrderRepository
from resources.edp import EdpClient
from tests.pipeline_fixtures import s3_client

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def example_payload(target: str = "cloud") -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(
        json.loads((EXAMPLES / f"order-{target}.json").read_text(encoding="utf-8"))
    )


@dataclass
class Platform:
    """The pipeline as an operator sees it: orders in platform_db, EDP, the bucket, the sensors' ticks."""

    settings: Settings
    defs: Definitions
    instance: DagsterInstance
    orders: OrderRepository

    def submit_order(self, target: str = "cloud") -> Order:
        order, created = self.orders.submit(example_payload(target), None)
        assert created
        return order

    def add_partitions(self, *cfg_ids: str) -> None:
        """What the daemon does with order_sensor's add request."""
        self.instance.add_dynamic_partitions("orders", list(cfg_ids))

    def tick(
        self, sensor_name: str, cursor: str | None = None, defs: Definitions | None = None
    ) -> SensorExecutionData:
        """One evaluation of a sensor, the way the daemon runs it (instance ref, definitions' resources)."""
        definitions = defs or self.defs
        sensor_def = definitions.resolve_sensor_def(sensor_name)
        with build_sensor_context(
            instance=self.instance,
            instance_ref=self.instance.get_ref(),
            cursor=cursor,
            sensor_name=sensor_name,
            definitions=definitions,
            resources=definitions.resources,
        ) as context:
            return sensor_def.evaluate_tick(context)

    # --- EDP stand-in -------------------------------------------------------------------------

    def edp_client(self) -> EdpClient:
        return EdpClient(self.settings.edp.base_url, 2, 0)

    def set_edp_faults(self, **faults: Any) -> None:
        response = requests.put(f"{self.settings.edp.base_url}/_standin/faults", json=faults, timeout=5)
        response.raise_for_status()

    def submit_edp_job(self, order: Order) -> str:
        """The config step's part: the job submitted to EDP and recorded on the order."""
        accepted = self.edp_client().submit_job(order.configurator_payload(), idempotency_key=order.cfg_id)
        self.orders.record_edp_job(order.cfg_id, accepted.job_id)
        return accepted.job_id

    def wait_for_edp_status(self, job_id: str, status: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        client = self.edp_client()
        while True:
            current = client.get_job(job_id).status
            if current == status:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"EDP job {job_id} is {current!r}, not {status!r}, after {timeout} s")
            time.sleep(0.05)

    # --- artifact bucket ----------------------------------------------------------------------

    def s3(self) -> Any:
        return s3_client(self.settings)

    def status_of(self, cfg_id: str) -> OrderStatus:
        order = self.orders.get(cfg_id)
        assert order is not None
        return order.status


@pytest.fixture
def platform(pipeline_settings: Settings) -> Iterator[Platform]:
    orders = OrderRepository.from_url(pipeline_settings.platform_db_url())
    with instance_for_test() as instance:
        yield Platform(
            settings=pipeline_settings,
            defs=build_definitions(pipeline_settings),
            instance=instance,
            orders=orders,
        )
    orders.dispose()
