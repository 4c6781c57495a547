"""Seeds from the LoG blob detector, and seeds as prompts of segment everything."""

from __future__ import annotations

import numpy as np
import pytest
from many_objects_helpers import assert_same_as_single

from napari_mobilesam.engine.seeds import SeedMaskGenerator, find_seeds


def discs(centres, radius=6, shape=(60, 100), dark=False) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 20.0)
    for r, c in centres:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= radius**2] = 200.0
    return (255 - image if dark else image).astype(np.uint8)


CENTRES = [(15, 20), (40, 50), (20, 80), (48, 12)]


def test_one_seed_per_disc_at_its_centre():
    seeds = find_seeds(discs(CENTRES), diameter=12)
    assert seeds.shape == (4, 2)
    for r, c in CENTRES:  # (x, y) = (column, row)
        assert np.min(np.hypot(seeds[:, 0] - c, seeds[:, 1] - r)) <= 1.5


def test_dark_objects_and_threshold():
    assert len(find_seeds(discs(CENTRES, dark=True), diameter=12, dark=True)) == 4
    bright = find_seeds(discs(CENTRES, dark=True), diameter=12)  # the gaps between them
    for r, c in CENTRES:
        assert np.min(np.hypot(bright[:, 0] - c, bright[:, 1] - r)) > 3
    assert len(find_seeds(discs(CENTRES), diameter=12, threshold=10.0)) == 0


def test_blank_image_has_no_seeds_and_seeds_stay_inside():
    assert find_seeds(np.zeros((30, 40), np.uint8), 10).shape == (0, 2)
    seeds = find_seeds(discs([(2, 3), (57, 97)]), diameter=12)  # discs cut by the border
    assert len(seeds) == 2
    assert (seeds >= 0).all() and (seeds[:, 0] < 100).all() and (seeds[:, 1] < 60).all()


@pytest.mark.parametrize(("diameter", "threshold"), [(0, 0.1), (-3, 0.1), (10, -1), ("x", 1)])
def test_bad_arguments_are_named(diameter, threshold):
    with pytest.raises(ValueError, match="diameter|threshold"):
        find_seeds(discs(CENTRES), diameter, threshold)


def test_too_many_seeds_are_refused():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 255, (200, 200)).astype(np.uint8)
    with pytest.raises(ValueError, match="max_seeds=50"):
        find_seeds(noise, diameter=2, threshold=0.0, max_seeds=50)


def test_seed_objects_equal_single_clicks(golden_model):
    image = np.repeat(discs(CENTRES)[..., None], 3, axis=-1)
    generator = SeedMaskGenerator(golden_model, diameter=12, batch_size=3)
    found = _run(generator.generate_steps(image))
    assert 1 <= len(found) <= 4
    predictor = generator.predictor
    predictor.set_image(image)
    for c in found:
        kwargs = {"point_coords": np.array([c.point]), "point_labels": np.array([1])}
        assert_same_as_single(predictor, c.mask.to_mask(), c.predicted_iou, kwargs, True)


def test_segment_everything_with_seeds_for_an_image_and_a_stack(golden_model):
    from napari_mobilesam.engine.everything import segment_everything

    image = discs(CENTRES)
    labels = segment_everything(image, golden_model, prompts="seeds", diameter=12, order="score")
    assert labels.shape == image.shape and labels.max() >= 1
    stack = np.stack([image, image])
    volume = segment_everything(stack, golden_model, prompts="seeds", diameter=12)
    assert volume.shape == stack.shape
    # the same plane twice: every object links to itself (3D ids as for the grid)
    np.testing.assert_array_equal(volume[0] > 0, volume[1] > 0)
    with pytest.raises(ValueError, match="diameter"):
        segment_everything(image, golden_model, prompts="seeds")
    with pytest.raises(ValueError, match="prompts"):
        segment_everything(image, golden_model, prompts="boxes")


def _run(steps):
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            return stop.value
