"""Fixtures for the platform_db tests.

Each test gets a fresh SQLite file. ``PLATFORM_DB_TEST_URL`` points the same tests at another
database instead (e.g. a scratch PostgreSQL); it is emptied to the base revision first.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from contracts.configurator import ConfiguratorPayload
from platform_db import OrderRepository
from platform_db.migrate import downgrade, upgrade

EXAMPLE_PAYLOAD: dict[str, Any] = {
    "schema_version": 1,
    "customer": {"name": "Ada", "company": "ACME", "email": "ada@example.com"},
    "deployment": {"target": "cloud", "region": "eu-central-1", "instance_size": "t3.medium"},
    "site": {"name": "Plant 1", "timezone": "Europe/Berlin"},
    "devices": [
        {
            "id": "meter-1",
            "type": "power_meter",
            "model": "PM5560",
            "connection": {"protocol": "modbus_tcp", "host": "10.0.0.5", "port": 502, "unit_id": 1},
        }
    ],
    "options": {},
}


@pytest.fixture
def make_payload() -> Callable[..., ConfiguratorPayload]:
    """A valid payload; keyword arguments replace top-level fields of the example."""

    def make(**overrides: Any) -> ConfiguratorPayload:
        data = copy.deepcopy(EXAMPLE_PAYLOAD)
        data.update(overrides)
        return ConfiguratorPayload.model_validate(data)

    return make


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A database without any schema."""
    external = os.environ.get("PLATFORM_DB_TEST_URL")
    if external:
        downgrade(external, "base")
        return external
    return f"sqlite:///{tmp_path / 'db' / 'platform.db'}"


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """For the tests of SQLite's own set-up, whatever PLATFORM_DB_TEST_URL says."""
    return f"sqlite:///{tmp_path / 'nested' / 'dir' / 'platform.db'}"


@pytest.fixture
def migrated_url(db_url: str) -> str:
    upgrade(db_url)
    return db_url


@pytest.fixture
def repo(migrated_url: str) -> Iterator[OrderRepository]:
    repository = OrderRepository.from_url(migrated_url)
    yield repository
    repository.dispose()
