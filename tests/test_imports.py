"""Imports go one way: app -> engine <- trainer (docs/DESIGN.md section 1);
torch lives in one room (engine/model); no two project modules import each other, even
through a function-local import."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("app", "engine", "trainer", "resources", "scripts", "benchmarks", "tests")
# Where torch may be imported: the engine's model package, the trainer, tests, benchmarks.
TORCH_ROOMS = ("engine/model/", "trainer/", "tests/", "benchmarks/")
FORBIDDEN = {
    "engine": {"app", "trainer", "PySide6", "pyqtgraph", "shiboken6"},
    "trainer": {"app", "PySide6", "pyqtgraph"},
    "app": {"trainer", "torch", "torchaudio"},
}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_import_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"no modules in {package}"
    offences = {str(f.relative_to(ROOT)): sorted(imported_roots(f) & FORBIDDEN[package]) for f in files}
    assert {f: bad for f, bad in offences.items() if bad} == {}


def project_files() -> list[Path]:
    files = [f for pkg in PACKAGES for f in sorted((ROOT / pkg).rglob("*.py"))]
    assert len(files) > 50, "the walk found too few modules"
    return files


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set[str]) -> set[str]:
    """Project modules ``path`` imports anywhere in it (function bodies included).

    ``from a.b import c`` is an import of ``a.b.c`` where that is a module, else of
    ``a.b``; a relative import is resolved against the module's package.
    """
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # a.b.attr -> a.b
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return cycles


def test_cycle_finder_sees_cycles_and_function_local_imports():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []
    known = {module_name(f) for f in project_files()}
    # engine.session reaches the model package only inside its methods
    assert "engine.model.curves" in imported_modules(ROOT / "engine" / "session.py", known)


def test_no_import_cycle_among_project_modules():
    files = project_files()
    known = {module_name(f) for f in files}
    graph = {module_name(f): imported_modules(f, known) for f in files}
    assert graph["app.backend"], "the import graph found no edges"
    assert import_cycles(graph) == []


def test_torch_only_in_the_model_package_trainer_tests_and_benchmarks():
    offenders = []
    for f in project_files():
        rel = f.relative_to(ROOT).as_posix()
        if not rel.startswith(TORCH_ROOMS) and imported_roots(f) & {"torch", "torchaudio"}:
            offenders.append(rel)
    assert offenders == []


def test_nothing_imports_app_from_engine_or_trainer_at_runtime():
    code = ("import pkgutil, importlib, sys\n"
            "import engine, trainer\n"
            "for pkg in (engine, trainer):\n"
            "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(k for k in sys.modules if k.split('.')[0] in ('app', 'PySide6')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_importing_app_does_not_import_torch():
    code = ("import pkgutil, importlib, sys\n"
            "import app\n"
            "for m in pkgutil.walk_packages(app.__path__, 'app.'):\n"
            "    importlib.import_module(m.name)\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**__import__("os").environ, "QT_QPA_PLATFORM": "offscreen"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"

