"""The EDP API client and its Dagster resource."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field
from requests import Session
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from contracts.configurator import ConfiguratorPayload
from contracts.edp import EdpJob, EdpJobAccepted


class EdpError(RuntimeError):
    """EDP answered something the pipeline cannot use."""


class EdpClient:
    """``/edp-api`` over HTTP with timeouts and retries with backoff.

    POST is retried too: the Idempotency-Key makes a repeated submit return the same job.
    """

    def __init__(self, base_url: str, timeout_seconds: float, retries: int) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout_seconds
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
        response = self.session.post(
            f"{self.base_url}/edp-api/jobs",
            data=payload.model_dump_json(),
            headers={"Content-Type": "application/json", "Idempotency-Key": idempotency_key},
            timeout=self.timeout,
        )
        if response.status_code not in (200, 201, 202):
            raise EdpError(f"EDP refused the job: HTTP {response.status_code}: {response.text[:500]}")
        return EdpJobAccepted.model_validate_json(response.content)

    def get_job(self, job_id: str) -> EdpJob:
        response = self.session.get(f"{self.base_url}/edp-api/jobs/{job_id}", timeout=self.timeout)
        if response.status_code != 200:
            raise EdpError(f"EDP job {job_id}: HTTP {response.status_code}: {response.text[:500]}")
        return EdpJob.model_validate_json(response.content)

    def download(self, url: str) -> bytes:
        response = self.session.get(url, timeout=self.timeout)
        if response.status_code != 200:
            raise EdpError(f"EDP artifact {url}: HTTP {response.status_code}")
        return response.content


class EdpResource(ConfigurableResource):
    base_url: str = Field(description="Base URL of the EDP API (before /edp-api).")
    timeout_seconds: float = Field(description="Connect and read timeout of one request.")
    retries: int = Field(description="Retries with backoff for failed requests.")

    def get_client(self) -> EdpClient:
        return EdpClient(self.base_url, self.timeout_seconds, self.retries)
