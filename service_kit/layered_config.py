"""The layered settings loader, the seed's config rules for any service.

The ``stage`` block of a defaults file, the customer file deep-merged over it, then one pydantic
model validates the result; a failure names each wrong key path and the file that set it. The
platform (``platform_config.settings``) and the delivered edge gateway load their settings with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

STAGES = ("local", "demo", "beta")
Stage = Literal["local", "demo", "beta"]
ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(ValueError):
    """A configuration file or secret is wrong; the message names the file and the key path."""


class Section(BaseModel):
    # A field's description is the docstring under it, so a settings class reads as its reference.
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; lists and scalars in ``override`` replace those in ``base``."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _record_origin(
    tree: Mapping[str, Any], origin: str, into: dict[tuple[str, ...], str], prefix: tuple[str, ...] = ()
) -> None:
    for key, value in tree.items():
        path = (*prefix, str(key))
        # A replaced mapping or list is owned by the file that replaced it, all the way down.
        for known in [p for p in into if p[: len(path)] == path]:
            if not isinstance(value, Mapping):
                del into[known]
        into[path] = origin
        if isinstance(value, Mapping):
            _record_origin(value, origin, into, path)


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} {path} must hold a mapping at the top, not {type(data).__name__}")
    return data


def stage_and_customer_file(
    stage: str | None, customer_path: Path | str | None, environ: Mapping[str, str]
) -> tuple[str, Path | str | None]:
    """The stage (argument, else ``ENV``, else local) and customer file (argument, else ``CFG_CUSTOMER_PATH``)."""
    if customer_path is None and environ.get("CFG_CUSTOMER_PATH"):
        customer_path = environ["CFG_CUSTOMER_PATH"]
    return stage or environ.get("ENV") or "local", customer_path


def check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise ConfigError(f"unknown stage ENV={stage!r}; expected one of {', '.join(STAGES)}")


def load_layered(
    model: type[ModelT],
    *,
    defaults_path: Path,
    stage: str,
    customer_path: Path | str | None = None,
    secrets: Mapping[str, str] | None = None,
    secret_origins: Mapping[str, str] | None = None,
) -> ModelT:
    """The seed's config rules for any service: the ``stage`` block of ``defaults_path``, the
    customer file deep-merged over it, then ``model`` validates the result.

    The top-level keys ``stage`` and ``secrets`` come from neither file: they are set after the
    merge to ``stage`` and ``secrets``, replacing whatever the files said there;
    ``secret_origins`` names where each secret came from. A failure raises ConfigError naming
    each wrong key path and the file (and stage block) that set it.
    """
    check_stage(stage)
    defaults = read_yaml_mapping(defaults_path, "defaults file")
    if not isinstance(defaults.get(stage), dict):
        raise ConfigError(f"{defaults_path}: no block for stage {stage!r}")

    origins: dict[tuple[str, ...], str] = {}
    block_origin = f"{defaults_path} [{stage}]"
    merged: dict[str, Any] = dict(defaults[stage])
    _record_origin(merged, block_origin, origins)
    if customer_path is not None:
        customer = read_yaml_mapping(Path(customer_path), "customer file")
        merged = deep_merge(merged, customer)
        _record_origin(customer, str(customer_path), origins)

    for key, value in {"stage": stage, "secrets": dict(secrets or {})}.items():
        # A replaced key no longer carries anything a file set beneath it.
        for known in [path for path in origins if path[0] == key]:
            del origins[known]
        merged[key] = value
    origins.update({("secrets", name): origin for name, origin in (secret_origins or {}).items()})

    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, origins, block_origin)) from None


def describe_validation_error(
    exc: ValidationError, origins: Mapping[tuple[str, ...], str], block_origin: str
) -> str:
    lines = [f"invalid configuration ({exc.error_count()} error(s)):"]
    for error in exc.errors():
        path = tuple(str(part) for part in error["loc"])
        origin = next(
            (origins[path[:n]] for n in range(len(path), 0, -1) if path[:n] in origins), block_origin
        )
        key = ".".join(path) or "(top level)"
        message = "unknown key" if error["type"] == "extra_forbidden" else error["msg"]
        # Secrets are named, never echoed: the input of a failed secret stays out of the message.
        lines.append(f"  {key}: {message} (set in {origin})")
    return "\n".join(lines)
