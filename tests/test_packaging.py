"""Packaging checks: the manifest ships with the code, npe2 finds it, dependencies are declared."""

from __future__ import annotations

import configparser
import os
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
PACKAGE_MANIFEST = REPO / "src" / "napari_mobilesam" / "napari.yaml"
TOP_LEVEL_MANIFEST = REPO / "napari.yaml"
DIST_NAME = "napari-mobilesam"
ENTRY_POINT = ("napari-mobilesam", "napari_mobilesam:napari.yaml")
WHEEL_MANIFEST = "napari_mobilesam/napari.yaml"

REQUIRED_RUNTIME = (
    "torch",
    "numpy",
    "scikit-image",
    "Pillow",
    "magicgui",
    "superqt",
    "napari",
    "npe2",
)
# Written here instead (LayerNorm2d, DropPath, the NMS rule): not needed to run the plugin.
NOT_RUNTIME = ("timm", "torchvision")
QT_BINDINGS = frozenset({"pyqt5", "pyqt6", "pyside2", "pyside6"})
# napari extras that pull in a Qt binding.
NAPARI_QT_EXTRAS = frozenset(
    {"all", "qt", "pyqt", "pyqt5", "pyqt6", "pyside", "pyside2", "pyside6"}
)


def _pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def _requirements(specs: list[str]) -> list[Requirement]:
    return [Requirement(spec) for spec in specs]


def _pulls_in_qt(req: Requirement) -> bool:
    name = canonicalize_name(req.name)
    if name in QT_BINDINGS:
        return True
    extras = {canonicalize_name(extra) for extra in req.extras}
    return name == "napari" and bool(extras & NAPARI_QT_EXTRAS)


# --- the manifest files ----------------------------------------------------------------------


def test_top_level_manifest_is_the_package_manifest():
    assert PACKAGE_MANIFEST.is_file(), f"missing {PACKAGE_MANIFEST}"
    assert not PACKAGE_MANIFEST.is_symlink(), "the package manifest must be a real file"
    assert TOP_LEVEL_MANIFEST.exists(), f"missing {TOP_LEVEL_MANIFEST} (or a dangling link)"
    if TOP_LEVEL_MANIFEST.is_symlink():
        target = os.readlink(TOP_LEVEL_MANIFEST)
        assert not os.path.isabs(target), f"the link must be relative, got {target!r}"
        assert TOP_LEVEL_MANIFEST.resolve() == PACKAGE_MANIFEST.resolve()
    assert TOP_LEVEL_MANIFEST.read_bytes() == PACKAGE_MANIFEST.read_bytes()


def test_pyproject_declares_the_manifest_entry_point():
    entry_points = _pyproject()["project"]["entry-points"]["napari.manifest"]
    assert entry_points == dict([ENTRY_POINT])


def test_npe2_reads_the_installed_manifest():
    from npe2 import PluginManifest

    try:
        installed_version = metadata.version(DIST_NAME)
    except metadata.PackageNotFoundError:
        pytest.fail(f'{DIST_NAME} is not installed: run  python3 -m pip install -e ".[testing]"')
    import napari_mobilesam

    assert installed_version == napari_mobilesam.__version__, (
        "installed metadata is stale: reinstall the package"
    )

    manifest = PluginManifest.from_distribution(DIST_NAME)
    assert manifest.name == DIST_NAME

    contributions = manifest.contributions
    command_ids = {command.id for command in contributions.commands or []}
    for command_id in command_ids:
        assert command_id.startswith(f"{DIST_NAME}."), command_id
    referenced = [
        item.command
        for group in (contributions.widgets, contributions.sample_data)
        for item in group or []
        if hasattr(item, "command")
    ]
    assert set(referenced) <= command_ids, "a contribution names an undeclared command"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    commands = [line for line in readme.splitlines() if line.strip().endswith("-m pytest")]
    assert len(commands) == 1, f"README should give one test command, found {commands}"
    assert commands[0] in ci_lines, f".ci/run does not run the README command {commands[0]!r}"


# --- dependencies ----------------------------------------------------------------------------


def test_runtime_dependencies_are_declared():
    requirements = _requirements(_pyproject()["project"]["dependencies"])
    declared = {canonicalize_name(req.name) for req in requirements}
    missing = {canonicalize_name(name) for name in REQUIRED_RUNTIME} - declared
    assert not missing, f"undeclared runtime dependencies: {sorted(missing)}"
    direct_urls = [str(req) for req in requirements if req.url]
    assert not direct_urls, f"runtime dependencies must come from PyPI: {direct_urls}"


def test_unused_libraries_are_not_runtime_dependencies():
    project = _pyproject()["project"]
    declared = {canonicalize_name(r.name) for r in _requirements(project["dependencies"])}
    assert not declared & set(NOT_RUNTIME), "the model is written here: no timm, no torchvision"
    # segment-anything (a reference in the tests) imports torchvision: the testing extra has it.
    testing = {
        canonicalize_name(r.name)
        for r in _requirements(project["optional-dependencies"]["testing"])
    }
    assert "torchvision" in testing


def test_no_dependency_is_listed_twice():
    project = _pyproject()["project"]
    runtime = [canonicalize_name(r.name) for r in _requirements(project["dependencies"])]
    assert len(runtime) == len(set(runtime)), runtime
    for extra, specs in project["optional-dependencies"].items():
        # napari[pyqt6] adds a Qt binding to napari: a repeat with extras adds something.
        names = [canonicalize_name(r.name) for r in _requirements(specs) if not r.extras]
        again = sorted((set(names) & set(runtime)) | {n for n in names if names.count(n) > 1})
        assert again == [], f"[{extra}] repeats {again}"


def test_model_and_engine_import_without_timm_or_torchvision():
    """The plugin runs on torch alone: building and running the model imports neither."""
    code = (
        "import sys, torch\n"
        "from napari_mobilesam.model.build import build_mobile_sam\n"
        "from napari_mobilesam.engine.predictor import SamPredictor\n"
        "m = build_mobile_sam(None)\n"
        "m.image_encoder(torch.zeros(1, 3, 1024, 1024))\n"
        "print(sorted(n for n in ('timm', 'torchvision') if n in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_version_has_one_source():
    import napari_mobilesam

    project = _pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    source = REPO / project["tool"]["hatch"]["version"]["path"]
    assert source.resolve() == Path(napari_mobilesam.__file__).resolve()
    assert napari_mobilesam.__version__.count(".") >= 2


def test_metadata_the_napari_hub_reads():
    project = _pyproject()["project"]
    assert project["authors"] and all(a.get("name") for a in project["authors"])
    urls = {key.lower() for key in project["urls"]}
    assert {"homepage", "source", "issues", "documentation"} <= urls
    assert "Framework :: napari" in project["classifiers"]
    assert 20 <= len(project["description"]) <= 100


# --- the public API --------------------------------------------------------------------------


def test_every_public_name_resolves():
    """A typo in the API table would ship unnoticed: resolve every name of ``__all__``."""
    import napari_mobilesam

    assert len(napari_mobilesam.__all__) == len(set(napari_mobilesam.__all__))
    for name in napari_mobilesam.__all__:
        value = getattr(napari_mobilesam, name)
        assert getattr(value, "__name__", name) == name, f"{name} resolves to {value!r}"
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        napari_mobilesam.not_a_name  # noqa: B018


def test_type_checking_imports_match_the_api_table():
    """The TYPE_CHECKING block (for editors and type checkers) names the same objects, from
    the same modules, as the lazy table."""
    import ast

    import napari_mobilesam

    tree = ast.parse(Path(napari_mobilesam.__file__).read_text(encoding="utf-8"))
    block = next(
        node
        for node in tree.body
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
    )
    imported = {
        alias.name: node.module.removeprefix("napari_mobilesam.")
        for node in ast.walk(block)
        if isinstance(node, ast.ImportFrom)
        for alias in node.names
    }
    assert imported == napari_mobilesam._LAZY


def test_no_qt_binding_among_runtime_dependencies():
    project = _pyproject()["project"]
    runtime_qt = [str(r) for r in _requirements(project["dependencies"]) if _pulls_in_qt(r)]
    assert not runtime_qt, f"a Qt binding must not be a runtime dependency: {runtime_qt}"
    # The Qt tests still get one, through the testing extra.
    testing = _requirements(project["optional-dependencies"]["testing"])
    assert any(_pulls_in_qt(req) for req in testing)


def test_all_and_testing_bring_the_same_qt_binding():
    """PyQt6 for users (`[all]`: napari's own `[all]`, whose binding is PyQt6) and for the tests,
    and CI removes a PyQt5 that an earlier install left, so that only one binding is there."""
    extras = _pyproject()["project"]["optional-dependencies"]
    qt = {
        name: [req for req in _requirements(extras[name]) if _pulls_in_qt(req)]
        for name in ("all", "testing")
    }
    assert [str(req) for req in qt["testing"]] == ["napari[pyqt6]"]
    assert [str(req) for req in qt["all"]] in (["napari[all]"], ["napari[pyqt6]"])
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "pip uninstall -y PyQt5" in ci


def test_ci_checks_lint_and_format():
    ci_lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert "python3 -m ruff check ." in ci_lines
    assert "python3 -m ruff format --check ." in ci_lines


# --- built distributions ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def built_distributions(tmp_path_factory) -> dict[str, Path]:
    """An sdist and a wheel built from it, as a release would build them."""
    outdir = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(outdir), str(REPO)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, (
        f"build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    wheels = sorted(outdir.glob("*.whl"))
    sdists = sorted(outdir.glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, sorted(p.name for p in outdir.iterdir())
    return {"wheel": wheels[0], "sdist": sdists[0]}


@pytest.mark.slow
def test_wheel_ships_the_manifest(built_distributions):
    with zipfile.ZipFile(built_distributions["wheel"]) as wheel:
        names = wheel.namelist()
        assert WHEEL_MANIFEST in names, "napari.yaml is missing from the wheel"
        assert wheel.read(WHEEL_MANIFEST) == PACKAGE_MANIFEST.read_bytes()

        stray = [n for n in names if not n.startswith(("napari_mobilesam/", "napari_mobilesam-"))]
        assert not stray, f"files outside the package in the wheel: {stray}"

        entry_points_txt = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        parser = configparser.ConfigParser()
        parser.optionxform = str  # keep names as written
        parser.read_string(wheel.read(entry_points_txt).decode("utf-8"))
    assert dict(parser["napari.manifest"]) == dict([ENTRY_POINT])


@pytest.mark.slow
def test_sdist_ships_the_manifest(built_distributions):
    with tarfile.open(built_distributions["sdist"]) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert "src/napari_mobilesam/napari.yaml" in names
    assert "LICENSE" in names
