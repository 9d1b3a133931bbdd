"""The layering of ARCHITECTURE.md, checked on every import statement of the package.

Every ``import`` and ``from ... import`` is read with ast, at module level and inside
functions alike (lazy imports count); only blocks under ``if TYPE_CHECKING:`` are skipped,
since they never run. Two properties:

- one-way layers: a module imports only from its own layer or the layers below it;
- no import cycle among the modules, whatever the layers allow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "pasta_ros"

# lowest first; a module belongs to the first layer whose prefix it matches (longest prefix)
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("core", ("pasta_ros", "pasta_ros.core")),
    ("data", ("pasta_ros.data",)),
    ("sources", ("pasta_ros.sources",)),
    ("export", ("pasta_ros.export",)),
    ("pipeline", ("pasta_ros.pipeline", "pasta_ros.calibration_job")),
    ("evaluation", ("pasta_ros.evaluation", "pasta_ros.evaluation_icas",
                    "pasta_ros.evaluation_icas_tta", "pasta_ros.evaluation_icas_data",
                    "pasta_ros.evaluation_icas_fewshot",
                    "pasta_ros.evaluation_report", "pasta_ros.evaluation_report_md",
                    "pasta_ros.training")),
    ("ros", ("pasta_ros.ros",)),
    ("testing", ("pasta_ros.testing",)),
    ("bench", ("pasta_ros.bench",)),
    ("cli", ("pasta_ros.cli",)),
    ("demo", ("pasta_ros.demo", "pasta_ros.demo_ros")),
)
# third-party roots that must never be imported below the ROS layer
ROS_ONLY = ("rclpy", "sensor_msgs", "std_msgs", "geometry_msgs", "diagnostic_msgs",
            "rcl_interfaces", "pasta_msgs", "launch", "launch_ros", "cv_bridge")
# modules allowed to import by name at run time (importlib), and within which package
DYNAMIC_IMPORTS = {"pasta_ros.bench": "pasta_ros.bench."}


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(path: Path, module: str) -> list[str]:
    """Every dotted name an import statement of ``path`` brings in (absolute form)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    names = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parts, base] if base else parts)
            names += [base, *(f"{base}.{a.name}" for a in node.names)]
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (a name resolves to its longest module)."""
    files = module_files()

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets = {resolve(n) for n in imported_names(path, module) if n.startswith("pasta_ros")}
        graph[module] = {t for t in targets if t and t != module}
    return graph


def layer_of(module: str) -> int:
    best, best_len = None, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = i, len(p)
    if best is None or (best == 0 and module != "pasta_ros"
                        and not module.startswith("pasta_ros.core")):
        raise AssertionError(f"{module} is in no layer: add it to LAYERS in "
                             "tests/test_architecture.py and to ARCHITECTURE.md")
    return best


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            w = next(children, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_hand_made_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_type_checking_imports_are_skipped_and_lazy_ones_are_not(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pasta_ros.a\n"
                   "def f():\n    from pasta_ros.b import c\n")
    names = imported_names(src, "pasta_ros.m")
    assert "pasta_ros.a" not in names and "pasta_ros.b" in names


def test_no_import_cycle_anywhere_lazy_imports_included():
    assert cycles(import_graph()) == []


def test_every_import_goes_down_the_layers():
    bad = []
    for module, targets in import_graph().items():
        for target in targets:
            if layer_of(target) > layer_of(module):
                bad.append(f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
                           f"({LAYERS[layer_of(target)][0]})")
    assert not bad, "imports against the layers of ARCHITECTURE.md:\n" + "\n".join(sorted(bad))


@pytest.mark.parametrize("layer", ["core", "data", "sources", "export", "pipeline",
                                   "evaluation"])
def test_no_ros_and_no_cli_below_the_ros_layer(layer):
    files = module_files()
    depth = [name for name, _ in LAYERS].index(layer)
    bad = []
    for module, path in files.items():
        if layer_of(module) != depth:
            continue
        for name in imported_names(path, module):
            root = name.split(".")[0]
            if root in ROS_ONLY or (layer == "core" and root == "argparse"):
                bad.append(f"{module} imports {name}")
    assert not bad, "\n".join(bad)


def test_core_icas_holds_only_the_model():
    # tta: the test-time adaptation head, a model fitted in closed loop on the k shots
    allowed = {"decoder", "gqs", "losses", "mask_pooling", "matching", "model", "prompting",
               "vote", "tta"}
    present = {p.stem for p in (PACKAGE / "core" / "icas").glob("*.py")} - {"__init__"}
    assert present <= allowed, f"not model code, move out of core/icas: {present - allowed}"


def test_imports_by_name_only_where_allowed():
    bad = []
    for module, path in module_files().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and (
                    (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                    or (isinstance(node.func, ast.Name) and node.func.id == "__import__")):
                if module not in DYNAMIC_IMPORTS:
                    bad.append(module)
    assert not bad, f"importlib.import_module outside {sorted(DYNAMIC_IMPORTS)}: {bad}"


def test_the_benchmark_registry_names_modules_of_its_package():
    from pasta_ros.bench import BENCHMARKS

    files = module_files()
    for name, entry in BENCHMARKS.items():
        assert f"pasta_ros.bench.{entry.module}" in files, name
