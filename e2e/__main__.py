"""``python -m e2e``: the delivered edge stack's e2e scenarios.

By default both delivery paths produce their bundles from the example orders (cloud: S3 and the
UserData fetch; on-prem: the seed ISO's user-data) and the scenarios fixtures, bare and
commissioning run on them; ``--bundle-dir`` runs the fitting scenarios on a bundle as given.

Two stacks run them, chosen explicitly rather than by probing for an engine, so that one command
always tests the same thing and a broken engine fails instead of silently falling back:

- default: the gateway and the fixtures as processes of this tree, in a network namespace of their
  own per run (``e2e.stack``); needs root and iproute2, no Docker;
- ``--docker``: the delivered containers, ``docker compose --profile fixtures up`` of each bundle
  (``e2e.container_stack``); needs a Docker engine, Debian's ``docker-registry`` and the images
  ``make images`` built. Those are released for the run as a stage releases them: pushed to a
  registry of the run's own on loopback, and the bundles name them pinned by the digests it
  answered (``PinnedImages``). An existing bundle (``--bundle-dir``) runs with the build tagged
  under the names it gives (``DeliveredImages``). Nothing is pulled.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

# Light imports only up here: the root check must come before the delivery code loads.
from e2e.netns import NamespaceError, require_root_and_iproute2

if TYPE_CHECKING:
    from e2e.bundle import Bundle, DeliveryPath
    from e2e.container_stack import DeliveredImages, PinnedImages
    from e2e.runner import StackFactory
    from e2e.scenarios import ScenarioResult

DELIVERY_PATHS: tuple[DeliveryPath, ...] = ("cloud", "onprem")
SCENARIO_NAMES = ("bare", "commissioning", "fault", "fixtures")
DEFAULT_SCENARIOS = ("fixtures", "bare", "commissioning")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m e2e",
        description="The delivered edge stack's e2e scenarios (ENV=beta): as processes in a network namespace,"
        " or with --docker as the delivered containers.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--path", choices=[*DELIVERY_PATHS, "all"], default="all", help="delivery path(s) to follow"
    )
    source.add_argument(
        "--bundle-dir", type=Path, help="an existing bundle (cfg.customer.yml, dtm.json, compose.yaml)"
    )
    parser.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIO_NAMES,
        dest="scenarios",
        help=f"scenario to run (repeatable; default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument(
        "--fault", action="store_true", help="also run the fault scenario (a fixture killed mid-run)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory (bundles, logs) after the run"
    )
    parser.add_argument(
        "--docker",
        action="store_true",
        help="run the delivered containers (docker compose --profile fixtures up of each bundle) instead of processes",
    )
    return parser.parse_args(argv)


def _report(result: ScenarioResult) -> None:
    print(result.line(), flush=True)
    if not result.passed:
        print("  the gateway logged:", flush=True)
        for line in (result.gateway_log or "(nothing)").splitlines():
            print(f"  | {line}", flush=True)


def _announce(bundle: Bundle, scenarios: Sequence[str]) -> None:
    print(f"bundle: {bundle.origin}: {', '.join(scenarios) or 'no fitting scenario'}", flush=True)


def _container_stacks(
    bundle_dir: Path | None, images: DeliveredImages, pinned: PinnedImages | None
) -> StackFactory:
    """Compose stacks of the bundles: produced bundles name the run's pinned release, a given
    bundle's names are tags of this tree's build."""
    from functools import partial

    from e2e.bundle import existing_bundle
    from e2e.container_stack import ContainerStack, compose_command, require_engine, service_images

    require_engine()
    compose = compose_command()
    if bundle_dir is not None:
        for name in images.point(service_images(existing_bundle(bundle_dir).compose())):
            print(f"image: {name} = {images.source_of(name)} (this tree's build)", flush=True)
    elif pinned is not None:
        for built, released in (
            (pinned.built.gateway, pinned.released.gateway),
            (pinned.built.fixtures, pinned.released.fixtures),
        ):
            print(
                f"image: {released.reference} = {built} (this tree's build, pushed to {pinned.registry.address})",
                flush=True,
            )
    print(f"stack: containers, {' '.join(compose)} per bundle", flush=True)
    return partial(ContainerStack, compose=compose)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception, so the stacks' clean-up runs.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = list(args.scenarios or DEFAULT_SCENARIOS)
    if args.fault and "fault" not in scenarios:
        scenarios.append("fault")
    if not args.docker:
        try:
            require_root_and_iproute2()
        except NamespaceError as exc:
            print(f"e2e: {exc}", file=sys.stderr)
            return 2
    from delivery.edge_bundle import EdgeImages
    from e2e.bundle import BundleError, existing_bundle
    from e2e.compose import ComposeError
    from e2e.container_stack import DeliveredImages, PinnedImages
    from e2e.runner import bundle_kind, run_bundle, run_delivery_path, scenarios_for
    from e2e.stack import Stack, StackError
    from platform_config.settings import PROJECT_VERSION

    signal.signal(signal.SIGTERM, _terminate)
    # The cloud path runs boto3 against moto's server on loopback: nothing may ask for EC2 instance metadata.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    workdir = Path(tempfile.mkdtemp(prefix="ems-e2e-"))
    results: list[ScenarioResult] = []
    # What `make images` tags on this machine: the images the containers run.
    built = EdgeImages.release("", PROJECT_VERSION)
    images = DeliveredImages([built.gateway, built.fixtures])
    try:
        with contextlib.ExitStack() as held:
            held.enter_context(images)
            pinned = None
            if args.docker and args.bundle_dir is None:
                pinned = held.enter_context(PinnedImages(built, PROJECT_VERSION))
            stacks: StackFactory = (
                _container_stacks(args.bundle_dir, images, pinned) if args.docker else Stack
            )
            released = None if pinned is None else pinned.images
            if args.bundle_dir is not None:
                bundle = existing_bundle(args.bundle_dir)
                names = scenarios_for(bundle_kind(bundle), scenarios)
                _announce(bundle, names)
                if names:
                    results = run_bundle(bundle, names, workdir / "run", _report, stacks)
            else:
                paths: tuple[DeliveryPath, ...] = DELIVERY_PATHS if args.path == "all" else (args.path,)
                for path in paths:
                    results += run_delivery_path(
                        path, scenarios, workdir / path, _report, _announce, stacks, images=released
                    )
    except (BundleError, ComposeError, NamespaceError, StackError) as exc:
        print(f"e2e: {exc}", file=sys.stderr)
        for log in sorted(workdir.rglob("logs/*.log")):
            print(f"--- {log.relative_to(workdir)}", file=sys.stderr)
            print(log.read_text(errors="replace")[-4000:], file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("e2e: interrupted; the stacks were torn down", file=sys.stderr)
        return 130
    finally:
        if args.keep:
            print(f"work directory kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [result for result in results if not result.passed]
    print(f"e2e: {len(results) - len(failed)} passed, {len(failed)} failed", flush=True)
    return 1 if failed or not results else 0


if __name__ == "__main__":
    sys.exit(main())
