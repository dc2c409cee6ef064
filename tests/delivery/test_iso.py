import base64
import io
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pycdlib.pycdlib
import pytest
import yaml

from contracts.configurator import ConfiguratorPayload
from delivery.iso import build_seed_iso, hostname_for_site, seed_instance_id

CFG_ID = "5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"
STATIC_NETWORK = {
    "address": "192.168.50.10/24",
    "gateway": "192.168.50.1",
    "dns": ["192.168.50.1", "9.9.9.9"],
}
SYSTEM_PYTHON = "/usr/bin/python3"


def make_order(
    network: dict[str, Any] | None = STATIC_NETWORK, site: str = "Werk Süd"
) -> ConfiguratorPayload:
    return ConfiguratorPayload.model_validate(
        {
            "schema_version": 1,
            "customer": {
                "name": "Grace Hopper",
                "company": "Compiler Works AG",
                "email": "grace@example.com",
            },
            "deployment": {"target": "onprem", "network": network},
            "site": {"name": site, "timezone": "Europe/Vienna"},
            "devices": [{"id": "meter-grid", "type": "power_meter", "model": "UMG 604"}],
        }
    )


def make_bundle(devices: int = 1) -> dict[str, bytes]:
    dtm = {"schema_version": 1, "devices": [{"id": f"meter-{index}"} for index in range(devices)]}
    return {
        "cfg.customer.yml": f"cfg_id: {CFG_ID}\nsite:\n  name: Werk Süd\n".encode(),
        "dtm.json": json.dumps(dtm).encode(),
        "compose.yaml": b"services:\n  gateway:\n    image: ghcr.io/example/ems-edge-gateway:0.1.0\n",
        "secrets.env": b"COMMISSIONING_TOKEN=seed-iso-test-token-0001\n",
    }


def build(order: ConfiguratorPayload | None = None, bundle: dict[str, bytes] | None = None) -> bytes:
    return build_seed_iso(cfg_id=CFG_ID, order=order or make_order(), bundle=bundle or make_bundle())


def open_iso(image: bytes) -> pycdlib.PyCdlib:
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(image))
    return iso


def read(iso: pycdlib.PyCdlib, **path: str) -> bytes:
    out = io.BytesIO()
    iso.get_file_from_iso_fp(out, **path)
    return out.getvalue()


def names(iso: pycdlib.PyCdlib, **path: str) -> set[str]:
    return {
        child.rock_ridge.name().decode() if "rr_path" in path else child.file_identifier().decode("utf-16-be")
        for child in iso.list_children(**path)
        if not (child.is_dot() or child.is_dotdot())
    }


@pytest.fixture
def restore_timezone() -> Iterator[None]:
    yield
    time.tzset()


def test_image_is_a_nocloud_seed_readable_through_joliet_and_rock_ridge() -> None:
    iso = open_iso(build())
    try:
        assert iso.pvd.volume_identifier.decode().rstrip() == "cidata"
        assert iso.interchange_level == 3
        assert iso.has_joliet() and iso.has_rock_ridge()
        assert names(iso, joliet_path="/") == {"user-data", "meta-data", "network-config"}
        assert names(iso, rr_path="/") == {"user-data", "meta-data", "network-config"}
        for name in ("user-data", "meta-data", "network-config"):
            assert read(iso, joliet_path=f"/{name}") == read(iso, rr_path=f"/{name}")
    finally:
        iso.close()


def files_of(image: bytes) -> dict[str, bytes]:
    iso = open_iso(image)
    try:
        return {name: read(iso, rr_path=f"/{name}") for name in names(iso, rr_path="/")}
    finally:
        iso.close()


def test_user_data_writes_the_bundle_and_starts_the_stack() -> None:
    bundle = make_bundle()
    user_data = files_of(build(bundle=bundle))["user-data"].decode()

    assert user_data.startswith("#cloud-config\n")
    config = yaml.safe_load(user_data)
    written = {entry["path"]: entry for entry in config["write_files"]}
    assert set(written) == {
        "/opt/ems/cfg.customer.yml",
        "/opt/ems/dtm.json",
        "/opt/ems/compose.yaml",
        "/opt/ems/secrets.env",
    }
    for name, data in bundle.items():
        entry = written[f"/opt/ems/{name}"]
        assert entry["encoding"] == "b64"
        assert base64.b64decode(entry["content"]) == data
        # The commissioning token is root's alone on the appliance.
        assert entry["permissions"] == ("0600" if name == "secrets.env" else "0644")
    assert ["docker", "compose", "-f", "/opt/ems/compose.yaml", "up", "-d"] in config["runcmd"]
    assert config["timezone"] == "Europe/Vienna"


def test_meta_data_names_instance_and_host() -> None:
    bundle = make_bundle()
    meta = yaml.safe_load(files_of(build(bundle=bundle))["meta-data"])
    assert meta == {"instance-id": seed_instance_id(CFG_ID, bundle), "local-hostname": "ems-werk-sud"}


def test_network_config_only_with_static_addressing() -> None:
    network = yaml.safe_load(files_of(build())["network-config"])
    interface = network["ethernets"]["eth0"]
    assert network["version"] == 2
    assert interface["addresses"] == ["192.168.50.10/24"]
    assert interface["routes"] == [{"to": "0.0.0.0/0", "via": "192.168.50.1"}]
    assert interface["nameservers"] == {"addresses": ["192.168.50.1", "9.9.9.9"]}
    assert interface["dhcp4"] is False

    assert set(files_of(build(order=make_order(network=None)))) == {"user-data", "meta-data"}


def test_xorriso_lists_the_seed_files(tmp_path: Path) -> None:
    assert shutil.which("xorriso"), "xorriso is required (make test installs it)"
    image = tmp_path / "iso.img"
    image.write_bytes(build())
    listing = subprocess.run(
        ["xorriso", "-indev", str(image), "-ls"], check=True, capture_output=True, text=True
    )
    # xorriso prints its banner on stderr and the listing, quoted, on stdout.
    listed = set(re.findall(r"'([^']+)'", listing.stdout))
    assert {"user-data", "meta-data", "network-config"} <= listed
    volume = subprocess.run(
        ["xorriso", "-indev", str(image), "-pvd_info"], check=True, capture_output=True, text=True
    )
    assert re.search(r"Volume Id\s*:\s*cidata", volume.stdout + volume.stderr)


def test_cloud_init_accepts_user_data(tmp_path: Path) -> None:
    assert shutil.which("cloud-init"), "cloud-init is required (make test installs it)"
    user_data = tmp_path / "user-data"
    user_data.write_bytes(files_of(build())["user-data"])
    result = subprocess.run(
        ["cloud-init", "schema", "--config-file", str(user_data)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout


def test_cloud_init_parses_network_config(tmp_path: Path) -> None:
    # cloud-init is a package of the system Python, not of the project's virtualenv.
    network_config = tmp_path / "network-config"
    network_config.write_bytes(files_of(build())["network-config"])
    probe = (
        "import json, sys, yaml\n"
        "from cloudinit.net import network_state\n"
        "state = network_state.parse_net_config_data(yaml.safe_load(open(sys.argv[1])), skip_broken=False)\n"
        "print(json.dumps({'interfaces': list(state.iter_interfaces()), 'dns': state.dns_nameservers}))\n"
    )
    result = subprocess.run(
        [SYSTEM_PYTHON, "-c", probe, str(network_config)], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    state = json.loads(result.stdout)
    (subnet,) = state["interfaces"][0]["subnets"]
    assert (subnet["type"], subnet["address"], subnet["prefix"]) == ("static", "192.168.50.10", 24)
    assert subnet["routes"][0]["gateway"] == "192.168.50.1"
    assert state["dns"] == ["192.168.50.1", "9.9.9.9"]


def test_rebuild_is_byte_identical_across_time_and_timezone(
    monkeypatch: pytest.MonkeyPatch, restore_timezone: None
) -> None:
    first = build()
    time.sleep(1.1)
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    second = build()
    assert first == second
    # The frozen clock is pycdlib's only while building.
    assert pycdlib.pycdlib.time is time


def test_changed_bundle_gives_a_new_instance_id_and_image() -> None:
    before, after = make_bundle(devices=1), make_bundle(devices=2)

    assert seed_instance_id(CFG_ID, before) == seed_instance_id(CFG_ID, dict(reversed(before.items())))
    assert seed_instance_id(CFG_ID, before) != seed_instance_id(CFG_ID, after)
    assert seed_instance_id(CFG_ID, before) != seed_instance_id(
        "6a1d8b63-9e2f-4d4c-8b7a-3f2e1c0d9b82", before
    )
    assert re.fullmatch(rf"ems-{CFG_ID}-[0-9a-f]{{16}}", seed_instance_id(CFG_ID, before))
    assert build(bundle=before) != build(bundle=after)


def test_instance_id_framing_cannot_be_shifted() -> None:
    # Moving bytes from one file's end to the next name must not give the same digest.
    assert seed_instance_id(CFG_ID, {"a": b"bc", "d": b""}) != seed_instance_id(
        CFG_ID, {"a": b"b", "cd": b""}
    )


@pytest.mark.parametrize(
    ("site", "hostname"),
    [
        ("Werk Süd", "ems-werk-sud"),
        ("Plant #7 / Hall_B", "ems-plant-7-hall-b"),
        ("東京", "ems-edge"),
        ("x" * 200, "ems-" + "x" * 59),
        ("a" * 58 + " -b", "ems-" + "a" * 58),
    ],
)
def test_hostname_is_a_valid_label(site: str, hostname: str) -> None:
    assert hostname_for_site(site) == hostname
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", hostname_for_site(site))


def test_refuses_cloud_orders_and_incomplete_bundles() -> None:
    cloud = ConfiguratorPayload.model_validate(
        {
            **make_order().model_dump(mode="json"),
            "deployment": {"target": "cloud", "region": "eu-central-1", "instance_size": "t3.medium"},
        }
    )
    with pytest.raises(ValueError, match="on-prem"):
        build(order=cloud)
    bundle = make_bundle()
    del bundle["dtm.json"]
    with pytest.raises(ValueError, match=r"dtm\.json"):
        build(bundle=bundle)
    with pytest.raises(ValueError, match="cfg_id"):
        build_seed_iso(cfg_id="../x", order=make_order(), bundle=make_bundle())
