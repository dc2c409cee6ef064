"""ConfiguratorPayload: the order the website posts to ``POST /submit`` and the API forwards to EDP.

Versioned by ``schema_version``; unknown fields are rejected everywhere so that a typo in the
website's form never silently drops a customer's choice.
"""

from __future__ import annotations

import ipaddress
import re
import zoneinfo
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator

SCHEMA_VERSION = 1

# Ids end up in S3 keys, file names and compose service names, so they are kept to a safe alphabet.
DeviceId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
FreeText = Annotated[str, Field(min_length=1, max_length=200)]
HOSTNAME_RE = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")

DeviceType = Literal["power_meter", "pv_inverter", "battery"]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True)


class Customer(StrictModel):
    name: FreeText
    company: FreeText
    email: EmailStr


class CloudDeployment(StrictModel):
    target: Literal["cloud"]
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$", examples=["eu-central-1"])]
    instance_size: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*\.[a-z0-9]+$", examples=["t3.medium"])]


class StaticNetwork(StrictModel):
    """Static addressing for an on-prem appliance; without it the appliance uses DHCP."""

    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address
    dns: list[ipaddress.IPv4Address] = Field(default_factory=list, max_length=4)


class OnpremDeployment(StrictModel):
    target: Literal["onprem"]
    network: StaticNetwork | None = None


Deployment = Annotated[CloudDeployment | OnpremDeployment, Field(discriminator="target")]


class Site(StrictModel):
    name: FreeText
    timezone: Annotated[str, Field(examples=["Europe/Berlin"])]

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        if value not in zoneinfo.available_timezones():
            raise ValueError(f"unknown IANA timezone {value!r}")
        return value


class ModbusTcpConnection(StrictModel):
    protocol: Literal["modbus_tcp"]
    host: Annotated[str, Field(max_length=253)]
    port: Annotated[int, Field(ge=1, le=65535)] = 502
    unit_id: Annotated[int, Field(ge=0, le=247)] = 1

    @field_validator("host")
    @classmethod
    def _host_or_ip(cls, value: str) -> str:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            if not HOSTNAME_RE.match(value):
                raise ValueError("must be an IP address or a DNS hostname") from None
        return value


class Device(StrictModel):
    id: DeviceId
    type: DeviceType
    model: FreeText
    connection: ModbusTcpConnection | None = None


OptionValue = bool | int | float | str


class ConfiguratorPayload(StrictModel):
    """The customer's order form, version 1."""

    schema_version: Literal[1]
    customer: Customer
    deployment: Deployment
    site: Site
    devices: list[Device] = Field(default_factory=list, max_length=5000)
    options: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")], OptionValue] = Field(
        default_factory=dict, max_length=100
    )

    @field_validator("devices")
    @classmethod
    def _unique_device_ids(cls, devices: list[Device]) -> list[Device]:
        seen: set[str] = set()
        for device in devices:
            if device.id in seen:
                raise ValueError(f"duplicate device id {device.id!r}")
            seen.add(device.id)
        return devices

    @property
    def target(self) -> Literal["cloud", "onprem"]:
        return self.deployment.target
