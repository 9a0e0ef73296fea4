"""Import structure of bev_quant_ros, read with `ast` (nothing is imported).

Every import statement counts, function-level ones included (a lazy import still
couples two modules), with relative imports resolved; `importlib.import_module`
calls (the CLI's subcommand registry, backend selection) are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Collection
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "bev_quant_ros"
ROOT_FILES = {"__init__.py", "cli.py", "errors.py", "resources.py"}
# The ROS adapters. Only these import rclpy or message packages when they are imported, so
# the perception core, the quantization toolkit, the CLI and the offline bag readers import
# without a ROS install. evaluation/live.py and replay/cli.py import rclpy inside the
# functions that start ROS; ros/message_decoding.py reads messages by their fields only.
ROS_MODULES = {"bev_quant_ros.ros.node", "bev_quant_ros.ros.message_encoding", "bev_quant_ros.replay.ros_player"}
ROS_TOP_LEVEL = {"rclpy", "rosidl_runtime_py", "builtin_interfaces", "launch", "launch_ros", "tf2_ros"}

Imports = dict[str, list[tuple[str, bool]]]  # module -> [(imported dotted name, at module level)]


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _from_base(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module of a `from ... import` (relative levels resolved)."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[:len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports_of(path: Path) -> list[tuple[str, bool]]:
    """(dotted name, module level) of every import in the file; `from a import b` gives "a.b"."""
    module, is_package = _module_name(path), path.name == "__init__.py"
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, module_level: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, module_level) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = _from_base(child, module, is_package)
                found.extend((base if alias.name == "*" else f"{base}.{alias.name}", module_level)
                             for alias in child.names)
            visit(child, module_level and not isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                 ast.Lambda)))

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


@pytest.fixture(scope="module")
def imports() -> Imports:
    return {_module_name(p): _imports_of(p) for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _internal(name: str, modules: Collection[str]) -> str | None:
    """The bev_quant_ros module a dotted name refers to: its longest prefix that is a module."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per back edge of a depth-first search."""
    state: dict[str, str] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def dfs(node: str) -> None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                dfs(nxt)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            dfs(node)
    return cycles


def _is_ros(name: str) -> bool:
    top = name.split(".")[0]
    return top in ROS_TOP_LEVEL or top.endswith(("_msgs", "_srvs"))


def test_the_parser_sees_relative_function_level_and_from_imports(imports):
    # guards the checks below: an import the parser missed would make them pass vacuously
    assert ("bev_quant_ros.errors.ConfigError", True) in imports["bev_quant_ros.perception.model_config"]
    assert ("rclpy", False) in imports["bev_quant_ros.evaluation.live"]  # inside run_live
    assert ("rclpy.node.Node", True) in imports["bev_quant_ros.replay.ros_player"]
    tree = ast.parse("from . import a\nfrom ..errors import E\n\ndef f():\n    from .b import c\n")
    names = [_from_base(node, "bev_quant_ros.sub.mod", False) for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom)]
    assert names == ["bev_quant_ros.sub", "bev_quant_ros.errors", "bev_quant_ros.sub.b"]
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycle_among_package_modules(imports):
    graph = {module: {target for name, _ in found if (target := _internal(name, imports)) not in (None, module)}
             for module, found in imports.items()}
    assert sum(map(len, graph.values())) > len(graph)  # the graph has edges: the check is not vacuous
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


def test_package_root_holds_only_subpackages_and_the_shared_modules():
    unexpected = [entry.name for entry in PACKAGE_DIR.iterdir()
                  if entry.name != "__pycache__" and not (entry.is_dir() and (entry / "__init__.py").is_file())
                  and entry.name not in ROOT_FILES]
    assert not unexpected, f"bev_quant_ros/ should hold packages plus {sorted(ROOT_FILES)}; also has {unexpected}"


def test_only_the_ros_adapters_import_ros_at_module_level(imports):
    direct = {module for module, found in imports.items() if any(level and _is_ros(n) for n, level in found)}
    assert direct == ROS_MODULES, "modules importing ROS at module level changed; update ROS_MODULES if intended"
    # importing a module runs the module-level imports of the modules (and packages) it imports
    edges = {module: {target for name, level in found if level and (target := _internal(name, imports))}
             for module, found in imports.items()}
    for module in edges:
        parts = module.split(".")
        edges[module] |= {".".join(parts[:end]) for end in range(1, len(parts))}
    pulls_ros = {}
    for module in imports:
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            if current not in seen:
                seen.add(current)
                todo.extend(edges[current])
        if module not in ROS_MODULES and seen & ROS_MODULES:
            pulls_ros[module] = sorted(seen & ROS_MODULES)
    assert not pulls_ros, f"modules that import the ROS adapters at module level: {pulls_ros}"


def test_every_subpackage_exports_public_names_that_resolve_lazily():
    import importlib
    import importlib.util
    import subprocess
    import sys

    for init in sorted(PACKAGE_DIR.glob("*/__init__.py")):
        if init.parent.name == "model" and importlib.util.find_spec("torch") is None:
            continue  # its exports need torch (the optional 'train' extra); the others are checked
        package = importlib.import_module(f"bev_quant_ros.{init.parent.name}")
        assert package.__all__, f"{package.__name__} exports nothing"
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        with pytest.raises(AttributeError):
            getattr(package, "no_such_name")
    # lazy: the parameter table (read by the launch file) does not pull in ONNX Runtime or cv2
    probe = "import sys, bev_quant_ros.ros.parameters; print('onnxruntime' in sys.modules, 'cv2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
