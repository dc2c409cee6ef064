"""The e2e scenarios on the delivered containers: ``docker compose --profile fixtures up`` of the bundles
both delivery paths produce (cloud: S3 and the UserData fetch; on-prem: the seed ISO's user-data).

Every scenario runs on both paths, in the runner's two compose projects per path, each brought up
once and reused by the scenarios that fit its bundle: the fixture DTM's (fixtures, then fault) and
the order's customer-shape DTM's (bare, then commissioning; bare leaves nothing behind that
commissioning could trip over). Four ``up``/``down`` cycles in all, about 25 s a path on 2 cores;
the rest of the module's time is the session's image build (``built_images``, ``make images``).

The session's build is released for the module as a stage releases it (``PinnedImages``): pushed to
a registry of the module's own on loopback, the bundles name the pushed images pinned by digest
(``<registry>/<name>:<version>@sha256:<digest>``), and the containers run exactly those; the
registry, its tags and digest references go afterwards. Nothing is pulled.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from delivery.edge_bundle import BUNDLE_FILES, COMPOSE_NAME, GATEWAY_SERVICE, EdgeImages
from delivery.edge_release import PINNED_REFERENCE
from e2e.bundle import DELIVERY_PATHS, Bundle
from e2e.container_stack import ContainerStack, PinnedImages, image_id
from e2e.runner import run_delivery_path
from e2e.scenarios import ScenarioResult
from platform_config.settings import PROJECT_VERSION
from tests.docker_engine import BuiltImages, DockerEngine

pytestmark = [pytest.mark.slow, pytest.mark.docker]

SCENARIOS = ("fixtures", "fault", "bare", "commissioning")
FIXTURE_DEVICES = ["battery-1", "meter-1", "pv-1"]


@dataclass
class PathRun:
    path: str
    results: dict[str, ScenarioResult]
    stacks: list[ContainerStack] = field(default_factory=list)
    # Per compose project: what the engine still held of it once the run was over.
    leftovers: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@pytest.fixture(scope="module")
def pinned_images(docker_engine: DockerEngine, built_images: BuiltImages) -> Iterator[PinnedImages]:
    built = EdgeImages(gateway=built_images.edge_gateway, fixtures=built_images.industrial_fixtures)
    with PinnedImages(built, PROJECT_VERSION) as pinned:
        yield pinned
    for name in (pinned.released.gateway.reference, pinned.released.gateway.tag):
        assert image_id(name) is None, f"{name} was left on the engine"


@pytest.fixture(scope="module")
def delivered_images(pinned_images: PinnedImages) -> list[str]:
    return [pinned_images.images.gateway, pinned_images.images.fixtures]


@pytest.fixture(scope="module", params=DELIVERY_PATHS)
def run(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    docker_engine: DockerEngine,
    pinned_images: PinnedImages,
) -> Iterator[PathRun]:
    stacks: list[ContainerStack] = []

    def container_stack(bundle: Bundle, workdir: Path) -> ContainerStack:
        stack = ContainerStack(bundle, workdir, compose=docker_engine.compose)
        stacks.append(stack)
        return stack

    workdir = tmp_path_factory.mktemp(f"e2e-containers-{request.param}")
    with pytest.MonkeyPatch.context() as patch:
        # The cloud path talks to moto's server with boto3; nothing may ask for EC2 instance metadata.
        patch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        results = run_delivery_path(
            request.param, SCENARIOS, workdir, stack_factory=container_stack, images=pinned_images.images
        )
    yield PathRun(
        path=request.param,
        results={result.name: result for result in results},
        stacks=stacks,
        leftovers={stack.project: stack.leftovers() for stack in stacks},
    )


def passed(result: ScenarioResult) -> str:
    return f"{result.line()}\nobserved: {result.observations}\nthe gateway logged:\n{result.gateway_log}"


def test_fixtures_are_measured_within_30_s(run: PathRun) -> None:
    result = run.results["fixtures"]
    assert result.passed, passed(result)
    assert result.observations["measurements"] > 0
    assert result.observations["first_measurement_after_s"] <= 30
    # Every device of industrial-fixtures.json, each polled at its compose service name, though the
    # fixture containers start alongside the gateway rather than before it.
    assert result.observations["devices_measured"] == FIXTURE_DEVICES
    assert result.observations["every_device_after_s"] <= 30


def test_bare_deploy_serves_its_dtm_and_stays_quiet(run: PathRun) -> None:
    result = run.results["bare"]
    assert result.passed, passed(result)
    assert result.observations["measurements"] == 0
    assert result.observations["topology_equals_dtm"] is True
    assert result.observations["connection_attempts"] == 0
    assert set(result.observations["device_states"].values()) == {"not_connected"}


def test_commissioning_starts_measurements(run: PathRun) -> None:
    result = run.results["commissioning"]
    assert result.passed, passed(result)
    assert result.observations["post_status"] == 200
    assert result.observations["measurements"] > 0
    assert result.observations["topology_equals_posted"] is True
    assert result.observations["devices_measured"] == [result.observations["device"]]


def test_a_killed_fixture_container_fails_alone_and_recovers(run: PathRun) -> None:
    result = run.results["fault"]
    assert result.passed, passed(result)
    seen = result.observations
    dead = next(key for key in seen["health_while_dead"] if key != "status")
    assert seen["health_while_dead"]["status"] == "degraded"
    assert seen["health_while_dead"][dead]["state"] == "failing"
    # Retried (with backoff) while dead, not given up on after one failure.
    assert seen["health_while_dead"][dead]["consecutive_failures"] >= 2
    assert sorted(seen["others_kept_measuring"]) == sorted(set(FIXTURE_DEVICES) - {dead})
    assert seen["status_after_recovery"] == "ok"


def test_the_stacks_ran_the_bundles_as_delivered(
    run: PathRun, delivered_images: list[str], pinned_images: PinnedImages
) -> None:
    assert [stack.bundle.delivery for stack in run.stacks] == [run.path, run.path]
    released = pinned_images.released
    fixture_runs: set[tuple[str, str]] = set()
    for stack in run.stacks:
        # The delivered compose.yaml names each image pinned by the digest its push answered...
        assert stack.images == delivered_images
        assert all(PINNED_REFERENCE.fullmatch(name) for name in stack.images), stack.images
        # ...and every container ran that very image.
        assert stack.ran[GATEWAY_SERVICE] == (released.gateway.reference, released.gateway.image_id)
        fixture_runs |= {ran for service, ran in stack.ran.items() if service != GATEWAY_SERVICE}
        # The delivered directory holds the delivered files alone: the port override lives in the run's workdir.
        assert sorted(path.name for path in stack.bundle.directory.iterdir()) == sorted(BUNDLE_FILES)
        assert "published: '8080'" in (stack.bundle.directory / COMPOSE_NAME).read_text()
        assert stack.override_path.parent == stack.workdir
        assert (stack.logs_dir / "gateway.log").read_text().strip(), "close() keeps the gateway's log"
    assert fixture_runs == {(released.fixtures.reference, released.fixtures.image_id)}
    for name in delivered_images:
        assert image_id(name) is not None


def test_every_compose_project_is_gone_after_its_run(run: PathRun) -> None:
    assert len(run.leftovers) == 2
    assert run.leftovers == {project: {} for project in run.leftovers}
