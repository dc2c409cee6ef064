"""The delivered edge stack, generated per order: its customer config, DTM and compose file.

Both deployment paths (the CloudFormation UserData and the on-prem seed ISO) place exactly these
files side by side in ``STACK_DIR`` and run ``docker compose up -d`` there, so the stack on a
customer's machine is the same whichever way it arrived.

The compose file also declares the industrial fixtures (simulated Modbus devices, see
``industrial_fixtures``; the caller passes ``load_manifest().fixtures``) as services of the profile
``fixtures``: a plain ``up`` never starts them, ``docker compose --profile fixtures up`` runs them
next to the gateway under the hostnames that ``industrial-fixtures.json`` points at, from the
fixtures image.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from contracts.configurator import ConfiguratorPayload, looks_like_secret
from contracts.dtm import DeviceTopologyModel
from contracts.fixtures import Fixture
from service_kit.canonical_json import canonical_json

CUSTOMER_CONFIG_NAME = "cfg.customer.yml"
DTM_NAME = "dtm.json"
COMPOSE_NAME = "compose.yaml"
# The stack's secrets (the commissioning token), passed to the gateway as compose's env_file.
SECRETS_NAME = "secrets.env"
BUNDLE_FILES = (CUSTOMER_CONFIG_NAME, DTM_NAME, COMPOSE_NAME, SECRETS_NAME)
# Files of the bundle only root may read on the customer's machine.
SECRET_FILES = frozenset({SECRETS_NAME})

HMI_PORT = 8080
# Where the host keeps the bundle; compose resolves the relative bind mounts against it.
STACK_DIR = "/opt/ems"
# Where the gateway container sees the bundle's config files.
CONTAINER_CONFIG_DIR = "/etc/ems"
GATEWAY_SERVICE = "gateway"
GATEWAY_DATA_VOLUME = "gateway-data"
# The delivered stack always runs against real services: orders are customer installations.
DELIVERED_STAGE = "beta"
CUSTOMER_CONFIG_SCHEMA_VERSION = 1
# Compose profile of the simulated devices; their service names are the fixtures' hostnames.
FIXTURES_PROFILE = "fixtures"
FIXTURES_MODULE = "industrial_fixtures"

# The images `make images` builds (edge_gateway/Dockerfile, industrial_fixtures/Dockerfile), tagged
# with the platform's release version: a delivered stack runs the edge code of the platform that
# built it.
GATEWAY_IMAGE_NAME = "ems-edge-gateway"
FIXTURES_IMAGE_NAME = "ems-industrial-fixtures"


# The manifest digest a registry gives a pushed image: what a reference pins with ``@``.
IMAGE_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


def pinned_reference(image: str, digest: str) -> str:
    """``<registry>/<name>:<version>@sha256:<digest>``: the tag for people, the digest for the engine."""
    if "@" in image:
        raise ValueError(f"image {image} is pinned already")
    if not IMAGE_DIGEST.fullmatch(digest):
        raise ValueError(f"{digest!r} is not an image digest (sha256:<64 hex digits>)")
    return f"{image}@{digest}"


@dataclass(frozen=True)
class EdgeImages:
    """Container images of the delivered stack: tags, or tags pinned by digest once released."""

    gateway: str
    fixtures: str

    @classmethod
    def release(cls, registry: str, version: str) -> EdgeImages:
        """``<registry>/<name>:<version>``; an empty registry names the images as built locally.

        The plain tags: what `make images` builds and a release pushes. Delivered stacks name the
        pinned references of the release record instead where one is published
        (``delivery.edge_release``).
        """
        prefix = f"{registry.rstrip('/')}/" if registry else ""
        return cls(
            gateway=f"{prefix}{GATEWAY_IMAGE_NAME}:{version}",
            fixtures=f"{prefix}{FIXTURES_IMAGE_NAME}:{version}",
        )

    def pinned(self, *, gateway: str, fixtures: str) -> EdgeImages:
        """These tags pinned by the digests the registry gave them."""
        return EdgeImages(
            gateway=pinned_reference(self.gateway, gateway),
            fixtures=pinned_reference(self.fixtures, fixtures),
        )

    @property
    def is_pinned(self) -> bool:
        return "@" in self.gateway and "@" in self.fixtures

    def tags(self) -> EdgeImages:
        """The tags alone (``docker save`` and ``docker load`` know images by them)."""
        return EdgeImages(gateway=self.gateway.split("@", 1)[0], fixtures=self.fixtures.split("@", 1)[0])


def _reject_secret_keys(tree: Any, path: str) -> None:
    if isinstance(tree, Mapping):
        for key, value in tree.items():
            key_path = f"{path}.{key}"
            # The intake rejects such option keys already (the same rule); EDP's flags are checked
            # only here. Secrets belong in the stack's secrets.env, never in a mailed, archived file.
            if looks_like_secret(str(key)):
                raise ValueError(
                    f"{key_path}: looks like a secret; secrets never go into {CUSTOMER_CONFIG_NAME}"
                )
            _reject_secret_keys(value, key_path)
    elif isinstance(tree, list):
        for index, value in enumerate(tree):
            _reject_secret_keys(value, f"{path}[{index}]")


def customer_config_yaml(*, cfg_id: str, order: ConfiguratorPayload, flags: dict[str, Any]) -> bytes:
    """``cfg.customer.yml`` of the delivered services, deep-merged by their loader over the stage block.

    Only what the edge needs to know about the order goes in: the customer's name, email and
    device list stay on the platform (the devices reach the edge through the DTM instead).
    """
    _reject_secret_keys(order.options, "options")
    _reject_secret_keys(flags, "flags")
    document = {
        "schema_version": CUSTOMER_CONFIG_SCHEMA_VERSION,
        "cfg_id": cfg_id,
        "customer": {"company": order.customer.company},
        "site": {"name": order.site.name, "timezone": order.site.timezone},
        "options": dict(order.options),
        "flags": dict(flags),
    }
    return yaml.safe_dump(document, sort_keys=True, allow_unicode=True, default_flow_style=False).encode(
        "utf-8"
    )


def dtm_json(dtm: DeviceTopologyModel) -> bytes:
    """Canonical ``dtm.json``: the same model always gives the same bytes."""
    return canonical_json(dtm.model_dump(mode="json"))


def fixture_services(images: EdgeImages, fixtures: Sequence[Fixture]) -> dict[str, Any]:
    """The industrial fixtures as compose services of the ``fixtures`` profile, one per hostname."""
    services: dict[str, Any] = {}
    for fixture in fixtures:
        if fixture.hostname == GATEWAY_SERVICE:
            raise ValueError(f"fixture hostname {fixture.hostname!r} collides with the gateway service")
        services[fixture.hostname] = {
            "image": images.fixtures,
            "profiles": [FIXTURES_PROFILE],
            "command": [
                "python3",
                "-m",
                FIXTURES_MODULE,
                "--type",
                fixture.type,
                "--host",
                "0.0.0.0",
                "--port",
                str(fixture.port),
                "--unit-id",
                str(fixture.unit_id),
            ],
        }
    return services


def compose_file(*, dtm: DeviceTopologyModel, images: EdgeImages, fixtures: Sequence[Fixture]) -> bytes:
    """The docker compose file of the delivered stack."""
    config_mounts = [
        {
            "type": "bind",
            "source": f"./{name}",
            "target": f"{CONTAINER_CONFIG_DIR}/{name}",
            "read_only": True,
        }
        for name in (CUSTOMER_CONFIG_NAME, DTM_NAME)
    ]
    healthz = f"http://localhost:{HMI_PORT}/healthz"
    document: dict[str, Any] = {
        "name": "ems",
        "services": {
            GATEWAY_SERVICE: {
                "image": images.gateway,
                "restart": "unless-stopped",
                "environment": {
                    "ENV": DELIVERED_STAGE,
                    "CFG_CUSTOMER_PATH": f"{CONTAINER_CONFIG_DIR}/{CUSTOMER_CONFIG_NAME}",
                    "DTM_PATH": f"{CONTAINER_CONFIG_DIR}/{DTM_NAME}",
                },
                # COMMISSIONING_TOKEN: in the environment, not a mounted file the HMI could read.
                "env_file": [f"./{SECRETS_NAME}"],
                # A bind-mounted file that changed does not make compose recreate the container;
                # a label that does change with the topology does.
                "labels": {"ems.dtm.sha256": hashlib.sha256(dtm_json(dtm)).hexdigest()},
                "volumes": [
                    *config_mounts,
                    {"type": "volume", "source": GATEWAY_DATA_VOLUME, "target": "/var/lib/ems"},
                ],
                "ports": [{"target": HMI_PORT, "published": str(HMI_PORT), "protocol": "tcp"}],
                # Exec form with the image's own Python: no shell, curl or wget is assumed in the image.
                "healthcheck": {
                    "test": [
                        "CMD",
                        "python3",
                        "-c",
                        f"import urllib.request; urllib.request.urlopen({healthz!r}, timeout=4)",
                    ],
                    "interval": "30s",
                    "timeout": "5s",
                    "retries": 3,
                    "start_period": "30s",
                },
            },
            **fixture_services(images, fixtures),
        },
        "volumes": {GATEWAY_DATA_VOLUME: {}},
    }
    return yaml.safe_dump(document, sort_keys=False, default_flow_style=False).encode("utf-8")


def build_bundle(
    *,
    cfg_id: str,
    order: ConfiguratorPayload,
    dtm: DeviceTopologyModel,
    flags: dict[str, Any],
    images: EdgeImages,
    fixtures: Sequence[Fixture],
    commissioning_token: str,
    dtm_bytes: bytes | None = None,
) -> dict[str, bytes]:
    """All of ``BUNDLE_FILES`` for one order; ``dtm_bytes`` keeps EDP's own file when given."""
    return {
        CUSTOMER_CONFIG_NAME: customer_config_yaml(cfg_id=cfg_id, order=order, flags=flags),
        DTM_NAME: dtm_bytes if dtm_bytes is not None else dtm_json(dtm),
        COMPOSE_NAME: compose_file(dtm=dtm, images=images, fixtures=fixtures),
        SECRETS_NAME: stack_secrets_env(commissioning_token),
    }


def commissioning_folder(generation: int) -> tuple[str, ...]:
    """Where under ``orders/<cfg_id>/`` the stack bundle of a commissioning token generation, and
    what carries it (``cfn/cfn.yaml``, ``iso/iso.img``), are stored.

    Generation 0 where they always were; each later one in ``commissioning-<N>/``, so a rotation
    never overwrites the files an earlier portal version lists and signed (they stay verifiable).
    """
    if generation < 0:
        raise ValueError("a commissioning token generation is 0 or more")
    return () if generation == 0 else (f"commissioning-{int(generation)}",)


def stack_secrets_env(commissioning_token: str) -> bytes:
    """The stack's ``secrets.env``: the token the gateway requires for ``POST /topology``,
    ``GET /topology`` and ``GET /status``."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{16,128}", commissioning_token):
        # Never echoed: it is a credential.
        raise ValueError("the commissioning token must be 16 to 128 URL-safe characters")
    return f"COMMISSIONING_TOKEN={commissioning_token}\n".encode("ascii")
