"""Local stand-in for the EDP API (``/edp-api/jobs``), a real HTTP server.

A job's status follows the clock: queued for ``queued_seconds`` after creation, running for
``running_seconds`` after that, then complete (or failed in fault mode ``job_fails``). Its
artifacts (``dtm.json`` and ``edp-report.json``) are engineered from the payload when the job is
accepted and written to ``state_dir`` together with the job, so jobs survive a restart.

Faults come from the settings at start and can be changed on a running server through
``PUT /_standin/faults``:

- ``job_fails``: jobs accepted from now on end ``failed`` with an error text;
- ``http_500``: every ``/edp-api`` request answers 500;
- ``hang``: every ``/edp-api`` request waits ``hang_seconds`` before answering;
- ``huge_job_answer``: ``GET /edp-api/jobs/{job_id}`` of a known job answers a valid job padded to
  :data:`HUGE_JOB_ANSWER_BYTES`, streamed without Content-Length (a client must cap what it reads).

Run it with ``python -m standins.edp`` (settings of the stage named by ``ENV``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import uvicorn
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from contracts.configurator import ConfiguratorPayload, Device
from contracts.device_catalog import POINT_CATALOG
from contracts.dtm import DTM_SCHEMA_VERSION, DeviceTopologyModel, DtmDevice, DtmSite
from contracts.edp import EdpArtifact, EdpJob, EdpJobAccepted, EdpJobStatus
from delivery.email import write_atomically
from platform_config.settings import ConfigError, EdpStandinSettings, load_settings
from service_kit.canonical_json import canonical_json

FailureMode = Literal["none", "job_fails", "http_500", "hang", "huge_job_answer"]

DTM_NAME = "dtm.json"
REPORT_NAME = "edp-report.json"
ARTIFACT_NAMES = (DTM_NAME, REPORT_NAME)
REPORT_SCHEMA_VERSION = 1

MAX_BODY_BYTES = 1024 * 1024
MAX_IDEMPOTENCY_KEY_LENGTH = 255
JOB_ID_LENGTH = 32
# Far past any sane job answer (kilobytes) and any client's cap, yet finite: a client without a cap
# reads it whole and accepts it.
HUGE_JOB_ANSWER_BYTES = 64 * 1024 * 1024
PADDING_CHUNK_BYTES = 64 * 1024
HEX_DIGITS = frozenset("0123456789abcdef")

Body = TypeVar("Body", bound=BaseModel)


class FaultState(BaseModel):
    """The stand-in's current fault mode and latencies."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    failure: FailureMode = "none"
    queued_seconds: Annotated[float, Field(ge=0)] = 1.0
    running_seconds: Annotated[float, Field(ge=0)] = 2.0
    hang_seconds: Annotated[float, Field(ge=0)] = 30.0


class FaultUpdate(BaseModel):
    """Body of ``PUT /_standin/faults``: the fields to change, the rest stays."""

    model_config = ConfigDict(extra="forbid")

    failure: FailureMode | None = None
    queued_seconds: Annotated[float, Field(ge=0)] | None = None
    running_seconds: Annotated[float, Field(ge=0)] | None = None
    hang_seconds: Annotated[float, Field(ge=0)] | None = None


class StoredArtifact(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    sha256: str
    size: int


class StoredJob(BaseModel):
    """One job as kept in ``state_dir/jobs/<job_id>.json``.

    Latencies and outcome are fixed when the job is accepted, so a later fault change or a
    restart with other settings never rewrites a job's history.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    job_id: str
    idempotency_key: str
    payload_sha256: str
    created_at: float = Field(description="Unix time the job was accepted.")
    queued_seconds: float
    running_seconds: float
    outcome: Literal["complete", "failed"]
    error: str | None = None
    flags: dict[str, Any]
    artifacts: list[StoredArtifact]
    payload: ConfiguratorPayload

    def status_at(self, now: float) -> EdpJobStatus:
        elapsed = now - self.created_at
        if elapsed < self.queued_seconds:
            return "queued"
        if elapsed < self.queued_seconds + self.running_seconds:
            return "running"
        return self.outcome


class IndexEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    idempotency_key: str
    job_id: str


def build_dtm(payload: ConfiguratorPayload) -> DeviceTopologyModel:
    """The device topology model EDP engineers from an order: each device with its register points."""
    return DeviceTopologyModel(
        schema_version=DTM_SCHEMA_VERSION,
        site=DtmSite(name=payload.site.name, timezone=payload.site.timezone),
        devices=[
            DtmDevice(
                id=device.id,
                type=device.type,
                model=device.model,
                connection=device.connection,
                points=list(POINT_CATALOG[device.type]),
            )
            for device in payload.devices
        ],
    )


def _devices_without_connection(devices: list[Device]) -> list[str]:
    return [device.id for device in devices if device.connection is None]


def build_flags(payload: ConfiguratorPayload) -> dict[str, Any]:
    return {
        "commissioning_required": bool(_devices_without_connection(payload.devices)),
        "device_count": len(payload.devices),
    }


def build_report(payload: ConfiguratorPayload) -> dict[str, Any]:
    """A short engineering summary; free of job ids and timestamps so it is reproducible."""
    per_type = Counter(device.type for device in payload.devices)
    unconnected = _devices_without_connection(payload.devices)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "site": {"name": payload.site.name, "timezone": payload.site.timezone},
        "deployment_target": payload.target,
        "device_count": len(payload.devices),
        "devices_per_type": {device_type: per_type.get(device_type, 0) for device_type in POINT_CATALOG},
        "point_count": sum(len(POINT_CATALOG[device.type]) for device in payload.devices),
        "devices_without_connection": unconnected,
        "commissioning_required": bool(unconnected),
    }


def build_artifacts(payload: ConfiguratorPayload) -> dict[str, bytes]:
    return {
        DTM_NAME: canonical_json(build_dtm(payload).model_dump(mode="json")),
        REPORT_NAME: canonical_json(build_report(payload)),
    }


class JobStore:
    """Jobs, artifacts and the idempotency index as files under ``state_dir``.

    Every request reads from disk, so a restarted stand-in sees exactly what the previous one wrote.
    """

    def __init__(self, state_dir: Path) -> None:
        self.jobs_dir = state_dir / "jobs"
        self.artifacts_dir = state_dir / "artifacts"
        self.index_dir = state_dir / "idempotency"
        for directory in (self.jobs_dir, self.artifacts_dir, self.index_dir):
            directory.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def valid_job_id(job_id: str) -> bool:
        # Job ids become file names; anything but our own uuid4 hex is unknown by construction.
        return len(job_id) == JOB_ID_LENGTH and set(job_id) <= HEX_DIGITS

    def _index_path(self, idempotency_key: str) -> Path:
        # Keys are client text; hashing keeps them out of file names.
        return self.index_dir / f"{hashlib.sha256(idempotency_key.encode('utf-8')).hexdigest()}.json"

    def get(self, job_id: str) -> StoredJob | None:
        if not self.valid_job_id(job_id):
            return None
        path = self.jobs_dir / f"{job_id}.json"
        if not path.is_file():
            return None
        return StoredJob.model_validate_json(path.read_bytes())

    def find_by_key(self, idempotency_key: str) -> StoredJob | None:
        path = self._index_path(idempotency_key)
        if not path.is_file():
            return None
        entry = IndexEntry.model_validate_json(path.read_bytes())
        return self.get(entry.job_id)

    def add(self, job: StoredJob, artifacts: dict[str, bytes]) -> None:
        # Artifacts first, index last: an interrupted add leaves an orphan, never a dangling index entry.
        for name, data in artifacts.items():
            write_atomically(self.artifacts_dir / job.job_id / name, data)
        write_atomically(self.jobs_dir / f"{job.job_id}.json", canonical_json(job.model_dump(mode="json")))
        entry = IndexEntry(idempotency_key=job.idempotency_key, job_id=job.job_id)
        write_atomically(self._index_path(job.idempotency_key), canonical_json(entry.model_dump(mode="json")))

    def artifact(self, job_id: str, name: str) -> bytes | None:
        if not self.valid_job_id(job_id) or name not in ARTIFACT_NAMES:
            return None
        path = self.artifacts_dir / job_id / name
        return path.read_bytes() if path.is_file() else None


def _error(status_code: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status_code)


def _validation_errors(exc: ValidationError) -> list[dict[str, str]]:
    # Field paths and messages only: the rejected input may hold customer data and is not echoed.
    return [
        {
            "field": ".".join(str(part) for part in error["loc"]) or "(body)",
            "message": error["msg"],
            "type": error["type"],
        }
        for error in exc.errors(include_url=False)
    ]


async def _read_body(request: Request, model: type[Body], name: str) -> Body | Response:
    """The request body as ``model``, or the 413/400/422 answer that refuses it."""
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return _error(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        return _error(400, f"malformed JSON: {exc}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        return _error(422, f"invalid {name}", detail=_validation_errors(exc))


def _idempotency_key(request: Request) -> str | Response:
    idempotency_key = (request.headers.get("Idempotency-Key") or "").strip()
    if not idempotency_key:
        return _error(400, "header Idempotency-Key is required")
    if len(idempotency_key) > MAX_IDEMPOTENCY_KEY_LENGTH:
        return _error(400, f"header Idempotency-Key is longer than {MAX_IDEMPOTENCY_KEY_LENGTH} characters")
    return idempotency_key


async def _padded_job_answer(answer: EdpJob) -> AsyncIterator[bytes]:
    """``answer`` as JSON with a flag of padding that makes it :data:`HUGE_JOB_ANSWER_BYTES` long."""
    head = answer.model_dump_json(exclude={"flags"})[:-1].encode() + b', "flags": {"padding": "'
    tail = b'"}}'
    yield head
    left = HUGE_JOB_ANSWER_BYTES - len(head) - len(tail)
    while left > 0:
        size = min(left, PADDING_CHUNK_BYTES)
        yield b"x" * size
        left -= size
    yield tail


def _new_job(
    idempotency_key: str,
    payload: ConfiguratorPayload,
    payload_sha256: str,
    artifacts: dict[str, bytes],
    faults: FaultState,
) -> StoredJob:
    """A job accepted now, its latencies and outcome fixed by the faults in force."""
    failed = faults.failure == "job_fails"
    return StoredJob(
        job_id=uuid.uuid4().hex,
        idempotency_key=idempotency_key,
        payload_sha256=payload_sha256,
        created_at=time.time(),
        queued_seconds=faults.queued_seconds,
        running_seconds=faults.running_seconds,
        outcome="failed" if failed else "complete",
        error=(
            "EDP engineering failed: injected fault job_fails (the device topology could not be engineered)"
            if failed
            else None
        ),
        flags=build_flags(payload),
        artifacts=[
            StoredArtifact(name=name, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
            for name, data in artifacts.items()
        ],
        payload=payload,
    )


Endpoint = Callable[[Request], Awaitable[Response]]


class EdpStandin:
    """The stand-in's state (job store, faults in force) and its endpoints."""

    def __init__(self, settings: EdpStandinSettings, public_base_url: str) -> None:
        self.base_url = public_base_url.rstrip("/")
        self.store = JobStore(Path(settings.state_dir))
        self.faults = FaultState(
            failure=settings.failure,
            queued_seconds=settings.queued_seconds,
            running_seconds=settings.running_seconds,
            hang_seconds=settings.hang_seconds,
        )

    def routes(self) -> list[Route]:
        return [
            Route("/edp-api/jobs", self._edp_api(self.create_job), methods=["POST"]),
            Route("/edp-api/jobs/{job_id}", self._edp_api(self.get_job), methods=["GET"]),
            Route(
                "/edp-api/jobs/{job_id}/artifacts/{name}", self._edp_api(self.get_artifact), methods=["GET"]
            ),
            Route("/_standin/faults", self.read_faults, methods=["GET"]),
            Route("/_standin/faults", self.update_faults, methods=["PUT"]),
            Route("/healthz", self.healthz, methods=["GET"]),
        ]

    def artifact_url(self, job_id: str, name: str) -> str:
        return f"{self.base_url}/edp-api/jobs/{job_id}/artifacts/{name}"

    def _edp_api(self, handler: Endpoint) -> Endpoint:
        """Apply the injected fault to an ``/edp-api`` endpoint; the control endpoints stay healthy."""

        async def endpoint(request: Request) -> Response:
            if self.faults.failure == "http_500":
                return _error(500, "EDP stand-in: injected fault http_500")
            if self.faults.failure == "hang":
                await asyncio.sleep(self.faults.hang_seconds)
            return await handler(request)

        return endpoint

    async def create_job(self, request: Request) -> Response:
        idempotency_key = _idempotency_key(request)
        if isinstance(idempotency_key, Response):
            return idempotency_key
        payload = await _read_body(request, ConfiguratorPayload, "ConfiguratorPayload")
        if isinstance(payload, Response):
            return payload
        payload_sha256 = hashlib.sha256(canonical_json(payload.model_dump(mode="json"))).hexdigest()

        # No await between lookup and add: on the single event loop, a key cannot race into two jobs.
        job = self.store.find_by_key(idempotency_key)
        if job is None:
            artifacts = build_artifacts(payload)
            job = _new_job(idempotency_key, payload, payload_sha256, artifacts, self.faults)
            self.store.add(job, {} if job.outcome == "failed" else artifacts)
        elif job.payload_sha256 != payload_sha256:
            return _error(409, "Idempotency-Key was already used with a different payload", job_id=job.job_id)
        accepted = EdpJobAccepted(
            job_id=job.job_id,
            edp_artifact_urls=[self.artifact_url(job.job_id, artifact.name) for artifact in job.artifacts],
        )
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202)

    async def get_job(self, request: Request) -> Response:
        job = self.store.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "unknown job")
        status = job.status_at(time.time())
        answer = EdpJob(
            status=status,
            edp_artifacts=(
                [
                    EdpArtifact(name=a.name, url=self.artifact_url(job.job_id, a.name), sha256=a.sha256)
                    for a in job.artifacts
                ]
                if status == "complete"
                else []
            ),
            flags=job.flags if status == "complete" else {},
            error=job.error if status == "failed" else None,
        )
        if self.faults.failure == "huge_job_answer":
            return StreamingResponse(_padded_job_answer(answer), media_type="application/json")
        return JSONResponse(answer.model_dump(mode="json"))

    async def get_artifact(self, request: Request) -> Response:
        job_id, name = request.path_params["job_id"], request.path_params["name"]
        job = self.store.get(job_id)
        if job is None:
            return _error(404, "unknown job")
        if job.status_at(time.time()) != "complete":
            return _error(404, "artifacts are available once the job is complete")
        data = self.store.artifact(job_id, name)
        if data is None:
            return _error(404, f"unknown artifact {name!r}")
        return Response(
            data, media_type="application/json", headers={"ETag": f'"{hashlib.sha256(data).hexdigest()}"'}
        )

    async def read_faults(self, request: Request) -> Response:
        return JSONResponse(self.faults.model_dump(mode="json"))

    async def update_faults(self, request: Request) -> Response:
        update = await _read_body(request, FaultUpdate, "fault update")
        if isinstance(update, Response):
            return update
        for field, value in update.model_dump(exclude_none=True).items():
            setattr(self.faults, field, value)
        return JSONResponse(self.faults.model_dump(mode="json"))

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"status": "ok"})


def create_edp_app(settings: EdpStandinSettings, public_base_url: str) -> Starlette:
    """The EDP stand-in as an ASGI app; artifact URLs start with ``public_base_url``."""
    return Starlette(routes=EdpStandin(settings, public_base_url).routes())


def main() -> None:
    """Serve the EDP stand-in of the current stage (``ENV``) until interrupted."""
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(str(exc))
    edp = settings.standins.edp
    if not edp.enabled:
        sys.exit(f"the EDP stand-in is disabled for stage {settings.stage!r} (standins.edp.enabled)")
    # Artifact URLs must be reachable by the pipeline, which knows EDP by edp.base_url.
    app = create_edp_app(edp, public_base_url=settings.edp.base_url)
    uvicorn.run(app, host=edp.host, port=edp.port, log_level="warning")


if __name__ == "__main__":
    main()
