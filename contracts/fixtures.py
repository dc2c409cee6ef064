"""One industrial fixture: a simulated Modbus device, as ``industrial_fixtures/fixtures.json`` lists it.

The contract between the fixtures image (which runs each one) and the delivered bundle (which
declares each one as a compose service under its hostname).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from contracts.configurator import DeviceType, StrictModel


class Fixture(StrictModel):
    """One simulated device: the hostname it answers at, its catalog type and its Modbus unit id."""

    # One DNS label: it is the fixture's compose service name as well, and the host the fixture
    # DTM connects to.
    hostname: Annotated[str, Field(pattern=r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")]
    # A ``contracts.device_catalog`` type: what the fixture process simulates.
    type: DeviceType
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1
