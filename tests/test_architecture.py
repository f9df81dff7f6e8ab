"""The package structure: no import cycles, a cheap public API, and a library that never imports viz."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pckeypoints", "pointnet2", "viz")
#: Modules allowed to import viz: the command line composes the library with the figures.
VIZ_USERS = {"pckeypoints.cli", "pckeypoints.__main__"}


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


MODULES = module_files()


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_modules(name: str, module_level: bool) -> set[str]:
    """Project modules that ``name`` imports: at module level (what runs on import, including ``if``/``try``
    blocks, except ``if TYPE_CHECKING``), or anywhere with ``module_level=False``."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(), str(path))
    nodes, found = list(tree.body), set()
    while nodes:
        node = nodes.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            continue
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            body = ast.iter_child_nodes(node)
            if module_level and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            nodes.extend(body)
            continue
        for target in targets:
            while target and target not in MODULES and "." in target:
                target = target.rpartition(".")[0]  # `import a.b.c` of a class path: its module
            if target in MODULES and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_walker_sees_relative_and_absolute_imports():
    assert {"pckeypoints.core.basis", "pckeypoints.core.argmax"} <= imported_modules("pckeypoints.core.head", True)
    assert "pointnet2.ops" in imported_modules("pckeypoints.ops.neighbors", False)  # imported inside knn()
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("module_level", [True, False])
def test_no_import_cycle_in_pckeypoints_pointnet2_viz(module_level):
    """No cycle among the imports that run on import, nor among all imports (inside functions too, and the
    tasks that :func:`pckeypoints.train.tasks.get_task` imports by name)."""
    from pckeypoints.train.tasks import TASKS

    graph = {name: imported_modules(name, module_level) for name in MODULES}
    if not module_level:
        graph["pckeypoints.train.tasks"] |= {target.split(":")[0] for target in TASKS.values()}
    assert find_cycle(graph) is None


def test_a_cycle_through_a_function_level_import_is_found():
    graph = {name: imported_modules(name, module_level=False) for name in MODULES}
    graph["pckeypoints.config"] = graph["pckeypoints.config"] | {"pckeypoints.train.checkpoint"}  # checkpoint imports config
    assert find_cycle(graph) is not None


#: pckeypoints' packages from the bottom up: a module imports only from its own layer or the layers below it
#: (inside functions too), so that the folders name the layers.
LAYERS = (
    ("pckeypoints.errors", "pckeypoints.choices"),
    ("pckeypoints.validation", "pckeypoints.extras", "pckeypoints.devices", "pckeypoints.distributed",
     "pckeypoints.pretrained", "pckeypoints.config"),
    ("pckeypoints.ops",),
    ("pckeypoints.core",),
    ("pckeypoints.data", "pckeypoints.metrics", "pckeypoints.models"),
    ("pckeypoints.evaluation",),
    ("pckeypoints.train",),
    ("pckeypoints.cli", "pckeypoints.__main__"),
)


def layer_of(module: str) -> int | None:
    """The index in :data:`LAYERS` of ``module``'s package, or None outside pckeypoints' layers."""
    for index, layer in enumerate(LAYERS):
        if any(module == top or module.startswith(top + ".") for top in layer):
            return index
    return None


def test_every_pckeypoints_module_has_a_layer():
    assert [m for m in MODULES if m.startswith("pckeypoints.") and layer_of(m) is None] == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("pckeypoints.")))
def test_no_import_runs_up_the_layers(name):
    """The configuration learns its allowed values from :mod:`pckeypoints.choices`, not the core; the basis (core)
    uses ops; the data, metrics and models never reach evaluation or training; and so on."""
    upward = {m for m in imported_modules(name, module_level=False)
              if m.startswith("pckeypoints.") and layer_of(m) > layer_of(name)}
    assert not upward, upward


def test_the_schedules_registry_has_the_chosen_names():
    from pckeypoints.choices import TAU_SCHEDULES
    from pckeypoints.core.schedules import SCHEDULES

    assert tuple(SCHEDULES) == TAU_SCHEDULES


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m.startswith("pckeypoints") and m not in VIZ_USERS))
def test_the_library_never_imports_viz(name):
    assert not {m for m in imported_modules(name, module_level=False) if m.split(".")[0] == "viz"}


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True).stdout


def test_public_api_is_one_cheap_import():
    out = run_python(
        "import sys, pckeypoints as pk\n"
        "assert all(hasattr(pk, name) for name in pk.__all__)\n"
        "pk.KeypointHead; pk.sampling_argmax; pk.PointBasis; pk.KeypointLoss; pk.make_schedule; pk.pck\n"
        "print(sorted(m for m in ('viz', 'matplotlib', 'open3d') if m in sys.modules))"
    )
    assert out.strip() == "[]"


@pytest.mark.parametrize("module", ["pckeypoints.train.supervised", "pckeypoints.train.training", "pckeypoints.train.tasks"])
def test_training_modules_do_not_import_viz_or_matplotlib(module):
    out = run_python(f"import sys, {module}\nprint(sorted(m for m in ('viz', 'matplotlib') if m in sys.modules))")
    assert out.strip() == "[]"


def test_importing_viz_leaves_the_matplotlib_backend_alone():
    out = run_python(
        "import matplotlib\nmatplotlib.use('svg')\nimport viz.plots\nprint(matplotlib.get_backend())"
    )
    assert out.strip() == "svg"


#: Kernels, whose bodies are one computation each, may be longer.
KERNEL_MODULES = {"pckeypoints.ops.fused.triton_kernels"}


def long_functions(path: Path) -> list[str]:
    """The functions of ``path`` over 60 lines, as ``name (n lines)``."""
    tree = ast.parse(path.read_text())
    return [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 60]


def test_long_functions_are_found(tmp_path):
    body = [f"    x{i} = {i}\n" for i in range(60)]
    (tmp_path / "m.py").write_text("def short():\n" + "".join(body[:59]) + "\n\ndef long():\n" + "".join(body))
    assert long_functions(tmp_path / "m.py") == ["long (61 lines)"]


@pytest.mark.parametrize("name", sorted(m for m in MODULES if m not in KERNEL_MODULES))
def test_no_library_function_is_over_60_lines(name):
    long = long_functions(MODULES[name])
    assert not long, long


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.py")), ids=lambda path: path.name)
def test_no_experiment_function_is_over_60_lines(path):
    long = long_functions(path)
    assert not long, long


def path_tricks(path: Path) -> list[str]:
    """Uses of ``sys.path`` and ``spec_from_file_location`` in ``path`` (imports of files outside packages)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr == "path" and getattr(node.value, "id", None) == "sys":
            found.append((node.lineno, "sys.path"))
        name = node.name if isinstance(node, ast.alias) else getattr(node, "attr", None) or getattr(node, "id", None)
        if name == "spec_from_file_location":
            found.append((node.lineno, name))
    return [f"{name} (line {line})" for line, name in sorted(found)]


def test_path_tricks_are_found(tmp_path):
    (tmp_path / "m.py").write_text("import sys\nimport importlib.util as u\nfrom importlib.util import "
                                   "spec_from_file_location\nsys.path.insert(0, 'x')\nu.spec_from_file_location('a', 'b')\n"
                                   "'sys.path'\n")
    assert path_tricks(tmp_path / "m.py") == ["spec_from_file_location (line 3)", "sys.path (line 4)",
                                              "spec_from_file_location (line 5)"]


@pytest.mark.parametrize("path", sorted((ROOT / "tests").glob("*.py")) + sorted((ROOT / "experiments").glob("*.py")),
                         ids=lambda path: f"{path.parent.name}/{path.name}")
def test_tests_and_experiments_import_experiments_as_a_package(path):
    """``from experiments import x`` (pytest's ``pythonpath = ["."]``), no ``sys.path`` edits or loading by file."""
    assert not path_tricks(path), path_tricks(path)
