"""Choosing the HMI APK for an order from what the HMI CI dropped under ``apk/``."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime

from pydantic import BaseModel, ConfigDict

APK_PREFIX = "apk/"
APK_KEY_RE = re.compile(r"^apk/(?P<name>[a-z0-9][a-z0-9-]{0,62})-(?P<version>\d+\.\d+\.\d+)\.apk$")


class ApkCandidate(BaseModel):
    model_config = ConfigDict(frozen=True)

    key: str
    name: str
    version: str
    last_modified: datetime

    @property
    def version_tuple(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.version.split("."))


def parse_apk_key(key: str, last_modified: datetime) -> ApkCandidate | None:
    """The APK a key names, or None for anything else the prefix holds."""
    match = APK_KEY_RE.match(key)
    if match is None:
        return None
    return ApkCandidate(key=key, name=match["name"], version=match["version"], last_modified=last_modified)


def newest_apk(objects: Iterable[tuple[str, datetime]]) -> ApkCandidate | None:
    """Highest version wins; an equal version uploaded later (a rebuilt release) wins the tie."""
    candidates = [c for c in (parse_apk_key(key, modified) for key, modified in objects) if c is not None]
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.version_tuple, c.last_modified))
