"""Orders the pipeline would reject later fail at /submit, with a 422 naming the field."""

from __future__ import annotations

import copy
import math
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from contracts.configurator import (
    CLOUD_REGIONS,
    MAX_OPTION_TEXT,
    MAX_OPTIONS,
    CloudDeployment,
    ConfiguratorPayload,
    looks_like_secret,
)
from contracts.field_errors import field_errors
from contracts.manifest import Manifest
from delivery import edge_bundle
from delivery.email import compose_delivery_email


def _errors(answer: Any) -> dict[str, str]:
    assert answer.status_code == 422, answer.text
    return {error["field"]: error["message"] for error in answer.json()["errors"]}


def _refusal(client: TestClient, order: dict[str, Any], field: str, value: Any) -> str:
    """What a submit of ``order`` with ``field`` (a dotted path) set to ``value`` says of it, the one
    field refused."""
    changed = copy.deepcopy(order)
    *parents, name = field.split(".")
    target = changed
    for parent in parents:
        target = target[parent]
    target[name] = value
    errors = _errors(client.post("/submit", json=changed))
    assert list(errors) == [field]
    return errors[field]


def _manifest(cfg_id: str) -> Manifest:
    return Manifest.model_validate(
        {
            "schema_version": 1,
            "cfg_id": cfg_id,
            "version": 1,
            "created_at": datetime(2024, 5, 1, tzinfo=UTC).isoformat(),
            "deployment_target": "cloud",
            "flags": {},
            "artifacts": [],
        }
    )


@pytest.mark.parametrize(
    "email",
    [
        "jörg@example.com",  # SES speaks no SMTPUTF8: the email step would fail after EDP's work
        "ada@localhost",  # no dot in the domain
        "ada@plant",
        '"ada lovelace"@example.com',
        "ada@[10.0.0.1]",
        "ada@example.test",  # a special-use domain nothing delivers to
    ],
)
def test_addresses_ses_cannot_deliver_to_are_refused(
    client: TestClient, cloud_order: dict[str, Any], email: str
) -> None:
    assert "delivered to" in _refusal(client, cloud_order, "customer.email", email)


def test_an_internationalized_domain_is_stored_in_ascii_and_the_email_builds(
    client: TestClient, cloud_order: dict[str, Any]
) -> None:
    order = copy.deepcopy(cloud_order)
    order["customer"]["email"] = "Ada@Bücher.example"
    answer = client.post("/submit", json=order)
    assert answer.status_code == 200
    cfg_id = answer.json()["cfg_id"]
    stored = client.get(f"/orders/{cfg_id}").json()["order"]
    assert stored["customer"]["email"] == "Ada@xn--bcher-kva.example"

    # What the email asset does with the stored order later.
    payload = ConfiguratorPayload.model_validate(stored)
    message = compose_delivery_email(
        sender="deliveries@platform.example.com",
        order=payload,
        manifest=_manifest(cfg_id),
        page_url="https://p/x",
    )
    assert "Ada@xn--bcher-kva.example" in message.as_string()


@pytest.mark.parametrize(
    "key", ["admin_password", "api_key", "refresh_token", "aws_secret", "db_credentials", "accesskey"]
)
def test_secret_looking_option_keys_are_refused_at_submit(
    client: TestClient, cloud_order: dict[str, Any], key: str
) -> None:
    order = copy.deepcopy(cloud_order)
    order["options"][key] = "x"
    errors = _errors(client.post("/submit", json=order))
    assert list(errors) == [f"options.{key}[key]"]
    assert "looks like a secret" in errors[f"options.{key}[key]"]


def test_the_intake_and_the_edge_bundle_share_one_secret_key_rule() -> None:
    assert edge_bundle.looks_like_secret is looks_like_secret
    assert (
        looks_like_secret("Private-Key")
        and looks_like_secret("PASSWD")
        and not looks_like_secret("retention_days")
    )


@pytest.mark.parametrize(
    ("options", "field", "says"),
    [
        ({"Retention": 1}, "options.Retention[key]", "should match pattern"),
        ({"note": "x" * (MAX_OPTION_TEXT + 1)}, "options.note", f"at most {MAX_OPTION_TEXT} characters"),
        ({"big": 2**63}, "options.big", "64-bit integer"),
        ({"small": -(2**63) - 1}, "options.small", "64-bit integer"),
        ({"nested": {"a": 1}}, "options.nested", "a boolean, a number or a string"),
        ({"listed": [1]}, "options.listed", "a boolean, a number or a string"),
        ({f"o{index}": index for index in range(MAX_OPTIONS + 1)}, "options", f"at most {MAX_OPTIONS} items"),
    ],
)
def test_option_values_are_within_limits(
    client: TestClient, cloud_order: dict[str, Any], options: dict[str, Any], field: str, says: str
) -> None:
    order = copy.deepcopy(cloud_order)
    order["options"] = options
    errors = _errors(client.post("/submit", json=order))
    assert list(errors) == [field]
    assert says in errors[field]


def test_options_at_the_limits_are_accepted(client: TestClient, cloud_order: dict[str, Any]) -> None:
    order = copy.deepcopy(cloud_order)
    order["options"] = {"note": "x" * MAX_OPTION_TEXT, "big": 2**63 - 1, "gain": 0.5, "on": True}
    assert client.post("/submit", json=order).status_code == 200


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_the_model_refuses_non_finite_floats(cloud_order: dict[str, Any], value: float) -> None:
    # The API's reader refuses NaN/Infinity literals already (400); the model holds for every other caller.
    order = copy.deepcopy(cloud_order)
    order["options"] = {"gain": value}
    with pytest.raises(ValidationError) as raised:
        ConfiguratorPayload.model_validate(order)
    assert field_errors(raised.value, order) == [
        {"field": "options.gain", "message": "Value error, must be a finite number"}
    ]


@pytest.mark.parametrize("region", ["xx-nowhere-9", "eu-nowhere-1", "us-gov-mars-1"])
def test_a_region_the_template_checks_do_not_know_is_refused(
    client: TestClient, cloud_order: dict[str, Any], region: str
) -> None:
    assert region in _refusal(client, cloud_order, "deployment.region", region)


def test_the_regions_intake_accepts_are_the_ones_cfn_lint_checks_templates_for() -> None:
    from cfnlint.helpers import REGIONS

    # The commercial and GovCloud partitions: the region names the field's pattern admits.
    pattern = re.compile(CloudDeployment.model_fields["region"].metadata[0].pattern)
    assert {region for region in REGIONS if pattern.fullmatch(region)} == CLOUD_REGIONS
