"""Small inputs for the command-line tests: 64x64 images and a short stack."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import blob_image


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """Two readable images (16-bit TIFF, RGB PNG) in a folder."""
    import tifffile
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", blob_image(1))
    rgb = np.stack([blob_image(2, dtype=np.uint8)] * 3, axis=-1)
    Image.fromarray(rgb).save(folder / "b.png")
    return folder


@pytest.fixture
def stack_tif(tmp_path: Path) -> Path:
    """A multi-page 16-bit TIFF of 3 different 64x64 planes."""
    import tifffile

    path = tmp_path / "stack.tif"
    tifffile.imwrite(path, np.stack([blob_image(s) for s in (3, 4, 5)]), photometric="minisblack")
    return path


@pytest.fixture(autouse=True)
def _never_download(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without --weights the command line would fetch the official file: point the
    environment at the synthetic checkpoint (or at nothing), so no test ever downloads."""
    # Where tests/conftest.py finds it: shared/ beside the checkout.
    synthetic = Path(__file__).resolve().parents[3] / "shared/golden/synthetic_mobile_sam.pt"
    target = synthetic if synthetic.is_file() else tmp_path / "absent.pt"
    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(target))
