"""Batch inputs and outputs: napari's default contrast limits, atomic writes, label volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_mobilesam.batch.files import (
    LabelVolume,
    atomic_write,
    napari_contrast_limits,
    open_source,
    sweep_partials,
    write_labels,
)
from napari_mobilesam.batch.tasks import linked_planes


@pytest.mark.parametrize(
    "data",
    [
        np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) + 7,
        np.full((32, 32), 5, dtype=np.uint16),  # constant: napari widens to include 0 and 1
        np.linspace(-2.5, 9.0, 48 * 40, dtype=np.float32).reshape(48, 40),
        np.random.default_rng(0).integers(0, 255, (40, 40, 3)).astype(np.uint8),
        np.random.default_rng(1).integers(0, 4000, (5, 30, 30)).astype(np.uint16),
        # more than 1e7 values: napari looks at the top, middle and bottom planes only
        np.random.default_rng(2).integers(0, 60000, (41, 500, 500)).astype(np.uint16),
    ],
    ids=["uint16", "constant", "float", "rgb", "stack", "large-stack"],
)
def test_contrast_limits_are_those_napari_gives_a_new_layer(data: np.ndarray, tmp_path) -> None:
    from napari.layers import Image

    if data.ndim == 3 and data.shape[0] == 41:
        data[20] = 0  # the middle plane decides the minimum; a plane in between would not
        data[3, 0, 0] = 65535  # only napari's full scan would see this
    path = tmp_path / "image.tif"
    tifffile.imwrite(path, data, photometric="rgb" if data.shape[-1] == 3 else "minisblack")
    expected = tuple(float(v) for v in Image(data).contrast_limits)
    assert napari_contrast_limits(open_source(path)) == expected


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "labels.tif"

    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, fail)
    assert list(tmp_path.iterdir()) == []


def test_sweep_removes_only_temporaries(tmp_path: Path) -> None:
    write_labels(tmp_path / "a.tif", np.ones((4, 4), np.uint32))
    (tmp_path / ".b.tif.x1y2.partial").write_bytes(b"left by a killed worker")
    (tmp_path / "notes.partial").write_text("not ours")
    assert sweep_partials(tmp_path) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.tif", "notes.partial"]


def test_a_volume_resumes_marked_planes_and_appears_only_when_finished(tmp_path: Path) -> None:
    volume = LabelVolume(str(tmp_path / "v.zarr"), (3, 8, 8))
    volume.prepare()
    plane = np.zeros((8, 8), np.uint32)
    plane[2:5, 2:5] = 1
    volume.write_plane((0,), plane)
    assert volume.planes_missing() == [(1,), (2,)] and not volume.complete
    LabelVolume(str(tmp_path / "v.zarr"), (3, 8, 8)).prepare()  # a re-run keeps plane 0
    assert volume.plane_done((0,))
    volume.write_plane((1,), plane)  # the same object: linked to plane 0's id
    shifted = np.zeros((8, 8), np.uint32)
    shifted[6:8, 6:8] = 1  # elsewhere: a new object
    volume.write_plane((2,), shifted)
    volume.finish(linked_planes)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["v.zarr"]
    import zarr

    result = np.asarray(zarr.open_array(str(tmp_path / "v.zarr"), mode="r")[:])
    assert result[0, 3, 3] == result[1, 3, 3] == 1 and result[2, 7, 7] == 2


def test_an_ome_zarr_group_opens_its_full_resolution_array(tmp_path: Path) -> None:
    import zarr

    group = zarr.open_group(str(tmp_path / "image.zarr"), mode="w")
    group.attrs["multiscales"] = [{"datasets": [{"path": "s0"}, {"path": "s1"}]}]
    for name, size in (("s0", 32), ("s1", 16)):
        array = zarr.open_array(
            str(tmp_path / "image.zarr" / name), mode="w", shape=(2, size, size), dtype="uint16"
        )
        array[:] = 7
    source = open_source(tmp_path / "image.zarr")
    assert (source.component, source.shape, source.is_stack) == ("s0", (2, 32, 32), True)
    assert source.read((1,)).shape == (32, 32)
    assert open_source(f"{tmp_path / 'image.zarr'}/s1").shape == (2, 16, 16)
