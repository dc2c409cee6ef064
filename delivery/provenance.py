"""The provenance of a portal version: an in-toto Statement with a SLSA Provenance v1 predicate,
signed as a DSSE envelope with the manifest signing key.

The statement (:func:`provenance_statement`) says which artifacts of the version (its *subjects*,
each by name and sha256) the platform made from which inputs::

    {"_type": "https://in-toto.io/Statement/v1",
     "subject": [{"name": "edp.tar.gz", "digest": {"sha256": "..."}}, ...],
     "predicateType": "https://slsa.dev/provenance/v1",
     "predicate": {
       "buildDefinition": {
         "buildType": "https://ems.example/platform-api/order-delivery/v1",
         "externalParameters": {"cfg_id": "...", "portalVersion": 3},
         "internalParameters": {"platformVersion": "0.1.0"},
         "resolvedDependencies": [config.json, the EDP job and its dtm.json, the APK,
                                  the platform's source, each edge image]},
       "runDetails": {
         "builder": {"id": "..."},
         "metadata": {"invocationId": "<first Dagster run>", "startedOn": ..., "finishedOn": ...},
         "byproducts": [{"name": "dagster-run", "uri": "dagster-run:<run id>"}, ...]}}}

``buildType`` names what the platform does with an order, the delivery of one portal version; its
``v1`` changes when the meaning of the parameters above does. The statement's bytes are canonical
(sorted keys, no spaces, UTF-8), so the same inputs give the same bytes.

The envelope (:func:`dsse_envelope`) is DSSE v1: ``{"payload", "payloadType", "signatures":
[{"keyid", "sig"}]}`` with the payload and signature in base64; the Ed25519 signature is over the
pre-authentication encoding ``DSSEv1 <len(type)> <type> <len(payload)> <payload>``, never over the
bare payload, so a signature cannot be replayed as one over another payload type. ``keyid`` is the
manifest key's key id (see ``delivery.manifest_signing``); any DSSE verifier given the key's
``signing-key.pem`` checks it (cosign, in-toto, securesystemslib).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final, Literal

from packageurl import PackageURL
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from delivery.manifest_signing import ManifestSigner, key_id_of, verify_signature

STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
PROVENANCE_TYPE: Final = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
BUILD_TYPE: Final = "https://ems.example/platform-api/order-delivery/v1"
CONFIG_NAME: Final = "config.json"
DTM_NAME: Final = "dtm.json"
PLATFORM_NAME: Final = "platform-api"
SOURCE_REVISION_ENV: Final = "PLATFORM_SOURCE_REVISION"
UNKNOWN_REVISION: Final = "unknown"
PROJECT_ROOT: Final = Path(__file__).resolve().parent.parent
GIT_TIMEOUT_SECONDS: Final = 10

_HEX_COMMIT = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_IMAGE_DIGEST = re.compile(r"@sha256:([0-9a-f]{64})$")
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


# --- the statement --------------------------------------------------------------------------
#
# Plain models rather than the in-toto-attestation package: its messages are protobuf, whose
# Struct holds every JSON number as a double (portal version 3 would be written 3.0), and it ships
# no type information. These models check the shapes the specifications require instead.


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ResourceDescriptor(_Model):
    """in-toto's ResourceDescriptor, the fields used here: at least one of uri and digest."""

    name: str | None = None
    uri: str | None = None
    digest: dict[str, Annotated[str, Field(pattern=r"^[0-9a-f]+$")]] | None = None
    annotations: dict[str, str] | None = None

    @model_validator(mode="after")
    def _identified(self) -> ResourceDescriptor:
        if not self.uri and not self.digest:
            raise ValueError(f"resource {self.name!r} has neither uri nor digest")
        return self


class Subject(_Model):
    name: Annotated[str, Field(min_length=1)]
    digest: dict[Literal["sha256"], Sha256]


class BuildDefinition(_Model):
    build_type: str = Field(alias="buildType")
    external_parameters: dict[str, Any] = Field(alias="externalParameters")
    internal_parameters: dict[str, Any] = Field(alias="internalParameters")
    resolved_dependencies: list[ResourceDescriptor] = Field(alias="resolvedDependencies")


class Builder(_Model):
    id: Annotated[str, Field(min_length=1)]


class BuildMetadata(_Model):
    invocation_id: str = Field(alias="invocationId")
    started_on: str = Field(alias="startedOn")
    finished_on: str = Field(alias="finishedOn")


class RunDetails(_Model):
    builder: Builder
    metadata: BuildMetadata
    byproducts: list[ResourceDescriptor]


class Provenance(_Model):
    build_definition: BuildDefinition = Field(alias="buildDefinition")
    run_details: RunDetails = Field(alias="runDetails")


class Statement(_Model):
    type: Literal["https://in-toto.io/Statement/v1"] = Field(STATEMENT_TYPE, alias="_type")
    subject: Annotated[list[Subject], Field(min_length=1)]
    predicate_type: Literal["https://slsa.dev/provenance/v1"] = Field(PROVENANCE_TYPE, alias="predicateType")
    predicate: Provenance

    @model_validator(mode="after")
    def _unique_subjects(self) -> Statement:
        names = [subject.name for subject in self.subject]
        doubled = sorted({name for name in names if names.count(name) > 1})
        if doubled:
            raise ValueError(f"subjects named more than once: {', '.join(doubled)}")
        return self


def _canonical(document: Any) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _checked_sha256(what: str, value: str) -> str:
    # A resource digest may be any algorithm's hex; these are sha256 and so exactly 64 digits.
    if not _SHA256.fullmatch(value):
        raise ValueError(f"{what} is not a sha256 in lowercase hex: {value!r}")
    return value


def _rfc3339(moment: datetime) -> str:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("created_at has no time zone: provenance timestamps are instants")
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _image_dependency(name: str, reference: str) -> ResourceDescriptor:
    """An image as buildkit's provenance names one: a ``pkg:docker`` purl, and its digest when the
    reference is pinned (``...@sha256:<hex>``)."""
    match = _IMAGE_DIGEST.search(reference)
    without_digest = reference[: match.start()] if match else reference
    path, tag = without_digest, None
    if ":" in without_digest.rsplit("/", 1)[-1]:
        path, tag = without_digest.rsplit(":", 1)
    registry = None
    first, _, rest = path.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    namespace, _, image = path.rpartition("/")
    try:
        purl = PackageURL(
            type="docker",
            namespace=namespace or None,
            name=image,
            version=tag or (f"sha256:{match.group(1)}" if match else None),
            qualifiers={"repository_url": registry} if registry else None,
        )
    except ValueError as error:
        raise ValueError(f"image {name}: {reference!r} is not an image reference ({error})") from None
    return ResourceDescriptor(
        name=name, uri=purl.to_string(), digest={"sha256": match.group(1)} if match else None
    )


def _source_dependency(source_revision: str, platform_version: str) -> ResourceDescriptor:
    if _HEX_COMMIT.match(source_revision):
        return ResourceDescriptor(name=PLATFORM_NAME, digest={"gitCommit": source_revision})
    # No commit to name (a build outside a checkout): the release it calls itself, as the revision
    # it reported.
    return ResourceDescriptor(
        name=PLATFORM_NAME,
        uri=PackageURL(type="generic", name=PLATFORM_NAME, version=platform_version).to_string(),
        annotations={"revision": source_revision},
    )


def provenance_statement(
    *,
    subjects: Sequence[tuple[str, str]],
    cfg_id: str,
    version: int,
    created_at: datetime,
    config_sha256: str,
    edp_job_id: str,
    dtm_sha256: str,
    apk_key: str | None,
    apk_sha256: str | None,
    platform_version: str,
    source_revision: str,
    image_references: Mapping[str, str],
    run_ids: Sequence[str],
    builder_id: str,
) -> bytes:
    """The canonical JSON bytes of portal version ``version``'s provenance statement.

    ``subjects`` are the version's artifacts as (name, sha256), listed sorted by name;
    ``image_references`` maps an image's role (``gateway``, ``fixtures``) to its reference;
    ``run_ids`` are the Dagster runs that made the version, the first the one that finished it. A
    malformed digest, a repeated subject, an APK key without its digest or no run at all is a
    ValueError naming it.
    """
    if not run_ids:
        raise ValueError("run_ids is empty: the provenance names the Dagster run that delivered")
    if (apk_key is None) != (apk_sha256 is None):
        raise ValueError("apk_key and apk_sha256 come together: the APK is named by key and digest")
    for name, sha256 in subjects:
        _checked_sha256(f"the sha256 of subject {name!r}", sha256)
    timestamp = _rfc3339(created_at)
    dependencies = [
        ResourceDescriptor(
            name=CONFIG_NAME, digest={"sha256": _checked_sha256("config_sha256", config_sha256)}
        ),
        ResourceDescriptor(name="edp-job", uri=f"edp-job:{edp_job_id}"),
        ResourceDescriptor(
            name=DTM_NAME,
            uri=f"edp-job:{edp_job_id}/{DTM_NAME}",
            digest={"sha256": _checked_sha256("dtm_sha256", dtm_sha256)},
        ),
    ]
    if apk_key is not None and apk_sha256 is not None:
        dependencies.append(
            ResourceDescriptor(name=apk_key, digest={"sha256": _checked_sha256("apk_sha256", apk_sha256)})
        )
    dependencies.append(_source_dependency(source_revision, platform_version))
    dependencies += [_image_dependency(name, image_references[name]) for name in sorted(image_references)]
    try:
        statement = Statement(
            _type=STATEMENT_TYPE,
            predicateType=PROVENANCE_TYPE,
            subject=[Subject(name=name, digest={"sha256": sha256}) for name, sha256 in sorted(subjects)],
            predicate=Provenance(
                buildDefinition=BuildDefinition(
                    buildType=BUILD_TYPE,
                    externalParameters={"cfg_id": cfg_id, "portalVersion": version},
                    internalParameters={"platformVersion": platform_version},
                    resolvedDependencies=dependencies,
                ),
                runDetails=RunDetails(
                    builder=Builder(id=builder_id),
                    metadata=BuildMetadata(
                        invocationId=run_ids[0], startedOn=timestamp, finishedOn=timestamp
                    ),
                    byproducts=[
                        ResourceDescriptor(name="dagster-run", uri=f"dagster-run:{run_id}")
                        for run_id in run_ids
                    ],
                ),
            ),
        )
    except ValidationError as error:
        raise ValueError(f"provenance statement: {_first_error(error)}") from None
    return _canonical(statement.model_dump(mode="json", by_alias=True, exclude_none=True))


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    return f"{where}: {first['msg']}" if where else str(first["msg"])


def platform_source_revision() -> str:
    """The platform's source revision: ``PLATFORM_SOURCE_REVISION`` (the images set it at build),
    else ``git rev-parse HEAD`` of the project's checkout, else ``unknown``."""
    configured = os.environ.get(SOURCE_REVISION_ENV, "").strip()
    if configured:
        return configured
    if not (PROJECT_ROOT / ".git").exists():
        return UNKNOWN_REVISION
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return UNKNOWN_REVISION
    revision = result.stdout.strip()
    return revision if result.returncode == 0 and revision else UNKNOWN_REVISION


# --- the envelope ---------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1's pre-authentication encoding: what is signed."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def dsse_envelope(payload: bytes, payload_type: str, signer: ManifestSigner) -> bytes:
    """The DSSE envelope of ``payload`` signed by ``signer``, as canonical JSON bytes."""
    signature = signer.sign(pae(payload_type, payload))
    return _canonical(
        {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": payload_type,
            "signatures": [{"keyid": signer.key_id, "sig": base64.b64encode(signature).decode("ascii")}],
        }
    )


def _b64decode(value: object, what: str) -> bytes:
    if not isinstance(value, str):
        raise ValueError(f"{what} is not a base64 string")
    # DSSE allows standard and URL-safe base64, padded or not.
    text = value.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except binascii.Error:
        raise ValueError(f"{what} is not base64") from None


def verify_dsse(envelope: bytes, public_pem: bytes, *, payload_type: str | None = PAYLOAD_TYPE) -> bytes:
    """The payload of ``envelope`` when one of its signatures verifies under ``public_pem``.

    ``payload_type``: the type the envelope must declare (None: any). Anything else (not an
    envelope, a wrong type, no signature of this key) is a ValueError saying which.
    """
    try:
        document = json.loads(envelope)
    except ValueError:
        raise ValueError("the envelope is not JSON") from None
    if not isinstance(document, dict):
        raise ValueError("the envelope is not a JSON object")
    declared = document.get("payloadType")
    if not isinstance(declared, str):
        raise ValueError("the envelope has no payloadType")
    if payload_type is not None and declared != payload_type:
        raise ValueError(f"the envelope's payloadType is {declared!r}, not {payload_type!r}")
    payload = _b64decode(document.get("payload"), "the envelope's payload")
    signatures = document.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise ValueError("the envelope has no signatures")
    signed = pae(declared, payload)
    for index, entry in enumerate(signatures):
        if not isinstance(entry, dict):
            raise ValueError(f"signature {index} of the envelope is not an object")
        signature = _b64decode(entry.get("sig"), f"signature {index}'s sig")
        # keyid is a hint only (DSSE): every signature is tried against the key.
        if verify_signature(public_pem, signed, signature):
            return payload
    raise ValueError(
        f"no signature of the envelope verifies under key {key_id_of(public_pem)} "
        f"({len(signatures)} signature(s) tried)"
    )
