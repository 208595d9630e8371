"""The layout: the layers of ARCHITECTURE.md point one way (each part imports only parts of lower layers), no
two modules import each other, the speed layer builds on the batch layer, never the reverse, and the domains'
command and run modules take what they need as arguments rather than reaching back into the CLI or the code
location.

Imports are read from the source (module level and inside functions alike), so a lazy import cannot hide a
cycle; the composition roots load the speed layer by module name (``definitions.SPEED_LAYER_DEFS``,
``cli.COMMANDS``).
"""

from __future__ import annotations

import ast
import re
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


def module_graph(imports: dict[str, set[str]]) -> dict[str, set[str]]:
    """Module -> the project modules it imports (``from a.b import c`` is a.b.c when that is a module, else a.b)."""
    modules = set(imports)

    def owner(name: str) -> str:
        while name not in modules and "." in name:
            name = name.rpartition(".")[0]
        return name

    def targets(names: set[str]) -> set[str]:
        owners = {owner(n) for n in names}
        # `from pkg import module` names the package too; only the module is what the importer uses.
        return {t for t in owners if not any(o.startswith(t + ".") for o in owners)}

    return {m: targets(names) - {m} for m, names in imports.items()}


def documented_layers() -> list[list[str]]:
    """The parts of each layer, lowest first, from the list between ARCHITECTURE.md's layer markers."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    block = text.split("<!-- layers -->")[1].split("<!-- /layers -->")[0]
    rows = [re.sub(r"^\d+\.\s*", "", line.strip()) for line in block.splitlines() if re.match(r"\s*\d+\.", line)]
    return [re.findall(r"`([\w.]+)`", row) for row in rows]


def part_of(module: str, parts: set[str]) -> str:
    """The most specific documented part that holds ``module`` (``crypto_assets.exchange.replay`` before
    ``crypto_assets.exchange``)."""
    candidates = [p for p in parts if module == p or module.startswith(p + ".")]
    assert candidates, f"{module} is in no layer of ARCHITECTURE.md"
    return max(candidates, key=len)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one member (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def layer_violations(imports: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    level = {part: i for i, row in enumerate(layers) for part in row}
    top = len(layers) - 1
    problems = []
    for module, targets in module_graph(imports).items():
        mine = part_of(module, set(level))
        for target in sorted(targets):
            theirs = part_of(target, set(level))
            if theirs != mine and level[theirs] >= level[mine] and not level[theirs] == level[mine] == top:
                problems.append(f"{module} imports {target}: layer {level[theirs]} is not below {level[mine]}")
    return problems


def test_each_layer_imports_only_the_layers_below_it():
    layers = documented_layers()
    assert len(layers) >= 5 and ["crypto_assets.lake"] in layers
    assert not layer_violations(imports_by_module(), layers)


def test_no_module_and_no_part_imports_itself_round_a_cycle():
    graph = module_graph(imports_by_module())
    assert not cycles(graph)
    parts = {p for row in documented_layers() for p in row}
    by_part: dict[str, set[str]] = {}
    for module, targets in graph.items():
        by_part.setdefault(part_of(module, parts), set()).update(part_of(t, parts) for t in targets)
    assert not cycles({p: t - {p} for p, t in by_part.items()})


def test_the_layer_check_can_fail():
    layers = [["crypto_assets.lake"], ["crypto_assets.batch"], ["crypto_assets.cli"]]
    upward = {"crypto_assets.lake.atomic": {"crypto_assets.batch.transforms"}, "crypto_assets.batch.transforms": set()}
    assert layer_violations(upward, layers) == [
        "crypto_assets.lake.atomic imports crypto_assets.batch.transforms: layer 1 is not below 0"
    ]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


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
    for runs in ("crypto_assets.batch_runs", "crypto_assets.forecast.runs"):
        assert not {n for n in imports[runs] if n.startswith("crypto_assets.definitions")}, runs


@pytest.mark.integration  # a fresh interpreter per module
@pytest.mark.parametrize(
    "module",
    [
        "crypto_assets.batch.defs",
        "crypto_assets.serving.defs",
        "streaming_sensor.defs",
        "crypto_assets.batch_runs",
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
