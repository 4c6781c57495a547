"""Propagation through a stack, on a decoder stub that thresholds the image.

The stub makes the walk's logic testable without real weights: on each plane it returns the
bright connected component that the prompt points at (the one under the point, or the one that
overlaps the box or the previous logits most). The end-to-end run with the synthetic checkpoint
is at the bottom.
"""

from __future__ import annotations

import numpy as np
import pytest

from fakes import ThresholdPredictor
from napari_mobilesam.engine.propagation import (
    PropagationSettings,
    Seed,
    interior_point,
    mask_iou,
    mask_to_box,
    propagate,
)
from napari_mobilesam.engine.steps import drive

SHAPE = (30, 64, 64)


def ellipsoid(shape, centre, radii):
    z, y, x = np.ogrid[: shape[0], : shape[1], : shape[2]]
    grid = (z, y, x)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1


class ThresholdDecoder(ThresholdPredictor):
    """The threshold stand-in, counting how often it is asked to decode."""


def stack_embedder(stack):
    visited = []

    def embed(index):
        visited.append(index)
        return stack[index].astype(np.float32), stack.shape[1:]

    embed.visited = visited
    return embed


def run(stack, start, seeds, **settings):
    decoder = ThresholdDecoder()
    embed = stack_embedder(stack)
    gen = propagate(decoder, embed, len(stack), start, seeds, PropagationSettings(**settings))
    progress = []
    objects = drive(gen, progress.append)
    return objects, embed.visited, progress, decoder


@pytest.fixture(scope="module")
def two_spheres():
    a = ellipsoid(SHAPE, (10, 20, 20), (6.6, 9, 9))  # planes 4..16, 45 px at both ends
    b = ellipsoid(SHAPE, (20, 44, 44), (5.6, 8, 8))  # planes 15..25, 37 px at both ends
    assert [z for z in range(SHAPE[0]) if a[z].any()] == list(range(4, 17))
    assert [z for z in range(SHAPE[0]) if b[z].any()] == list(range(15, 26))
    return a, b, (a | b).astype(np.float32)


@pytest.mark.parametrize("mode", ["box+mask", "box", "point", "box+point", "mask+point"])
def test_reaches_true_extent_and_stops(two_spheres, mode):
    a, _, stack = two_spheres
    objects, visited, progress, _ = run(stack, 10, [Seed(a[10])], prompt=mode, min_area=1)
    (obj,) = objects
    assert obj.planes == list(range(4, 17))
    for z in obj.planes:
        assert np.array_equal(obj.masks[z], a[z]), z
    assert "empty" in obj.stop_reasons["up"] and "empty" in obj.stop_reasons["down"]
    # Two empty planes past each end, then the walk stops instead of reading the whole stack.
    assert sorted(visited) == list(range(2, 10)) + list(range(11, 19))
    assert [p.done for p in progress] == list(range(1, len(visited) + 1))


def test_several_objects_share_each_plane(two_spheres):
    a, b, stack = two_spheres
    objects, visited, _, decoder = run(stack, 15, [Seed(a[15]), Seed(b[15])], min_area=1)
    assert objects[0].planes == list(range(4, 17))
    assert objects[1].planes == list(range(15, 26))
    assert len(visited) == len(set(visited))  # each plane embedded once for all objects
    assert decoder.calls < 2 * len(visited)  # finished objects are not decoded any more


def test_plane_range_and_stop_marker(two_spheres):
    a, _, stack = two_spheres
    objects, visited, _, _ = run(stack, 10, [Seed(a[10])], plane_range=(7, 12), min_area=1)
    assert objects[0].planes == list(range(7, 13))
    assert objects[0].stop_reasons == {"up": "end of plane range", "down": "end of plane range"}
    assert min(visited) == 7 and max(visited) == 12
    objects, _, _, _ = run(stack, 10, [Seed(a[10])], stop_planes={13}, min_area=1)
    assert objects[0].planes == list(range(4, 13))
    assert objects[0].stop_reasons["up"] == "stop marker on plane 13"


def test_area_jump_stops_before_merging():
    """An object that touches a much bigger one must not grow into it."""
    small = ellipsoid(SHAPE, (10, 20, 20), (5.6, 8, 8))  # planes 5..15
    big = np.zeros(SHAPE, bool)
    big[14:, 5:60, 5:60] = True  # a large bright slab from plane 14 on, touching the sphere
    objects, _, _, _ = run((small | big).astype(np.float32), 10, [Seed(small[10])], min_area=1)
    assert max(objects[0].planes) == 13
    assert "area changed" in objects[0].stop_reasons["up"]


def test_low_iou_stops_drift():
    """A blob that jumps sideways between planes is a different object: stop there."""
    stack = np.zeros(SHAPE, np.float32)
    stack[5:12, 10:30, 10:30] = 1
    stack[12:20, 10:30, 24:44] = 1  # shifted by 14 px: overlaps, IoU ~ 0.2
    seed = stack[8] > 0.5
    objects, _, _, _ = run(stack, 8, [Seed(seed)], prompt="box", min_area=1)
    assert objects[0].planes == list(range(5, 12))
    assert objects[0].stop_reasons["up"].startswith("IoU 0.")


def test_cancel_between_planes(two_spheres):
    a, _, stack = two_spheres
    decoder = ThresholdDecoder()
    embed = stack_embedder(stack)
    gen = propagate(decoder, embed, len(stack), 10, [Seed(a[10])])
    next(gen), next(gen)
    gen.close()  # what a worker's quit amounts to: no more planes are read
    assert len(embed.visited) == 2


def test_helpers():
    m = np.zeros((10, 12), bool)
    m[2:5, 3:9] = True
    assert mask_to_box(m).tolist() == [3, 2, 8, 4]
    assert mask_to_box(m, margin=3).tolist() == [0, 0, 11, 7]
    x, y = interior_point(m)[0]
    assert m[int(y), int(x)] and 3 <= y <= 3 and 4 <= x <= 7
    assert mask_iou(m, m) == 1.0 and mask_iou(m, ~m) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt": "lasso"}, "prompt must be"),
        ({"min_iou": 1.5}, "min_iou"),
        ({"max_area_ratio": 0.5}, "max_area_ratio"),
        ({"max_empty": 0}, "max_empty"),
        # NaN passes a plain comparison and would switch a stop rule off.
        ({"min_iou": float("nan")}, r"min_iou must be a finite number in \[0, 1\]"),
        ({"max_area_ratio": float("nan")}, "max_area_ratio"),
        ({"max_area_ratio": float("inf")}, "max_area_ratio"),
        ({"max_empty": float("nan")}, "max_empty"),
        ({"max_empty": 2.5}, "max_empty"),
        ({"min_area": float("nan")}, "min_area"),
        ({"box_margin": -1}, "box_margin"),
    ],
)
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PropagationSettings(**kwargs)


def test_bad_seed_and_start(two_spheres):
    _, _, stack = two_spheres
    with pytest.raises(ValueError, match="empty"):
        drive(propagate(ThresholdDecoder(), stack_embedder(stack), 30, 5, [Seed(stack[0] > 9)]))
    with pytest.raises(ValueError, match="outside"):
        drive(propagate(ThresholdDecoder(), stack_embedder(stack), 30, 30, []))


@pytest.mark.golden
def test_end_to_end_with_synthetic_checkpoint(golden_model):
    """The real predictor and encoder drive the same walk (random weights: logic, not quality)."""
    from napari_mobilesam import SamPredictor, to_uint8_rgb

    rng = np.random.default_rng(0)
    stack = rng.integers(0, 255, (5, 48, 40), dtype=np.uint8)
    predictor = SamPredictor(golden_model)
    embeddings = {}

    def embed(i):
        if i not in embeddings:
            predictor.set_image(to_uint8_rgb(stack[i]))
            embeddings[i] = predictor.get_image_embedding()
        return embeddings[i], stack.shape[1:]

    embedding, size = embed(2)
    predictor.set_image_embedding(embedding, size)
    masks, _, low = predictor.predict(box=np.array([5, 5, 30, 40]), multimask_output=False)
    settings = PropagationSettings(min_iou=0.0, max_area_ratio=1e9, max_empty=5)
    (obj,) = drive(propagate(predictor, embed, 5, 2, [Seed(masks[0], low[0])], settings))
    assert set(obj.masks) <= set(range(5)) and 2 in obj.masks
    assert all(m.shape == (48, 40) and m.dtype == np.bool_ for m in obj.masks.values())
    assert set(embeddings) == set(range(5)) or obj.stop_reasons
