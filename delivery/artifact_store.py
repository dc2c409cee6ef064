"""The stage's artifact bucket: keys built from validated ids, objects stored with their sha256."""

from __future__ import annotations

import hashlib
from contextlib import closing
from typing import Any, BinaryIO, cast

from pydantic import BaseModel, ConfigDict

from contracts.s3_layout import is_artifact_name, is_cfg_id

SHA256_METADATA = "sha256"
PRESIGN_MAX_SECONDS = 7 * 24 * 3600
CHUNK_BYTES = 1024 * 1024


class StoredObject(BaseModel):
    """A reference to an object in the artifact bucket; what assets pass to each other."""

    model_config = ConfigDict(frozen=True)

    key: str
    size: int
    sha256: str

    @property
    def name(self) -> str:
        return self.key.rsplit("/", 1)[-1]


def checked_cfg_id(cfg_id: str) -> str:
    if not is_cfg_id(cfg_id):
        raise ValueError(f"cfg_id {cfg_id!r} is not a canonical UUID")
    return cfg_id


def checked_name(name: str) -> str:
    # No ".." anywhere: the contract's names allow it, keys in this bucket never carry it.
    if not is_artifact_name(name) or ".." in name:
        raise ValueError(f"artifact name {name!r} is not allowed in a key")
    return name


def order_key(cfg_id: str, *parts: str) -> str:
    """``orders/<cfg_id>/<parts...>`` from a validated cfg_id and validated names only."""
    return "/".join(["orders", checked_cfg_id(cfg_id), *(checked_name(part) for part in parts)])


def portal_key(cfg_id: str, version: int | None, name: str) -> str:
    """``portal/<cfg_id>/v<N>/<name>``, or ``portal/<cfg_id>/<name>`` for the order's index."""
    folder = [] if version is None else [f"v{int(version)}"]
    return "/".join(["portal", checked_cfg_id(cfg_id), *folder, checked_name(name)])


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """One bucket through a boto3 S3 client."""

    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> StoredObject:
        digest = sha256_hex(data)
        self.client.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            Metadata={SHA256_METADATA: digest},
        )
        return StoredObject(key=key, size=len(data), sha256=digest)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()

    def open(self, key: str) -> BinaryIO:
        """The object as a stream (``read(n)``, ``close()``): for objects too large to hold whole."""
        return cast(BinaryIO, self.client.get_object(Bucket=self.bucket, Key=key)["Body"])

    def digest(self, key: str) -> tuple[int, str]:
        """Size and sha256 of the object as stored, read as a stream."""
        hasher = hashlib.sha256()
        size = 0
        with closing(self.open(key)) as body:
            for chunk in iter(lambda: body.read(CHUNK_BYTES), b""):
                hasher.update(chunk)
                size += len(chunk)
        return size, hasher.hexdigest()

    def put_file(
        self, key: str, source: BinaryIO, content_type: str = "application/octet-stream"
    ) -> StoredObject:
        """Upload a seekable file (multipart when large), its sha256 in the metadata like ``put``.

        The metadata is fixed when an upload starts, so the file is read once for the hash first.
        """
        hasher = hashlib.sha256()
        source.seek(0)
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            hasher.update(chunk)
        size = source.tell()
        source.seek(0)
        digest = hasher.hexdigest()
        self.client.upload_fileobj(
            source,
            self.bucket,
            key,
            ExtraArgs={"ContentType": content_type, "Metadata": {SHA256_METADATA: digest}},
        )
        return StoredObject(key=key, size=size, sha256=digest)

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key)
        except self.client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def keys(self, prefix: str) -> list[tuple[str, Any]]:
        """``(key, last_modified)`` of every object under ``prefix``."""
        found: list[tuple[str, Any]] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            found.extend((item["Key"], item["LastModified"]) for item in page.get("Contents", []))
        return found

    def presigned_url(self, key: str, expires_seconds: int = PRESIGN_MAX_SECONDS) -> str:
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=min(expires_seconds, PRESIGN_MAX_SECONDS),
        )
