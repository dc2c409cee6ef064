"""The edge gateway's HTTP API: the topology it runs, its measurements and its health.

``POST /topology`` is commissioning: with the order's commissioning token, a valid DTM is stored
durably and applied at once (pollers of removed devices stop, new ones start); an invalid one is
answered 422 naming the field and changes nothing. ``GET /topology`` needs the same token: the DTM
names every device's host and port, a map of the site's plant network. ``GET /healthz`` tells
anyone on the LAN no more than the HMI needs (overall state and counts); which device fails, and
how often the gateway tried, is ``GET /status`` behind the same token.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from contracts.dtm import DeviceTopologyModel
from edge_gateway.commissioning import check_posted_topology, require_commissioning_token
from edge_gateway.polling import PollingSupervisor
from edge_gateway.settings import GatewaySettings
from edge_gateway.storage import MeasurementStore, Reading
from edge_gateway.topology import TopologySource, TopologyStore
from service_kit.json_body import read_json_model
from service_kit.problems import Problem, problem_handlers

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 3600.0


@dataclass
class GatewayState:
    settings: GatewaySettings
    measurements: MeasurementStore
    topologies: TopologyStore
    supervisor: PollingSupervisor
    topology: DeviceTopologyModel | None
    source: TopologySource
    # One topology change at a time: two concurrent POSTs must not interleave store and apply.
    topology_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


async def get_topology(request: Request) -> JSONResponse:
    state = _state(request)
    require_commissioning_token(request, state.settings)
    if state.topology is None:
        raise Problem(404, "no topology yet: DTM_PATH is unset and none was posted")
    return JSONResponse(state.topology.model_dump(mode="json"))


async def post_topology(request: Request) -> JSONResponse:
    state = _state(request)
    require_commissioning_token(request, state.settings)
    http = state.settings.http
    topology = await read_json_model(
        request, DeviceTopologyModel, http.max_body_bytes, read_timeout_seconds=http.body_read_timeout_seconds
    )
    await check_posted_topology(topology, state.settings)

    async with state.topology_lock:
        try:
            # Stored before applied: what runs is always what a restart would run.
            await asyncio.to_thread(state.topologies.save, topology)
        except OSError as exc:
            log.error("could not store the posted topology: %s", exc)
            raise Problem(
                503, "the topology could not be stored; the running topology is unchanged"
            ) from None
        await state.supervisor.apply(topology)
        state.topology = topology
        state.source = "stored"
    polled = sum(1 for device in topology.devices if device.connection is not None)
    log.info("topology applied: %d device(s), %d polled", len(topology.devices), polled)
    return JSONResponse({"status": "applied", "devices": len(topology.devices), "polled_devices": polled})


async def get_measurements(request: Request) -> JSONResponse:
    store = _state(request).measurements
    count = await asyncio.to_thread(store.count)
    latest = await asyncio.to_thread(store.latest)
    return JSONResponse({"count": count, "latest": latest})


async def healthz(request: Request) -> JSONResponse:
    state = _state(request)
    devices = state.supervisor.device_health()
    try:
        await asyncio.to_thread(state.measurements.count)
    except Exception as exc:  # noqa: BLE001 - the database is the one thing a restart might fix: say unavailable
        log.error("storage check failed: %s", exc)
        return JSONResponse({"status": "unavailable", "storage": "unreadable"}, status_code=503)
    # A failing device is the field's problem, not the gateway's: degraded still answers 200, so
    # the container's healthcheck does not flag a gateway that works as designed.
    degraded = any(health.state == "failing" for health in devices.values())
    states = [health.state for health in devices.values()]
    return JSONResponse(
        {
            "status": "degraded" if degraded else "ok",
            "devices": {
                state_name: states.count(state_name) for state_name in ("polling", "failing", "not_connected")
            },
        }
    )


async def get_status(request: Request) -> JSONResponse:
    state = _state(request)
    require_commissioning_token(request, state.settings)
    devices = state.supervisor.device_health()
    degraded = any(health.state == "failing" for health in devices.values())
    return JSONResponse(
        {
            "status": "degraded" if degraded else "ok",
            "devices": {device_id: health.as_json() for device_id, health in devices.items()},
            "connection_attempts": state.supervisor.connection_attempts,
            "topology_source": state.source,
        }
    )


async def _prune_forever(store: MeasurementStore, retention_days: float) -> None:
    while True:
        try:
            cutoff = datetime.now(UTC) - timedelta(days=retention_days)
            deleted = await asyncio.to_thread(store.prune, cutoff)
            if deleted:
                log.info("deleted %d measurement(s) older than %s", deleted, cutoff.isoformat())
        except Exception:  # a failed clean-up must not stop the next one
            log.exception("pruning old measurements failed")
        await asyncio.sleep(PRUNE_INTERVAL_SECONDS)


def create_app(settings: GatewaySettings, *, dtm_path: Path | None = None) -> Starlette:
    """The gateway app; raises TopologyError at once if the topology to start with is broken."""
    topologies = TopologyStore(settings.storage.data_dir, dtm_path)
    loaded = topologies.load()
    measurements = MeasurementStore(Path(settings.storage.path))

    async def store_readings(readings: Sequence[Reading]) -> None:
        await asyncio.to_thread(measurements.add, readings)

    state = GatewayState(
        settings=settings,
        measurements=measurements,
        topologies=topologies,
        supervisor=PollingSupervisor(settings.polling, store_readings),
        topology=loaded.topology,
        source=loaded.source,
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        devices = len(state.topology.devices) if state.topology else 0
        log.info("starting with the %s topology (%d device(s))", state.source, devices)
        await state.supervisor.apply(state.topology)
        pruner = asyncio.create_task(_prune_forever(measurements, settings.retention_days), name="prune")
        try:
            yield
        finally:
            pruner.cancel()
            await asyncio.wait([pruner])
            await state.supervisor.stop()
            measurements.close()

    app = Starlette(
        routes=[
            Route("/topology", get_topology, methods=["GET"]),
            Route("/topology", post_topology, methods=["POST"]),
            Route("/measurements", get_measurements, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/status", get_status, methods=["GET"]),
        ],
        exception_handlers=problem_handlers(),
        lifespan=lifespan,
    )
    app.state.gateway = state
    return app
