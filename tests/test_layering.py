"""The packages' layering, read from their imports: who may import whom, and who may import Dagster.

The table is the README's "Code layout". A package imports only those below it, so nothing is a
cycle, the delivered edge images carry no platform code, and the Dagster-free domain (contracts,
delivery, platform_db) stays testable and importable without a Dagster instance.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent

MAY_IMPORT: dict[str, frozenset[str]] = {
    "contracts": frozenset(),
    "service_kit": frozenset({"contracts"}),
    "platform_config": frozenset({"contracts", "service_kit"}),
    "platform_db": frozenset({"contracts", "platform_config", "service_kit"}),
    "delivery": frozenset({"contracts", "service_kit"}),
    "order_pipeline": frozenset({"contracts"}),
    "platform_instance": frozenset(),
    "resources": frozenset(
        {"contracts", "delivery", "industrial_fixtures", "platform_config", "platform_db", "service_kit"}
    ),
    "sensors": frozenset({"contracts", "delivery", "order_pipeline", "resources"}),
    "platform_assets": frozenset(
        {"contracts", "delivery", "order_pipeline", "platform_config", "platform_db", "resources", "sensors"}
    ),
    "api": frozenset(
        {"contracts", "delivery", "order_pipeline", "platform_config", "platform_db", "service_kit"}
    ),
    "edge_gateway": frozenset({"contracts", "service_kit"}),
    "industrial_fixtures": frozenset({"contracts"}),
    # Shipped to customers on its own: the standard library and cryptography only.
    "portal_verify": frozenset(),
    "standins": frozenset({"contracts", "delivery", "platform_config", "service_kit"}),
    "local_stack": frozenset({"contracts", "platform_config", "standins"}),
    "e2e": frozenset(
        {
            "contracts",
            "delivery",
            "edge_gateway",
            "industrial_fixtures",
            "platform_config",
            "service_kit",
            "standins",
        }
    ),
}
# The API reaches Dagster over GraphQL alone (its asset keys and tags come from order_pipeline);
# migrations and the edge images never load Dagster.
WITHOUT_DAGSTER = frozenset(
    {
        "contracts",
        "service_kit",
        "platform_config",
        "platform_db",
        "delivery",
        "api",
        "edge_gateway",
        "portal_verify",
    }
)
# bench/ is the benchmark, not a package of the platform: it may import anything.
PACKAGES = frozenset(MAY_IMPORT)


def imported_modules(package: str) -> Iterator[tuple[Path, str]]:
    """Every absolute import of the package's modules, as (file, module imported)."""
    for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield path, node.module


def test_every_package_of_the_project_has_a_row() -> None:
    on_disk = {path.parent.name for path in PROJECT_ROOT.glob("*/__init__.py")} - {"tests"}
    assert on_disk == PACKAGES


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_package_imports_only_the_packages_below_it(package: str) -> None:
    wrong = [
        f"{path.relative_to(PROJECT_ROOT)} imports {module}"
        for path, module in imported_modules(package)
        if (top := module.split(".")[0]) in PACKAGES and top != package and top not in MAY_IMPORT[package]
    ]
    assert wrong == []


@pytest.mark.parametrize("package", sorted(WITHOUT_DAGSTER))
def test_only_the_pipeline_packages_import_dagster(package: str) -> None:
    wrong = [
        f"{path.relative_to(PROJECT_ROOT)} imports {module}"
        for path, module in imported_modules(package)
        if module.split(".")[0] in {"dagster", "dagster_graphql", "dagster_aws", "dagster_postgres"}
    ]
    assert wrong == []


def test_the_table_has_no_cycle() -> None:
    def below(package: str, seen: frozenset[str]) -> None:
        assert package not in seen, f"cycle through {package}"
        for lower in MAY_IMPORT[package]:
            below(lower, seen | {package})

    for package in MAY_IMPORT:
        below(package, frozenset())
