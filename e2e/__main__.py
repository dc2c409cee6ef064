"""``python -m e2e``: the delivered edge stack's e2e scenarios, without Docker.

By default both delivery paths produce their bundles from the example orders (cloud: S3 and the
UserData fetch; on-prem: the seed ISO's user-data) and the scenarios fixtures, bare and
commissioning run on them; ``--bundle-dir`` runs the fitting scenarios on a bundle as given.
Needs root and iproute2: every run lives in a network namespace of its own.
"""

from __future__ import annotations

import argparse
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
    from e2e.scenarios import ScenarioResult

DELIVERY_PATHS: tuple[DeliveryPath, ...] = ("cloud", "onprem")
SCENARIO_NAMES = ("bare", "commissioning", "fault", "fixtures")
DEFAULT_SCENARIOS = ("fixtures", "bare", "commissioning")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m e2e",
        description="The delivered edge stack's e2e scenarios (ENV=beta), run without Docker in a network namespace.",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--path", choices=[*DELIVERY_PATHS, "all"], default="all", help="delivery path(s) to follow")
    source.add_argument("--bundle-dir", type=Path, help="an existing bundle (cfg.customer.yml, dtm.json, compose.yaml)")
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIO_NAMES, dest="scenarios",
        help=f"scenario to run (repeatable; default: {', '.join(DEFAULT_SCENARIOS)})",
    )
    parser.add_argument("--fault", action="store_true", help="also run the fault scenario (a fixture killed mid-run)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (bundles, logs) after the run")
    return parser.parse_args(argv)


def _report(result: ScenarioResult) -> None:
    print(result.line(), flush=True)
    if not result.passed:
        print("  the gateway logged:", flush=True)
        for line in (result.gateway_log or "(nothing)").splitlines():
            print(f"  | {line}", flush=True)


def _announce(bundle: Bundle, scenarios: Sequence[str]) -> None:
    print(f"bundle: {bundle.origin}: {', '.join(scenarios) or 'no fitting scenario'}", flush=True)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    # Turn SIGTERM into an exception, so the stacks' clean-up runs.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    scenarios = list(args.scenarios or DEFAULT_SCENARIOS)
    if args.fault and "fault" not in scenarios:
        scenarios.append("fault")
    try:
        require_root_and_iproute2()
    except NamespaceError as exc:
        print(f"e2e: {exc}", file=sys.stderr)
        return 2
    from e2e.bundle import BundleError, existing_bundle
    from e2e.compose import ComposeError
    from e2e.runner import bundle_kind, run_bundle, run_delivery_path, scenarios_for
    from e2e.stack import StackError

    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="ems-e2e-"))
    results: list[ScenarioResult] = []
    try:
        if args.bundle_dir is not None:
            bundle = existing_bundle(args.bundle_dir)
            names = scenarios_for(bundle_kind(bundle), scenarios)
            _announce(bundle, names)
            if names:
                results = run_bundle(bundle, names, workdir / "run", _report)
        else:
            paths: tuple[DeliveryPath, ...] = DELIVERY_PATHS if args.path == "all" else (args.path,)
            for path in paths:
                results += run_delivery_path(path, scenarios, workdir / path, _report, _announce)
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
