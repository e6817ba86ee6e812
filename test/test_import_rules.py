"""The import rules of docs/ARCHITECTURE.md, checked by reading every module's imports."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "ssp_perception"
ROS_LAYER = PKG / "ros"
ROS_ROOTS = {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "ssp_msgs",
             "builtin_interfaces", "rcl_interfaces", "launch", "launch_ros", "cv_bridge"}
# Packages whose module graph must be free of cycles: (import name, folder holding it).
PACKAGES = (("ssp_perception", ROOT), ("ssp_training", ROOT / "ssp_training"))


def _imports(path: Path) -> list[ast.Import | ast.ImportFrom]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in _imports(path):
        if isinstance(node, ast.Import):
            roots.update(alias.name for alias in node.names)
        elif node.level == 0 and node.module:
            roots.add(node.module)
    return roots


def _modules():
    return sorted(p for p in PKG.rglob("*.py"))


def test_nothing_outside_ros_imports_ros():
    offenders = {}
    for path in _modules():
        if ROS_LAYER in path.parents:
            continue
        bad = {m for m in _imported_roots(path) if m.split(".")[0] in ROS_ROOTS}
        if bad:
            offenders[str(path.relative_to(PKG))] = sorted(bad)
    assert not offenders, f"ROS imports outside ssp_perception/ros/: {offenders}"


def test_only_the_ros_layer_creates_nodes():
    users = [str(p.relative_to(PKG)) for p in _modules()
             if any(m == "rclpy.node" for m in _imported_roots(p))]
    assert all(u.startswith("ros/") for u in users), f"rclpy.node imported by {users}"


def test_perception_never_imports_training():
    offenders = [str(p.relative_to(PKG)) for p in _modules()
                 if any(m.split(".")[0] == "ssp_training" for m in _imported_roots(p))]
    assert not offenders, f"ssp_perception must not import ssp_training: {offenders}"


def test_progress_bars_are_drawn_by_one_module():
    """Every bar goes through ssp_perception.progress, which makes it readable in a log file."""
    home = PKG / "progress.py"
    sources = [*_modules(), *(ROOT / "ssp_training" / "ssp_training").rglob("*.py")]
    users = [str(p.relative_to(ROOT)) for p in sources
             if p != home and any(m.split(".")[0] == "tqdm" for m in _imported_roots(p))]
    assert not users, f"tqdm imported outside ssp_perception/progress.py: {users}"


def test_core_never_imports_tools_or_ros():
    offenders = {}
    for path in _modules():
        rel = path.relative_to(PKG)
        if rel.parts[0] in ("ros", "tools") or rel.name == "__main__.py":
            continue   # a package's __main__ is a command-line shim, above the core
        bad = {m for m in _module_edges(path, "ssp_perception", ROOT)
               if m.split(".")[1:2] in (["ros"], ["tools"])}
        if bad:
            offenders[str(rel)] = sorted(bad)
    assert not offenders, f"the core imports the ROS layer or tools: {offenders}"


# ---- import cycles -------------------------------------------------------------------------


def _module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _module_edges(path: Path, package: str, base: Path) -> set[str]:
    """Return the modules of ``package`` that ``path`` imports (absolute names)."""
    name = _module_name(path, base)
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    edges = set()
    for node in _imports(path):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        else:
            if node.level:
                anchor = here[:len(here) - (node.level - 1)]
                mod = ".".join(anchor + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            # "from pkg import name" imports pkg, and pkg.name when that is a module.
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        edges.update(t for t in targets if t.split(".")[0] == package)
    return edges


def _graph(package: str, base: Path) -> dict[str, set[str]]:
    files = {_module_name(p, base): p for p in (base / package).rglob("*.py")
             if "test" not in p.relative_to(base).parts}
    graph = {}
    for name, path in files.items():
        edges = set()
        for target in _module_edges(path, package, base):
            # Importing a.b.c runs a and a.b first: the nearest existing module stands for it.
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(f"{target}."):
                edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Return one cycle per strongly connected component with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                components.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return components


def test_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    found = {}
    for package, base in PACKAGES:
        for comp in _cycles(_graph(package, base)):
            found[package] = found.get(package, []) + [comp]
    assert not found, f"import cycles (modules that import each other, maybe via others): {found}"
