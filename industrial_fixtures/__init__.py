"""Industrial fixtures: simulated Modbus TCP devices for end-to-end runs of the edge stack.

Each fixture is one device of a catalog type (``contracts.device_catalog``) in its own process at
its own address; ``industrial-fixtures.json`` is the DTM that points the gateway at them by the
hostnames a compose network gives them, and ``fixtures.json`` says which fixture serves which
hostname, type and unit id.
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Literal

from pydantic import Field

from contracts.configurator import StrictModel
from contracts.dtm import DeviceTopologyModel
from contracts.fixtures import Fixture

FIXTURE_DTM_NAME = "industrial-fixtures.json"
MANIFEST_NAME = "fixtures.json"


class FixtureManifest(StrictModel):
    schema_version: Literal[1]
    fixtures: list[Fixture] = Field(min_length=1)

    def by_hostname(self, hostname: str) -> Fixture:
        for fixture in self.fixtures:
            if fixture.hostname == hostname:
                return fixture
        raise KeyError(f"no fixture serves hostname {hostname!r}")


def fixture_dtm_bytes() -> bytes:
    """``industrial-fixtures.json`` as shipped."""
    return resources.files(__name__).joinpath(FIXTURE_DTM_NAME).read_bytes()


def load_fixture_dtm() -> DeviceTopologyModel:
    return DeviceTopologyModel.model_validate(json.loads(fixture_dtm_bytes()))


def load_manifest() -> FixtureManifest:
    return FixtureManifest.model_validate(
        json.loads(resources.files(__name__).joinpath(MANIFEST_NAME).read_bytes())
    )
