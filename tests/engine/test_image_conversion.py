"""The rule that turns any 2D image into uint8 RGB."""

from __future__ import annotations

import numpy as np
import pytest

from napari_mobilesam import to_uint8_rgb
from napari_mobilesam.engine.image_conversion import NoContrastWarning


def test_uint8_rgb_passes_through_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    out = to_uint8_rgb(img)
    assert out.dtype == np.uint8 and np.array_equal(out, img)


@pytest.mark.parametrize("shape", [(4, 6), (4, 6, 1)])
def test_grayscale_is_copied_to_three_channels(shape):
    img = np.arange(24, dtype=np.uint8).reshape(shape)
    out = to_uint8_rgb(img)
    assert out.shape == (4, 6, 3)
    for c in range(3):
        assert np.array_equal(out[..., c], img.reshape(4, 6))


def test_rgba_drops_alpha():
    img = np.zeros((2, 2, 4), dtype=np.uint8)
    img[..., 0], img[..., 3] = 10, 200
    out = to_uint8_rgb(img)
    assert out.shape == (2, 2, 3) and (out[..., 0] == 10).all() and (out[..., 1:] == 0).all()


def test_two_channels_become_red_and_green():
    img = np.stack([np.full((3, 3), 5), np.full((3, 3), 9)], axis=-1).astype(np.uint8)
    out = to_uint8_rgb(img, rgb=True)
    assert out[0, 0].tolist() == [5, 9, 0]


def test_uint16_uses_robust_percentiles():
    img = np.linspace(0, 1000, 10_000).reshape(100, 100).astype(np.uint16)
    img[0, 0] = 65535  # a hot pixel must not squash the rest
    out = to_uint8_rgb(img)
    lo, hi = np.percentile(img, (0.1, 99.9))
    mid = img[50, 50]
    assert out[50, 50, 0] == int(np.clip((mid - lo) * 255 / (hi - lo) + 0.5, 0, 255))
    assert out[0, 0, 0] == 255 and out[..., 0].min() == 0


def test_contrast_limits_are_applied():
    img = np.array([[0.0, 0.5, 1.0, 2.0]], dtype=np.float32)
    out = to_uint8_rgb(img, contrast_limits=(0.0, 1.0))
    assert out[0, :, 0].tolist() == [0, 128, 255, 255]


def test_contrast_limits_apply_to_uint8_too():
    img = np.array([[0, 100, 200]], dtype=np.uint8)
    out = to_uint8_rgb(img, contrast_limits=(100, 200))
    assert out[0, :, 0].tolist() == [0, 0, 255]


def test_bool_becomes_0_and_255():
    out = to_uint8_rgb(np.array([[True, False]]))
    assert out[0, :, 0].tolist() == [255, 0]


def test_non_finite_values_become_zero():
    img = np.array([[np.nan, np.inf, -np.inf, 0.0, 1.0]], dtype=np.float64)
    out = to_uint8_rgb(img)
    assert out[0, :3, 0].tolist() == [0, 0, 0] and out[0, 4, 0] == 255


@pytest.mark.parametrize("value", [0.0, 7.0, np.nan])
def test_constant_and_all_nan_images_become_zero(value):
    with pytest.warns(NoContrastWarning, match="model sees a black image"):
        out = to_uint8_rgb(np.full((3, 3), value, dtype=np.float32))
    assert out.shape == (3, 3, 3) and not out.any()


def test_signed_integers():
    img = np.array([[-100, 0, 100]], dtype=np.int16)
    out = to_uint8_rgb(img, contrast_limits=(-100, 100))
    assert out[0, :, 0].tolist() == [0, 128, 255]


@pytest.mark.parametrize(
    ("shape", "message"),
    [((0, 5), "empty"), ((2, 3, 4, 5), "Expected a 2D image"), ((4, 4, 7), "Expected a 2D")],
)
def test_bad_shapes_are_explained(shape, message):
    with pytest.raises(ValueError, match=message):
        to_uint8_rgb(np.zeros(shape, dtype=np.uint8))


def test_non_numeric_dtype():
    with pytest.raises(ValueError, match="Unsupported image dtype"):
        to_uint8_rgb(np.array([["a", "b"]]))


@pytest.mark.parametrize(
    ("mode", "dtype", "shape"),
    [
        ("I;16B", np.uint16, (4, 5)),  # big-endian 16-bit: native order, same values
        ("I;16", np.uint16, (4, 5)),
        ("CMYK", np.uint8, (4, 5, 3)),
        ("YCbCr", np.uint8, (4, 5, 3)),
        ("LA", np.uint8, (4, 5)),  # grey + alpha: grey, not red and green
        ("PA", np.uint8, (4, 5, 4)),  # palette + alpha: colours (alpha dropped later)
        ("1", np.bool_, (4, 5)),
    ],
)
def test_pil_images_keep_the_meaning_of_their_pixels(mode, dtype, shape):
    from PIL import Image

    from napari_mobilesam.engine.image_conversion import image_from_pil

    array = image_from_pil(Image.new(mode, (5, 4)))
    assert array.dtype == dtype and array.dtype.isnative and array.shape == shape
    assert to_uint8_rgb(array).shape == (4, 5, 3)


def test_limits_ignore_alpha_and_huge_floats_keep_their_order():
    rgba = np.zeros((4, 8, 4), np.uint16)
    rgba[..., :3] = np.arange(8, dtype=np.uint16)[None, :, None] * 585  # 0..4095
    rgba[..., 3] = 65535  # opaque alpha must not set the top limit
    assert to_uint8_rgb(rgba)[0, -1, 0] == 255
    huge = np.linspace(0, 3e39, 16).reshape(2, 8)  # past float32's largest value
    out = to_uint8_rgb(huge)[..., 0].reshape(-1)
    assert (np.diff(out.astype(int)) >= 0).all() and out[-1] == 255 and out[0] == 0


def test_pil_images_are_taken_by_to_uint8_rgb_as_their_colours():
    from PIL import Image

    img = Image.new("P", (5, 4), 1)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    assert (to_uint8_rgb(img) == (200, 10, 10)).all()  # not palette index 1 as grey


@pytest.mark.parametrize(
    "limits, message",
    [
        ((np.nan, 1.0), "finite"),
        ((0.0, np.inf), "finite"),
        ((-np.inf, np.inf), "finite"),
        ((200, 10), "reversed"),
    ],
)
def test_unusable_contrast_limits_are_refused(limits, message):
    """NaN, infinite or reversed limits would give a black image: refused, by name."""
    with pytest.raises(ValueError, match=f"contrast_limits.*{message}"):
        to_uint8_rgb(np.arange(16.0).reshape(4, 4), contrast_limits=limits)


@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_non_finite_pixels_do_not_set_the_limits(bad):
    """Limits found from the image ignore non-finite pixels, as napari's do."""
    image = np.linspace(0.0, 1.0, 400, dtype=np.float32).reshape(20, 20)
    image[7, 7] = bad
    out = to_uint8_rgb(image)[..., 0]
    assert out[7, 7] == 0 and out.max() == 255
    assert np.count_nonzero(out) > 350  # the plane is not black


@pytest.mark.parametrize("short", [2, 3, 5])
def test_long_strips_keep_two_pixels_across(short):
    """The reduction for the encoder never makes a side thinner than 2 pixels."""
    from napari_mobilesam.engine.image_conversion import shrink_factor, shrink_for_encoder

    strip = np.zeros((100_000, short), np.uint8)
    reduced = shrink_for_encoder(strip)
    assert min(reduced.shape) >= 2 and reduced.shape[1] == -(
        -short // shrink_factor(100_000, short)
    )
    assert shrink_for_encoder(strip.T).shape[0] >= 2
    assert shrink_factor(8000, 6000) == 3  # large planes are still reduced
