from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.configurator import ConfiguratorPayload
from contracts.dtm import DeviceTopologyModel
from delivery.edge_bundle import (
    CONTAINER_CONFIG_DIR,
    CUSTOMER_CONFIG_NAME,
    DELIVERED_STAGE,
    DTM_NAME,
    GATEWAY_SERVICE,
    HMI_PORT,
    EdgeImages,
    compose_file,
    customer_config_yaml,
)
from edge_gateway.settings import DEFAULTS_PATH, dtm_path_from, load_gateway_settings
from industrial_fixtures import load_manifest
from service_kit.layered_config import ConfigError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"

DEFAULTS = """
local:
  http: {host: 127.0.0.1, port: 8080}
  storage: {path: .local/edge/gateway.db}
  polling: {interval_seconds: 1.0, request_timeout_seconds: 2.0, backoff_initial_seconds: 1.0, backoff_max_seconds: 30.0}
beta:
  http: {host: 0.0.0.0, port: 8080}
  storage: {path: /var/lib/ems/gateway.db, retention_days: 30}
  polling: {interval_seconds: 1.0, request_timeout_seconds: 2.0, backoff_initial_seconds: 1.0, backoff_max_seconds: 60.0}
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def defaults(tmp_path: Path) -> Path:
    return write(tmp_path, "cfg.defaults.yml", DEFAULTS)


def platform_customer_file(tmp_path: Path) -> Path:
    order = ConfiguratorPayload.model_validate_json((EXAMPLES / "order-cloud.json").read_text())
    flags: dict[str, Any] = {"commissioning_required": True, "device_count": 3}
    path = tmp_path / CUSTOMER_CONFIG_NAME
    path.write_bytes(customer_config_yaml(cfg_id=CFG_ID, order=order, flags=flags))
    return path


def test_the_bundled_defaults_load_for_every_stage() -> None:
    for stage in ("local", "demo", "beta"):
        assert load_gateway_settings(stage, environ={}).stage == stage
    beta = load_gateway_settings("beta", environ={})
    assert (beta.http.host, beta.http.port) == ("0.0.0.0", 8080)
    assert beta.storage.path == "/var/lib/ems/gateway.db"
    local = load_gateway_settings("local", environ={})
    assert local.http.host == "127.0.0.1"
    assert Path(local.storage.path).parts[:2] == (".local", "edge")
    assert local.polling.interval_seconds == 1.0


def test_beta_fits_the_delivered_compose_file(tmp_path: Path) -> None:
    dtm = DeviceTopologyModel.model_validate({"schema_version": 1, "site": {"name": "S", "timezone": "UTC"}})
    service = yaml.safe_load(
        compose_file(dtm=dtm, images=EdgeImages.release("example", "1"), fixtures=load_manifest().fixtures)
    )["services"][GATEWAY_SERVICE]
    environment = service["environment"]
    assert environment["ENV"] == DELIVERED_STAGE
    assert environment["CFG_CUSTOMER_PATH"] == f"{CONTAINER_CONFIG_DIR}/{CUSTOMER_CONFIG_NAME}"
    # The container's mount point stands in for /etc/ems here.
    settings = load_gateway_settings(
        environ={**environment, "CFG_CUSTOMER_PATH": str(platform_customer_file(tmp_path))}
    )
    assert settings.stage == "beta"
    assert settings.http.port == HMI_PORT == service["ports"][0]["target"]
    assert settings.http.host == "0.0.0.0", "reachable through the published port"
    volume_targets = [mount["target"] for mount in service["volumes"] if mount["type"] == "volume"]
    assert any(Path(settings.storage.path).is_relative_to(target) for target in volume_targets), (
        "measurements and the posted topology must live on the data volume"
    )
    assert environment["DTM_PATH"] == f"{CONTAINER_CONFIG_DIR}/{DTM_NAME}"
    assert dtm_path_from(environment) == Path(environment["DTM_PATH"])


def test_env_selects_the_stage_and_customer_file_is_deep_merged_over_its_block(
    defaults: Path, tmp_path: Path
) -> None:
    customer = write(tmp_path, "cfg.customer.yml", "http:\n  port: 9100\npolling:\n  interval_seconds: 5\n")
    settings = load_gateway_settings(
        defaults_path=defaults, environ={"ENV": "beta", "CFG_CUSTOMER_PATH": str(customer)}
    )
    assert settings.stage == "beta"
    assert settings.http.port == 9100
    assert settings.http.host == "0.0.0.0", "keys the customer file does not name keep the stage's value"
    assert settings.polling.interval_seconds == 5
    assert settings.polling.backoff_max_seconds == 60.0
    assert settings.storage.path == "/var/lib/ems/gateway.db"
    assert load_gateway_settings(defaults_path=defaults, environ={}).stage == "local"


def test_the_platforms_customer_file_loads(tmp_path: Path) -> None:
    customer = platform_customer_file(tmp_path)
    settings = load_gateway_settings("beta", environ={"CFG_CUSTOMER_PATH": str(customer)})
    assert settings.schema_version == 1
    assert settings.cfg_id == CFG_ID
    assert settings.customer is not None and settings.customer.company == "Analytical Engines GmbH"
    assert settings.site is not None and (settings.site.name, settings.site.timezone) == (
        "Plant Nord",
        "Europe/Berlin",
    )
    assert settings.options == {"retention_days": 365, "remote_support": True}
    assert settings.flags == {"commissioning_required": True, "device_count": 3}
    assert settings.retention_days == 365, "the customer's retention choice wins over the stage default"


def test_without_a_retention_option_the_stage_default_applies() -> None:
    assert load_gateway_settings("beta", environ={}).retention_days == 30


def test_an_unknown_key_names_its_path_and_the_file(defaults: Path, tmp_path: Path) -> None:
    customer = write(tmp_path, "cfg.customer.yml", "polling:\n  intervall_seconds: 5\n")
    with pytest.raises(ConfigError) as error:
        load_gateway_settings(defaults_path=defaults, customer_path=customer, environ={})
    assert f"polling.intervall_seconds: unknown key (set in {customer})" in str(error.value)


def test_a_bad_value_in_the_platforms_file_names_its_path_and_the_file(tmp_path: Path) -> None:
    customer = platform_customer_file(tmp_path)
    document = yaml.safe_load(customer.read_text())
    document["schema_version"] = 2
    document["site"]["country"] = "DE"
    customer.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError) as error:
        load_gateway_settings("beta", customer_path=customer, environ={})
    message = str(error.value)
    assert f"schema_version: Input should be 1 (set in {customer})" in message
    assert f"site.country: unknown key (set in {customer})" in message


def test_a_bad_value_in_the_defaults_names_the_stage_block(tmp_path: Path) -> None:
    defaults = write(tmp_path, "cfg.defaults.yml", DEFAULTS.replace("port: 8080", "port: 0", 1))
    with pytest.raises(ConfigError) as error:
        load_gateway_settings(defaults_path=defaults, environ={})
    assert f"http.port: Input should be greater than or equal to 1 (set in {defaults} [local])" in str(
        error.value
    )


def test_backoff_max_below_initial_is_rejected(defaults: Path, tmp_path: Path) -> None:
    customer = write(tmp_path, "cfg.customer.yml", "polling:\n  backoff_max_seconds: 0.5\n")
    with pytest.raises(
        ConfigError, match="backoff_max_seconds must not be smaller than backoff_initial_seconds"
    ):
        load_gateway_settings(defaults_path=defaults, customer_path=customer, environ={})


def test_unknown_stage_and_missing_customer_file_fail_at_start(defaults: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown stage ENV='prod'"):
        load_gateway_settings(defaults_path=defaults, environ={"ENV": "prod"})
    with pytest.raises(ConfigError, match=r"customer file .*nope\.yml does not exist"):
        load_gateway_settings(defaults_path=defaults, customer_path=tmp_path / "nope.yml", environ={})


def test_dtm_path_is_optional() -> None:
    assert dtm_path_from({}) is None
    assert dtm_path_from({"DTM_PATH": ""}) is None
    assert DEFAULTS_PATH.is_file()
