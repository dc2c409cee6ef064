"""Who may commission the gateway, and what a posted topology may point it at.

The gateway listens on the site's LAN (and, for cloud stacks, on the addresses ``AllowedCidr``
admits). Changing its topology points the poller at hosts and ports, and reading it maps the
site's devices, so both need the order's commissioning token (``COMMISSIONING_TOKEN`` in the
stack's secrets.env; the customer reads it in the portal), and a posted topology may name only hosts a site can have: no loopback, link-local,
multicast or unspecified address, by literal or by what the name resolves to. The DTM the platform
delivered is trusted as it is; these rules are for what arrives over the network.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import socket

from starlette.requests import Request

from contracts.dtm import DeviceTopologyModel
from edge_gateway.settings import GatewaySettings
from service_kit.problems import Problem

# A name that does not resolve yet (a device not installed yet) is accepted: polling reports it
# failing. Resolution is bounded so that a slow resolver cannot hold a request open.
RESOLVE_TIMEOUT_SECONDS = 2.0
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")


def require_commissioning_token(request: Request, settings: GatewaySettings) -> None:
    """Problem 401 unless the request carries the commissioning token; 403 where none is configured.

    The token is the one of the ``secrets.env`` the stack runs: after a rotation at the platform,
    the old one until the site installs the new version's ``secrets.env``, then only the new one.
    """
    expected = settings.secrets.COMMISSIONING_TOKEN
    if expected is None:
        raise Problem(
            403, "commissioning is disabled: COMMISSIONING_TOKEN is not set in the stack's secrets.env"
        )
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), expected.get_secret_value().encode()
    ):
        raise Problem(
            401,
            "commissioning needs the order's commissioning token (shown in the download portal) as a bearer token",
            headers={"WWW-Authenticate": 'Bearer realm="commissioning"'},
        )


def _refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address, *, allow_loopback: bool) -> str | None:
    if address.is_loopback and not allow_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_unspecified:
        return "the unspecified address"
    return None


async def _resolved(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        infos = await asyncio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM),
            RESOLVE_TIMEOUT_SECONDS,
        )
    except (TimeoutError, OSError, UnicodeError):
        return []
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


async def site_host_problem(host: str, *, allow_loopback: bool = False) -> str | None:
    """Why ``host`` is no device a site can have, or None."""
    name = host.strip().lower().rstrip(".")
    if not allow_loopback and (name in _LOCAL_NAMES or name.endswith(".localhost")):
        return "names this machine"
    try:
        literal = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        for address in await _resolved(name):
            reason = _refusal(address, allow_loopback=allow_loopback)
            if reason is not None:
                return f"resolves to {reason} ({address})"
        return None
    reason = _refusal(literal, allow_loopback=allow_loopback)
    return None if reason is None else f"is {reason}"


async def check_posted_topology(topology: DeviceTopologyModel, settings: GatewaySettings) -> None:
    """Problem 422 naming each device whose connection a site cannot have, or too many devices."""
    limit = settings.commissioning.max_devices
    if len(topology.devices) > limit:
        raise Problem(
            422,
            f"the topology has {len(topology.devices)} devices; at most {limit} can be commissioned",
            errors=[{"field": "devices", "message": f"at most {limit} devices (commissioning.max_devices)"}],
        )
    errors: list[dict[str, str]] = []
    for index, device in enumerate(topology.devices):
        if device.connection is None:
            continue
        problem = await site_host_problem(
            device.connection.host, allow_loopback=settings.commissioning.allow_loopback_hosts
        )
        if problem is not None:
            errors.append(
                {
                    "field": f"devices[{index}].connection.host",
                    "message": f"{device.connection.host!r} {problem}",
                }
            )
    if errors:
        fields = ", ".join(error["field"] for error in errors)
        raise Problem(422, f"the topology names hosts no site device can have: {fields}", errors=errors)
