"""ConfiguratorPayload: the order the website posts to ``POST /submit`` and the API forwards to EDP.

Versioned by ``schema_version``; unknown fields are rejected everywhere so that a typo in the
website's form never silently drops a customer's choice.
"""

from __future__ import annotations

import ipaddress
import math
import re
import zoneinfo
from typing import Annotated, Any, Literal

import email_validator
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
)

SCHEMA_VERSION = 1

# Ids end up in S3 keys, file names and compose service names, so they are kept to a safe alphabet.
DeviceId = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
FreeText = Annotated[str, Field(min_length=1, max_length=200)]
HOSTNAME_RE = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)

DeviceType = Literal["power_meter", "pv_inverter", "battery"]

# Secrets belong in the delivered stack's secrets.env, never in an order: its options are mailed,
# archived and written into cfg.customer.yml. One rule for the intake (422 at /submit) and the
# edge bundle (which also checks EDP's flags).
SECRET_LOOKING_KEY = re.compile(
    r"passw|secret|token|credential|private[_-]?key|api[_-]?key|access[_-]?key", re.IGNORECASE
)
OPTION_KEY_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
MAX_OPTIONS = 100
MAX_OPTION_TEXT = 1000
# Options travel to EDP and into YAML; a 64-bit integer is what every consumer reads without loss.
OPTION_INT_MIN, OPTION_INT_MAX = -(2**63), 2**63 - 1


def looks_like_secret(key: str) -> bool:
    return SECRET_LOOKING_KEY.search(key) is not None


def _ses_deliverable(value: str) -> str:
    # SES sends no SMTPUTF8, so a non-ASCII local part would pass here and fail at the email step,
    # after EDP did its work. No DNS look-up: intake must not depend on the customer's DNS.
    try:
        checked = email_validator.validate_email(
            value,
            allow_smtputf8=False,
            allow_quoted_local=False,
            allow_domain_literal=False,
            globally_deliverable=True,
            check_deliverability=False,
        )
    except email_validator.EmailNotValidError as exc:
        raise ValueError(f"not an email address that can be delivered to: {exc}") from None
    # An internationalized domain is kept in its ASCII (punycode) form: the same mailbox, and
    # every header and SES call after this takes it as it is.
    return checked.ascii_email or checked.normalized


DeliverableEmail = Annotated[
    str,
    Field(max_length=254),
    AfterValidator(_ses_deliverable),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]


def _not_secret_looking(key: str) -> str:
    if looks_like_secret(key):
        raise ValueError("the option name looks like a secret; secrets never go into an order")
    return key


def _option_value_within_limits(value: Any) -> Any:
    # Before the union: one clear error naming options.<key>, instead of one per union member.
    if not isinstance(value, bool | int | float | str):
        raise ValueError("must be a boolean, a number or a string")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("must be a finite number")
    if (
        isinstance(value, int)
        and not isinstance(value, bool)
        and not OPTION_INT_MIN <= value <= OPTION_INT_MAX
    ):
        raise ValueError("must be a 64-bit integer")
    if isinstance(value, str) and len(value) > MAX_OPTION_TEXT:
        raise ValueError(f"must be at most {MAX_OPTION_TEXT} characters")
    return value


OptionKey = Annotated[str, Field(pattern=OPTION_KEY_PATTERN), AfterValidator(_not_secret_looking)]
OptionValue = Annotated[
    bool | int | float | str,
    BeforeValidator(_option_value_within_limits),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "boolean"},
                {"type": "integer", "minimum": OPTION_INT_MIN, "maximum": OPTION_INT_MAX},
                {"type": "number"},
                {"type": "string", "maxLength": MAX_OPTION_TEXT},
            ]
        }
    ),
]


class StrictModel(BaseModel):
    # NaN and infinities are no values an order can mean, and PostgreSQL's jsonb cannot store them.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=True, allow_inf_nan=False)


class Customer(StrictModel):
    name: FreeText
    company: FreeText
    email: DeliverableEmail


# The regions the delivered CloudFormation template is checked against (cfn-lint's list, the
# commercial and GovCloud partitions): an order for any other region would fail in cfn_or_iso,
# so intake refuses it. A test keeps this equal to the installed cfn-lint's list.
CLOUD_REGIONS = frozenset(
    {
        "af-south-1",
        "ap-east-1",
        "ap-east-2",
        "ap-northeast-1",
        "ap-northeast-2",
        "ap-northeast-3",
        "ap-south-1",
        "ap-south-2",
        "ap-southeast-1",
        "ap-southeast-2",
        "ap-southeast-3",
        "ap-southeast-4",
        "ap-southeast-5",
        "ap-southeast-6",
        "ap-southeast-7",
        "ca-central-1",
        "ca-west-1",
        "cn-north-1",
        "cn-northwest-1",
        "eu-central-1",
        "eu-central-2",
        "eu-north-1",
        "eu-south-1",
        "eu-south-2",
        "eu-west-1",
        "eu-west-2",
        "eu-west-3",
        "il-central-1",
        "me-central-1",
        "me-south-1",
        "mx-central-1",
        "sa-east-1",
        "us-east-1",
        "us-east-2",
        "us-gov-east-1",
        "us-gov-west-1",
        "us-west-1",
        "us-west-2",
    }
)


class CloudDeployment(StrictModel):
    target: Literal["cloud"]
    region: Annotated[str, Field(pattern=r"^[a-z]{2}(-gov)?-[a-z]+-\d$", examples=["eu-central-1"])]
    instance_size: Annotated[str, Field(pattern=r"^[a-z][a-z0-9]*\.[a-z0-9]+$", examples=["t3.medium"])]

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str) -> str:
        if value not in CLOUD_REGIONS:
            raise ValueError(f"{value!r} is not an AWS region the platform delivers to (e.g. eu-central-1)")
        return value


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


class ConfiguratorPayload(StrictModel):
    """The customer's order form, version 1."""

    schema_version: Literal[1]
    customer: Customer
    deployment: Deployment
    site: Site
    devices: list[Device] = Field(default_factory=list, max_length=5000)
    options: dict[OptionKey, OptionValue] = Field(default_factory=dict, max_length=MAX_OPTIONS)

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
