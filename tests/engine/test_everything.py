"""segment_everything: tiling on a large blob field, stacks with 3D linking, caches, cancel."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage

from napari_mobilesam.engine.everything import (
    EverythingProgress,
    SegmentationCancelled,
    link_to_previous,
    segment_everything,
    segment_everything_steps,
)
from napari_mobilesam.engine.mask_records import PackedMask
from napari_mobilesam.engine.tiling import keep_for_tile, make_tiles


class LowResGenerator:
    """A stand-in for the automatic mask generator with SAM's resolution limit.

    Like the model, it sees the image reduced to ``side`` pixels on its longest side (block
    means): an object that does not survive the reduction as a bright block is not found. An
    object that does is returned with its full-resolution outline (threshold inside the
    object's blocks), as SAM returns a sharp mask for what it sees.
    """

    def __init__(self, side: int = 256) -> None:
        self.side = side
        self.images: list[tuple[int, int]] = []

    def generate(self, image: np.ndarray) -> list[dict]:
        self.images.append(image.shape[:2])
        gray = image[..., 0].astype(np.float32)
        h, w = gray.shape
        f = -(-max(h, w) // self.side)
        padded = np.zeros((-(-h // f) * f, -(-w // f) * f), np.float32)
        padded[:h, :w] = gray
        low = padded.reshape(padded.shape[0] // f, f, padded.shape[1] // f, f).mean(axis=(1, 3))
        objects, n = ndimage.label(gray > 127, structure=np.ones((3, 3)))
        records = []
        for k, box in enumerate(ndimage.find_objects(objects), start=1):
            cy, cx = (box[0].start + box[0].stop - 1) // 2, (box[1].start + box[1].stop - 1) // 2
            if low[cy // f, cx // f] <= 127:  # lost in the reduction
                continue
            mask = np.zeros((h, w), bool)
            mask[box] = objects[box] == k
            x0, x1, y0, y1 = box[1].start, box[1].stop - 1, box[0].start, box[0].stop - 1
            records.append(
                {
                    "segmentation": mask,
                    "area": int(mask[box].sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": 0.9,
                    "point_coords": [[float(cx), float(cy)]],
                    "stability_score": 0.95,
                    "crop_box": [0, 0, w, h],
                }
            )
        return records


def blob_field(height: int = 2000, width: int = 3000, radius: int = 6, seed: int = 0):
    """~300 bright discs on black, some of them centred on tile borders (multiples of 512)."""
    rng = np.random.default_rng(seed)
    centres = []
    for cy in np.arange(60, height - 40, 133):
        for cx in np.arange(60, width - 40, 150):
            centres.append((cy + rng.integers(-30, 31), cx + rng.integers(-30, 31)))
    # Across tile borders: exactly on a core edge.
    centres += [(512, 700), (1024, 1600), (300, 1024), (1536, 2048), (1024, 1536)]
    yy, xx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    disc = yy**2 + xx**2 <= radius**2
    truth = np.zeros((height, width), np.int32)
    for k, (cy, cx) in enumerate(centres, start=1):
        view = truth[cy - radius : cy + radius + 1, cx - radius : cx + radius + 1]
        view[disc & (view == 0)] = k
    image = np.where(truth > 0, 255, 0).astype(np.uint8)
    return image, truth


def _found(labels: np.ndarray, truth: np.ndarray) -> tuple[int, int]:
    """(blobs found as exactly one label with IoU >= 0.99, labels that match no blob)."""
    n_labels = int(labels.max()) + 1
    codes, inter = np.unique(truth.astype(np.int64) * n_labels + labels, return_counts=True)
    t, lab = codes // n_labels, codes % n_labels
    t_size = np.bincount(truth.ravel())
    l_size = np.bincount(labels.ravel(), minlength=n_labels)
    both = (t > 0) & (lab > 0)
    iou = inter[both] / (t_size[t[both]] + l_size[lab[both]] - inter[both])
    good = iou >= 0.99
    matched = set(lab[both][good].tolist())
    extra = len(set(np.unique(labels).tolist()) - {0} - matched)
    return int(good.sum()), extra


@pytest.fixture(scope="module")
def field():
    return blob_field()


def test_tiling_finds_small_objects_the_whole_image_misses(field):
    image, truth = field
    n_blobs = int(truth.max())
    assert n_blobs >= 290
    whole = segment_everything(image, LowResGenerator())
    whole_found, whole_extra = _found(whole, truth)
    gen = LowResGenerator()
    tiled = segment_everything(image, gen, tile_shape=512, halo=64)
    tiled_found, tiled_extra = _found(tiled, truth)
    assert len(gen.images) == 24 and max(max(s) for s in gen.images) <= 640  # one pass per tile
    assert whole_found < n_blobs // 2
    # Every blob, including those on tile borders, is one whole object with one id: no seams,
    # no duplicates, nothing extra.
    assert tiled_found == n_blobs
    assert tiled_extra == 0
    assert tiled.max() == n_blobs


def test_keep_for_tile_owns_each_mask_once():
    shape = (100, 100)
    tiles = make_tiles(shape, 50, 10)
    assert [t.outer for t in tiles] == [
        (0, 0, 60, 60), (0, 40, 60, 100), (40, 0, 100, 60), (40, 40, 100, 100)
    ]  # fmt: skip
    mask = np.zeros(shape, bool)
    mask[45:52, 45:52] = True  # centre (48, 48): the first tile's core
    owners = []
    for t in tiles:
        (r, c) = t.outer_slices
        kept = keep_for_tile(PackedMask.from_mask(mask[r, c]), t, shape)
        if kept is not None:
            owners.append(t.index)
            np.testing.assert_array_equal(kept.to_mask(), mask)
    assert owners == [0]
    # A mask cut by a tile's inner border is dropped by that tile.
    cut = np.zeros((60, 60), bool)
    cut[20:30, 50:60] = True
    assert keep_for_tile(PackedMask.from_mask(cut), tiles[0], shape) is None
    with pytest.raises(ValueError, match="tile_shape"):
        make_tiles(shape, 4, 0)
    with pytest.raises(ValueError, match="halo"):
        make_tiles(shape, 32, -1)


# ------------------------------------------------------------------------ stacks
def moving_blobs(n_planes: int = 5) -> np.ndarray:
    """Two discs drifting right one pixel per plane; the second one is gone on plane 2."""
    volume = np.zeros((n_planes, 60, 80), np.uint8)
    yy, xx = np.mgrid[:60, :80]
    for z in range(n_planes):
        volume[z][(yy - 20) ** 2 + (xx - 15 - z) ** 2 <= 36] = 255
        if z != 2:
            volume[z][(yy - 40) ** 2 + (xx - 55 - z) ** 2 <= 25] = 255
    return volume


class CountingVolume:
    """Array-like that records which planes were read (lazy input)."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.reads = data, []
        self.shape, self.dtype, self.ndim = data.shape, data.dtype, data.ndim

    def __getitem__(self, index):
        first = index[0] if isinstance(index, tuple) else index
        self.reads.append(first)
        return self.data[index]


def test_stack_links_objects_across_planes():
    volume = moving_blobs()
    lazy = CountingVolume(volume)
    labels = segment_everything(lazy, LowResGenerator(side=80))
    assert labels.shape == volume.shape and labels.dtype == np.int32
    assert all(isinstance(r, int) for r in lazy.reads)  # one plane at a time
    first = labels[:, 20, 15 + np.arange(5)].diagonal()
    assert len(set(first.tolist())) == 1 and first[0] > 0  # one 3D id through all planes
    second = [labels[z, 40, 55 + z] for z in range(5)]
    assert second[2] == 0
    assert second[0] == second[1] and second[3] == second[4] and second[1] != second[3]
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2, 3]


def test_stack_plane_subset_and_progress():
    volume = moving_blobs()
    items: list[EverythingProgress] = []
    labels = segment_everything(volume, LowResGenerator(80), planes=[1, 3], progress=items.append)
    assert not labels[[0, 2, 4]].any() and labels[1].any() and labels[3].any()
    assert [i.plane for i in items] == [1, 3]
    assert [round(i.fraction, 2) for i in items] == [0.5, 1.0]
    # Plane 2 was skipped, so plane 3's objects start new ids.
    assert set(np.unique(labels[3])) & set(np.unique(labels[1])) == {0}
    with pytest.raises(ValueError, match="planes"):
        segment_everything(volume, LowResGenerator(80), planes=[7])


def test_cancel_returns_nothing():
    volume = moving_blobs()
    event = threading.Event()

    def stop_after_first(item):
        event.set()

    with pytest.raises(SegmentationCancelled):
        segment_everything(volume, LowResGenerator(80), progress=stop_after_first, cancel=event)
    steps = segment_everything_steps(volume, LowResGenerator(80))
    next(steps)
    steps.close()  # stopping the generator leaves nothing behind and raises nothing


def test_blank_input_gives_empty_labels():
    assert segment_everything(np.zeros((30, 40), np.uint8), LowResGenerator()).max() == 0
    volume = moving_blobs()
    volume[1] = 0
    labels = segment_everything(volume, LowResGenerator(80))
    assert labels[1].max() == 0 and labels[0].max() > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="2D"):
        segment_everything(np.zeros((30, 40), np.uint8), LowResGenerator(), planes=[0])
    with pytest.raises(ValueError, match="link_iou"):
        segment_everything(moving_blobs(), LowResGenerator(), link_iou=0)
    with pytest.raises(ValueError, match="ready generator"):
        segment_everything(np.ones((30, 40), np.uint8), LowResGenerator(), points_per_side=4)
    with pytest.raises(ValueError, match="Expected one image"):
        segment_everything(np.zeros((2, 2, 5, 5)), LowResGenerator())


def test_link_to_previous_is_one_to_one():
    prev = np.zeros((10, 10), np.int32)
    prev[0:4, 0:4] = 7
    cur = np.zeros((10, 10), np.int32)
    cur[0:4, 0:3] = 1  # IoU 0.75 with 7
    cur[0:4, 3:4] = 2  # IoU 0.25 with 7
    cur[6:9, 6:9] = 3  # nothing under it
    out, next_id = link_to_previous(prev, cur, 8)
    assert out[0, 0] == 7 and out[0, 3] == 8 and out[7, 7] == 9 and next_id == 10


# ------------------------------------------------------------------------ the real model
@pytest.mark.golden
def test_real_model_stack_reuses_cached_embeddings(golden_model):
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.engine.stack import StackEmbeddings

    rng = np.random.default_rng(1)
    volume = rng.integers(0, 255, (2, 48, 64), dtype=np.uint8)
    params = dict(
        points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    stack = StackEmbeddings(SamPredictor(golden_model), volume)
    labels = segment_everything(volume, golden_model, stack=stack, **params)
    assert labels.shape == volume.shape and labels.max() > 0
    assert stack.encoded == 2
    again = segment_everything(volume, golden_model, stack=stack, **params)
    assert stack.encoded == 2  # both planes came from the memory cache
    np.testing.assert_array_equal(again, labels)


@pytest.mark.golden
def test_real_model_tiles(golden_model):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)
    params = dict(
        points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    labels = segment_everything(image, golden_model, tile_shape=(40, 35), halo=0, **params)
    assert labels.shape == (40, 70)
    assert labels.max() == len(np.unique(labels)) - 1  # ids 1..N


# ------------------------------------------------------------------------ edges and limits
def test_tiles_never_leave_a_sliver():
    """A remainder thinner than 16 pixels joins the core before it (no 1-pixel tile)."""
    tiles = make_tiles((20, 33), 16, 0)
    assert [t.core for t in tiles] == [(0, 0, 20, 16), (0, 16, 20, 33)]
    cores = make_tiles((100, 130), 50, 0)
    assert [t.core[3] - t.core[1] for t in cores[:3]] == [50, 50, 30]  # 30 px: kept apart
    for shape in [(17, 17), (47, 95), (16, 1000)]:
        covered = np.zeros(shape, int)
        for t in make_tiles(shape, 16, 3):
            y0, x0, y1, x1 = t.core
            assert y1 - y0 >= 16 or y1 - y0 == shape[0]
            assert x1 - x0 >= 16 or x1 - x0 == shape[1]
            covered[y0:y1, x0:x1] += 1
        assert (covered == 1).all()  # cores still tile the image exactly


@pytest.mark.parametrize(
    "tile_shape, halo, message",
    [
        (np.nan, 0, "tile_shape must be one whole number"),
        ((16, np.inf), 0, "tile_shape"),
        (16.5, 0, "tile_shape"),
        ((16, 16, 16), 0, "tile_shape"),
        (16, np.nan, "halo must be one whole number"),
        (16, (1, -1), "halo"),
    ],
)
def test_tile_arguments_are_named(tile_shape, halo, message):
    with pytest.raises(ValueError, match=message):
        make_tiles((64, 64), tile_shape, halo)
    with pytest.raises(ValueError, match=message):  # refused before any plane is read
        segment_everything(
            np.ones((64, 64), np.uint8), LowResGenerator(), tile_shape=tile_shape, halo=halo
        )


def test_too_many_tiles_are_refused():
    with pytest.raises(ValueError, match="65536"):
        make_tiles((5000, 5000), 16, 0)
    assert len(make_tiles((4096, 4096), 16, 0)) == 65536


def test_a_long_strip_is_segmented_at_two_pixels_across():
    strip = np.zeros((100_000, 2), np.uint8)
    strip[40_000:60_000] = 255
    generator = LowResGenerator(side=100_000)
    labels = segment_everything(strip, generator)
    assert generator.images == [(100_000, 2)]  # not reduced to 1 pixel across
    assert labels.shape == strip.shape and labels[50_000, 0] == 1 and labels[0, 0] == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dedup_iou": np.nan}, "dedup_iou"),
        ({"min_size": np.nan}, "min_size"),
        ({"min_size": -3}, "min_size"),
        ({"link_iou": np.nan}, "link_iou"),
        ({"planes": [0, 1.5]}, "planes must be whole-number indices in 0..4"),
        ({"planes": [np.nan]}, "planes"),
        ({"planes": range(100, 200)}, r"planes must be .* in 0\.\.4"),
        ({"planes": []}, "got none"),
        ({"planes": 3}, "planes"),
        ({"contrast_limits": (np.nan, np.nan)}, "contrast_limits must be finite"),
        ({"contrast_limits": (200, 10)}, "reversed"),
    ],
)
def test_bad_stack_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        segment_everything(moving_blobs(), LowResGenerator(80), **kwargs)


@pytest.mark.golden
def test_real_model_small_remainder_tile(golden_model):
    image = np.random.default_rng(5).integers(0, 255, (20, 33), dtype=np.uint8)
    params = dict(
        points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    labels = segment_everything(image, golden_model, tile_shape=16, halo=0, **params)
    assert labels.shape == (20, 33)
