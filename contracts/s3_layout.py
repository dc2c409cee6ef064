"""The ids and names the artifact S3 layout is built from: one rule each, wherever they are checked.

Keys are built only from validated ids, never from free text (``orders/<cfg_id>/...``,
``portal/<cfg_id>/v<N>/<name>``), so the API, the pipeline, the delivered gateway and the
templates that name a bucket all check against the patterns here.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import Field

# The platform mints every cfg_id as str(uuid.uuid4()): lowercase, hyphenated. Any other spelling
# of the same UUID (upper case, braces, urn:uuid:) would be another partition and another S3 prefix.
CFG_ID_PATTERN = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
# One path segment: no slash, and no leading dot or dash (no hidden files, no options on a command line).
ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
# S3's rule for bucket names, less the dotted-IP form no stage uses.
BUCKET_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"

CfgId = Annotated[str, Field(pattern=CFG_ID_PATTERN, examples=["5f0c7a52-8d1e-4c3b-9a6f-2e1d0b9c8a71"])]
ArtifactName = Annotated[str, Field(pattern=ARTIFACT_NAME_PATTERN)]
BucketName = Annotated[str, Field(pattern=BUCKET_NAME_PATTERN)]

_CFG_ID = re.compile(CFG_ID_PATTERN)
_ARTIFACT_NAME = re.compile(ARTIFACT_NAME_PATTERN)
_BUCKET_NAME = re.compile(BUCKET_NAME_PATTERN)


def is_cfg_id(value: str) -> bool:
    return _CFG_ID.fullmatch(value) is not None


def is_artifact_name(value: str) -> bool:
    return _ARTIFACT_NAME.fullmatch(value) is not None


def is_bucket_name(value: str) -> bool:
    return _BUCKET_NAME.fullmatch(value) is not None
