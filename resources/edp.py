"""The EDP API client and its Dagster resource."""

from __future__ import annotations

from typing import TypeVar

from dagster import ConfigurableResource
from pydantic import BaseModel, Field, ValidationError
from requests import RequestException, Response, Session
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from contracts.configurator import ConfiguratorPayload
from contracts.edp import EdpJob, EdpJobAccepted
from delivery.edp_artifact_policy import (
    IDENTITY,
    READ_CHUNK_BYTES,
    EdpArtifactDownloader,
    EdpArtifactPolicy,
    readable_reason,
)

# Enough of a malformed answer's field errors to see what is wrong with it.
MAX_FIELD_ERRORS = 5
# A job answer is a status, artifact URLs and flags: kilobytes. The settings' edp.max_job_answer_bytes.
DEFAULT_MAX_ANSWER_BYTES = 1024 * 1024

Answer = TypeVar("Answer", bound=BaseModel)


class EdpError(RuntimeError):
    """EDP answered something the pipeline cannot use.

    Never with EDP's response body: the message becomes the order's ``last_error``, which
    ``GET /orders/{cfg_id}`` returns, and a body may hold anything.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(readable_reason(reason))


def _capped_body(response: Response, what: str, max_bytes: int) -> bytes:
    """The answer's body, read as it streams in and given up past ``max_bytes``: never held whole."""
    encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        # Asked for as it is: a compressed body would be inflated before its bytes could be counted.
        raise EdpError(f"{what}: the answer came compressed ({encoding}), though asked for as it is")
    announced = response.headers.get("Content-Length", "").strip()
    if announced.isdigit() and int(announced) > max_bytes:
        raise EdpError(
            f"{what}: the answer announces {announced} bytes, past the cap of {max_bytes} bytes "
            "(edp.max_job_answer_bytes); none of it was read"
        )
    body = bytearray()
    for chunk in response.iter_content(READ_CHUNK_BYTES):
        body += chunk
        if len(body) > max_bytes:
            raise EdpError(
                f"{what}: the answer is larger than {max_bytes} bytes, the cap (edp.max_job_answer_bytes); "
                "reading stopped there"
            )
    return bytes(body)


def _answer(model: type[Answer], body: bytes, what: str) -> Answer:
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        # Field paths and messages only: pydantic's own text would quote the body back.
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(body)'}: {error['msg']}"
            for error in exc.errors(include_url=False, include_input=False, include_context=False)[
                :MAX_FIELD_ERRORS
            ]
        )
        raise EdpError(f"{what}: the answer is not what the EDP API promises ({problems})") from None


class EdpClient:
    """``/edp-api`` over HTTP with timeouts and retries with backoff.

    POST is retried too: the Idempotency-Key makes a repeated submit return the same job. An answer
    is read streamed and refused past ``max_answer_bytes``, as every artifact download is capped.
    """

    def __init__(
        self,
        base_url: str,
        timeout_seconds: float,
        retries: int,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout_seconds
        self.max_answer_bytes = max_answer_bytes
        retry = Retry(
            total=retries,
            backoff_factor=0.5,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "POST"}),
            raise_on_status=False,
        )
        self.session = Session()
        self.session.mount("http://", HTTPAdapter(max_retries=retry))
        self.session.mount("https://", HTTPAdapter(max_retries=retry))

    def submit_job(self, payload: ConfiguratorPayload, idempotency_key: str) -> EdpJobAccepted:
        what = "EDP accepted the job"
        try:
            with self.session.post(
                f"{self.base_url}/edp-api/jobs",
                data=payload.model_dump_json(),
                headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key, **IDENTITY},
                timeout=self.timeout,
                stream=True,
            ) as response:
                if response.status_code not in (200, 201, 202):
                    raise EdpError(f"EDP refused the job: HTTP {response.status_code}")
                body = _capped_body(response, what, self.max_answer_bytes)
        except RequestException as exc:
            # requests' text names the URL; the kind of failure is what an operator acts on.
            raise EdpError(f"EDP did not take the job: {type(exc).__name__}") from None
        return _answer(EdpJobAccepted, body, what)

    def get_job(self, job_id: str) -> EdpJob:
        what = f"EDP job {job_id}"
        try:
            with self.session.get(
                f"{self.base_url}/edp-api/jobs/{job_id}", timeout=self.timeout, stream=True, headers=IDENTITY
            ) as response:
                if response.status_code != 200:
                    raise EdpError(f"{what}: HTTP {response.status_code}")
                body = _capped_body(response, what, self.max_answer_bytes)
        except RequestException as exc:
            raise EdpError(f"{what}: {type(exc).__name__}") from None
        return _answer(EdpJob, body, what)


class EdpResource(ConfigurableResource):
    base_url: str = Field(description="Base URL of the EDP API (before /edp-api).")
    timeout_seconds: float = Field(description="Connect and read timeout of one request.")
    retries: int = Field(description="Retries with backoff for failed requests.")
    # The artifact policy (delivery.edp_artifact_policy); settings edp.* describe each.
    artifact_hosts: list[str] = Field(description="Hosts besides EDP's own that artifact URLs may name.")
    allow_private_artifact_hosts: bool = Field(
        description="Artifact hosts may resolve to non-public addresses."
    )
    max_artifacts: int = Field(description="Most artifacts one job may list.")
    max_artifact_bytes: int = Field(description="Largest artifact.")
    max_dtm_bytes: int = Field(description="Largest dtm.json.")
    max_job_bytes: int = Field(description="Most bytes of one job's artifacts together.")
    max_artifact_redirects: int = Field(description="Most redirects one artifact download follows.")
    download_deadline_seconds: float = Field(description="Longest one artifact download may take.")
    max_job_answer_bytes: int = Field(description="Largest answer to a job request (submit or status) read.")
    job_wait_seconds: float = Field(
        default=0.0,
        description="How long order/edp_artifacts waits for a pending job (pipeline.edp_wait_in_run_seconds).",
    )

    def get_client(self) -> EdpClient:
        return EdpClient(self.base_url, self.timeout_seconds, self.retries, self.max_job_answer_bytes)

    def artifact_policy(self) -> EdpArtifactPolicy:
        return EdpArtifactPolicy(
            edp_base_url=self.base_url,
            artifact_hosts=tuple(self.artifact_hosts),
            allow_private_hosts=self.allow_private_artifact_hosts,
            max_artifacts=self.max_artifacts,
            max_artifact_bytes=self.max_artifact_bytes,
            max_dtm_bytes=self.max_dtm_bytes,
            max_job_bytes=self.max_job_bytes,
            max_redirects=self.max_artifact_redirects,
            download_deadline_seconds=self.download_deadline_seconds,
            timeout_seconds=self.timeout_seconds,
            retries=self.retries,
        )

    def artifact_downloader(self) -> EdpArtifactDownloader:
        return EdpArtifactDownloader(self.artifact_policy())
