"""The device topology model (dtm.json) that EDP engineers from an order.

The pipeline validates it before building anything from it; the edge gateway runs it.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from contracts.configurator import DeviceId, DeviceType, FreeText, ModbusTcpConnection, StrictModel

DTM_SCHEMA_VERSION: Literal[1] = 1


class Point(StrictModel):
    """One measured value of a device: where it lives in the Modbus register map and how to scale it."""

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,62}$")]
    address: Annotated[int, Field(ge=0, le=65535)]
    register_kind: Literal["holding", "input"] = "holding"
    data_type: Literal["int16", "uint16", "int32", "uint32"] = "int16"
    scale: float = 1.0
    unit: Annotated[str, Field(max_length=16)]


class DtmDevice(StrictModel):
    id: DeviceId
    type: DeviceType
    model: FreeText
    connection: ModbusTcpConnection | None = None
    points: list[Point] = Field(min_length=1, max_length=256)


class DtmSite(StrictModel):
    name: FreeText
    timezone: str


class DeviceTopologyModel(StrictModel):
    schema_version: Literal[1]
    site: DtmSite
    devices: list[DtmDevice] = Field(default_factory=list, max_length=5000)

    @model_validator(mode="after")
    def _unique_device_ids(self) -> DeviceTopologyModel:
        ids = [device.id for device in self.devices]
        if len(ids) != len(set(ids)):
            raise ValueError("devices: device ids must be unique")
        return self
