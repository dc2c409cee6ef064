"""manifest.json: what one portal version delivers. Versioned; its JSON schema is published in the repo."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_SCHEMA_VERSION = 1

ArtifactKind = Literal["edp", "cfn", "iso", "apk"]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class ManifestModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ManifestArtifact(ManifestModel):
    kind: ArtifactKind
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    key: Annotated[str, Field(description="S3 key in the stage's artifact bucket")]
    size: Annotated[int, Field(ge=0)]
    sha256: Sha256
    url: Annotated[str, Field(description="Download link for the customer")]


class Manifest(ManifestModel):
    schema_version: Literal[1] = MANIFEST_SCHEMA_VERSION
    cfg_id: str
    version: Annotated[int, Field(ge=1)]
    created_at: datetime
    deployment_target: Literal["cloud", "onprem"]
    flags: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[ManifestArtifact]
