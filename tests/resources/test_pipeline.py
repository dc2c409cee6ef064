"""The pipeline's resources are fixed by the settings: no run can change where they point."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from dagster import DagsterInvalidConfigError, validate_run_config

from platform_assets.definitions import build_definitions
from platform_config.settings import Settings


@pytest.mark.parametrize(
    ("resource", "override"),
    [
        ("portal", {"public_url": "https://elsewhere.example"}),
        ("edp", {"base_url": "https://elsewhere.example"}),
        ("ses", {"sender": "someone@elsewhere.example"}),
        ("io_manager", {"s3_bucket": "elsewhere"}),
    ],
)
def test_a_run_cannot_override_a_resource_setting(
    make_settings: Callable[[dict[str, Any]], Settings], resource: str, override: dict[str, str]
) -> None:
    job = build_definitions(make_settings({})).resolve_implicit_global_asset_job_def()
    # What the launchpad would send: refused before any run starts.
    with pytest.raises(DagsterInvalidConfigError, match="unexpected config entry"):
        validate_run_config(job, {"resources": {resource: {"config": override}}})
    # The settings alone configure every resource.
    assert validate_run_config(job, {})
