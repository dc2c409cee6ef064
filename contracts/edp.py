"""The EDP API contract (external engineering API; the local stand-in implements the same)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from contracts.s3_layout import ArtifactName

# A host as edp.artifact_hosts names it: a name or IPv4 address, or [IPv6], each with an optional :port.
ArtifactHost = Annotated[
    str, Field(pattern=r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(:\d{1,5})?$")
]

EdpJobStatus = Literal["queued", "running", "complete", "failed"]


class EdpModel(BaseModel):
    # EDP may add fields over time; the pipeline reads what it knows and keeps going.
    model_config = ConfigDict(extra="ignore", frozen=True)


class EdpJobAccepted(EdpModel):
    """Answer to ``POST /edp-api/jobs`` (202)."""

    job_id: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")]
    edp_artifact_urls: list[str] = Field(default_factory=list)


class EdpArtifact(EdpModel):
    name: ArtifactName
    url: str
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


class EdpJob(EdpModel):
    """Answer to ``GET /edp-api/jobs/{job_id}``."""

    status: EdpJobStatus
    edp_artifacts: list[EdpArtifact] = Field(default_factory=list)
    flags: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None
