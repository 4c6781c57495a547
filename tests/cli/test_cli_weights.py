"""``napari-mobilesam weights``: its own name in --help, exit codes, the shared cache folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from napari_mobilesam.cli import main


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("NAPARI_MOBILESAM_WEIGHTS", raising=False)
    monkeypatch.setenv("NAPARI_MOBILESAM_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_help_names_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["weights", "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: napari-mobilesam weights")


def test_an_explicit_file_is_reported(
    tmp_path: Path, no_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    assert main(["weights", str(weights)]) == 0
    assert "explicit path" in capsys.readouterr().out


def test_a_missing_file_is_a_usage_error(
    tmp_path: Path, no_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", str(tmp_path / "nope.pt")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("napari-mobilesam weights: ") and "nope.pt" in err
    assert len(err.strip().splitlines()) == 1


def test_no_download_without_weights_fails(
    no_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "--no-download"]) == 1
    err = capsys.readouterr().err
    assert "downloading is disabled" in err and str(no_env) in err


def test_one_cache_folder_expands_the_home(monkeypatch: pytest.MonkeyPatch) -> None:
    from napari_mobilesam.engine.disk_cache import default_cache_folder
    from napari_mobilesam.engine.weights import cache_dir

    monkeypatch.setenv("NAPARI_MOBILESAM_CACHE", "~/mobilesam-cache")
    assert cache_dir() == Path.home() / "mobilesam-cache"
    assert default_cache_folder() == Path.home() / "mobilesam-cache" / "embeddings"
    monkeypatch.delenv("NAPARI_MOBILESAM_CACHE")
    assert default_cache_folder() == cache_dir() / "embeddings"
    assert "~" not in str(cache_dir())


def test_device_choices_have_one_source(capsys: pytest.CaptureFixture[str]) -> None:
    from napari_mobilesam.engine.predictor_loader import DEVICE_CHOICES

    with pytest.raises(SystemExit) as info:
        main(["embed", "x.tif", "--device", "tpu"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    for choice in DEVICE_CHOICES:
        assert repr(choice) in err
