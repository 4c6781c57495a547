"""Masks as SAM mask prompts: the windowed conversion is the documented rule, and a mask's
logits do not depend on its window or on the other labels of the image."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from napari_mobilesam.engine.mask_prompts import LOGIT_EPS, label_logits, mask_to_logits
from napari_mobilesam.engine.transforms import ResizeLongestSide

SIZES = [(1024, 1024), (333, 250), (500, 700), (2048, 1536), (37, 53), (1, 1), (5, 900)]


def _whole_frame(masks: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """The rule of the module's docstring, written with PyTorch's own operations on the whole
    frame: bilinear resize, padding with 0.5, 4 x 4 means, clipped log-odds."""
    h, w = input_size
    fraction = torch.as_tensor(masks[:, None], dtype=torch.float32)
    fraction = F.interpolate(fraction, (h, w), mode="bilinear", align_corners=False)
    fraction = F.pad(fraction, (0, 1024 - w, 0, 1024 - h), value=0.5)
    fraction = F.avg_pool2d(fraction, 4).clamp(LOGIT_EPS, 1.0 - LOGIT_EPS)
    return torch.log(fraction / (1.0 - fraction)).numpy()


def _masks(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Discs from sub-pixel to larger than the image, a mask on two opposite corners and an
    empty one."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    masks = np.zeros((7, h, w), dtype=bool)
    for k, radius in enumerate([0.5, 2, 10, 40, 1000]):
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        masks[k] = (yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2
    masks[5, 0, 0] = masks[5, -1, -1] = True
    return masks


@pytest.mark.parametrize("shape", SIZES)
def test_windowed_logits_follow_the_rule(shape):
    input_size = ResizeLongestSide.get_preprocess_shape(*shape, 1024)
    masks = _masks(shape, np.random.default_rng(shape[0] * 7 + shape[1]))
    got = mask_to_logits(masks, input_size)
    assert got.shape == (len(masks), 1, 256, 256) and got.dtype == np.float32
    # The same resize as F.interpolate up to float rounding: the fractions within 1e-6.
    fraction = 1.0 / (1.0 + np.exp(-got.astype(np.float64)))
    expected = 1.0 / (1.0 + np.exp(-_whole_frame(masks, input_size).astype(np.float64)))
    np.testing.assert_allclose(fraction, expected, rtol=0, atol=1e-6)
    assert np.array_equal(got[6, 0], label_logits(masks[6], True, None, input_size))


def test_a_labels_logits_do_not_depend_on_the_others():
    """Label 2's logits are the same bits alone, beside other labels, and as a bool mask with a
    far pixel added to widen its window (windows differ, values must not)."""
    shape, input_size = (300, 410), ResizeLongestSide.get_preprocess_shape(300, 410, 1024)
    yy, xx = np.mgrid[:300, :410]
    disc = (yy - 140) ** 2 + (xx - 200) ** 2 <= 15**2
    labels = np.zeros(shape, dtype=np.int32)
    labels[disc] = 2
    labels[10:40, 10:60] = 5
    rows, cols = np.flatnonzero(disc.any(1)), np.flatnonzero(disc.any(0))
    box = (rows[0], rows[-1], cols[0], cols[-1])
    alone = label_logits(disc, True, box, input_size)
    beside = label_logits(labels, 2, box, input_size)
    assert np.array_equal(alone, beside)
    # A second, far mask pixel: the window covers both, and the disc's blocks keep their bits.
    wide = disc.copy()
    wide[290, 400] = True
    widened = mask_to_logits(wide[None], input_size)[0, 0]
    lone = np.zeros(shape, dtype=bool)
    lone[290, 400] = True
    empty = label_logits(lone, True, None, input_size)
    far = mask_to_logits(lone[None], input_size)[0, 0] != empty  # the far pixel's blocks
    assert far.any() and not (far & (alone != empty)).any()
    assert np.array_equal(widened[~far], alone[~far])
    assert not np.array_equal(widened, alone)
