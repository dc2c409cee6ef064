"""Settings of the edge gateway, loaded by the platform's layered loader.

The stage block of ``edge_gateway/cfg.defaults.yml`` is read, the ``cfg.customer.yml`` that the
platform wrote for the order (``CFG_CUSTOMER_PATH``) is deep-merged over it, and one pydantic
model validates the result: a bad file stops the gateway at start, naming the key path and file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, model_validator

from contracts.configurator import OptionValue
from contracts.s3_layout import CfgId
from service_kit.layered_config import Section, Stage, load_layered, stage_and_customer_file

DEFAULTS_PATH = Path(__file__).resolve().parent / "cfg.defaults.yml"


class HttpSettings(Section):
    host: str
    """Interface the gateway's HTTP API binds to."""
    port: int = Field(ge=1, le=65535)
    """Port of the gateway's HTTP API."""
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    """Largest accepted POST /topology body."""
    # What one client on the LAN may hold of the gateway (uvicorn's defaults bound none of it).
    timeout_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    """Idle keep-alive connection lifetime."""
    limit_concurrency: int = Field(default=50, ge=1)
    """Connections and requests in progress at once; beyond it the answer is 503."""
    h11_max_incomplete_event_size: int = Field(default=16 * 1024, ge=1024)
    """Largest request line plus headers buffered (bytes)."""
    body_read_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    """Deadline for a whole POST /topology body; slower clients get 408."""


class StorageSettings(Section):
    path: str
    """SQLite file of the measurements; the stored topology lives in the same directory."""
    retention_days: float = Field(default=30, gt=0)
    """Measurements older than this are deleted."""

    @property
    def data_dir(self) -> Path:
        return Path(self.path).parent


class PollingSettings(Section):
    interval_seconds: float = Field(gt=0, le=3600)
    """Time between the starts of two polls of one device."""
    request_timeout_seconds: float = Field(gt=0, le=60)
    """Connect and response timeout of one Modbus request."""
    backoff_initial_seconds: float = Field(gt=0, le=3600)
    """Wait after a device's first failed poll."""
    backoff_max_seconds: float = Field(gt=0, le=3600)
    """Longest wait between retries of a failing device."""

    @model_validator(mode="after")
    def _backoff_range(self) -> PollingSettings:
        if self.backoff_max_seconds < self.backoff_initial_seconds:
            raise ValueError("backoff_max_seconds must not be smaller than backoff_initial_seconds")
        return self


class CommissioningSettings(Section):
    max_devices: int = Field(default=500, ge=1, le=5000)
    """Largest number of devices a posted topology may have."""
    allow_loopback_hosts: bool = False
    """Accept loopback device hosts in a posted topology: for a gateway and devices on one test machine only."""


class GatewaySecrets(Section):
    """From the stack's secrets.env (compose's env_file), never from a file that is mounted or mailed."""

    COMMISSIONING_TOKEN: SecretStr | None = None
    """Bearer token GET and POST /topology and GET /status require; generated per order by the platform."""


# What the platform writes into cfg.customer.yml (delivery.edge_bundle.customer_config_yaml).
# None of it changes how the gateway polls; it is kept so the gateway knows which order it serves.
class CustomerInfo(Section):
    company: str


class SiteInfo(Section):
    name: str
    timezone: str


class GatewaySettings(Section):
    stage: Stage
    http: HttpSettings
    storage: StorageSettings
    polling: PollingSettings
    commissioning: CommissioningSettings = Field(default_factory=CommissioningSettings)
    secrets: GatewaySecrets = Field(default_factory=GatewaySecrets)
    schema_version: Literal[1] | None = None
    """Version of the platform's cfg.customer.yml."""
    cfg_id: CfgId | None = None
    """The order this installation was delivered for."""
    customer: CustomerInfo | None = None
    site: SiteInfo | None = None
    options: dict[str, OptionValue] = Field(default_factory=dict)
    flags: dict[str, Any] = Field(default_factory=dict)

    @property
    def retention_days(self) -> float:
        """How long measurements are kept: the customer's ``retention_days`` option when the order
        chose one, else the stage's ``storage.retention_days``."""
        chosen = self.options.get("retention_days")
        if isinstance(chosen, (int, float)) and not isinstance(chosen, bool) and chosen > 0:
            return float(chosen)
        return self.storage.retention_days


def load_gateway_settings(
    stage: str | None = None,
    *,
    defaults_path: Path | None = None,
    customer_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> GatewaySettings:
    """Settings of ``stage`` (default: ``ENV``, else local) with ``CFG_CUSTOMER_PATH`` merged over them."""
    environ = os.environ if environ is None else environ
    stage, customer_path = stage_and_customer_file(stage, customer_path, environ)
    secrets = {name: environ[name] for name in GatewaySecrets.model_fields if environ.get(name)}
    return load_layered(
        GatewaySettings,
        defaults_path=defaults_path or DEFAULTS_PATH,
        stage=stage,
        customer_path=customer_path,
        secrets=secrets,
        secret_origins={name: f"environment variable {name}" for name in secrets},
    )


def dtm_path_from(environ: Mapping[str, str] | None = None) -> Path | None:
    """``DTM_PATH``: the DTM delivered with the stack, if any."""
    environ = os.environ if environ is None else environ
    value = environ.get("DTM_PATH")
    return Path(value) if value else None
