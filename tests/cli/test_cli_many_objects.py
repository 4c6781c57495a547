"""``refine``, ``segment --each-point`` and ``everything --seeds`` on small files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cli_helpers import blob_image, run_cli


def _read(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path)


@pytest.fixture
def image_and_labels(tmp_path: Path) -> tuple[Path, Path]:
    import tifffile

    image = blob_image(1, (48, 80))
    labels = np.zeros((48, 80), dtype=np.uint16)
    labels[9:33, 13:33] = 5
    labels[30:40, 50:70] = 8
    tifffile.imwrite(tmp_path / "cells.tif", image)
    tifffile.imwrite(tmp_path / "seg.tif", labels)
    return tmp_path / "cells.tif", tmp_path / "seg.tif"


def test_refine_writes_labels_with_the_source_ids(image_and_labels, synthetic_checkpoint, tmp_path):
    image, labels = image_and_labels
    out = tmp_path / "out"
    code = run_cli(
        ["refine", str(image), "--labels", str(labels), "--out", str(out),
         "--weights", str(synthetic_checkpoint)]
    )  # fmt: skip
    assert code == 0
    refined = _read(out / "cells.tif")
    assert refined.shape == (48, 80) and set(np.unique(refined)) <= {0, 5, 8}
    np.testing.assert_array_equal(_read(labels)[9, 13], 5)  # the source is untouched


def test_refine_refuses_labels_on_another_grid(tmp_path, image_and_labels, capsys):
    import tifffile

    image, _ = image_and_labels
    tifffile.imwrite(tmp_path / "other.tif", np.ones((48, 81), np.uint16))
    code = run_cli(["refine", str(image), "--labels", str(tmp_path / "other.tif"), "--out",
                    str(tmp_path / "out")])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--labels" in err[0] and "grid" in err[0]
    assert not (tmp_path / "out" / "cells.tif").exists()


def test_segment_each_point_gives_one_label_per_positive_point(
    image_and_labels, synthetic_checkpoint, tmp_path
):
    image, _ = image_and_labels
    out = tmp_path / "out"
    code = run_cli(
        ["segment", str(image), "--points", "20,20;60,35;5,5,0", "--each-point", "--out",
         str(out), "--weights", str(synthetic_checkpoint)]
    )  # fmt: skip
    assert code == 0
    labels = _read(out / "cells.tif")
    assert set(np.unique(labels)) - {0} <= {1, 2} and labels.max() >= 1


def test_everything_with_seeds(image_and_labels, synthetic_checkpoint, tmp_path, capsys):
    image, _ = image_and_labels
    out = tmp_path / "out"
    base = ["everything", str(image), "--out", str(out), "--weights", str(synthetic_checkpoint)]
    assert run_cli([*base, "--seeds", "--diameter", "20"]) == 0
    assert _read(out / "cells.tif").shape == (48, 80)
    capsys.readouterr()
    assert run_cli([*base, "--seeds"]) == 2
    assert "--diameter" in capsys.readouterr().err
    assert run_cli([*base, "--diameter", "20"]) == 2
