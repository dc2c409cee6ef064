"""``python -m industrial_fixtures --type power_meter --host 0.0.0.0 --port 502 --unit-id 1``."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from typing import get_args

from contracts.configurator import DeviceType
from industrial_fixtures.server import MODBUS_TCP_PORT, UPDATE_SECONDS, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m industrial_fixtures",
        description="Run one simulated Modbus TCP device that serves its catalog registers with changing values.",
    )
    parser.add_argument("--type", required=True, choices=get_args(DeviceType), dest="device_type")
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=MODBUS_TCP_PORT, help="TCP port (default 502)")
    parser.add_argument(
        "--unit-id", type=int, default=1, help="Modbus unit id the device answers (default 1)"
    )
    parser.add_argument(
        "--update-seconds",
        type=float,
        default=UPDATE_SECONDS,
        help="how often the values change (default 0.5)",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the noise, for repeatable runs")
    return parser.parse_args(argv)


async def _main(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await serve(
        args.device_type,
        host=args.host,
        port=args.port,
        unit_id=args.unit_id,
        update_seconds=args.update_seconds,
        seed=args.seed,
        stop=stop,
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr
    )
    # pymodbus logs every refused request at error level; the fixture's own lines are what matter.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    try:
        asyncio.run(_main(args))
    except RuntimeError as exc:
        print(f"industrial_fixtures: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
