"""The package's folders are its layers: model <- engine <- layers <- widget.

Each layer imports only the layers below it (and itself); nothing inside the package imports the
package ``__init__``; the module import graph has no cycle; the model and the engine run without
napari or Qt. The command line, ``cli/``, sits above the engine beside ``layers``/``widget``:
it imports only ``batch/``, the engine and the model, never napari or Qt, and nothing but
``napari_mobilesam.__main__`` imports it. ``batch/`` (tasks and schedulers of the command line)
sits between: it imports only the engine and the model, never napari or Qt, and only ``cli/``
imports it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = "napari_mobilesam"
SRC = Path(__file__).resolve().parents[1] / "src" / PACKAGE
LAYERS = ("model", "engine", "layers", "widget")  # bottom to top
GUI_ROOTS = {"napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "superqt"}
QT_ROOTS = GUI_ROOTS - {"napari"}
CLI = f"{PACKAGE}.cli"
BATCH = f"{PACKAGE}.batch"
TOP = {PACKAGE, f"{PACKAGE}.__main__"}  # above every layer


def _modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path) -> list[str]:
    """Every module ``name`` imports (also inside functions and ``TYPE_CHECKING``), absolute."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # ``from pkg import module`` imports that module; the package's own names (not
            # modules) come from its __init__. ``from . import sibling`` inside a package thus
            # depends on the sibling, not on the package __init__ (which imports it lazily).
            submodules = [f"{target}.{alias.name}" for alias in node.names]
            if node.module is not None or not all(m in MODULES for m in submodules):
                out.append(target)
            out += submodules
    return out


def _layer(module: str) -> int | None:
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def _is_cli(module: str) -> bool:
    return module == CLI or module.startswith(CLI + ".")


def _is_batch(module: str) -> bool:
    return module == BATCH or module.startswith(BATCH + ".")


MODULES = _modules()


def test_every_module_sits_in_a_layer() -> None:
    loose = [
        m
        for m in MODULES
        if m not in TOP and _layer(m) is None and not _is_cli(m) and not _is_batch(m)
    ]
    assert loose == [], f"modules outside model/engine/layers/widget/batch/cli: {loose}"


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) is not None])
def test_imports_go_downward_only(module: str) -> None:
    own = _layer(module)
    problems = []
    for target in _imports(module, MODULES[module]):
        root = target.split(".")[0]
        if target == PACKAGE:
            problems.append("imports the package __init__ (import from the defining module)")
        elif root == PACKAGE:
            layer = _layer(target)
            if layer is not None and layer > own:
                problems.append(f"imports {target} from a higher layer")
            elif _is_cli(target):
                problems.append(f"imports {target}: only __main__ imports the command line")
            elif _is_batch(target):
                problems.append(f"imports {target}: only the command line imports batch")
        elif root in GUI_ROOTS and own <= LAYERS.index("engine"):
            problems.append(f"imports {target}: the model and the engine have no napari or Qt")
        elif root in QT_ROOTS and own == LAYERS.index("layers"):
            problems.append(f"imports {target}: the napari bridge has no widgets")
    assert problems == [], f"{module}: " + "; ".join(problems)


def _above_the_engine_problems(module: str, what: str, also_forbidden=lambda t: False) -> list:
    """What ``module`` (of cli/ or batch/) imports that it may not: napari, Qt, the package
    __init__, layers above the engine, and what ``also_forbidden`` names."""
    problems = []
    for target in _imports(module, MODULES[module]):
        root = target.split(".")[0]
        layer = _layer(target)
        if target == PACKAGE:
            problems.append("imports the package __init__ (import from the defining module)")
        elif root == PACKAGE and layer is not None and layer > LAYERS.index("engine"):
            problems.append(f"imports {target}: {what} uses the engine and model only")
        elif also_forbidden(target):
            problems.append(f"imports {target}: the command line sits above batch")
        elif root in GUI_ROOTS:
            problems.append(f"imports {target}: {what} has no napari or Qt")
    return problems


@pytest.mark.parametrize("module", [m for m in MODULES if _is_cli(m)] + [f"{PACKAGE}.__main__"])
def test_cli_sits_on_the_engine(module: str) -> None:
    problems = _above_the_engine_problems(module, "the command line")
    assert problems == [], f"{module}: " + "; ".join(problems)


@pytest.mark.parametrize("module", [m for m in MODULES if _is_batch(m)])
def test_batch_sits_on_the_engine(module: str) -> None:
    problems = _above_the_engine_problems(module, "batch", also_forbidden=_is_cli)
    assert problems == [], f"{module}: " + "; ".join(problems)


def test_only_the_command_line_imports_batch() -> None:
    users = sorted(
        m
        for m, path in MODULES.items()
        if not _is_batch(m) and not _is_cli(m) and any(_is_batch(t) for t in _imports(m, path))
    )
    assert users == []


def test_no_import_cycles() -> None:
    graph = {
        m: {t for t in _imports(m, p) if t in MODULES and t != m and t != PACKAGE}
        for m, p in MODULES.items()
    }
    done: set[str] = set()

    def visit(node: str, trail: list[str]) -> None:
        if node in trail:
            cycle = trail[trail.index(node) :] + [node]
            pytest.fail("import cycle: " + " -> ".join(cycle))
        if node in done:
            return
        for nxt in sorted(graph[node]):
            visit(nxt, trail + [node])
        done.add(node)

    for module in sorted(graph):
        visit(module, [])


def test_model_and_engine_import_without_napari_or_qt() -> None:
    """In a fresh process, importing every model, engine, batch and command-line module loads no
    GUI package."""
    names = [m for m in MODULES if _layer(m) in (0, 1) or _is_cli(m) or _is_batch(m)]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & set({sorted(GUI_ROOTS)!r})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]", f"GUI packages imported by the model/engine: {out}"


def test_weights_resolution_imports_no_torch() -> None:
    """The widget names the weights before torch is loaded (torch takes seconds to import)."""
    code = (
        "import sys\n"
        "import napari_mobilesam.engine.weights, napari_mobilesam.model.checkpoint\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
