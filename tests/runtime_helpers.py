"""Shared by the runtime tests: one on-disk graph cache per test session, and the runtime list.

The cache folder is a fixed name under the session's base temporary folder, so every test
module that asks for it finds the graphs the first one built: the encoder is exported once per
session, and OpenVINO converts that same graph.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ENGINE_RUNTIMES = ("onnxruntime", "openvino")


def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache folder for the session, to point ``NAPARI_MOBILESAM_CACHE`` at."""
    return tmp_path_factory.getbasetemp() / "mobilesam-cache"


def graph_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's graph cache: where ``use_runtime`` looks under :func:`cache_root`."""
    folder = cache_root(tmp_path_factory) / "graphs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def skip_unless_installed(runtime: str) -> None:
    """Skip the calling test when ``runtime``'s packages are not installed, saying why."""
    from napari_mobilesam.engine.runtimes import available_runtimes

    status = available_runtimes()[runtime]
    if not status.available:
        pytest.skip(f"{runtime} is not installed here ({status.reason})")


def first_installed_engine() -> str:
    """The first engine of ``auto``'s order that is installed; skips the calling test (saying
    why) when there is none."""
    from napari_mobilesam.engine.runtimes import AUTO_ORDER, available_runtimes

    installed = [name for name in AUTO_ORDER if available_runtimes()[name].available]
    if not installed:
        pytest.skip('no engine installed (pip install "napari-mobilesam[onnx]")')
    return installed[0]


def runtime_model(checkpoint: Path, runtime: str, tmp_path_factory: pytest.TempPathFactory):
    """A default CPU model from ``checkpoint`` whose encoder runs on ``runtime``."""
    from napari_mobilesam.engine.runtimes import runtime_of, use_runtime
    from napari_mobilesam.model.build import build_mobile_sam

    skip_unless_installed(runtime)
    model = build_mobile_sam(checkpoint, device="cpu")
    use_runtime(model, runtime, cache_folder=graph_folder(tmp_path_factory), progress=print)
    assert runtime_of(model) == runtime
    return model
