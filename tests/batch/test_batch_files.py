"""Batch inputs and outputs: napari's default contrast limits, atomic writes, label volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from napari_mobilesam.batch.files import (
    ABSENT,
    DONE_SAME,
    FOREIGN,
    OURS_OTHER,
    LabelVolume,
    napari_contrast_limits,
    open_source,
    output_state,
    read_manifest,
    recipe_digest,
    write_labels,
    write_output,
)
from napari_mobilesam.batch.tasks import linked_planes
from napari_mobilesam.engine.atomic_files import is_temporary


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
    def fail(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_output(tmp_path / "labels.tif", fail, {"input": "a"})
    # The manifest claimed the name, the output never came: nothing counts as done, and the
    # next run redoes it without --overwrite.
    assert not (tmp_path / "labels.tif").exists()
    assert output_state(tmp_path / "labels.tif", recipe_digest({"input": "a"})) == ABSENT
    assert [p.name for p in tmp_path.iterdir() if is_temporary(p)] == []


def test_an_output_is_recognised_by_its_manifest(tmp_path: Path) -> None:
    recipe = {"input": {"path": "/data/a.tif", "size": 10}, "points": [[1, 2]]}
    path = write_labels(tmp_path / "a.tif", np.ones((4, 4), np.uint32), recipe)
    assert output_state(path, recipe_digest(recipe)) == DONE_SAME
    assert output_state(path, recipe_digest({**recipe, "points": [[2, 2]]})) == OURS_OTHER
    assert read_manifest(path)["recipe"] == recipe
    # Edited or replaced by someone else after this program wrote it: not "done" any more.
    tifffile.imwrite(path, np.zeros((4, 4), np.uint32))
    assert output_state(path, recipe_digest(recipe)) == OURS_OTHER
    # Replacing it is allowed (ours); a file or folder without a manifest is never replaced.
    write_labels(path, np.full((4, 4), 2, np.uint32), recipe)
    assert output_state(path, recipe_digest(recipe)) == DONE_SAME
    theirs = tmp_path / "b.tif"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    assert output_state(theirs, recipe_digest(recipe)) == FOREIGN
    with pytest.raises(FileExistsError, match="not written by napari-mobilesam"):
        write_labels(theirs, np.ones((4, 4), np.uint32), recipe)
    assert (theirs / "notes.txt").read_text() == "mine"


def test_contrast_limits_ignore_non_finite_pixels(tmp_path: Path) -> None:
    data = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8) * 100
    data[0, 0], data[1, 1], data[2, 2] = np.inf, -np.inf, np.nan
    path = tmp_path / "float.tif"
    tifffile.imwrite(path, data)
    low, high = napari_contrast_limits(open_source(path))
    finite = data[np.isfinite(data)]
    assert (low, high) == (float(finite.min()), float(finite.max()))
    tifffile.imwrite(path, np.full((4, 4), np.nan, np.float32))
    assert napari_contrast_limits(open_source(path)) == (0.0, 1.0)


def test_a_volume_resumes_marked_planes_and_appears_only_when_finished(tmp_path: Path) -> None:
    volume = LabelVolume(str(tmp_path / "v.zarr"), (3, 8, 8))
    volume.prepare()
    plane = np.zeros((8, 8), np.uint32)
    plane[2:5, 2:5] = 1
    volume.write_plane((0,), plane)
    assert volume.planes_missing() == [(1,), (2,)] and volume.state() == ABSENT
    LabelVolume(str(tmp_path / "v.zarr"), (3, 8, 8)).prepare()  # a re-run keeps plane 0
    assert volume.plane_done((0,))
    # ... but a run of another recipe (other prompts, parameters) starts over.
    other = LabelVolume(str(tmp_path / "v.zarr"), (3, 8, 8), recipe='{"points": 1}')
    other.prepare()
    assert other.planes_missing() == [(0,), (1,), (2,)]
    volume.prepare()
    volume.write_plane((0,), plane)
    volume.write_plane((1,), plane)  # the same object: linked to plane 0's id
    shifted = np.zeros((8, 8), np.uint32)
    shifted[6:8, 6:8] = 1  # elsewhere: a new object
    volume.write_plane((2,), shifted)
    volume.finish(linked_planes)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".v.zarr.napari-mobilesam.json", "v.zarr"]
    assert volume.state() == DONE_SAME
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
