"""Device choice and the predictor that is built once per weights file and device."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_mobilesam.engine.predictor_loader import PredictorLoader, resolve_device, weights_path

torch = pytest.importorskip("torch")


def test_auto_prefers_cuda_then_mps_then_cpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_unavailable_forced_device_falls_back_to_cpu(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="cuda is not available"):
        assert resolve_device("cuda") == "cpu"
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")


def test_empty_weights_field_means_automatic() -> None:
    assert weights_path(None) is None
    assert weights_path("") is None
    assert weights_path(Path(".")) is None
    assert weights_path("~/w.pt") == Path("~/w.pt").expanduser()


def test_predictor_is_built_once_and_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, synthetic_checkpoint: Path
) -> None:
    # An empty field resolves the weights: here through the environment variable.
    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(synthetic_checkpoint))
    loader = PredictorLoader()
    assert loader.device is None and not loader.is_loaded(None, "cpu")
    first = loader.get(None, "cpu")
    assert loader.source == synthetic_checkpoint
    assert loader.get(None, "cpu") is first
    assert loader.device == "cpu" and loader.is_loaded(None, "cpu")
    with pytest.raises(FileNotFoundError, match="not found"):
        loader.get(tmp_path / "missing.pt", "cpu")
    sentinel = object()
    loader.set_predictor(sentinel, tmp_path / "w.pt", "cpu")
    assert loader.get(tmp_path / "w.pt", "cpu") is sentinel
