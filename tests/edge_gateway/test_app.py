from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml
from starlette.testclient import TestClient

from contracts.device_catalog import POINT_CATALOG
from contracts.dtm import DeviceTopologyModel, Point
from edge_gateway.app import create_app
from edge_gateway.settings import GatewaySettings
from edge_gateway.topology import STORED_TOPOLOGY_NAME, TopologyError
from tests.conftest import run_module, serving_module
from tests.edge_gateway.conftest import (
    COMMISSIONING_TOKEN,
    ModbusDeviceServer,
    device_document,
    dtm_document,
    free_port,
    wait_for,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
METER_VALUES: dict[Point, int] = dict(
    zip(POINT_CATALOG["power_meter"], (-15000, 2301, 123456789), strict=True)
)
BATTERY_VALUES: dict[Point, int] = dict(zip(POINT_CATALOG["battery"], (875, -5000), strict=True))


def bare_dtm() -> dict[str, Any]:
    """What a customer's order becomes before commissioning: devices, no connections."""
    return dtm_document(
        [
            device_document("meter-1", list(POINT_CATALOG["power_meter"])),
            device_document("pv-1", list(POINT_CATALOG["pv_inverter"]), device_type="pv_inverter"),
            device_document("battery-1", list(POINT_CATALOG["battery"]), device_type="battery"),
        ]
    )


def write_json(path: Path, document: dict[str, Any]) -> Path:
    path.write_text(json.dumps(document))
    return path


@contextmanager
def running(settings: GatewaySettings, dtm_path: Path | None) -> Iterator[TestClient]:
    """The gateway; the client commissions with the order's token unless a test removes it."""
    with TestClient(create_app(settings, dtm_path=dtm_path)) as client:
        client.headers["Authorization"] = f"Bearer {COMMISSIONING_TOKEN}"
        yield client


def count(client: TestClient) -> int:
    return int(client.get("/measurements").json()["count"])


def device_states(client: TestClient) -> dict[str, str]:
    return {device_id: info["state"] for device_id, info in client.get("/status").json()["devices"].items()}


def test_a_bare_deploy_serves_its_dtm_and_stays_quiet(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    settings = gateway_settings()
    dtm = write_json(tmp_path / "dtm.json", bare_dtm())
    with running(settings, dtm) as client:
        assert client.get("/topology").json() == DeviceTopologyModel.model_validate(bare_dtm()).model_dump(
            mode="json"
        )
        time.sleep(6 * settings.polling.interval_seconds)
        assert client.get("/measurements").json() == {"count": 0, "latest": {}}
        health = client.get("/status").json()
    assert health["status"] == "ok"
    assert health["connection_attempts"] == 0
    assert health["topology_source"] == "dtm_path"
    assert health["devices"]["meter-1"] == {
        "state": "not_connected",
        "consecutive_failures": 0,
        "last_error": None,
        "last_success_at": None,
    }
    assert set(health["devices"]) == {"meter-1", "pv-1", "battery-1"}


def test_an_invalid_topology_is_422_naming_the_field_and_the_running_one_stays(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    settings = gateway_settings()
    dtm = write_json(tmp_path / "dtm.json", bare_dtm())
    bad_port = bare_dtm()
    bad_port["devices"][0]["connection"] = {"protocol": "modbus_tcp", "host": "127.0.0.1", "port": 70000}
    unknown_field = bare_dtm()
    unknown_field["devices"][1]["points"][0]["signed"] = True
    duplicate = bare_dtm()
    duplicate["devices"][2]["id"] = "meter-1"
    with running(settings, dtm) as client:
        before = client.get("/topology").json()
        answer = client.post("/topology", json=bad_port)
        assert answer.status_code == 422
        assert answer.json()["errors"] == [
            {"field": "devices[0].connection.port", "message": "Input should be less than or equal to 65535"}
        ]
        assert "devices[0].connection.port" in answer.json()["detail"]
        answer = client.post("/topology", json=unknown_field)
        assert answer.status_code == 422
        assert answer.json()["errors"] == [
            {"field": "devices[1].points[0].signed", "message": "unknown field"}
        ]
        answer = client.post("/topology", json=duplicate)
        assert (
            answer.status_code == 422 and "device ids must be unique" in answer.json()["errors"][0]["message"]
        )
        assert (
            client.post("/topology", content=b"{", headers={"content-type": "application/json"}).status_code
            == 400
        )
        assert (
            client.post("/topology", content=b"{}", headers={"content-type": "text/plain"}).status_code == 415
        )
        assert client.get("/topology").json() == before
        health = client.get("/status").json()
    assert health["connection_attempts"] == 0, "a rejected topology never reaches a device"
    assert health["topology_source"] == "dtm_path"
    assert not (Path(settings.storage.path).parent / STORED_TOPOLOGY_NAME).exists()


def test_an_oversized_topology_is_refused(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    settings = gateway_settings()
    settings = settings.model_copy(update={"http": settings.http.model_copy(update={"max_body_bytes": 1024})})
    with running(settings, None) as client:
        answer = client.post("/topology", content=b" " * 2048, headers={"content-type": "application/json"})
    assert answer.status_code == 413


@dataclass
class MeterSite:
    """A bare deploy of the gateway, a power meter on the LAN, and the topology that connects it."""

    settings: GatewaySettings
    dtm: Path
    meter: ModbusDeviceServer
    commissioned: dict[str, Any]


@pytest.fixture
def meter_site(
    tmp_path: Path,
    gateway_settings: Callable[..., GatewaySettings],
    modbus_device: Callable[..., ModbusDeviceServer],
) -> Callable[..., MeterSite]:
    """``meter_site(**connection)``: the site, with ``connection`` keys added to the meter's (a unit_id, say)."""

    def make(**connection: Any) -> MeterSite:
        meter = modbus_device(METER_VALUES, unit_id=connection.get("unit_id", 1))
        commissioned = bare_dtm()
        commissioned["devices"][0]["connection"] = {
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": meter.port,
            **connection,
        }
        dtm = write_json(tmp_path / "dtm.json", bare_dtm())
        return MeterSite(gateway_settings(), dtm, meter, commissioned)

    return make


def test_commissioning_starts_polling_without_a_restart_and_removal_stops_it(
    meter_site: Callable[..., MeterSite],
) -> None:
    site = meter_site(unit_id=1)
    settings, meter = site.settings, site.meter
    with running(settings, site.dtm) as client:
        assert count(client) == 0
        answer = client.post("/topology", json=site.commissioned)
        assert answer.status_code == 200
        assert answer.json() == {"status": "applied", "devices": 3, "polled_devices": 1}
        wait_for(lambda: count(client) > 0)
        latest = client.get("/measurements").json()["latest"]["meter-1"]
        assert latest["active_power"]["value"] == -15000 and latest["active_power"]["unit"] == "W"
        assert latest["voltage_l1"]["value"] == pytest.approx(230.1)
        assert latest["energy_import"]["value"] == pytest.approx(1234567.89)
        assert device_states(client) == {
            "meter-1": "polling",
            "pv-1": "not_connected",
            "battery-1": "not_connected",
        }
        assert client.get("/topology").json()["devices"][0]["connection"]["port"] == meter.port

        # Decommissioning: the meter leaves the topology and is no longer polled.
        without_meter = bare_dtm()
        del without_meter["devices"][0]
        assert client.post("/topology", json=without_meter).status_code == 200
        settled = count(client)
        time.sleep(5 * settings.polling.interval_seconds)
        assert count(client) == settled
        assert set(device_states(client)) == {"pv-1", "battery-1"}


def test_a_posted_topology_survives_a_restart(meter_site: Callable[..., MeterSite]) -> None:
    # No unit_id: the meter answers as unit 1, the one a connection without it means.
    site = meter_site()
    with running(site.settings, site.dtm) as client:
        assert client.post("/topology", json=site.commissioned).status_code == 200
        wait_for(lambda: count(client) > 0)
        posted = client.get("/topology").json()
    with running(site.settings, site.dtm) as client:
        assert client.get("/topology").json() == posted, "the posted topology wins over DTM_PATH"
        assert client.get("/status").json()["topology_source"] == "stored"
        before = count(client)
        assert before > 0, "measurements are kept across the restart"
        wait_for(lambda: count(client) > before)


def test_one_dead_device_fails_alone_and_recovers_on_the_same_port(
    tmp_path: Path,
    gateway_settings: Callable[..., GatewaySettings],
    modbus_device: Callable[..., ModbusDeviceServer],
) -> None:
    meter = modbus_device(METER_VALUES, unit_id=1)
    battery = modbus_device(BATTERY_VALUES, unit_id=2)
    settings = gateway_settings()
    document = dtm_document(
        [
            device_document("meter-1", list(METER_VALUES), port=meter.port, unit_id=1),
            device_document(
                "battery-1", list(BATTERY_VALUES), port=battery.port, unit_id=2, device_type="battery"
            ),
        ]
    )
    dtm = write_json(tmp_path / "dtm.json", document)

    def history(client: TestClient, device_id: str) -> str | None:
        points = client.get("/measurements").json()["latest"].get(device_id, {})
        return max((entry["at"] for entry in points.values()), default=None)

    with running(settings, dtm) as client:
        wait_for(
            lambda: (
                device_states(client) == {"meter-1": "polling", "battery-1": "polling"} and count(client) > 10
            )
        )
        battery.stop()
        wait_for(lambda: client.get("/status").json()["devices"]["battery-1"]["consecutive_failures"] >= 3)
        health = client.get("/status").json()
        assert health["status"] == "degraded"
        assert health["devices"]["meter-1"]["state"] == "polling"
        dead = health["devices"]["battery-1"]
        assert dead["state"] == "failing" and dead["last_error"] and dead["last_success_at"]
        # The meter keeps measuring while the battery is down.
        meter_seen = history(client, "meter-1")
        battery_seen = history(client, "battery-1")
        wait_for(lambda: (history(client, "meter-1") or "") > (meter_seen or ""))
        assert history(client, "battery-1") == battery_seen

        battery.start()
        wait_for(lambda: device_states(client)["battery-1"] == "polling")
        wait_for(lambda: (history(client, "battery-1") or "") > (battery_seen or ""))
        health = client.get("/status").json()
    assert health["status"] == "ok"
    assert health["devices"]["battery-1"]["consecutive_failures"] == 0
    # One connection per device, plus one per retry of the dead one (and its reconnect).
    assert health["connection_attempts"] >= 2 + 3


def test_without_dtm_path_there_is_no_topology_until_one_is_posted(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    with running(gateway_settings(), None) as client:
        assert client.get("/topology").status_code == 404
        assert client.get("/status").json() == {
            "status": "ok",
            "devices": {},
            "connection_attempts": 0,
            "topology_source": "none",
        }
        assert client.post("/topology", json=bare_dtm()).status_code == 200
        assert [d["id"] for d in client.get("/topology").json()["devices"]] == [
            "meter-1",
            "pv-1",
            "battery-1",
        ]


def test_a_broken_delivered_dtm_stops_the_start(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    document = bare_dtm()
    document["devices"][0]["connection"] = {"protocol": "modbus_tcp", "host": "not a host"}
    dtm = write_json(tmp_path / "dtm.json", document)
    with pytest.raises(TopologyError, match=r"devices\[0\]\.connection\.host"):
        create_app(gateway_settings(), dtm_path=dtm)


@pytest.mark.slow
def test_python_m_edge_gateway_serves_the_delivered_stack_shape(tmp_path: Path) -> None:
    port = free_port()
    customer = tmp_path / "cfg.customer.yml"
    customer.write_text(
        yaml.safe_dump(
            {
                "http": {"port": port, "host": "127.0.0.1"},
                "storage": {"path": str(tmp_path / "data" / "gateway.db")},
            }
        )
    )
    dtm = write_json(tmp_path / "dtm.json", bare_dtm())
    environment = {
        **os.environ,
        "ENV": "beta",
        "CFG_CUSTOMER_PATH": str(customer),
        "DTM_PATH": str(dtm),
        "PYTHONPATH": str(PROJECT_ROOT),
        # As compose's env_file passes the bundle's secrets.env.
        "COMMISSIONING_TOKEN": COMMISSIONING_TOKEN,
    }
    topology = urllib.request.Request(
        f"http://127.0.0.1:{port}/topology", headers={"Authorization": f"Bearer {COMMISSIONING_TOKEN}"}
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    with (
        serving_module(
            "edge_gateway", cwd=tmp_path, env=environment, ready=healthy, timeout=30, stderr=subprocess.STDOUT
        ) as server,
        urllib.request.urlopen(topology, timeout=2) as answer,
    ):
        assert [d["id"] for d in json.load(answer)["devices"]] == ["meter-1", "pv-1", "battery-1"]
    # uvicorn shuts down gracefully on SIGTERM (docker stop), then re-raises the signal.
    assert "Application shutdown complete" in server.stdout.decode()
    assert (tmp_path / "data" / "gateway.db").is_file()


def test_python_m_edge_gateway_refuses_a_bad_config_naming_the_key(tmp_path: Path) -> None:
    customer = tmp_path / "cfg.customer.yml"
    customer.write_text("http:\n  prot: 1\n")
    result = run_module(
        ["edge_gateway"],
        cwd=tmp_path,
        env={
            **os.environ,
            "ENV": "local",
            "CFG_CUSTOMER_PATH": str(customer),
            "PYTHONPATH": str(PROJECT_ROOT),
        },
    )
    assert result.returncode == 1
    assert f"http.prot: unknown key (set in {customer})" in result.stderr


# --- commissioning is for the order's token holder, and only towards hosts a site can have -------


def connected_to(host: str, port: int = 502) -> dict[str, Any]:
    device = device_document("meter-1", list(POINT_CATALOG["power_meter"]), port=port)
    device["connection"]["host"] = host
    return dtm_document([device])


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        (f"Basic {COMMISSIONING_TOKEN}", 401),
        (f"Bearer {COMMISSIONING_TOKEN}", 200),
    ],
)
def test_commissioning_needs_the_orders_token(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings], authorization: str | None, status: int
) -> None:
    dtm_path = write_json(tmp_path / "dtm.json", bare_dtm())
    with running(gateway_settings(), dtm_path) as client:
        headers = {} if authorization is None else {"Authorization": authorization}
        del client.headers["Authorization"]
        answer = client.post("/topology", json=connected_to("192.0.2.10"), headers=headers)
        assert answer.status_code == status, answer.text
        if status == 401:
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
            assert "commissioning token" in answer.json()["detail"]
            # Nothing changed: the delivered topology still runs.
            delivered = client.get("/topology", headers={"Authorization": f"Bearer {COMMISSIONING_TOKEN}"})
            assert [d.get("connection") for d in delivered.json()["devices"]] == [None, None, None]
            assert client.get("/status", headers=headers).status_code == 401


@pytest.mark.parametrize(
    ("authorization", "status"),
    [
        (None, 401),
        ("Bearer wrong-token", 401),
        (f"Basic {COMMISSIONING_TOKEN}", 401),
        (f"Bearer {COMMISSIONING_TOKEN}x", 401),
        (f"Bearer {COMMISSIONING_TOKEN}", 200),
    ],
)
def test_reading_the_topology_needs_the_orders_token_too(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings], authorization: str | None, status: int
) -> None:
    dtm_path = write_json(tmp_path / "dtm.json", bare_dtm())
    with running(gateway_settings(), dtm_path) as client:
        del client.headers["Authorization"]
        headers = {} if authorization is None else {"Authorization": authorization}
        answer = client.get("/topology", headers=headers)
        # The LAN's view stays open: the HMI's measurements and the health counts.
        open_to_the_lan = [client.get(path).status_code for path in ("/healthz", "/measurements")]
    assert answer.status_code == status, answer.text
    if status == 401:
        assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        # No device, host or port in the refusal.
        assert "devices" not in answer.text and "meter-1" not in answer.text
    else:
        assert [d["id"] for d in answer.json()["devices"]] == ["meter-1", "pv-1", "battery-1"]
    assert open_to_the_lan == [200, 200]


def test_a_gateway_without_a_token_refuses_all_commissioning(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    with running(gateway_settings(token=None), None) as client:
        answer = client.post("/topology", json=bare_dtm())
        read = client.get("/topology")
    assert answer.status_code == read.status_code == 403
    assert "COMMISSIONING_TOKEN" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("host", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("localhost", "names this machine"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
    ],
)
def test_a_posted_topology_may_not_point_at_this_machine_or_link_local(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings], host: str, reason: str
) -> None:
    with running(gateway_settings(commissioning={"allow_loopback_hosts": False}), None) as client:
        answer = client.post("/topology", json=connected_to(host))
        assert answer.status_code == 422, answer.text
        (error,) = answer.json()["errors"]
        assert error["field"] == "devices[0].connection.host"
        assert reason in error["message"]
        assert client.get("/status").json()["connection_attempts"] == 0


def test_a_site_address_is_accepted(tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]) -> None:
    with running(gateway_settings(commissioning={"allow_loopback_hosts": False}), None) as client:
        for host in ("10.20.0.5", "192.168.1.40", "meter-7.plant.example"):
            assert client.post("/topology", json=connected_to(host, port=1502)).status_code == 200, host


def test_a_topology_over_the_device_cap_is_refused(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    points = list(POINT_CATALOG["power_meter"])
    devices = [device_document(f"meter-{n}", points) for n in range(4)]
    with running(gateway_settings(commissioning={"max_devices": 3}), None) as client:
        answer = client.post("/topology", json=dtm_document(devices))
        assert answer.status_code == 422
        assert "at most 3" in answer.json()["detail"]
        assert client.get("/topology").status_code == 404


def test_healthz_tells_the_lan_only_counts(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    dtm_path = write_json(tmp_path / "dtm.json", bare_dtm())
    with running(gateway_settings(), dtm_path) as client:
        del client.headers["Authorization"]
        health = client.get("/healthz").json()
    assert health == {"status": "ok", "devices": {"polling": 0, "failing": 0, "not_connected": 3}}


@pytest.mark.slow
def test_a_topology_body_that_drips_in_is_cut_off(
    tmp_path: Path, gateway_settings: Callable[..., GatewaySettings]
) -> None:
    """A real uvicorn: the test client would buffer the body before the app saw any of it."""
    settings = gateway_settings()
    settings = settings.model_copy(
        update={"http": settings.http.model_copy(update={"body_read_timeout_seconds": 0.5})}
    )
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, timeout=10)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.sendall(
                f"POST /topology HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {COMMISSIONING_TOKEN}\r\n"
                "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode()
            )
            started = time.monotonic()
            answer = b""
            while not answer.endswith(b"}") and time.monotonic() - started < 5:
                conn.sendall(b" ")  # never idle: only a whole-body deadline ends it
                readable, _, _ = select.select([conn], [], [], 0.1)
                if readable:
                    answer += conn.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
        assert time.monotonic() - started < 3
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_python_m_edge_gateway_serves_with_the_connection_limits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import edge_gateway.__main__ as entry

    customer = tmp_path / "cfg.customer.yml"
    customer.write_text(
        yaml.safe_dump({"storage": {"path": str(tmp_path / "gateway.db")}, "http": {"limit_concurrency": 7}})
    )
    served: dict[str, Any] = {}
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **options: served.update(options))
    monkeypatch.setattr(sys, "argv", ["edge_gateway"])
    monkeypatch.setenv("ENV", "beta")
    monkeypatch.setenv("CFG_CUSTOMER_PATH", str(customer))
    monkeypatch.delenv("DTM_PATH", raising=False)
    entry.main()
    assert served["limit_concurrency"] == 7
    assert served["timeout_keep_alive"] == 5
    assert served["h11_max_incomplete_event_size"] == 16384
    assert served["http"] == "h11"
