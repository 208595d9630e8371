"""The layout: the speed layer builds on the batch layer, never the reverse, and the domains' command and run
modules take what they need as arguments rather than reaching back into the CLI or the code location.

Imports are read from the source (module level and inside functions alike), so a lazy import cannot hide a
cycle; the composition roots load the speed layer by module name (``definitions.SPEED_LAYER_DEFS``,
``cli.COMMANDS``).
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from crypto_assets_tests.conftest import REPO

PACKAGES = ("crypto_assets", "streaming_sensor")


def imports_by_module() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
            names: set[str] = set()
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module)
                    names.update(f"{node.module}.{alias.name}" for alias in node.names)
            found[module] = {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def package_graph(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {p: set() for p in PACKAGES}
    for module, names in imports.items():
        graph[module.split(".")[0]].update(n.split(".")[0] for n in names)
    return {p: deps - {p} for p, deps in graph.items()}


def test_no_cycle_between_top_level_packages():
    graph = package_graph(imports_by_module())
    assert graph["streaming_sensor"] == {"crypto_assets"}  # the speed layer builds on the batch layer's pieces
    assert graph["crypto_assets"] == set(), "the batch package must not import the speed layer"


def test_the_cycle_check_sees_lazy_imports(tmp_path):
    # A function-level import is an import: the check must catch one.
    imports = {"crypto_assets.x": {"streaming_sensor.sensor"}, "streaming_sensor.y": {"crypto_assets.lake"}}
    graph = package_graph(imports)
    assert graph["crypto_assets"] == {"streaming_sensor"} and graph["streaming_sensor"] == {"crypto_assets"}


def test_domains_do_not_reach_back_into_the_cli_or_the_code_location():
    imports = imports_by_module()
    for module, names in imports.items():
        if module.endswith(".commands"):
            assert not {n for n in names if n.startswith("crypto_assets.cli")}, module
    for runs in ("crypto_assets.batch.runs", "crypto_assets.forecast.runs"):
        assert not {n for n in imports[runs] if n.startswith("crypto_assets.definitions")}, runs


@pytest.mark.parametrize(
    "module",
    [
        "crypto_assets.batch.defs",
        "crypto_assets.serving.defs",
        "streaming_sensor.defs",
        "crypto_assets.batch.runs",
        "crypto_assets.forecast.defs",
        "crypto_assets.forecast.runs",
        "crypto_assets.cli",
    ],
)
def test_each_domain_imports_alone(module):
    """In a fresh interpreter, so import order within this test session cannot mask a cycle."""
    done = subprocess.run([sys.executable, "-c", f"import {module}"], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_asset_names_are_defined_once():
    """Every asset name is a constant of crypto_assets.asset_names; no other module spells one as a string."""
    from crypto_assets import asset_names

    names = {value for key, value in vars(asset_names).items() if key.isupper()}
    spelled = []
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            if path.name == "asset_names.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Constant) and node.value in names:
                    spelled.append(f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}")
    assert not spelled, spelled
