"""The cloud-init NoCloud seed image of an on-prem order.

The customer attaches the image to the appliance (which ships with docker and the compose
plugin); cloud-init finds it by its volume label ``cidata``, writes the bundle to
``edge_bundle.STACK_DIR`` and starts the stack. The image is reproducible: the same order and
bundle give the same bytes, so a rebuild never looks like a new delivery.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import threading
import time
import unicodedata
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from time import struct_time
from typing import Any

import pycdlib
import pycdlib.dates
import pycdlib.headervd
import pycdlib.pycdlib
import yaml

from contracts.configurator import ConfiguratorPayload, OnpremDeployment
from contracts.s3_layout import is_cfg_id
from delivery.edge_bundle import BUNDLE_FILES, COMPOSE_NAME, SECRET_FILES, STACK_DIR

VOLUME_ID = "cidata"
USER_DATA_NAME = "user-data"
META_DATA_NAME = "meta-data"
NETWORK_CONFIG_NAME = "network-config"
# Every timestamp in the image: 2000-01-01T00:00:00Z. Any fixed instant would do.
FIXED_EPOCH = 946684800.0
FILE_MODE = 0o100444
DEFAULT_HOSTNAME = "ems-edge"


class _FrozenClock:
    """Stands in for the ``time`` module inside pycdlib while an image is built.

    pycdlib stamps directory records, Rock Ridge TF entries and the volume descriptors with
    ``time.time()`` (the modification date even while writing) and renders them in the local time
    zone; a fixed instant rendered in UTC makes the bytes independent of the clock and of TZ.
    """

    def time(self) -> float:
        return FIXED_EPOCH

    def localtime(self, seconds: float | None = None) -> struct_time:
        return time.gmtime(FIXED_EPOCH if seconds is None else seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


_PYCDLIB_MODULES_WITH_CLOCK = (pycdlib.pycdlib, pycdlib.headervd, pycdlib.dates)
# The clock is swapped module-wide, so two builds in one process must not interleave.
_CLOCK_LOCK = threading.Lock()


@contextmanager
def _frozen_pycdlib_clock() -> Iterator[None]:
    with _CLOCK_LOCK:
        # pycdlib's modules import time without exporting it, so mypy does not see the attribute.
        originals = [module.time for module in _PYCDLIB_MODULES_WITH_CLOCK]
        for module in _PYCDLIB_MODULES_WITH_CLOCK:
            module.time = _FrozenClock()  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module, original in zip(_PYCDLIB_MODULES_WITH_CLOCK, originals, strict=True):
                module.time = original  # type: ignore[attr-defined]


def seed_instance_id(cfg_id: str, bundle: Mapping[str, bytes]) -> str:
    """cloud-init's instance-id: new whenever the bundle changes, so the appliance applies it again.

    The order's network settings are not part of it: they are fixed for a cfg_id, like the order.
    """
    if not is_cfg_id(cfg_id):
        raise ValueError(f"cfg_id {cfg_id!r} is not a valid order id")
    digest = hashlib.sha256()
    # Length-prefixed so that moving bytes between files or names can never collide.
    for name in sorted(bundle):
        for part in (name.encode("utf-8"), bundle[name]):
            digest.update(len(part).to_bytes(8, "big"))
            digest.update(part)
    return f"ems-{cfg_id}-{digest.hexdigest()[:16]}"


def hostname_for_site(site_name: str) -> str:
    """A valid hostname label from the customer's site name, e.g. "Werk Süd" -> "ems-werk-sud"."""
    ascii_name = unicodedata.normalize("NFKD", site_name).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")
    if not slug:
        return DEFAULT_HOSTNAME
    return f"ems-{slug}"[:63].rstrip("-")


def _user_data(order: ConfiguratorPayload, bundle: Mapping[str, bytes]) -> bytes:
    missing = [name for name in BUNDLE_FILES if name not in bundle]
    if missing:
        raise ValueError(f"bundle lacks {', '.join(missing)}")
    compose_path = f"{STACK_DIR}/{COMPOSE_NAME}"
    document = {
        "timezone": order.site.timezone,
        "write_files": [
            {
                "path": f"{STACK_DIR}/{name}",
                "encoding": "b64",
                "content": base64.b64encode(bundle[name]).decode("ascii"),
                "owner": "root:root",
                "permissions": "0600" if name in SECRET_FILES else "0644",
            }
            for name in BUNDLE_FILES
        ],
        # cloud-final is not ordered after docker.service, so the daemon is started explicitly.
        "runcmd": [
            ["systemctl", "enable", "--now", "docker.service"],
            ["docker", "compose", "-f", compose_path, "up", "-d"],
        ],
    }
    body = yaml.safe_dump(document, sort_keys=False, default_flow_style=False, width=1 << 16)
    return ("#cloud-config\n" + body).encode("utf-8")


def _meta_data(cfg_id: str, order: ConfiguratorPayload, bundle: Mapping[str, bytes]) -> bytes:
    document = {
        "instance-id": seed_instance_id(cfg_id, bundle),
        "local-hostname": hostname_for_site(order.site.name),
    }
    return yaml.safe_dump(document, sort_keys=True, default_flow_style=False).encode("utf-8")


def _network_config(deployment: OnpremDeployment) -> bytes | None:
    network = deployment.network
    if network is None:
        return None
    # The appliance has one wired NIC whose name depends on its hardware (eth0, enp1s0, ...):
    # netplan resolves the glob; cloud-init's other renderers ignore it and use the key, eth0.
    interface: dict[str, Any] = {
        "match": {"name": "e*"},
        "dhcp4": False,
        "addresses": [network.address.with_prefixlen],
        # "0.0.0.0/0" rather than netplan's "default": cloud-init before 23.x rejects the keyword.
        "routes": [{"to": "0.0.0.0/0", "via": str(network.gateway)}],
    }
    if network.dns:
        interface["nameservers"] = {"addresses": [str(server) for server in network.dns]}
    document = {"version": 2, "ethernets": {"eth0": interface}}
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode("utf-8")


def seed_files(*, cfg_id: str, order: ConfiguratorPayload, bundle: Mapping[str, bytes]) -> dict[str, bytes]:
    """The files of the seed image by name; network-config only for static addressing."""
    deployment = order.deployment
    if not isinstance(deployment, OnpremDeployment):
        raise ValueError(f"order {cfg_id} targets {deployment.target!r}; a seed image is for on-prem orders")
    files = {
        USER_DATA_NAME: _user_data(order, bundle),
        META_DATA_NAME: _meta_data(cfg_id, order, bundle),
    }
    network_config = _network_config(deployment)
    if network_config is not None:
        files[NETWORK_CONFIG_NAME] = network_config
    return files


def _iso9660_name(name: str) -> str:
    # Plain ISO 9660 allows no "-"; Joliet and Rock Ridge carry the real name that cloud-init reads.
    return "/" + name.upper().replace("-", "_") + ";1"


def build_seed_iso(*, cfg_id: str, order: ConfiguratorPayload, bundle: Mapping[str, bytes]) -> bytes:
    """The NoCloud seed image (ISO 9660 level 3, Joliet, Rock Ridge, volume ``cidata``)."""
    files = seed_files(cfg_id=cfg_id, order=order, bundle=bundle)
    out = io.BytesIO()
    with _frozen_pycdlib_clock():
        iso = pycdlib.PyCdlib()
        iso.new(
            interchange_level=3,
            vol_ident=VOLUME_ID,
            sys_ident="LINUX",
            app_ident_str="EMS EDGE SEED",
            joliet=3,
            rock_ridge="1.09",
        )
        try:
            for name in sorted(files):
                data = files[name]
                iso.add_fp(
                    io.BytesIO(data),
                    len(data),
                    iso_path=_iso9660_name(name),
                    rr_name=name,
                    joliet_path=f"/{name}",
                    file_mode=FILE_MODE,
                )
            iso.write_fp(out)
        finally:
            iso.close()
    return out.getvalue()
