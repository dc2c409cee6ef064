import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from dotenv import dotenv_values

from delivery.manifest_signing import ManifestSigner
from platform_config.settings import (
    MIN_API_TOKEN_LENGTH,
    PROJECT_ROOT,
    ConfigError,
    EmailSettings,
    Secrets,
    api_credentials,
    deep_merge,
    load_secrets,
    load_settings,
    manifest_signing_key,
)

DEFAULTS = """
local:
  api: {host: 127.0.0.1, port: 8000, public_url: "http://127.0.0.1:8000", require_token: false}
  platform_db: {url: "sqlite:///x.db"}
  aws: {region: eu-central-1, endpoint_url: "http://127.0.0.1:5000"}
  artifacts: {bucket: artifacts-local}
  email: {sender: a@example.com}
  edp: {base_url: "http://127.0.0.1:8001", timeout_seconds: 5, retries: 3}
  dagster: {host: 127.0.0.1, port: 3000, home: .local/dagster}
  portal: {local_key_file: .local/portal_token.key, local_signing_key_file: .local/manifest_signing.key}
  edge: {registry: "registry.example.com/ems"}
  pipeline: {sensors_running: true}
  standins:
    aws: {enabled: true}
    edp: {enabled: true}
beta:
  api: {host: 0.0.0.0, port: 8000, public_url: "https://p.example.com", require_token: true}
  platform_db: {url: "postgresql+psycopg2://platform@db:5432/platform"}
  aws: {region: eu-central-1}
  artifacts: {bucket: artifacts-beta}
  email: {sender: a@example.com}
  edp: {base_url: "https://edp.example.com", timeout_seconds: 5, retries: 3}
  dagster: {host: 0.0.0.0, port: 3000, home: /opt/dagster}
  edge: {registry: "registry.example.com/ems"}
  pipeline: {sensors_running: false}
  standins:
    aws: {enabled: false}
    edp: {enabled: false}
"""


# What beta needs to start: both credentials (32 characters or more each) and both keys.
WEBSITE_TOKEN = "website-token-of-the-settings-tests"
OPERATOR_TOKEN = "operator-token-of-the-settings-tests"
BETA_SECRETS = {
    "WEBSITE_API_TOKENS": WEBSITE_TOKEN,
    "OPERATOR_API_TOKENS": OPERATOR_TOKEN,
    "PORTAL_TOKEN_KEY": "k3y",
    "MANIFEST_SIGNING_KEY": "s1gn",
}


def secrets_env(values: dict[str, str]) -> str:
    return "".join(f"{key}={value}\n" for key, value in values.items())


@pytest.fixture
def defaults(tmp_path: Path) -> Path:
    path = tmp_path / "cfg.defaults.yml"
    path.write_text(DEFAULTS)
    return path


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_deep_merge_merges_mappings_and_replaces_lists_and_scalars() -> None:
    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": 1}
    override = {"a": {"c": [3], "d": {"g": 2}}, "f": {"now": "mapping"}}
    assert deep_merge(base, override) == {
        "a": {"b": 1, "c": [3], "d": {"e": 1, "g": 2}},
        "f": {"now": "mapping"},
    }
    assert base["a"]["c"] == [1, 2], "the base is not modified"


def test_the_bundled_defaults_load_for_every_stage(tmp_path: Path) -> None:
    secrets = write(tmp_path, "secrets.env", secrets_env(BETA_SECRETS))
    for stage in ("local", "demo", "beta"):
        settings = load_settings(stage, secrets_path=secrets, environ={})
        assert settings.stage == stage
    assert (
        load_settings("demo", environ={}).artifacts.bucket
        != load_settings("local", environ={}).artifacts.bucket
    )


def test_env_selects_the_stage_and_local_is_the_default(defaults: Path, tmp_path: Path) -> None:
    missing = tmp_path / "none.env"
    assert load_settings(defaults_path=defaults, secrets_path=missing, environ={}).stage == "local"
    beta = load_settings(
        defaults_path=defaults,
        secrets_path=missing,
        environ={"ENV": "beta", **BETA_SECRETS},
    )
    assert beta.artifacts.bucket == "artifacts-beta"


def test_customer_file_is_deep_merged_over_the_stage_block(defaults: Path, tmp_path: Path) -> None:
    customer = write(
        tmp_path, "cfg.customer.yml", "api:\n  port: 9100\nartifacts:\n  bucket: acme-artifacts\n"
    )
    settings = load_settings(
        defaults_path=defaults,
        secrets_path=tmp_path / "none.env",
        environ={"CFG_CUSTOMER_PATH": str(customer)},
    )
    assert settings.api.port == 9100
    assert settings.api.host == "127.0.0.1", "keys the customer file does not name keep the stage's value"
    assert settings.artifacts.bucket == "acme-artifacts"


def test_unknown_stage_fails_naming_the_stages(defaults: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown stage ENV='prod'.*local, demo, beta"):
        load_settings("prod", defaults_path=defaults, environ={})


def test_unknown_key_names_its_path_and_the_file_that_set_it(defaults: Path, tmp_path: Path) -> None:
    customer = write(tmp_path, "cfg.customer.yml", "api:\n  prot: 9100\n")
    with pytest.raises(ConfigError) as error:
        load_settings(defaults_path=defaults, customer_path=customer, secrets_path=tmp_path / "x", environ={})
    assert f"api.prot: unknown key (set in {customer})" in str(error.value)


def test_wrong_type_names_its_path_and_the_file_that_set_it(defaults: Path, tmp_path: Path) -> None:
    customer = write(tmp_path, "cfg.customer.yml", "edp:\n  timeout_seconds: soon\n")
    with pytest.raises(ConfigError) as error:
        load_settings(defaults_path=defaults, customer_path=customer, secrets_path=tmp_path / "x", environ={})
    message = str(error.value)
    assert "edp.timeout_seconds:" in message and f"(set in {customer})" in message


def test_wrong_value_in_the_defaults_names_the_stage_block(tmp_path: Path) -> None:
    defaults = write(tmp_path, "cfg.defaults.yml", DEFAULTS.replace("port: 3000", "port: 99999", 1))
    with pytest.raises(ConfigError) as error:
        load_settings(defaults_path=defaults, secrets_path=tmp_path / "x", environ={})
    assert f"dagster.port: Input should be less than or equal to 65535 (set in {defaults} [local])" in str(
        error.value
    )


def test_a_replaced_mapping_belongs_to_the_customer_file(defaults: Path, tmp_path: Path) -> None:
    customer = write(tmp_path, "cfg.customer.yml", "standins:\n  aws: {enabled: true, port: zero}\n")
    with pytest.raises(ConfigError, match=rf"standins.aws.port: .*\(set in {customer}\)"):
        load_settings(defaults_path=defaults, customer_path=customer, secrets_path=tmp_path / "x", environ={})


def test_missing_customer_file_and_bad_yaml_are_reported(defaults: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"customer file .*nope\.yml does not exist"):
        load_settings(defaults_path=defaults, customer_path=tmp_path / "nope.yml", environ={})
    broken = write(tmp_path, "broken.yml", "api: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_settings(defaults_path=defaults, customer_path=broken, environ={})
    listing = write(tmp_path, "list.yml", "- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_settings(defaults_path=defaults, customer_path=listing, environ={})


def test_secrets_come_from_the_file_and_stay_hidden(defaults: Path, tmp_path: Path) -> None:
    secrets = write(
        tmp_path, "secrets.env", secrets_env({**BETA_SECRETS, "PLATFORM_DB_PASSWORD": "pw-value"})
    )
    settings = load_settings("beta", defaults_path=defaults, secrets_path=secrets, environ={})
    assert api_credentials(settings.secrets) == ((WEBSITE_TOKEN,), (OPERATOR_TOKEN,))
    assert settings.platform_db_url().password == "pw-value"
    for value in (WEBSITE_TOKEN, OPERATOR_TOKEN, "pw-value"):
        assert value not in repr(settings)
    assert "pw-value" not in str(settings.platform_db_url())


def test_unknown_secret_is_rejected_without_echoing_values(defaults: Path, tmp_path: Path) -> None:
    secrets = write(tmp_path, "secrets.env", "API_TOKN=leaked-value\n")
    with pytest.raises(ConfigError) as error:
        load_settings(defaults_path=defaults, secrets_path=secrets, environ={})
    assert "unknown secret 'API_TOKN'" in str(error.value) and str(secrets) in str(error.value)
    assert "leaked-value" not in str(error.value)


# --- beta fails closed: the API's credentials and the keys ----------------------------------------


def _beta_error(defaults: Path, tmp_path: Path, secrets: dict[str, str], customer: str | None = None) -> str:
    """The message that stops beta from starting with ``secrets`` (and the ``customer`` file's text)."""
    customer_path = write(tmp_path, "cfg.customer.yml", customer) if customer is not None else None
    with pytest.raises(ConfigError) as error:
        load_settings(
            "beta",
            defaults_path=defaults,
            customer_path=customer_path,
            secrets_path=write(tmp_path, "secrets.env", secrets_env(secrets)),
            environ={},
        )
    return str(error.value)


@pytest.mark.parametrize("missing", ["WEBSITE_API_TOKENS", "OPERATOR_API_TOKENS"])
def test_beta_without_a_credential_fails_at_start_naming_it(
    defaults: Path, tmp_path: Path, missing: str
) -> None:
    secrets = {key: value for key, value in BETA_SECRETS.items() if key != missing}
    assert f"{missing} is not set" in _beta_error(defaults, tmp_path, secrets)


@pytest.mark.parametrize("credential", ["WEBSITE_API_TOKENS", "OPERATOR_API_TOKENS"])
def test_a_credential_value_under_32_characters_is_refused_naming_the_key_never_the_value(
    defaults: Path, tmp_path: Path, credential: str
) -> None:
    short = "s3cr3t-but-31-characters-long-x"
    assert len(short) == MIN_API_TOKEN_LENGTH - 1
    # The second value of a rotation counts as much as the first.
    message = _beta_error(
        defaults, tmp_path, {**BETA_SECRETS, credential: f"{BETA_SECRETS[credential]},{short}"}
    )
    assert f"a value of {credential} is shorter than 32 characters" in message
    assert "secrets.token_urlsafe(32)" in message, "it says how to make a good one"
    assert short not in message and BETA_SECRETS[credential] not in message


def test_a_credential_value_a_client_cannot_send_is_refused(defaults: Path, tmp_path: Path) -> None:
    unsendable = "an operator token with spaces inside it"
    message = _beta_error(defaults, tmp_path, {**BETA_SECRETS, "OPERATOR_API_TOKENS": unsendable})
    assert "a value of OPERATOR_API_TOKENS holds a character other than printable ASCII" in message
    assert unsendable not in message


def test_one_value_in_both_credentials_is_refused(defaults: Path, tmp_path: Path) -> None:
    shared = {**BETA_SECRETS, "WEBSITE_API_TOKENS": f"{WEBSITE_TOKEN},{OPERATOR_TOKEN}"}
    message = _beta_error(defaults, tmp_path, shared)
    assert "WEBSITE_API_TOKENS and OPERATOR_API_TOKENS share a value" in message
    assert OPERATOR_TOKEN not in message


def test_every_value_of_a_credential_is_valid_at_once(defaults: Path, tmp_path: Path) -> None:
    rotating = f" {OPERATOR_TOKEN}-old , {OPERATOR_TOKEN}-new ,"
    secrets = write(tmp_path, "secrets.env", secrets_env({**BETA_SECRETS, "OPERATOR_API_TOKENS": rotating}))
    settings = load_settings("beta", defaults_path=defaults, secrets_path=secrets, environ={})
    assert api_credentials(settings.secrets)[1] == (f"{OPERATOR_TOKEN}-old", f"{OPERATOR_TOKEN}-new")


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1"])
def test_beta_with_require_token_false_fails_at_start(defaults: Path, tmp_path: Path, host: str) -> None:
    message = _beta_error(
        defaults, tmp_path, BETA_SECRETS, f"api:\n  host: '{host}'\n  require_token: false\n"
    )
    assert "api.require_token: true" in message


@pytest.mark.parametrize("missing", ["PORTAL_TOKEN_KEY", "MANIFEST_SIGNING_KEY"])
def test_beta_without_a_key_fails_at_start_naming_it_even_with_a_local_key_file(
    defaults: Path, tmp_path: Path, missing: str
) -> None:
    local_files = "portal:\n  local_key_file: portal.key\n  local_signing_key_file: signing.key\n"
    secrets = {key: value for key, value in BETA_SECRETS.items() if key != missing}
    assert f"beta needs {missing} in secrets.env" in _beta_error(defaults, tmp_path, secrets, local_files)


def test_an_open_api_beyond_loopback_fails_at_start(defaults: Path, tmp_path: Path) -> None:
    customer = write(tmp_path, "cfg.customer.yml", "api:\n  host: 0.0.0.0\n")
    with pytest.raises(ConfigError) as error:
        load_settings(defaults_path=defaults, customer_path=customer, secrets_path=tmp_path / "x", environ={})
    assert "api.require_token is false but api.host 0.0.0.0 is reachable beyond this machine" in str(
        error.value
    )
    for loopback in ("localhost", "::1", "127.0.0.2"):
        write(tmp_path, "cfg.customer.yml", f"api:\n  host: '{loopback}'\n")
        assert (
            load_settings(
                defaults_path=defaults, customer_path=customer, secrets_path=tmp_path / "x", environ={}
            ).api.host
            == loopback
        )


def test_a_left_over_api_token_is_refused_naming_the_new_keys(defaults: Path, tmp_path: Path) -> None:
    old = "the-old-single-api-token-of-every-caller"
    secrets = write(tmp_path, "secrets.env", secrets_env({**BETA_SECRETS, "API_TOKEN": old}))
    with pytest.raises(ConfigError) as in_file:
        load_settings("beta", defaults_path=defaults, secrets_path=secrets, environ={})
    with pytest.raises(ConfigError) as in_environment:
        load_secrets(tmp_path / "none.env", environ={"API_TOKEN": old})
    for error in (in_file, in_environment):
        message = str(error.value)
        assert "API_TOKEN is no longer read" in message
        assert "WEBSITE_API_TOKENS" in message and "OPERATOR_API_TOKENS" in message
        assert old not in message
    assert str(secrets) in str(in_file.value)


def test_the_example_secrets_file_names_every_secret_and_no_other() -> None:
    example = PROJECT_ROOT / "secrets.env.example"
    assert set(dotenv_values(example)) == set(Secrets.model_fields)
    load_secrets(example, environ={})


def test_local_generates_one_portal_token_key_and_keeps_it(tmp_path: Path) -> None:
    customer = write(tmp_path, "cfg.customer.yml", f"portal:\n  local_key_file: {tmp_path / 'key'}\n")
    settings = load_settings(customer_path=customer, secrets_path=tmp_path / "none.env", environ={})
    first = settings.portal_token_key()
    assert len(first) == 64 and first == settings.portal_token_key()
    assert (tmp_path / "key").stat().st_mode & 0o077 == 0, "only the owner may read the key"
    secret = load_settings(
        customer_path=customer,
        secrets_path=tmp_path / "none.env",
        environ={"PORTAL_TOKEN_KEY": "from-secrets"},
    )
    assert secret.portal_token_key() == b"from-secrets"


def test_local_uses_standin_credentials_and_beta_the_default_chain(defaults: Path, tmp_path: Path) -> None:
    local = load_settings(defaults_path=defaults, secrets_path=tmp_path / "x", environ={})
    assert set(local.aws_credentials()) == {"aws_access_key_id", "aws_secret_access_key"}
    beta = load_settings(
        "beta",
        defaults_path=defaults,
        secrets_path=tmp_path / "x",
        environ=BETA_SECRETS,
    )
    assert beta.aws_credentials() == {}


def test_the_dagster_graphql_url_defaults_to_the_webserver_and_beta_names_the_compose_service(
    defaults: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "none.env"
    local = load_settings(defaults_path=defaults, secrets_path=missing, environ={})
    assert local.dagster.graphql_url is None
    assert local.dagster.webserver_graphql_url() == "http://127.0.0.1:3000/graphql"
    # A wildcard bind address is no address to connect to.
    beta = load_settings(
        "beta",
        defaults_path=defaults,
        secrets_path=missing,
        environ=BETA_SECRETS,
    )
    assert beta.dagster.webserver_graphql_url() == "http://127.0.0.1:3000/graphql"
    customer = write(
        tmp_path, "cfg.customer.yml", "dagster:\n  graphql_url: http://dagster.internal:3000/graphql\n"
    )
    moved = load_settings(defaults_path=defaults, customer_path=customer, secrets_path=missing, environ={})
    assert moved.dagster.webserver_graphql_url() == "http://dagster.internal:3000/graphql"
    bundled = load_settings(
        "beta",
        environ=BETA_SECRETS,
        secrets_path=missing,
    )
    assert bundled.dagster.webserver_graphql_url() == "http://dagster-webserver:3000/graphql"


def test_edp_artifact_policy_allows_private_hosts_only_where_the_stand_in_runs(tmp_path: Path) -> None:
    secrets = write(tmp_path, "secrets.env", secrets_env(BETA_SECRETS))
    by_stage = {
        stage: load_settings(stage, secrets_path=secrets, environ={}).edp
        for stage in ("local", "demo", "beta")
    }

    assert by_stage["local"].allow_private_artifact_hosts and by_stage["demo"].allow_private_artifact_hosts
    assert not by_stage["beta"].allow_private_artifact_hosts
    assert by_stage["beta"].artifact_hosts == []
    for edp in by_stage.values():
        assert edp.max_dtm_bytes <= edp.max_artifact_bytes <= edp.max_job_bytes
        assert edp.download_deadline_seconds > edp.timeout_seconds


def test_an_artifact_host_that_is_not_host_or_host_port_fails_at_load(defaults: Path, tmp_path: Path) -> None:
    customer = write(
        tmp_path, "cfg.customer.yml", "edp:\n  artifact_hosts: ['https://files.example.com/x']\n"
    )
    with pytest.raises(ConfigError) as error:
        load_settings(defaults_path=defaults, customer_path=customer, secrets_path=tmp_path / "x", environ={})
    assert "edp.artifact_hosts.0:" in str(error.value)


def test_a_settings_field_is_described_by_the_docstring_under_it() -> None:
    fields = EmailSettings.model_fields
    assert fields["send_attempts"].description == (
        "SES requests per email at most, retried only when the earlier ones certainly did not reach SES."
    )
    assert fields["send_attempts"].default == 4
    assert fields["sender"].description == "Verified SES identity that delivery emails come from."
    assert fields["sender"].is_required()


def test_the_local_key_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    path = tmp_path / "state" / "manifest_signing.key"

    first = manifest_signing_key(Secrets(), str(path))
    again = manifest_signing_key(Secrets(), str(path))

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert again == first
    assert ManifestSigner.from_pem(again).key_id == ManifestSigner.from_pem(first).key_id


def test_an_existing_key_file_is_used_as_it_is(tmp_path: Path) -> None:
    signer = ManifestSigner.generate()
    path = tmp_path / "manifest_signing.key"
    path.write_bytes(signer.private_pem())

    assert ManifestSigner.from_pem(manifest_signing_key(Secrets(), str(path))).key_id == signer.key_id


def test_processes_starting_together_get_one_key(
    tmp_path: Path, race: Callable[[int, Callable[[int], Any]], list[Any]]
) -> None:
    path = tmp_path / "manifest_signing.key"

    keys = race(8, lambda _: manifest_signing_key(Secrets(), str(path)))

    assert len(set(keys)) == 1
    assert (
        ManifestSigner.from_pem(keys[0]).public_pem()
        == ManifestSigner.from_pem(path.read_bytes()).public_pem()
    )
