"""The platform's settings: stage block of cfg.defaults.yml, deep-merged customer file, secrets.env.

One pydantic model validates the merged result, so a bad file fails at start with the key path
that is wrong and the file that set it, never later inside a run.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets as secrets_module
import tempfile
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, model_validator
from sqlalchemy.engine import URL, make_url

from contracts.edp import ArtifactHost
from contracts.s3_layout import BucketName
from service_kit.layered_config import (
    STAGES,
    ConfigError,
    Section,
    Stage,
    check_stage,
    deep_merge,
    describe_validation_error,
    load_layered,
    stage_and_customer_file,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULTS_PATH = PROJECT_ROOT / "cfg.defaults.yml"
# The release: the tag of every image `make images` builds, and of the edge images orders name.
PROJECT_VERSION: str = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["version"]

# moto accepts any credentials; the embedded stage still needs some so boto3 can sign requests.
STANDIN_AWS_KEY = "standin"
# The longest one delivery email may take (all attempts, timeouts and backoffs); well below
# platform_db.deliveries.STALE_SENDING, after which a "sending" claim counts as abandoned.
MAX_EMAIL_SEND_SECONDS = 300


class ApiSettings(Section):
    host: str
    """Interface uvicorn binds the order intake API to."""
    port: int = Field(ge=1, le=65535)
    """Port of the order intake API."""
    public_url: str
    """Base URL customers and the website reach the API at; portal links start here."""
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest accepted request body."""
    require_token: bool
    """Whether the order and operator routes need a credential (WEBSITE_API_TOKENS, OPERATOR_API_TOKENS in secrets.env); true in beta and wherever the API listens beyond loopback."""
    # What one client may hold of the server: uvicorn's defaults keep slow or idle connections
    # open for as long as the client likes and accept any number of them.
    timeout_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    """How long uvicorn keeps an idle keep-alive connection open."""
    limit_concurrency: int = Field(default=100, ge=1)
    """Connections and requests in progress at once; beyond it uvicorn answers 503."""
    h11_max_incomplete_event_size: int = Field(default=16 * 1024, ge=1024)
    """Largest request line plus headers uvicorn buffers (bytes)."""
    body_read_timeout_seconds: float = Field(default=15.0, gt=0, le=300)
    """Deadline for receiving a whole request body; a slower client gets 408 and the connection closes."""
    # Both hold in the pipeline too (delivery/redelivery_limits.py): order/manifest publishes no
    # version past them, however the run was launched (a backfill in the Dagster UI, say).
    max_redeliveries_per_order: int = Field(default=20, ge=0)
    """Re-deliveries per order at most, ever: POST /orders/{cfg_id}/redeliver launches no more (429), and order/manifest publishes no more portal versions after the first."""
    max_redeliveries_per_order_per_day: int = Field(default=5, ge=0)
    """Re-deliveries per order within any 24 hours: the API launches no more (429), and order/manifest publishes no more portal versions after the first."""


class PlatformDbSettings(Section):
    url: str
    """SQLAlchemy URL of platform_db without its password (PLATFORM_DB_PASSWORD in secrets.env)."""


class AwsSettings(Section):
    region: str
    """AWS region of the artifact bucket and SES."""
    endpoint_url: str | None = None
    """Endpoint for S3/SES calls; unset means real AWS, set means the embedded stand-in."""
    public_endpoint_url: str | None = None
    """Endpoint that presigned download URLs name; defaults to endpoint_url."""


class ArtifactSettings(Section):
    bucket: BucketName
    """The stage's artifact bucket."""


class EmailSettings(Section):
    sender: str
    """Verified SES identity that delivery emails come from."""
    outbox_dir: str | None = None
    """When set, every sent email is also written here as an .eml file."""
    # The SES client makes one attempt per request (an SDK retry could send an email twice when
    # only SES's answer was lost); delivery/email_dispatch.py retries what certainly did not reach SES.
    send_attempts: int = Field(default=4, ge=1, le=10)
    """SES requests per email at most, retried only when the earlier ones certainly did not reach SES."""
    send_backoff_seconds: float = Field(default=1.0, ge=0, le=30)
    """Wait before the 2nd SES request; doubled before each further one."""
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    """Connect timeout of one SES request."""
    read_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    """Read timeout of one SES request; past it the email's outcome is unknown (no resend)."""

    @model_validator(mode="after")
    def _send_fits_the_claim(self) -> EmailSettings:
        # A claim still "sending" after platform_db.deliveries.STALE_SENDING (10 min) counts as a
        # sender that died mid-send, so one send must end well within it.
        backoffs = sum(self.send_backoff_seconds * 2**n for n in range(self.send_attempts - 1))
        worst = self.send_attempts * (self.connect_timeout_seconds + self.read_timeout_seconds) + backoffs
        if worst > MAX_EMAIL_SEND_SECONDS:
            raise ValueError(
                f"one email may take up to {worst:g} s with these send_attempts, send_backoff_seconds and timeouts; "
                f"at most {MAX_EMAIL_SEND_SECONDS} s"
            )
        return self


class EdpSettings(Section):
    base_url: str
    """Base URL of the EDP API (the part before /edp-api)."""
    timeout_seconds: float = Field(gt=0, le=60)
    """Connect and read timeout of one EDP request."""
    retries: int = Field(ge=0, le=10)
    """Retries with backoff for failed EDP requests."""
    # The EDP artifact policy (delivery/edp_artifact_policy.py): EDP's artifact URLs are fetched
    # from inside the platform and published to the customer, so where, how much and how long.
    artifact_hosts: list[ArtifactHost] = Field(default_factory=list)
    """Hosts besides EDP's own (host and port of base_url) that artifact URLs and their redirects may name: 'host' (the scheme's default port) or 'host:port', matched exactly."""
    allow_private_artifact_hosts: bool = False
    """Let artifact hosts resolve to loopback, private, link-local or reserved addresses (local/demo: the EDP stand-in is on 127.0.0.1); false refuses them."""
    max_artifacts: int = Field(default=32, ge=1, le=1000)
    """Most artifacts one EDP job may list."""
    max_artifact_bytes: int = Field(default=64 * 1024 * 1024, ge=1)
    """Largest EDP artifact (bytes)."""
    max_dtm_bytes: int = Field(default=8 * 1024 * 1024, ge=1)
    """Largest dtm.json (bytes); it is base64'd into the seed ISO's user-data."""
    max_job_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Most bytes of one EDP job's artifacts together."""
    max_artifact_redirects: int = Field(default=3, ge=0, le=10)
    """Redirects one artifact download follows, each hop checked like the URL."""
    download_deadline_seconds: float = Field(default=300.0, gt=0, le=3600)
    """Longest one artifact download may take, redirects, retries and every read included."""
    max_job_answer_bytes: int = Field(default=1024 * 1024, ge=1024)
    """Largest answer to a job request (POST /edp-api/jobs, GET /edp-api/jobs/{id}) read (bytes); past it the request fails naming this cap."""


class DagsterSettings(Section):
    host: str
    """Interface the Dagster webserver binds to."""
    port: int = Field(ge=1, le=65535)
    """Port of the Dagster webserver."""
    home: str
    """DAGSTER_HOME: instance config and local storage."""
    graphql_url: str | None = None
    """GraphQL endpoint of the Dagster webserver as the API reaches it; unset: http://<host>:<port>/graphql."""

    def webserver_graphql_url(self) -> str:
        """Where the API sends GraphQL requests (re-delivery backfills)."""
        if self.graphql_url:
            return self.graphql_url
        # A wildcard bind address is where the server listens, not an address to connect to.
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/graphql"


class PortalSettings(Section):
    local_key_file: str | None = None
    """Local/demo only: where a generated portal token key is kept when PORTAL_TOKEN_KEY is unset."""
    # Every click on a download link presigns again, so a URL only has to outlive the redirect
    # and a slow start of the download; a leaked one is useless soon after.
    presign_seconds: int = Field(default=300, ge=30, le=7 * 24 * 3600)
    """Lifetime of the presigned S3 URL a download link answers with."""
    local_signing_key_file: str | None = None
    """Local/demo only: where a generated Ed25519 manifest signing key is kept when MANIFEST_SIGNING_KEY is unset."""
    download_record_days: int = Field(default=90, ge=1, le=3650)
    """How long each portal page view and download is kept in the download record."""
    recent_downloads: int = Field(default=10, ge=1, le=100)
    """How many of the latest downloads GET /orders/{cfg_id} shows (an operator's view)."""
    support_contact: str = Field(default="support@platform.example.com", min_length=1, max_length=200)
    """Whom a customer asks when a portal link no longer works (shown on the portal's error pages)."""


class AirgapSettings(Section):
    require_edge_images: bool = False
    """Fail an air-gap bundle whose edge images archive (edge-images/<version>.tar) is not published, instead of building it without the images."""


class LogSettings(Section):
    dir: str = ".local/logs"
    """make run: where each service writes its log (<name>.log)."""


class SeedSettings(Section):
    enabled: bool = False
    """Publish a sample APK and submit the sample orders at start (demo)."""
    apk_version: str = Field(default="1.0.0", pattern=r"^\d+\.\d+\.\d+$")
    """Version of the sample APK."""


class EdgeSettings(Section):
    registry: str = Field(default="", pattern=r"^([a-z0-9][a-z0-9.:-]*(/[a-z0-9._-]+)*)?$")
    """Registry (host and path) the delivered stack pulls its images from: <registry>/ems-edge-gateway:<version> and <registry>/ems-industrial-fixtures:<version>; '' names the images as `make images` builds them."""


class PipelineSettings(Section):
    sensor_interval_seconds: int = Field(default=30, ge=5, le=3600)
    """How often each sensor ticks."""
    sensors_running: bool
    """Sensors start running by default (local/demo) or wait for an operator."""
    edp_poll_budget_seconds: float = Field(default=30.0, gt=0, le=50)
    """Time one edp_sensor tick may spend polling EDP (Dagster stops a tick at 60 s)."""
    api_starts_first_run: bool = True
    """The API queues an order's first run right after the commit (order_sensor remains the safety net)."""
    edp_wait_in_run_seconds: float = Field(default=0.0, ge=0, le=600)
    """How long order/edp_artifacts waits inside the order's first run for its EDP job; 0: the first run only submits the job and edp_sensor starts the build once EDP is done."""
    step_retries: int = Field(default=5, ge=0, le=10)
    """Retries of a step that failed (all but the email), e.g. S3 or EDP briefly down."""
    step_retry_delay_seconds: float = Field(default=5.0, ge=0, le=600)
    """Wait before a step's first retry; each further retry waits twice as long."""
    # The sweeper (stuck_order_sensor): an order standing still this long with no run left in
    # Dagster is resumed (up to stuck_max_resumes times), then failed with the reason.
    stuck_received_seconds: int = Field(default=600, ge=60)
    """Longest an order may stay received with no run."""
    stuck_building_seconds: int = Field(default=1800, ge=60)
    """Longest an order may stay building with no run."""
    edp_job_timeout_seconds: int = Field(default=21600, ge=60)
    """Longest an EDP job may take; past it the order fails and a retry submits a new job."""
    stuck_max_resumes: int = Field(default=2, ge=0, le=10)
    """Automatic resumes of one stuck order before it is failed."""
    sweep_interval_seconds: int = Field(default=60, ge=5, le=3600)
    """How often the sweeper looks."""
    max_redelivery_backfill_orders: int = Field(default=10, ge=1)
    """Orders a backfill may re-deliver to without the run tag platform/confirm_fleet_redelivery=<number of orders>; past it order/manifest refuses every re-delivery of the backfill."""


class AwsStandinSettings(Section):
    enabled: bool
    """Start the embedded S3/SES (moto server mode)."""
    host: str = "127.0.0.1"
    port: int = Field(default=5000, ge=1, le=65535)
    state_dir: str | None = None
    """Where the embedded S3/SES keeps its objects and sent messages across restarts (written through before each change is answered); unset or '' keeps them in memory."""


class EdpStandinSettings(Section):
    enabled: bool
    """Start the local EDP stand-in."""
    host: str = "127.0.0.1"
    port: int = Field(default=8001, ge=1, le=65535)
    state_dir: str = ".local/edp"
    """Where the stand-in keeps its jobs across restarts."""
    queued_seconds: float = Field(default=1.0, ge=0)
    """How long a new job stays queued."""
    running_seconds: float = Field(default=2.0, ge=0)
    """How long a job then runs before it completes."""
    failure: Literal["none", "job_fails", "http_500", "hang", "huge_job_answer"] = "none"
    """Fault to inject: jobs fail, every request answers 500, requests hang, or job status answers are far too large."""
    hang_seconds: float = Field(default=30.0, ge=0)
    """How long a request hangs in failure mode 'hang'."""


class SupervisorSettings(Section):
    # make run restarts a crashed service instead of stopping the stack, but a service that keeps
    # crashing (a bad config, a port taken for good) must end the stack rather than loop forever.
    max_restarts: int = Field(default=5, ge=0)
    """make run: restarts of one crashed service within restart_window_seconds before the stack stops (0: never restart)."""
    restart_window_seconds: float = Field(default=600.0, gt=0)
    """make run: the window max_restarts counts restarts of one service in."""


class StandinSettings(Section):
    aws: AwsStandinSettings
    edp: EdpStandinSettings


class Secrets(Section):
    """Values from secrets.env (or the environment, as docker compose's env_file passes them)."""

    # Each a comma-separated list: every value in it is valid, so a credential rotates by adding the
    # new value, moving its users over, then removing the old one.
    WEBSITE_API_TOKENS: SecretStr | None = None
    OPERATOR_API_TOKENS: SecretStr | None = None
    PORTAL_TOKEN_KEY: SecretStr | None = None
    MANIFEST_SIGNING_KEY: SecretStr | None = None
    PLATFORM_DB_PASSWORD: SecretStr | None = None
    AWS_ACCESS_KEY_ID: SecretStr | None = None
    AWS_SECRET_ACCESS_KEY: SecretStr | None = None


class Settings(Section):
    stage: Stage
    api: ApiSettings
    platform_db: PlatformDbSettings
    aws: AwsSettings
    artifacts: ArtifactSettings
    email: EmailSettings
    edp: EdpSettings
    dagster: DagsterSettings
    portal: PortalSettings = Field(default_factory=PortalSettings)
    seed: SeedSettings = Field(default_factory=SeedSettings)
    logs: LogSettings = Field(default_factory=LogSettings)
    supervisor: SupervisorSettings = Field(default_factory=SupervisorSettings)
    edge: EdgeSettings
    airgap: AirgapSettings = Field(default_factory=AirgapSettings)
    pipeline: PipelineSettings
    standins: StandinSettings
    secrets: Secrets = Field(default_factory=Secrets)

    @model_validator(mode="after")
    def _secrets_the_stage_needs(self) -> Settings:
        if not self.api.require_token and not _is_loopback(self.api.host):
            raise ValueError(
                f"api.require_token is false but api.host {self.api.host} is reachable beyond this machine; "
                "set api.require_token: true (with WEBSITE_API_TOKENS and OPERATOR_API_TOKENS in secrets.env)"
            )
        if self.api.require_token:
            api_credentials(self.secrets)
        if self.stage == "beta":
            _beta_fails_closed(self)
        if self.secrets.PORTAL_TOKEN_KEY is None and self.portal.local_key_file is None:
            raise ValueError("PORTAL_TOKEN_KEY is not set in secrets.env and portal.local_key_file is unset")
        if self.secrets.MANIFEST_SIGNING_KEY is None and self.portal.local_signing_key_file is None:
            raise ValueError(
                "MANIFEST_SIGNING_KEY is not set in secrets.env and portal.local_signing_key_file is unset"
            )
        return self

    def portal_token_key(self) -> bytes:
        return portal_token_key(self.secrets, self.portal.local_key_file)

    def manifest_signing_key(self) -> bytes:
        return manifest_signing_key(self.secrets, self.portal.local_signing_key_file)

    def platform_db_url(self) -> URL:
        url = make_url(self.platform_db.url)
        # A file database has no password; only server URLs get it.
        if self.secrets.PLATFORM_DB_PASSWORD is not None and url.host:
            url = url.set(password=self.secrets.PLATFORM_DB_PASSWORD.get_secret_value())
        return url

    def aws_credentials(self) -> dict[str, str]:
        """Explicit credentials for boto3, or none so the default chain (instance role) applies."""
        key, secret = self.secrets.AWS_ACCESS_KEY_ID, self.secrets.AWS_SECRET_ACCESS_KEY
        if key is not None and secret is not None:
            return {
                "aws_access_key_id": key.get_secret_value(),
                "aws_secret_access_key": secret.get_secret_value(),
            }
        if self.aws.endpoint_url is not None:
            return {"aws_access_key_id": STANDIN_AWS_KEY, "aws_secret_access_key": STANDIN_AWS_KEY}
        return {}


# A credential the API accepts is at least this long: short enough to type, too long to guess.
MIN_API_TOKEN_LENGTH = 32
MAKE_API_TOKEN = "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
_SENDABLE_TOKEN = re.compile(r"[\x21-\x7e]+")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_values(name: str, value: SecretStr | None) -> tuple[str, ...]:
    if value is None:
        raise ValueError(f"api.require_token is true but {name} is not set in secrets.env")
    values = tuple(part.strip() for part in value.get_secret_value().split(",") if part.strip())
    if not values:
        raise ValueError(f"{name} in secrets.env holds no value")
    # Never the value itself in these messages: they reach logs.
    if any(len(token) < MIN_API_TOKEN_LENGTH for token in values):
        raise ValueError(
            f"a value of {name} is shorter than {MIN_API_TOKEN_LENGTH} characters; "
            f"make one with: {MAKE_API_TOKEN}"
        )
    if not all(_SENDABLE_TOKEN.fullmatch(token) for token in values):
        # A client could never present it in an Authorization header: a credential that locks out.
        raise ValueError(
            f"a value of {name} holds a character other than printable ASCII (or a space inside it); "
            f"make one with: {MAKE_API_TOKEN}"
        )
    return values


def api_credentials(secrets: Secrets) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The website's and the operators' valid tokens (each list may hold several during a rotation)."""
    website = _token_values("WEBSITE_API_TOKENS", secrets.WEBSITE_API_TOKENS)
    operator = _token_values("OPERATOR_API_TOKENS", secrets.OPERATOR_API_TOKENS)
    if set(website) & set(operator):
        raise ValueError(
            "WEBSITE_API_TOKENS and OPERATOR_API_TOKENS share a value; each credential needs its own"
        )
    return website, operator


def _beta_fails_closed(settings: Settings) -> None:
    """Beta serves real customers: nothing it needs may fall back to an open or generated default."""
    if not settings.api.require_token:
        raise ValueError("beta needs api.require_token: true (and WEBSITE_API_TOKENS, OPERATOR_API_TOKENS)")
    for name in ("PORTAL_TOKEN_KEY", "MANIFEST_SIGNING_KEY"):
        if getattr(settings.secrets, name) is None:
            raise ValueError(
                f"beta needs {name} in secrets.env (a generated local key file is not used there)"
            )


def portal_token_key(secrets: Secrets, local_key_file: str | None) -> bytes:
    """PORTAL_TOKEN_KEY, else (local/demo) a key generated once into ``local_key_file``."""
    if secrets.PORTAL_TOKEN_KEY is not None:
        return secrets.PORTAL_TOKEN_KEY.get_secret_value().encode()
    if local_key_file is None:
        raise ConfigError("PORTAL_TOKEN_KEY is not set in secrets.env")
    return generated_key_file(
        Path(local_key_file), lambda: secrets_module.token_hex(32), "portal token key"
    ).encode()


def manifest_signing_key(secrets: Secrets, local_signing_key_file: str | None) -> bytes:
    """MANIFEST_SIGNING_KEY (an Ed25519 private key, PKCS#8 PEM), else (local/demo) one generated once."""
    if secrets.MANIFEST_SIGNING_KEY is not None:
        # secrets.env holds one line per value: the PEM's line breaks may be written as \n.
        return secrets.MANIFEST_SIGNING_KEY.get_secret_value().replace("\\n", "\n").encode()
    if local_signing_key_file is None:
        raise ConfigError("MANIFEST_SIGNING_KEY is not set in secrets.env")
    return generated_key_file(Path(local_signing_key_file), _new_signing_key, "manifest signing key").encode()


def _new_signing_key() -> str:
    private = ed25519.Ed25519PrivateKey.generate()
    return private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


def generated_key_file(path: Path, generate: Callable[[], str], what: str) -> str:
    """A local/demo key, generated once into ``path`` (mode 0600) and read back from then on."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "w") as key_file:
                key_file.write(generate())
            # A hard link never replaces: when the API and a Dagster run start together, the first
            # link wins and everyone reads that key, only ever whole.
            os.link(written, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(written)
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"{path} holds no {what}")
    return key + ("\n" if key.startswith("-----") else "")


RENAMED_SECRETS = {
    "API_TOKEN": "is no longer read: the website's credential is WEBSITE_API_TOKENS, "
    "the operators' is OPERATOR_API_TOKENS (each a comma-separated list of values)",
}


def _read_secrets(path: Path, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    values: dict[str, str] = {}
    origins: dict[str, str] = {}
    if path.is_file():
        for key, value in dotenv_values(path).items():
            if key in RENAMED_SECRETS:
                raise ConfigError(f"{path}: {key} {RENAMED_SECRETS[key]}")
            if key not in Secrets.model_fields:
                known = ", ".join(Secrets.model_fields)
                raise ConfigError(f"{path}: unknown secret {key!r} (known: {known})")
            if value:
                values[key], origins[key] = value, str(path)
    for key, change in RENAMED_SECRETS.items():
        if environ.get(key):
            raise ConfigError(f"environment variable {key} {change}")
    for key in Secrets.model_fields:
        if environ.get(key):
            values[key], origins[key] = environ[key], f"environment variable {key}"
    return values, origins


def _secrets_path(secrets_path: Path | str | None, environ: Mapping[str, str]) -> Path:
    return Path(secrets_path or environ.get("SECRETS_PATH") or "secrets.env")


def load_secrets(secrets_path: Path | str | None = None, environ: Mapping[str, str] | None = None) -> Secrets:
    """Only the secrets: for resources whose config must not carry them (the Dagster UI shows config)."""
    environ = os.environ if environ is None else environ
    path = _secrets_path(secrets_path, environ)
    values, origins = _read_secrets(path, environ)
    try:
        return Secrets.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            describe_validation_error(exc, {("secrets", k): v for k, v in origins.items()}, str(path))
        ) from None


def load_settings(
    stage: str | None = None,
    *,
    defaults_path: Path | None = None,
    customer_path: Path | str | None = None,
    secrets_path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Load the settings of ``stage`` (default: ``ENV``, else local) and validate them."""
    environ = os.environ if environ is None else environ
    stage, customer_path = stage_and_customer_file(stage, customer_path, environ)
    secrets_path = _secrets_path(secrets_path, environ)
    # A wrong ENV is the likelier mistake than a wrong secrets.env, so it is reported first.
    check_stage(stage)
    secrets, secret_origins = _read_secrets(secrets_path, environ)
    return load_layered(
        Settings,
        defaults_path=defaults_path or DEFAULTS_PATH,
        stage=stage,
        customer_path=customer_path,
        secrets=secrets,
        secret_origins=secret_origins,
    )


__all__ = [
    "PROJECT_VERSION",
    "STAGES",
    "ConfigError",
    "Section",
    "Settings",
    "Stage",
    "api_credentials",
    "deep_merge",
    "load_secrets",
    "load_settings",
    "stage_and_customer_file",
]
