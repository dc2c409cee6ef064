"""Runs scenarios: on a bundle as given, or on the bundles a delivery path produces from an order.

Which stack runs them is the caller's choice (``stack_factory``): ``e2e.stack.Stack``, processes in
a network namespace (the default), or ``e2e.container_stack.ContainerStack``, the bundle's compose file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Literal

from delivery.edge_bundle import EdgeImages
from e2e.bundle import Bundle, BundleError, DeliveryPath, produce_bundle
from e2e.compose import fixture_services, read_services
from e2e.scenarios import BARE_SCENARIOS, FIXTURE_SCENARIOS, SCENARIOS, EdgeStack, ScenarioResult
from e2e.stack import Stack
from industrial_fixtures import load_manifest

BundleKind = Literal["fixtures", "bare"]
OnResult = Callable[[ScenarioResult], None]
OnBundle = Callable[[Bundle, Sequence[str]], None]
# A stack of the bundle, working in the directory; entering starts it with its fixtures, leaving tears it down.
StackFactory = Callable[[Bundle, Path], AbstractContextManager[EdgeStack]]


def bundle_kind(bundle: Bundle) -> BundleKind:
    """``bare`` when no device has a connection, ``fixtures`` when every device connects to a fixture."""
    dtm = bundle.dtm()
    hosts = {device.connection.host for device in dtm.devices if device.connection is not None}
    if not hosts:
        return "bare"
    services = fixture_services(read_services(bundle.compose(), bundle.directory))
    fixtures = {service.name for service in services} or {
        fixture.hostname for fixture in load_manifest().fixtures
    }
    unconnected = [device.id for device in dtm.devices if device.connection is None]
    if hosts <= fixtures and not unconnected:
        return "fixtures"
    raise BundleError(
        f"{bundle.directory}: its DTM is neither bare (no connections) nor the fixtures' (every device"
        f" connected to one of {sorted(fixtures)}); it connects to {sorted(hosts - fixtures) or sorted(hosts)}"
        + (f" and leaves {unconnected} unconnected" if unconnected else "")
    )


def scenarios_for(kind: BundleKind, wanted: Sequence[str]) -> list[str]:
    fitting = FIXTURE_SCENARIOS if kind == "fixtures" else BARE_SCENARIOS
    return [name for name in wanted if name in fitting]


def run_bundle(
    bundle: Bundle,
    scenarios: Sequence[str],
    workdir: Path,
    on_result: OnResult | None = None,
    stack_factory: StackFactory = Stack,
) -> list[ScenarioResult]:
    """The scenarios in order, on one stack of ``bundle`` (started with its fixtures running)."""
    unknown = [name for name in scenarios if name not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {sorted(SCENARIOS)}")
    results: list[ScenarioResult] = []
    with stack_factory(bundle, workdir) as stack:
        for name in scenarios:
            results.append(SCENARIOS[name](stack))
            if on_result is not None:
                on_result(results[-1])
    return results


def run_delivery_path(
    path: DeliveryPath,
    scenarios: Sequence[str],
    workdir: Path,
    on_result: OnResult | None = None,
    on_bundle: OnBundle | None = None,
    stack_factory: StackFactory = Stack,
    images: EdgeImages | None = None,
) -> list[ScenarioResult]:
    """Bundles produced from the path's example order: the fixture DTM and the order's own DTM.

    ``images``: what their compose files name (default: beta's tags; see ``produce_bundle``).
    """
    results: dict[str, ScenarioResult] = {}
    for kind, dtm_source in (("fixtures", "fixtures"), ("bare", "order")):
        names = scenarios_for(kind, scenarios)  # type: ignore[arg-type]
        if not names:
            continue
        bundle = produce_bundle(
            path,
            directory=workdir / f"bundle-{kind}",
            dtm_source=dtm_source,  # type: ignore[arg-type]
            images=images,
        )
        if on_bundle is not None:
            on_bundle(bundle, names)
        for result in run_bundle(bundle, names, workdir / f"run-{kind}", on_result, stack_factory):
            results[result.name] = result
    return [results[name] for name in scenarios if name in results]
