"""``python -m local_stack`` (what ``make run`` calls): start the stage's services and print ``NAME: URL``.

A service that exits unexpectedly is restarted (within ``supervisor.max_restarts`` per
``supervisor.restart_window_seconds``; see local_stack/supervisor.py). Ctrl-C or SIGTERM stops
every service it started.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from types import FrameType

import requests
from botocore.exceptions import BotoCoreError, ClientError

from local_stack.demo_seed import start_demo_seed
from local_stack.services import Service, ServiceFailed, python_module
from local_stack.supervisor import HEALTH_TIMEOUT_SECONDS, Supervisor
from platform_config.settings import ConfigError, Settings, load_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent
WORKSPACE = PROJECT_ROOT / "workspace.yaml"
INSTANCE_TEMPLATE = Path(__file__).resolve().parent / "dagster.local.yaml"


def plan_services(settings: Settings) -> list[Service]:
    services: list[Service] = []
    if settings.standins.aws.enabled:
        aws = settings.standins.aws
        url = f"http://{aws.host}:{aws.port}"
        services.append(Service("aws", python_module("standins.aws"), url, f"{url}/moto-api/"))
    if settings.standins.edp.enabled:
        edp = settings.standins.edp
        url = f"http://{edp.host}:{edp.port}"
        services.append(Service("edp", python_module("standins.edp"), url, f"{url}/healthz"))
    api_url = f"http://{settings.api.host}:{settings.api.port}"
    services.append(Service("api", python_module("api"), settings.api.public_url, f"{api_url}/healthz"))
    dagster_url = f"http://{settings.dagster.host}:{settings.dagster.port}"
    dagster_home = str(Path(settings.dagster.home).resolve())
    services.append(
        Service(
            "dagster",
            [
                *python_module("dagster", "dev"),
                "--workspace",
                str(WORKSPACE),
                "--host",
                settings.dagster.host,
                "--port",
                str(settings.dagster.port),
                "--log-level",
                "warning",
            ],
            dagster_url,
            f"{dagster_url}/server_info",
            env={"DAGSTER_HOME": dagster_home},
        )
    )
    return services


def prepare_dagster_home(settings: Settings) -> None:
    home = Path(settings.dagster.home)
    home.mkdir(parents=True, exist_ok=True)
    instance_yaml = home / "dagster.yaml"
    # Always refreshed: the instance settings belong to the project, not to a local copy.
    instance_yaml.write_text(INSTANCE_TEMPLATE.read_text())


def run(settings: Settings) -> int:
    for folder in (settings.email.outbox_dir, settings.standins.edp.state_dir):
        if folder:
            Path(folder).mkdir(parents=True, exist_ok=True)
    prepare_dagster_home(settings)
    services = plan_services(settings)
    logs = Path(settings.logs.dir)
    for service in services:
        service.log_path = logs / f"{service.name}.log"
    print(f"logs: {logs.resolve()}", flush=True)
    stopping = False
    seed_stop = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    supervisor = Supervisor(
        services,
        max_restarts=settings.supervisor.max_restarts,
        window_seconds=settings.supervisor.restart_window_seconds,
        should_stop=lambda: stopping,
        health_timeout=HEALTH_TIMEOUT_SECONDS,
    )
    code = 0
    try:
        if supervisor.start_all():
            print(f"stage {settings.stage} is up; Ctrl-C stops it", flush=True)
            if settings.seed.enabled and not stopping:
                try:
                    start_demo_seed(settings, lambda line: print(line, flush=True), seed_stop)
                except (OSError, requests.RequestException, BotoCoreError, ClientError) as exc:
                    # The stack stays up without its samples; the operator sees why.
                    print(f"demo seed failed: {exc}", file=sys.stderr, flush=True)
            # Until Ctrl-C/SIGTERM (0), restarting crashed services; 1 once one crashed too often.
            code = supervisor.watch()
    except ServiceFailed as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        code = 1
    finally:
        seed_stop.set()
        supervisor.stop_all()
    return code


def main() -> None:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.exit(f"error: {exc}")
    sys.exit(run(settings))


if __name__ == "__main__":
    main()
