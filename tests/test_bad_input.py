"""Bad and odd input through every public entry point, as one table of rows.

Each row names its input and the outcome it must have:

- ``error``: an exception of a stated type whose message says what is wrong and what to do;
- ``warning+result``: a warning, and still a sensible result;
- ``no-op``: nothing happens (no objects or no new ids) and nothing breaks;
- ``ok``: a valid result, as documented.

Rows that involve a Labels layer snapshot its data first and check that it only changed where a
commit succeeded. Headless rows use the real predictor with its encoder replaced by a fixed
random embedding (conversion, resizing and decoding are real, an "encode" is free); widget rows
use the instant stand-in predictor, or a gated one that holds an "encode" until released, so
that the timing of cancels, removals and closes is exact. Random input is explored with
hypothesis at the end: valid output or a ``ValueError``, never anything else.
"""

from __future__ import annotations

import contextlib
import threading
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from napari.components import ViewerModel
from napari.layers import Image, Labels, Points, Shapes
from napari.utils.key_bindings import coerce_keybinding

from fakes import FakePredictor
from napari_mobilesam import MobileSAM, SamPredictor, build_mobile_sam, to_uint8_rgb
from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.image_conversion import NoContrastWarning
from napari_mobilesam.engine.predictor_loader import PredictorLoader
from napari_mobilesam.engine.propagation import PropagationSettings, Seed, propagate
from napari_mobilesam.engine.stack import StackEmbeddings, segment_stack
from napari_mobilesam.engine.steps import drive
from napari_mobilesam.layers.labels_writer import LabelsError, create_aligned_labels
from napari_mobilesam.layers.layer_prompts import PlanePrompts
from napari_mobilesam.layers.plane import PlaneError, PlaneRef
from napari_mobilesam.layers.segment import (
    SegmentRequest,
    capture_request,
    commit_objects,
    ensure_embedding,
    segment_from_layers,
)
from napari_mobilesam.widget.worker_steps import DeviceFallbackWarning, model_steps

OUTCOMES = ("error", "warning+result", "no-op", "ok")
WORKER_TIMEOUT_MS = 30_000
H, W = 48, 64  # the headless image size (rows, columns)


# ---------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class Row:
    """One bad or odd input and the outcome it must have."""

    id: str
    given: str
    outcome: str
    check: Callable[..., None]


HEADLESS: list[Row] = []
WIDGET: list[Row] = []


def row(table: list[Row], id: str, given: str, outcome: str) -> Callable:
    """Register the decorated check as a row of ``table``."""
    assert outcome in OUTCOMES, outcome

    def register(check: Callable[..., None]) -> Callable[..., None]:
        assert all(r.id != id for r in HEADLESS + WIDGET), f"duplicate row id {id}"
        table.append(Row(id, given, outcome, check))
        return check

    return register


def headless(id: str, given: str, outcome: str) -> Callable:
    return row(HEADLESS, id, given, outcome)


def widget_row(id: str, given: str, outcome: str) -> Callable:
    return row(WIDGET, id, given, outcome)


@contextlib.contextmanager
def unchanged(labels: Labels) -> Iterator[None]:
    """The Labels layer's data must be exactly the same afterwards (nothing was committed)."""
    before = np.array(labels.data, copy=True)
    yield
    np.testing.assert_array_equal(labels.data, before)


@contextlib.contextmanager
def no_warnings() -> Iterator[None]:
    """Fail on any warning: an ``ok`` row must be quiet."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        yield


def peak_bytes(action: Callable[[], Any]) -> tuple[Any, int]:
    """Run ``action``; return its result and the peak of memory allocated meanwhile (numpy
    allocations are traced by tracemalloc)."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = action()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return result, peak


# ------------------------------------------------------------------------------ headless set-up
class EmbeddingStub(SamPredictor):
    """The real ``SamPredictor`` with the encoder replaced by a fixed embedding.

    Conversion, resizing, prompt checks and decoding are the real ones; only the 1 s encoder
    pass is skipped. ``encoded`` records the (1, 3, h, w) shapes the encoder would have seen.
    """

    def __init__(self, model: Any, embedding: torch.Tensor) -> None:
        super().__init__(model)
        self.embedding = embedding
        self.encoded: list[tuple[int, ...]] = []

    def set_torch_image(self, transformed_image: torch.Tensor, original_image_size: Any) -> None:
        shape = tuple(transformed_image.shape)
        assert shape[:2] == (1, 3) and max(shape[2:]) == self.model.image_encoder.img_size
        assert transformed_image.dtype == torch.uint8
        self.encoded.append(shape)
        self.last_input = transformed_image
        self.set_image_embedding(self.embedding, original_image_size)
        self.input_size = (shape[2], shape[3])


@pytest.fixture(scope="module")
def env() -> SimpleNamespace:
    """One random-weights model for every headless row, a stub predictor and a MobileSAM."""
    torch.manual_seed(0)
    model = build_mobile_sam(None, device="cpu")
    embedding = torch.randn(1, 256, 64, 64)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("napari_mobilesam.model.build.build_mobile_sam", lambda *a, **k: model)
        mp.setattr("napari_mobilesam.engine.weights.resolve_weights", lambda path, **k: path)
        sam = MobileSAM("unused.pt")
    sam.predictor = EmbeddingStub(model, embedding)
    return SimpleNamespace(
        model=model, embedding=embedding, sam=sam, stub=lambda: EmbeddingStub(model, embedding)
    )


def image_predictor(env: SimpleNamespace, size: tuple[int, int] = (H, W)) -> SamPredictor:
    stub = env.stub()
    stub.set_image_embedding(env.embedding, size)
    return stub


def assert_prediction(out: tuple[np.ndarray, ...], size: tuple[int, int], count: int) -> None:
    masks, scores, low_res = out
    assert masks.shape == (count, *size) and masks.dtype == np.bool_
    assert scores.shape == (count,) and np.isfinite(scores).all()
    assert low_res.shape == (count, 256, 256) and np.isfinite(low_res).all()


def predict_row(id: str, given: str, outcome: str, kwargs: dict[str, Any], error: Any = None):
    """A row that calls ``SamPredictor.predict(**kwargs)`` on an image of (H, W)."""

    def check(ctx: SimpleNamespace) -> None:
        predictor = image_predictor(ctx.env)
        if error is None:
            with no_warnings():
                out = predictor.predict(multimask_output=False, **kwargs)
            assert_prediction(out, (H, W), 1)
        else:
            with pytest.raises(error[0], match=error[1]):
                predictor.predict(multimask_output=False, **kwargs)

    headless(id, given, outcome)(check)


def pts(*xy: tuple[float, float]) -> np.ndarray:
    return np.array(xy, dtype=np.float64)


# ------------------------------------------------------------------ SamPredictor.predict rows
predict_row("predict-no-prompt", "predict() with no prompt at all", "ok", {})
predict_row(
    "predict-point-just-outside",
    "point (-5, H + 3), a little outside the image",
    "ok",
    {"point_coords": pts((-5, H + 3)), "point_labels": [1]},
)
predict_row(
    "predict-point-far-outside",
    "point (1e7, 1e7)",
    "error",
    {"point_coords": pts((1e7, 1e7)), "point_labels": [1]},
    (ValueError, "far outside the 64 x 48 .*column, row"),
)
predict_row(
    "predict-point-huge-negative",
    "point (-1e300, 5) (would overflow float32 into NaN masks)",
    "error",
    {"point_coords": pts((-1e300, 5)), "point_labels": [1]},
    (ValueError, "far outside"),
)
predict_row(
    "predict-point-nan",
    "point (nan, 3)",
    "error",
    {"point_coords": pts((np.nan, 3)), "point_labels": [1]},
    (ValueError, "NaN or infinite"),
)
predict_row(
    "predict-point-not-numbers",
    'point_coords=[["a", "b"]]',
    "error",
    {"point_coords": [["a", "b"]], "point_labels": [1]},
    (ValueError, "point_coords must be numbers"),
)
predict_row(
    "predict-point-flat",
    "point_coords of shape (2,) instead of (1, 2)",
    "error",
    {"point_coords": np.array([3.0, 4.0]), "point_labels": [1]},
    (ValueError, r"must be \(N, 2\)"),
)
predict_row(
    "predict-labels-count",
    "2 points, 1 label",
    "error",
    {"point_coords": pts((3, 4), (5, 6)), "point_labels": [1]},
    (ValueError, r"point_labels must be \(2,\)"),
)
predict_row(
    "predict-labels-value",
    "label 2 (only 1 and 0 mean something)",
    "error",
    {"point_coords": pts((3, 4)), "point_labels": [2]},
    (ValueError, r"1 \(foreground\) or 0 \(background\)"),
)
predict_row(
    "predict-labels-text",
    'point_labels=["x"]',
    "error",
    {"point_coords": pts((3, 4)), "point_labels": ["x"]},
    (ValueError, "point_labels must be numbers"),
)
predict_row(
    "predict-labels-missing",
    "point_coords without point_labels",
    "error",
    {"point_coords": pts((3, 4))},
    (ValueError, "point_labels must be given"),
)
predict_row(
    "predict-negative-only",
    "one background point, nothing else (segment-anything accepts it)",
    "ok",
    {"point_coords": pts((20, 20)), "point_labels": [0]},
)
predict_row(
    "predict-no-points",
    "point_coords of shape (0, 2) with 0 labels",
    "ok",
    {"point_coords": np.zeros((0, 2)), "point_labels": np.zeros(0)},
)
predict_row(
    "predict-box-zero-area",
    "box [10, 10, 10, 10]",
    "ok",
    {"box": np.array([10, 10, 10, 10])},
)
predict_row(
    "predict-box-inverted",
    "box [50, 40, 10, 5] (x1 < x0, y1 < y0)",
    "error",
    {"box": np.array([50, 40, 10, 5])},
    (ValueError, "x0 <= x1 and y0 <= y1.*XYWH"),
)
predict_row(
    "predict-box-partly-outside",
    "box [-10, -10, W + 10, H + 10]",
    "ok",
    {"box": np.array([-10, -10, W + 10, H + 10])},
)
predict_row(
    "predict-box-far-outside",
    "box [0, 0, 1e6, 1e6]",
    "error",
    {"box": np.array([0, 0, 1e6, 1e6])},
    (ValueError, "box has .* far outside"),
)
predict_row(
    "predict-box-five-numbers",
    "box with 5 numbers",
    "error",
    {"box": np.arange(5)},
    (ValueError, r"box must be \(4,\) XYXY"),
)
predict_row(
    "predict-mask-input-shape",
    "mask_input of shape (256, 256)",
    "error",
    {"mask_input": np.zeros((256, 256))},
    (ValueError, r"mask_input must be \(1, 256, 256\)"),
)

predict_row(
    "predict-mask-input-nan",
    "mask_input with a NaN logit (gave NaN scores and an empty mask)",
    "error",
    {"box": np.array([2, 2, 9, 9]), "mask_input": np.full((1, 256, 256), np.nan)},
    (ValueError, r"mask_input contains NaN or infinite values; expected \(1, 256, 256\)"),
)
predict_row(
    "predict-mask-input-beyond-float32",
    "mask_input logits of 1e39 (finite, but infinite once float32)",
    "error",
    {"mask_input": np.full((1, 256, 256), 1e39)},
    (ValueError, "mask_input has values beyond float32's range"),
)
predict_row(
    "predict-points-ragged",
    "point_coords=[[1, 2], [3]]",
    "error",
    {"point_coords": [[1, 2], [3]], "point_labels": [1, 1]},
    (ValueError, r"point_coords is ragged .* expected \(N, 2\) \(x, y\) points"),
)
predict_row(
    "predict-labels-fraction",
    "point_labels=[0.5]",
    "error",
    {"point_coords": pts((3, 4)), "point_labels": [0.5]},
    (ValueError, r"point_labels must be 1 \(foreground\) or 0 \(background\), got \[0.5\]"),
)


@headless("predict-before-image", "predict() before any set_image", "error")
def _(ctx: SimpleNamespace) -> None:
    with pytest.raises(RuntimeError, match=r"must be set with \.set_image"):
        ctx.env.stub().predict(point_coords=pts((1, 1)), point_labels=[1])


# ------------------------------------------------------------------------ image rows
def set_image_row(
    id: str,
    given: str,
    outcome: str,
    image: Any,
    error: Any = None,
    seen: Callable[[np.ndarray], bool] | None = None,
    **kw: Any,
):
    """A row that encodes ``image`` with ``SamPredictor.set_image`` and predicts a point.

    ``seen`` checks the (h, w, 3) uint8 RGB the encoder received.
    """

    def check(ctx: SimpleNamespace) -> None:
        predictor = ctx.env.stub()
        data = image() if callable(image) else image
        if error is not None:
            with pytest.raises(error[0], match=error[1]):
                predictor.set_image(data, **kw)
            assert not predictor.is_image_set
            return
        guard = pytest.warns(NoContrastWarning) if outcome == "warning+result" else no_warnings()
        with guard:
            predictor.set_image(data, **kw)
        size = np.shape(data)[:2]
        assert predictor.original_size == size
        if seen is not None:
            assert seen(predictor.last_input[0].permute(1, 2, 0).numpy())
        out = predictor.predict(point_coords=pts((0, 0)), point_labels=[1], multimask_output=True)
        assert_prediction(out, size, 3)

    headless(id, given, outcome)(check)


rng = np.random.default_rng(0)
set_image_row("image-empty", "a (0, 0) image", "error", np.zeros((0, 0)), (ValueError, "empty"))
set_image_row(
    "image-empty-rows", "a (0, 5, 3) image", "error", np.zeros((0, 5, 3)), (ValueError, "empty")
)
set_image_row("image-1x1", "a 1 x 1 uint8 image", "ok", np.full((1, 1), 9, np.uint8))
set_image_row("image-1xN", "a 1 x 300 uint16 strip", "ok", np.arange(300, dtype=np.uint16)[None])
set_image_row("image-Nx1", "a 300 x 1 float strip", "ok", np.linspace(0, 1, 300)[:, None])
set_image_row(
    "image-constant",
    "a constant uint16 image (no contrast)",
    "warning+result",
    np.full((20, 30), 700, np.uint16),
    seen=lambda rgb: not rgb.any(),
)
set_image_row(
    "image-all-nan", "an all-NaN float image", "warning+result", np.full((20, 30), np.nan)
)
set_image_row(
    "image-rgba",
    "RGBA uint8 (alpha dropped)",
    "ok",
    np.full((20, 30, 4), (10, 20, 30, 99), np.uint8),
    seen=lambda rgb: (rgb == (10, 20, 30)).all(),
)
set_image_row(
    "image-two-channel",
    "(H, W, 2) float: R and G, B = 0",
    "ok",
    rng.normal(size=(20, 30, 2)).astype(np.float32),
    seen=lambda rgb: not rgb[..., 2].any() and rgb[..., :2].any(),
)
set_image_row(
    "image-rgba-12-bit",
    "RGBA uint16, colours 0..4095, opaque alpha 4095 (was mapped to 0..16)",
    "ok",
    np.dstack([np.tile(np.linspace(0, 4095, 30), (20, 1))] * 3 + [np.full((20, 30), 4095)])
    .round()
    .astype(np.uint16),
    seen=lambda rgb: rgb.max() == 255 and rgb.min() == 0,
)
set_image_row(
    "image-rgba-float-alpha",
    "float RGBA, colours 0..1, alpha 1000",
    "ok",
    np.dstack([np.tile(np.linspace(0, 1, 30), (20, 1))] * 3 + [np.full((20, 30), 1000.0)]),
    seen=lambda rgb: rgb.max() == 255 and rgb.min() == 0,
)
set_image_row(
    "image-float-1e39",
    "float64 from 0 to 1e39 (overflowed float32: the brightest pixels black)",
    "ok",
    np.tile(np.linspace(0, 1e39, 30), (20, 1)),
    seen=lambda rgb: (rgb[:, -3:] == 255).all() and (rgb[:, 0] == 0).all(),
)


def _palette_image() -> Any:
    from PIL import Image

    img = Image.new("P", (30, 20), 0)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)  # index 1 is red
    img.paste(1, (0, 0, 15, 20))
    return img


set_image_row(
    "image-pil-palette",
    "SamPredictor.set_image of a PIL palette image (was an AttributeError)",
    "ok",
    _palette_image,
    seen=lambda rgb: (rgb[:, :300] == (200, 10, 10)).all() and not rgb[:, -300:].any(),
)
set_image_row("image-uint16", "16-bit", "ok", rng.integers(0, 65535, (20, 30), np.uint16))
set_image_row("image-int16", "signed 16-bit", "ok", rng.integers(-500, 500, (20, 30), np.int16))
set_image_row("image-float64", "float64", "ok", rng.normal(size=(20, 30)))
set_image_row("image-bool", "boolean", "ok", rng.random((20, 30)) > 0.5)
set_image_row(
    "image-bgr",
    "uint8 BGR with image_format='BGR'",
    "ok",
    np.full((8, 9, 3), (0, 0, 255), np.uint8),
    seen=lambda rgb: (rgb[..., 0] == 255).all() and not rgb[..., 1:].any(),
    image_format="BGR",
)
set_image_row(
    "image-complex",
    "complex128",
    "error",
    np.zeros((20, 30), complex),
    (ValueError, "Unsupported image dtype complex128"),
)
set_image_row(
    "image-five-channels",
    "(H, W, 5)",
    "error",
    np.zeros((20, 30, 5)),
    (ValueError, "Pick one plane"),
)
set_image_row(
    "image-4d",
    "a (2, 20, 30, 3) array",
    "error",
    np.zeros((2, 20, 30, 3)),
    (ValueError, "Pick one plane"),
)
set_image_row(
    "image-format",
    "image_format='HSV'",
    "error",
    np.zeros((20, 30, 3), np.uint8),
    (ValueError, "image_format must be 'RGB' or 'BGR'"),
    image_format="HSV",
)


@headless(
    "image-partly-nan-inf",
    "float image with NaN, +inf and -inf pixels",
    "ok",
)
def _(ctx: SimpleNamespace) -> None:
    image = np.tile(np.linspace(0.0, 1.0, 30), (20, 1))
    image[0, :3] = [np.nan, np.inf, -np.inf]
    with no_warnings():
        out = to_uint8_rgb(image)
    assert out.shape == (20, 30, 3) and out.dtype == np.uint8
    assert out[0, :3].max() == 0 and out[:, -1].min() == 255  # non-finite -> 0, range kept


@headless("limits-not-a-pair", "contrast_limits=(1,)", "error")
def _(ctx: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match=r"contrast_limits must be two numbers"):
        to_uint8_rgb(np.zeros((4, 4)), contrast_limits=(1,))


@headless("limits-empty", "contrast_limits=(5, 5)", "warning+result")
def _(ctx: SimpleNamespace) -> None:
    with pytest.warns(NoContrastWarning, match=r"contrast limits \(5.0, 5.0\) are empty"):
        out = to_uint8_rgb(np.arange(16.0).reshape(4, 4), contrast_limits=(5, 5))
    assert out.shape == (4, 4, 3) and not out.any()


@headless("rgb-false-on-colour", "to_uint8_rgb((H, W, 3), rgb=False)", "error")
def _(ctx: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="Pass rgb=True if the last axis holds colour"):
        to_uint8_rgb(np.zeros((4, 4, 3)), rgb=False)


# ---------------------------------------------------------------------------- huge planes
def gradient_plane(n: int) -> Any:
    """An (n, n) uint16 dask plane computed on demand, chunked by rows (never held whole)."""
    import dask.array as da

    rows = da.arange(n, dtype=np.uint16, chunks=1024)[:, None] * np.uint16(3)
    return rows + da.arange(n, dtype=np.uint16, chunks=n)[None, :]


@headless(
    "huge-dask-plane-predictor",
    "SamPredictor.set_image of a 20000 x 20000 uint16 dask plane",
    "ok",
)
def _(ctx: SimpleNamespace) -> None:
    n = 20_000
    predictor = ctx.env.stub()
    _, peak = peak_bytes(lambda: predictor.set_image(gradient_plane(n)))
    float_copy = n * n * 4  # what one full-resolution float32 copy would take: 1.6 GB
    assert peak < float_copy / 8, f"peak {peak / 2**20:.0f} MiB"
    assert predictor.original_size == (n, n) and predictor.input_size == (1024, 1024)
    assert predictor.encoded == [(1, 3, 1024, 1024)]


@headless(
    "huge-plane-widget-path",
    "the widget's encode step on a 20000 x 20000 dask plane (contrast limits given)",
    "ok",
)
def _(ctx: SimpleNamespace) -> None:
    n = 20_000
    request = SegmentRequest(
        plane=PlaneRef("huge", (None, None), (0, 1), (n, n)),
        prompts=PlanePrompts(),
        source=gradient_plane(n),
        rgb=False,
        contrast_limits=(0.0, 60_000.0),
        normalisation=("contrast", 0.0, 60_000.0, False),
    )
    predictor, cache = ctx.env.stub(), EmbeddingCache()
    hit, peak = peak_bytes(lambda: ensure_embedding(request, predictor, cache))
    assert not hit and peak < n * n * 4 / 8, f"peak {peak / 2**20:.0f} MiB"
    assert predictor.original_size == (n, n)
    assert cache.get(request.cache_key)[1] == (n, n)
    # Prompts stay in the full plane's pixels: x = n maps to the encoder's 1024.
    assert predictor.transform.apply_coords(pts((n, n)), predictor.original_size).max() == 1024


@headless(
    "huge-memmap-mobilesam",
    "MobileSAM.set_image of a 20000 x 12000 uint8 memmap",
    "ok",
)
def _(ctx: SimpleNamespace) -> None:
    height, width = 20_000, 12_000
    path = ctx.tmp_path / "huge.u8"
    plane = np.memmap(path, dtype=np.uint8, mode="w+", shape=(height, width))
    plane[::500] = 200  # a few bright rows; the rest of the sparse file reads as 0
    plane.flush()
    sam = ctx.env.sam
    size, peak = peak_bytes(
        lambda: sam.set_image(np.memmap(path, np.uint8, "r", shape=(height, width)))
    )
    assert size == (height, width) and sam.predictor.original_size == (height, width)
    assert peak < height * width * 4 / 8, f"peak {peak / 2**20:.0f} MiB"


@headless(
    "large-uint16-to-uint8",
    "to_uint8_rgb of a 6000 x 6000 uint16 plane (no float copy of the whole plane)",
    "ok",
)
def _(ctx: SimpleNamespace) -> None:
    n = 6000
    image = np.add.outer(np.arange(n, dtype=np.uint16), np.arange(n, dtype=np.uint16))
    out, peak = peak_bytes(lambda: to_uint8_rgb(image, contrast_limits=(0, 2 * n)))
    assert out.shape == (n, n, 3) and out[-1, -1, 0] == 255
    # The uint8 RGB result (3 bytes/pixel) and its one-channel source (1 byte/pixel) plus
    # bands; a float32 copy of the plane alone would be 4 bytes/pixel, the earlier code ~13.
    assert peak < n * n * 4 + 64 * 2**20, f"peak {peak / 2**20:.0f} MiB"


# ------------------------------------------------------------------------- MobileSAM rows
def mobilesam_row(id: str, given: str, outcome: str, kwargs: dict[str, Any], error: Any = None):
    """A row that calls ``MobileSAM.predict(image, **kwargs)`` on a (H, W) uint8 image."""

    def check(ctx: SimpleNamespace) -> None:
        image = kwargs.get("image", np.full((H, W), 120, np.uint8))
        call = {k: v for k, v in kwargs.items() if k != "image"}
        if error is not None:
            with pytest.raises(error[0], match=error[1]):
                ctx.env.sam.predict(image, **call)
            return
        with no_warnings():
            res = ctx.env.sam.predict(image, **call)
        n = len(res)
        assert n >= 1 and res.masks.shape == (n, H, W) and res.masks.dtype == np.bool_
        assert res.scores.shape == (n,) and np.isfinite(res.scores).all()

    headless(id, given, outcome)(check)


mobilesam_row(
    "mobilesam-no-prompt",
    "predict(image, points=[]): an empty prompt list (no prompt at all segments everything)",
    "error",
    {"points": []},
    (ValueError, "Give at least one prompt"),
)
mobilesam_row(
    "mobilesam-labels-only",
    "labels without points",
    "error",
    {"labels": [1]},
    (ValueError, "labels were given without points"),
)
mobilesam_row(
    "mobilesam-negative-only",
    "points=[[5, 5]], labels=[0]: a background point alone",
    "error",
    {"points": [[5, 5]], "labels": [0]},
    (ValueError, "only background points .* add a foreground point"),
)
mobilesam_row(
    "mobilesam-negative-in-box",
    "a background point together with a box",
    "ok",
    {"points": [[[5, 5]]], "labels": [[0]], "bboxes": [[2, 2, 40, 30]]},
)
mobilesam_row(
    "mobilesam-count-mismatch",
    "2 boxes and 1 point group",
    "error",
    {"points": [[[5, 5]]], "bboxes": [[0, 0, 9, 9], [1, 1, 8, 8]]},
    (ValueError, "counts must match"),
)
mobilesam_row(
    "mobilesam-points-3d",
    "points of shape (1, 3)",
    "error",
    {"points": [[1, 2, 3]]},
    (ValueError, r"points must be \[x, y\]"),
)
mobilesam_row(
    "mobilesam-labels-value",
    "labels=[3]",
    "error",
    {"points": [[1, 2]], "labels": [3]},
    (ValueError, "labels must be 1"),
)
mobilesam_row(
    "mobilesam-labels-fraction",
    "labels=[[0.5]] (was truncated to 0, a background point)",
    "error",
    {"points": [[1, 2]], "labels": [[0.5]]},
    (ValueError, r"labels must be 1 \(foreground\) or 0 \(background\), got \[0.5\]"),
)
mobilesam_row(
    "mobilesam-points-ragged",
    "points=[[1, 2], [3]]",
    "error",
    {"points": [[1, 2], [3]]},
    (ValueError, r"points is ragged .* expected \[x, y\], \[\[x, y\], ...\]"),
)
mobilesam_row(
    "mobilesam-groups-ragged",
    "point groups of 2 and 1 points",
    "error",
    {"points": [[[1, 2], [3, 4]], [[5, 6]]]},
    (ValueError, "points is ragged .* every group with the same number of points"),
)
mobilesam_row(
    "mobilesam-labels-ragged",
    "labels=[[1, 0], [1]] for two groups of two points",
    "error",
    {"points": [[[1, 2], [3, 4]], [[5, 6], [7, 8]]], "labels": [[1, 0], [1]]},
    (ValueError, r"labels is ragged .* expected one entry per point: 4 for points of shape"),
)
mobilesam_row(
    "mobilesam-bboxes-ragged",
    "bboxes=[[0, 0, 9, 9], [1, 1, 8]]",
    "error",
    {"bboxes": [[0, 0, 9, 9], [1, 1, 8]]},
    (ValueError, r"bboxes is ragged .* expected \[x0, y0, x1, y1\]"),
)
mobilesam_row(
    "mobilesam-point-nan",
    "points=[nan, 3]",
    "error",
    {"points": [np.nan, 3]},
    (ValueError, "points contains NaN or infinite values"),
)
mobilesam_row(
    "mobilesam-point-far-outside",
    "points=[5000, 5000] on a 64 x 48 image",
    "error",
    {"points": [5000, 5000]},
    (ValueError, "far outside the 64 x 48"),
)
mobilesam_row(
    "mobilesam-box-inverted",
    "bboxes=[40, 30, 2, 2]",
    "error",
    {"bboxes": [40, 30, 2, 2]},
    (ValueError, "x0 <= x1"),
)
mobilesam_row(
    "mobilesam-empty-image",
    "a (0, 10) image",
    "error",
    {"image": np.zeros((0, 10), np.uint8), "points": [1, 1]},
    (ValueError, "empty"),
)
mobilesam_row(
    "mobilesam-list-image",
    "a nested list instead of an array",
    "error",
    {"image": [[1, 2], [3, 4]], "points": [1, 1]},
    (TypeError, "source must be an image path or a numpy array"),
)
mobilesam_row(
    "mobilesam-missing-file",
    "an image path that does not exist",
    "error",
    {"image": "no/such/cells.png", "points": [1, 1]},
    (FileNotFoundError, "Image file not found"),
)


# --------------------------------------------------------------- PIL images and image files
def encoder_saw(sam: MobileSAM) -> np.ndarray:
    """The (h, w, 3) uint8 RGB the encoder got for the last image, without the padding."""
    h, w = sam.predictor.input_size
    return sam.predictor.last_input[0, :, :h, :w].permute(1, 2, 0).numpy()


def pil_row(id: str, given: str, make: Callable[[Path], Any], check_seen: Callable, shape=None):
    """A row that segments a PIL image (or the file it was saved to) with MobileSAM."""

    def check(ctx: SimpleNamespace) -> None:
        source = make(ctx.tmp_path)
        with no_warnings():
            res = ctx.env.sam.predict(source, points=[2, 2])
        assert len(res) == 1 and res.orig_shape == (shape or (20, 30))
        assert check_seen(encoder_saw(ctx.env.sam))

    headless(id, given, "ok")(check)


def _palette_png(folder: Path) -> Path:
    from PIL import Image

    img = Image.new("P", (30, 20), 0)
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)  # index 1 is red
    img.paste(1, (0, 0, 15, 20))
    img.save(folder / "palette.png")
    return folder / "palette.png"


def _png_16bit(folder: Path) -> Path:
    from PIL import Image

    values = np.tile(np.linspace(0, 4095, 30).astype(np.uint16), (20, 1))
    Image.fromarray(values).save(folder / "deep.png")  # an I;16 PNG
    return folder / "deep.png"


def _exif_rotated(folder: Path) -> Path:
    from PIL import Image

    img = Image.fromarray(np.tile(np.arange(20, dtype=np.uint8) * 10, (30, 1)).T)  # 20 x 30
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: viewers rotate it a quarter turn, to 30 rows x 20 columns
    img.save(folder / "rotated.png", exif=exif)
    return folder / "rotated.png"


pil_row(
    "file-palette-png",
    "a palette PNG (was read as palette indices, i.e. grey)",
    _palette_png,
    lambda rgb: (rgb[:, :300] == (200, 10, 10)).all() and not rgb[:, -300:].any(),
)
pil_row(
    "file-16-bit-png",
    "a 16-bit (I;16) PNG of 0..4095",
    _png_16bit,
    lambda rgb: rgb[..., 0].max() == 255 and rgb[..., 0].min() == 0,
)
pil_row(
    "file-exif-orientation",
    "a PNG with EXIF orientation 6 (shown rotated)",
    _exif_rotated,
    lambda rgb: rgb.shape[0] > rgb.shape[1],
    shape=(30, 20),
)
pil_row(
    "pil-image-palette",
    "a PIL palette image object (not a path)",
    lambda folder: __import__("PIL.Image").Image.open(_palette_png(folder)),
    lambda rgb: (rgb[:, :300] == (200, 10, 10)).all() and not rgb[:, -300:].any(),
)
pil_row(
    "pil-image-grey-alpha",
    "a PIL 'LA' image (grey + alpha; not red and green)",
    lambda folder: __import__("PIL.Image").Image.fromarray(
        np.dstack(
            [np.tile(np.arange(30, dtype=np.uint8) * 8, (20, 1)), np.full((20, 30), 99)]
        ).astype(np.uint8),
        mode="LA",
    ),
    lambda rgb: (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all(),
)


@headless("build-unknown-device", "build_mobile_sam(device='gpu')", "error")
def _(ctx: SimpleNamespace) -> None:
    with pytest.raises(ValueError, match="Unknown device 'gpu'.*'cpu', 'cuda'"):
        build_mobile_sam(None, device="gpu")


@headless("build-missing-checkpoint", "build_mobile_sam('missing.pt')", "error")
def _(ctx: SimpleNamespace) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        build_mobile_sam(ctx.tmp_path / "missing.pt", device="cpu")


# ------------------------------------------------------- layers without a widget (headless)
def scene(shape: tuple[int, ...] = (H, W), **image_kwargs: Any) -> SimpleNamespace:
    """A Qt-free viewer with an image and an aligned Labels layer holding one old label."""
    viewer = ViewerModel()
    image = viewer.add_layer(
        Image(np.linspace(0, 1, int(np.prod(shape))).reshape(shape), **image_kwargs)
    )
    labels = viewer.add_layer(create_aligned_labels(image))
    labels.data[..., :4, :4] = 7
    return SimpleNamespace(viewer=viewer, image=image, labels=labels, predictor=FakePredictor())


def points_layer(data: Any, positive: Any = None, **kwargs: Any) -> Points:
    features = None if positive is None else {"positive": np.asarray(positive, dtype=bool)}
    return Points(np.asarray(data, dtype=float), features=features, **kwargs)


def segment_scene(s: SimpleNamespace, points: Any = None, shapes: Any = None) -> tuple[Any, Any]:
    """(objects, prompts) for the scene's current plane."""
    for layer in (points, shapes):
        if layer is not None and layer not in s.viewer.layers:
            s.viewer.add_layer(layer)
    prompts = capture_request(s.viewer, s.image, points, shapes).prompts
    objects = segment_from_layers(s.viewer, s.image, points, shapes, predictor=s.predictor)
    return objects, prompts


def no_prompt_row(id: str, given: str, make: Callable[[SimpleNamespace], dict], counts: dict):
    """A row whose prompts must all be skipped: no objects, nothing predicted, labels kept."""

    def check(ctx: SimpleNamespace) -> None:
        s = scene((3, H, W)) if "3d" in id else scene()
        with unchanged(s.labels):
            objects, prompts = segment_scene(s, **make(s))
            assert commit_objects(s.labels, objects, image_layer=s.image) == []
        assert objects == [] and s.predictor.calls == [] and s.predictor.encoded == []
        for name, value in counts.items():
            assert getattr(prompts, name) == value, (name, prompts)

    headless(id, given, "no-op")(check)


no_prompt_row(
    "layers-no-prompt-layers", "segment_from_layers without prompt layers", lambda s: {}, {}
)
no_prompt_row(
    "layers-point-off-image",
    "a point at (row, col) = (-30, 500), off the image",
    lambda s: {"points": points_layer([[-30, 500]])},
    {"skipped_outside_points": 1},
)
no_prompt_row(
    "layers-point-off-slice-3d",
    "a point on slice 2 while the viewer shows slice 0",
    lambda s: {"points": points_layer([[2, 10, 10]])},
    {"point_indices": ()},
)
no_prompt_row(
    "layers-negative-only",
    "two negative points and no box",
    lambda s: {"points": points_layer([[5, 5], [9, 9]], [False, False])},
    {"skipped_negative_points": 2},
)
no_prompt_row(
    "layers-box-zero-area",
    "a rectangle of zero width",
    lambda s: {
        "shapes": Shapes([np.array([[5, 5], [5, 5], [20, 5], [20, 5]])], shape_type="rectangle")
    },
    {"skipped_shapes": 1},
)
no_prompt_row(
    "layers-box-outside",
    "a rectangle wholly outside the image",
    lambda s: {
        "shapes": Shapes(
            [np.array([[-40, -40], [-40, -10], [-20, -10], [-20, -40]])], shape_type="rectangle"
        )
    },
    {"skipped_outside_shapes": 1},
)
no_prompt_row(
    "layers-non-rectangles",
    "an ellipse, a polygon, a line and a path",
    lambda s: {
        "shapes": Shapes(
            [
                np.array([[5, 5], [5, 15], [15, 15], [15, 5]]),
                np.array([[5, 5], [20, 8], [9, 30]]),
                np.array([[1, 1], [30, 40]]),
                np.array([[1, 1], [10, 20], [30, 5]]),
            ],
            shape_type=["ellipse", "polygon", "line", "path"],
        )
    },
    {"skipped_shapes": 4},
)


@headless("layers-box-partly-outside", "a rectangle from (-10, -10) to (20, 30)", "ok")
def _(ctx: SimpleNamespace) -> None:
    s = scene()
    shapes = Shapes(
        [np.array([[-10, -10], [-10, 30], [20, 30], [20, -10]])], shape_type="rectangle"
    )
    objects, prompts = segment_scene(s, shapes=shapes)
    # Clipped to the image's pixels (napari's pixel i covers i - 0.5 .. i + 0.5).
    np.testing.assert_allclose(prompts.groups[0].box, [-0.5, -0.5, 30, 20])
    assert len(objects) == 1
    ids = commit_objects(s.labels, objects, image_layer=s.image)
    assert ids == [8] and (s.labels.data == 8).sum() > 0  # committed: the layer changed


@headless("layers-rotated-rectangle", "a rectangle rotated by 45 degrees", "ok")
def _(ctx: SimpleNamespace) -> None:
    s = scene()
    diamond = np.array([[10, 20], [20, 30], [30, 20], [20, 10]])  # (row, col)
    objects, prompts = segment_scene(s, shapes=Shapes([diamond], shape_type="rectangle"))
    np.testing.assert_allclose(prompts.groups[0].box, [10, 10, 30, 30])  # the enclosing box
    assert len(objects) == 1 and prompts.skipped_shapes == 0


@headless("layers-2d-points-over-3d", "a 2D Points layer over a 3D image on slice 2", "ok")
def _(ctx: SimpleNamespace) -> None:
    s = scene((3, H, W))
    s.viewer.dims.set_point(0, 2)
    objects, prompts = segment_scene(s, points=points_layer([[10, 12]]))
    assert len(objects) == 1 and objects[0].plane.slice_index == (2, None, None)
    np.testing.assert_allclose(prompts.groups[0].point_coords, [[12, 10]])


@headless("layers-4d-points-over-3d", "a 4D Points layer over a 3D image", "ok")
def _(ctx: SimpleNamespace) -> None:
    s = scene((3, H, W))
    points = points_layer([[0, 1, 10, 12], [1, 1, 20, 22]])  # the second is on another step
    s.viewer.add_layer(points)
    s.viewer.dims.set_point(1, 1)
    s.viewer.dims.set_point(0, 0)
    objects, prompts = segment_scene(s, points=points)
    assert prompts.point_indices == (0,) and len(objects) == 1


@headless(
    "layers-other-transform", "points with scale 2 and a translate, image with scale 0.5", "ok"
)
def _(ctx: SimpleNamespace) -> None:
    s = scene(scale=(0.5, 0.5))
    points = points_layer([[2, 3]], scale=(2, 2), translate=(1, 1))  # world (5, 7)
    objects, prompts = segment_scene(s, points=points)
    np.testing.assert_allclose(prompts.groups[0].point_coords, [[14, 10]])  # data = world / 0.5
    assert len(objects) == 1


@headless("layers-3d-view", "the viewer in 3D view", "error")
def _(ctx: SimpleNamespace) -> None:
    s = scene((3, H, W))
    s.viewer.dims.ndisplay = 3
    with pytest.raises(PlaneError, match="switch the viewer to the 2D view"):
        segment_scene(s, points=points_layer([[0, 5, 5]]))


def commit_error_row(
    id: str,
    given: str,
    make: Callable[[SimpleNamespace], Labels],
    match: str,
    with_image: bool = True,
):
    """A row where the commit must be refused, leaving the Labels layer as it was."""

    def check(ctx: SimpleNamespace) -> None:
        s = scene()
        objects, _ = segment_scene(s, points=points_layer([[10, 10]]))
        target = make(s)
        with unchanged(target), pytest.raises(LabelsError, match=match):
            commit_objects(target, objects, image_layer=s.image if with_image else None)

    headless(id, given, "error")(check)


commit_error_row(
    "commit-labels-other-shape",
    "a (10, 10) Labels layer for a (48, 64) image",
    lambda s: Labels(np.zeros((10, 10), np.uint32), name="small"),
    r"has shape \(10, 10\) but image .* has \(48, 64\); choose a matching layer",
)
commit_error_row(
    "commit-labels-other-shape-no-image",
    "the same, without image_layer= (nothing to check it against)",
    lambda s: Labels(np.zeros((10, 10), np.uint32), name="small"),
    r"does not hold a \(48, 64\) mask .* create_aligned_labels",
    with_image=False,
)
commit_error_row(
    "commit-labels-misaligned",
    "a Labels layer of the right shape but scale 2",
    lambda s: Labels(np.zeros((H, W), np.uint32), scale=(2, 2)),
    "do not line up",
)
commit_error_row(
    "commit-labels-full-uint8",
    "uint8 Labels whose id 255 is used",
    lambda s: Labels(np.where(np.eye(H, W) > 0, 255, 0).astype(np.uint8), name="full"),
    r"is full: dtype uint8 holds ids up to 255. Convert it to uint32",
)


def _float_labels(s: SimpleNamespace) -> Labels:
    labels = Labels(np.zeros((H, W), np.int32), name="float")
    # napari refuses float Labels itself (TypeError); force one past it to test our own check.
    labels._data = labels._data.astype(np.float32)
    return labels


commit_error_row(
    "commit-labels-float",
    "a Labels layer whose data is float32 (forced past napari's own refusal)",
    _float_labels,
    "dtype float32; label ids need an integer dtype",
)


@headless(
    "commit-half-fits",
    "two objects, the second segmented on a larger image (used to write the first, then fail)",
    "error",
)
def _(ctx: SimpleNamespace) -> None:
    s, big = scene(), scene((2 * H, 2 * W))
    first, _ = segment_scene(s, points=points_layer([[10, 10]]))
    second, _ = segment_scene(big, points=points_layer([[80, 100]]))
    with unchanged(s.labels), pytest.raises(LabelsError, match="Object 2 of 2 does not fit"):
        commit_objects(s.labels, first + second, image_layer=s.image)
    s.labels.undo()  # nothing half-written sits in the undo history either
    assert (s.labels.data[:4, :4] == 7).all() and set(np.unique(s.labels.data)) == {0, 7}


@headless("commit-nothing", "commit_objects(labels, [])", "no-op")
def _(ctx: SimpleNamespace) -> None:
    s = scene()
    with unchanged(s.labels):
        assert commit_objects(s.labels, [], image_layer=s.image) == []


@headless("commit-all-protected", "protect=True over a layer labelled everywhere", "no-op")
def _(ctx: SimpleNamespace) -> None:
    s = scene()
    objects, _ = segment_scene(s, points=points_layer([[10, 10]]))
    s.labels.data[:] = 3
    with unchanged(s.labels):
        assert commit_objects(s.labels, objects, protect=True, image_layer=s.image) == []


# --------------------------------------------------------------------------- stack rows
class FixedEncoder:
    """Stands in for a stack's predictor: every plane gets the fixed embedding."""

    device = torch.device("cpu")

    def __init__(self, embedding: torch.Tensor) -> None:
        self.embedding, self.images = embedding, []

    def set_image(self, image: np.ndarray, **kwargs: Any) -> None:
        self.images.append(image.shape)

    def get_image_embedding(self) -> torch.Tensor:
        return self.embedding


def stack_of(env: SimpleNamespace, volume: Any, **kwargs: Any) -> StackEmbeddings:
    return StackEmbeddings(FixedEncoder(env.embedding), volume, **kwargs)


def stack_error_row(id: str, given: str, call: Callable[[SimpleNamespace], Any], error: Any):
    def check(ctx: SimpleNamespace) -> None:
        with pytest.raises(error[0], match=error[1]):
            call(ctx.env)

    headless(id, given, "error")(check)


VOLUME = np.random.default_rng(1).integers(0, 4000, (4, 24, 32)).astype(np.uint16)
stack_error_row(
    "stack-2d-volume",
    "StackEmbeddings of a 2D image",
    lambda env: StackEmbeddings(env.stub(), VOLUME[0]),
    (ValueError, "at least 3 spatial axes"),
)
stack_error_row(
    "stack-bad-axis",
    "axis=1 on a 3D volume (only axis 0 can be walked)",
    lambda env: StackEmbeddings(env.stub(), VOLUME, axis=1),
    (ValueError, "axis must be one of"),
)
stack_error_row(
    "stack-bad-position",
    "position with 2 entries for a 3D volume",
    lambda env: StackEmbeddings(env.stub(), VOLUME, position=[0, 0]),
    (ValueError, "position needs 1 entries"),
)
stack_error_row(
    "stack-plane-out-of-range",
    "segment_stack(plane=9) on 4 planes",
    lambda env: segment_stack(
        env.stub(), VOLUME, 9, points=[[5, 5]], stack=stack_of(env, VOLUME), progress=False
    ),
    (IndexError, r"plane 9 is outside 0..3"),
)
stack_error_row(
    "stack-no-prompt",
    "segment_stack without points or box",
    lambda env: segment_stack(env.stub(), VOLUME, 1, stack=stack_of(env, VOLUME), progress=False),
    (ValueError, "Give points and/or a box"),
)

stack_error_row(
    "stack-of-another-volume",
    "segment_stack(volume, stack=...) with a stack built from other data (was silently used)",
    lambda env: segment_stack(
        env.stub(), VOLUME[:3], 1, box=[2, 2, 9, 9], stack=stack_of(env, VOLUME), progress=False
    ),
    (ValueError, r"stack= was built from another volume \(shape \(4, 24, 32\)\)"),
)
stack_error_row(
    "stack-ragged-plane-list",
    "a Python list of planes of different shapes",
    lambda env: segment_stack(
        env.stub(), [VOLUME[0], VOLUME[1, :20]], 0, box=[2, 2, 9, 9], progress=False
    ),
    (ValueError, r"plane 1 is \(20, 32\). All planes of a stack need one shape"),
)
stack_error_row(
    "stack-points-ragged",
    "segment_stack(points=[[1, 2], [3]])",
    lambda env: segment_stack(
        env.stub(), VOLUME, 1, points=[[1, 2], [3]], stack=stack_of(env, VOLUME), progress=False
    ),
    (ValueError, r"points is ragged .* expected \[x, y\] or \(N, 2\)"),
)
stack_error_row(
    "stack-labels-fraction",
    "segment_stack(labels=[0.5])",
    lambda env: segment_stack(
        env.stub(), VOLUME, 1, points=[[5, 5]], labels=[0.5], stack=stack_of(env, VOLUME)
    ),
    (ValueError, r"labels must be 1 \(foreground\) or 0 \(background\), got \[0.5\]"),
)


@headless("stack-list-of-planes", "segment_stack with a Python list of 2D planes", "ok")
def _(ctx: SimpleNamespace) -> None:
    planes = list(VOLUME)
    stack = stack_of(ctx.env, planes)
    assert stack.n_planes == 4 and stack.plane_shape == (24, 32)
    assert stack.contrast_limits == stack_of(ctx.env, VOLUME).contrast_limits
    with no_warnings():
        (obj,) = segment_stack(
            ctx.env.stub(), planes, 1, box=[0, 0, 31, 23], stack=stack, progress=False
        )
    assert 1 in obj.masks and obj.masks[1].shape == (24, 32)


@headless(
    "stack-zarr-volume", "a zarr (v3) volume: limits and planes read one plane at a time", "ok"
)
def _(ctx: SimpleNamespace) -> None:
    zarr = pytest.importorskip("zarr")
    vol = zarr.create_array(store={}, shape=VOLUME.shape, chunks=(1, 24, 32), dtype=VOLUME.dtype)
    vol[:] = VOLUME

    def whole(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the whole zarr array was read")

    ctx.monkeypatch.setattr(type(vol), "__array__", whole)
    stack = stack_of(ctx.env, vol)
    assert stack.contrast_limits == stack_of(ctx.env, VOLUME).contrast_limits
    assert drive(stack.precompute(around=1)) == 4


class EmptyDecoder(FakePredictor):
    """Decodes every prompt to an empty mask."""

    def predict(self, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        masks, scores, low_res = super().predict(**kwargs)
        return np.zeros_like(masks), scores, low_res


stack_error_row(
    "stack-empty-start-mask",
    "prompts that decode to an empty mask on the start plane",
    lambda env: segment_stack(
        EmptyDecoder(), VOLUME, 1, box=[2, 2, 9, 9], stack=stack_of(env, VOLUME), progress=False
    ),
    (ValueError, "gave an empty mask on plane 1; nothing to follow"),
)


@headless("stack-constant-volume", "a constant volume (no contrast anywhere)", "warning+result")
def _(ctx: SimpleNamespace) -> None:
    stack = stack_of(ctx.env, np.full((3, 24, 32), 5, np.uint16))
    with pytest.warns(NoContrastWarning):
        embedding, size = stack.get(1)
    assert tuple(embedding.shape) == (1, 256, 64, 64) and size == (24, 32)


@headless("stack-nan-volume", "a float volume with a NaN plane and inf pixels", "ok")
def _(ctx: SimpleNamespace) -> None:
    volume = np.random.default_rng(2).normal(size=(3, 24, 32))
    volume[0] = np.nan
    volume[2, :2] = np.inf
    stack = stack_of(ctx.env, volume)
    assert np.isfinite(stack.contrast_limits).all()
    with no_warnings():
        objects = segment_stack(
            ctx.env.stub(), volume, 1, box=[0, 0, 31, 23], stack=stack, progress=False
        )
    assert all(mask.shape == (24, 32) for mask in objects[0].masks.values())


# ----------------------------------------------------------------------- propagation rows
def seed_mask(shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[5:15, 8:20] = True
    return mask


def propagate_row(id: str, given: str, call: Callable[[SimpleNamespace], Any], match: str):
    def check(ctx: SimpleNamespace) -> None:
        with pytest.raises(ValueError, match=match):
            call(ctx.env)

    headless(id, given, "error")(check)


def run_propagation(env: SimpleNamespace, seeds: list[Seed], start: int = 1, **kwargs: Any):
    def embed(plane: int) -> tuple[torch.Tensor, tuple[int, int]]:
        return env.embedding, (24, 32)

    settings = PropagationSettings(**kwargs) if kwargs else None
    return drive(propagate(env.stub(), embed, 4, start, seeds, settings))


propagate_row(
    "propagate-bad-mode",
    "PropagationSettings(prompt='lasso')",
    lambda env: PropagationSettings(prompt="lasso"),
    "prompt must be one of",
)
propagate_row(
    "propagate-bad-iou",
    "PropagationSettings(min_iou=2)",
    lambda env: PropagationSettings(min_iou=2),
    r"min_iou must be a finite number in \[0, 1\]",
)
propagate_row(
    "propagate-start-outside",
    "propagate from plane 7 of 4",
    lambda env: run_propagation(env, [Seed(seed_mask())], start=7),
    r"start plane 7 is outside 0..3",
)
propagate_row(
    "propagate-empty-seed",
    "an empty seed mask",
    lambda env: run_propagation(env, [Seed(np.zeros((24, 32), bool))]),
    "A seed mask is empty",
)
propagate_row(
    "propagate-seed-shape",
    "a (10, 10) seed for (24, 32) planes",
    lambda env: run_propagation(env, [Seed(seed_mask((10, 10)))]),
    r"Seed masks of shape \(10, 10\) do not match the planes, which are \(24, 32\)",
)


@headless("propagate-reversed-range", "plane_range=(3, 0) (first > last)", "no-op")
def _(ctx: SimpleNamespace) -> None:
    (result,) = run_propagation(ctx.env, [Seed(seed_mask())], plane_range=(3, 0))
    assert result.planes == [1]  # only the seed; no plane is visited


# --------------------------------------------------------------- device failure (headless)
class FailingOnGpu(FakePredictor):
    """Raises torch's out-of-memory error on the first encode, as a GPU run can."""

    def set_image(self, image: np.ndarray, **kwargs: Any) -> None:
        raise RuntimeError("CUDA error: out of memory")


def pretend_cuda(monkeypatch: pytest.MonkeyPatch, cpu_predictor: Any) -> None:
    """CUDA 'available'; building a CPU predictor gives ``cpu_predictor`` (no weights needed)."""
    import napari_mobilesam.engine.predictor
    import napari_mobilesam.engine.weights
    import napari_mobilesam.model.build

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        napari_mobilesam.model.build, "build_mobile_sam", lambda path, device: device
    )
    monkeypatch.setattr(
        napari_mobilesam.engine.predictor, "SamPredictor", lambda model: cpu_predictor
    )
    monkeypatch.setattr(
        napari_mobilesam.engine.weights, "resolve_weights", lambda p, **k: Path("w.pt")
    )


@headless(
    "device-cuda-oom-falls-back",
    "the model raises 'CUDA error: out of memory' on cuda (simulated)",
    "warning+result",
)
def _(ctx: SimpleNamespace) -> None:
    s = scene()
    cpu = FakePredictor()
    pretend_cuda(ctx.monkeypatch, cpu)
    loader = PredictorLoader()
    loader.set_predictor(FailingOnGpu(), None, "cuda")
    points = points_layer([[10, 10]])
    s.viewer.add_layer(points)
    request = capture_request(s.viewer, s.image, points)
    cache = EmbeddingCache()
    with pytest.warns(DeviceFallbackWarning, match="failed on cuda .*out of memory.*using the CPU"):
        result = drive(model_steps(loader, None, "cuda", request, cache, True, ()))
    assert len(result.objects) == 1 and len(cpu.encoded) == 1
    assert loader.device == "cpu" and loader.is_loaded(None, "cuda")  # cuda now means the CPU
    loader.forget_failures()
    assert not loader.is_loaded(None, "cuda")  # picking a device again retries it


@headless("device-cpu-error-raises", "a RuntimeError on the CPU (nothing to fall back to)", "error")
def _(ctx: SimpleNamespace) -> None:
    s = scene()
    loader = PredictorLoader()
    loader.set_predictor(FailingOnGpu(), None, "cpu")
    points = points_layer([[10, 10]])
    s.viewer.add_layer(points)
    request = capture_request(s.viewer, s.image, points)
    with pytest.raises(RuntimeError, match="out of memory"):
        drive(model_steps(loader, None, "cpu", request, EmbeddingCache(), True, ()))


# ------------------------------------------------------- segment everything and its helpers
def amg_error_row(id: str, kwargs: dict[str, Any], match: str) -> None:
    """A SamAutomaticMaskGenerator / segment_everything parameter refused by name, at once."""

    @headless(id, f"SamAutomaticMaskGenerator(model, **{kwargs})", "error")
    def _(ctx: SimpleNamespace) -> None:
        from napari_mobilesam import SamAutomaticMaskGenerator, segment_everything

        with pytest.raises(ValueError, match=match):
            SamAutomaticMaskGenerator(ctx.env.model, **kwargs)
        image = np.random.default_rng(0).integers(0, 255, (24, 32), dtype=np.uint8)
        with pytest.raises(ValueError, match=match):
            segment_everything(image, ctx.env.model, **kwargs)


for _name, _value, _match in [
    ("iou-nan", {"pred_iou_thresh": float("nan")}, r"pred_iou_thresh .*\[0, 1\]"),
    ("stability-inf", {"stability_score_thresh": float("inf")}, "stability_score_thresh"),
    ("nms-negative", {"box_nms_thresh": -0.1}, r"box_nms_thresh .*\[0, 1\]"),
    ("crop-nms-nan", {"crop_nms_thresh": float("nan")}, "crop_nms_thresh"),
    ("offset-nan", {"stability_score_offset": float("nan")}, "stability_score_offset"),
    ("overlap-one", {"crop_overlap_ratio": 1.0}, r"crop_overlap_ratio .*\[0, 1\)"),
    ("crop-layers-huge", {"crop_n_layers": 10**9}, r"crop_n_layers .*\[0, 4\]"),
    ("crop-layers-40", {"crop_n_layers": 40}, "crop_n_layers"),
    ("points-huge", {"points_per_side": 10**6}, r"points_per_side .*\[1, 256\]"),
    ("points-nan", {"points_per_side": float("nan")}, "points_per_side"),
    ("batch-huge", {"points_per_batch": 10**7}, "points_per_batch"),
    ("downscale-nan", {"crop_n_points_downscale_factor": float("nan")}, "downscale_factor"),
    ("region-area-nan", {"min_mask_region_area": float("nan")}, "min_mask_region_area"),
]:
    amg_error_row(f"amg-{_name}", _value, _match)


def everything_error_row(id: str, kwargs: dict[str, Any], match: str) -> None:
    @headless(id, f"segment_everything(image, model, **{kwargs})", "error")
    def _(ctx: SimpleNamespace) -> None:
        from napari_mobilesam import segment_everything

        image = np.random.default_rng(0).normal(size=(2, 24, 32))
        with pytest.raises(ValueError, match=match):
            segment_everything(image, ctx.env.model, points_per_side=2, **kwargs)


for _name, _value, _match in [
    ("tile-nan", {"tile_shape": float("nan")}, "tile_shape must be one whole number"),
    ("tile-sliver", {"tile_shape": (16, 1.5)}, "tile_shape"),
    ("halo-inf", {"tile_shape": 16, "halo": float("inf")}, "halo must be"),
    ("dedup-nan", {"dedup_iou": float("nan")}, "dedup_iou"),
    ("min-size-nan", {"min_size": float("nan")}, "min_size"),
    ("link-inf", {"link_iou": float("inf")}, "link_iou"),
    ("planes-nan", {"planes": [0, float("nan")]}, "planes must be whole-number indices"),
    ("planes-outside", {"planes": range(100, 200)}, r"planes must be .* in 0\.\.1"),
    ("limits-nan", {"contrast_limits": (float("nan"), float("nan"))}, "contrast_limits"),
    ("limits-reversed", {"contrast_limits": (200, 10)}, "reversed"),
]:
    everything_error_row(f"everything-{_name}", _value, _match)


@headless("everything-too-many-tiles", "tile_shape=16 on a 100000 x 100000 image", "error")
def _(ctx: SimpleNamespace) -> None:
    from napari_mobilesam.engine.tiling import make_tiles

    with pytest.raises(ValueError, match="tile_shape .* tiles .* use larger tiles"):
        make_tiles((100_000, 100_000), 16, 0)


@headless("limits-inf-to-uint8", "to_uint8_rgb(image, contrast_limits=(0, inf))", "error")
def _(ctx: SimpleNamespace) -> None:
    for limits in [(0, np.inf), (np.nan, 1), (-np.inf, 0), (10, 2)]:
        with pytest.raises(ValueError, match="contrast_limits"):
            to_uint8_rgb(np.zeros((4, 4), np.float32), contrast_limits=limits)
    with pytest.raises(ValueError, match="contrast_limits"):
        StackEmbeddings(ctx.env.stub(), np.zeros((2, 8, 8)), contrast_limits=(5, np.nan))


@headless("float-plane-one-inf", "a float plane with one +inf and one NaN pixel", "ok")
def _(ctx: SimpleNamespace) -> None:
    image = np.random.default_rng(4).random((24, 32)).astype(np.float32)
    image[3, 3], image[5, 5] = np.inf, np.nan
    with no_warnings():
        out = to_uint8_rgb(image)
    assert out.max() == 255 and np.count_nonzero(out[..., 0]) > out[..., 0].size // 2


@headless("masks-to-labels-bad-rle", "masks_to_labels with malformed RLE records", "error")
def _(ctx: SimpleNamespace) -> None:
    from napari_mobilesam import masks_to_labels

    bad = [
        ({"size": [2, 2], "counts": [1, 9]}, "add up to H \\* W"),
        ({"size": [2, 2], "counts": [-1, 5]}, ">= 0"),
        ({"size": [float("nan"), 2], "counts": [4]}, "'size' must be"),
        ({"size": [2, 2], "counts": [[1, 3]]}, "'counts' must be"),
        ({"size": [2, 2], "counts": ["a", "b"]}, "'counts' must be"),
        ({"counts": [4]}, "'size' must be"),
    ]
    for rle, match in bad:
        with pytest.raises(ValueError, match=f"records\\[1\\]: .*{match}"):
            masks_to_labels([{"segmentation": np.ones((2, 2), bool)}, {"segmentation": rle}])
    with pytest.raises(ValueError, match="shape"):
        masks_to_labels([], shape=(np.nan, 3))


@headless("masks-to-labels-none-found", "masks_to_labels([], shape=image.shape)", "ok")
def _(ctx: SimpleNamespace) -> None:
    from napari_mobilesam import masks_to_labels

    for shape in [(24, 32), (24, 32, 3)]:
        labels = masks_to_labels([], shape=shape)
        assert labels.shape == (24, 32) and labels.dtype == np.int32 and not labels.any()


# ------------------------------------------------------------------------- run the table
@pytest.mark.parametrize("case", HEADLESS, ids=[r.id for r in HEADLESS])
def test_headless(case: Row, env: SimpleNamespace, tmp_path: Path, monkeypatch) -> None:
    case.check(SimpleNamespace(env=env, tmp_path=tmp_path, monkeypatch=monkeypatch))


# ===================================================================== the widget (Qt rows)
class GatedPredictor(FakePredictor):
    """The stand-in predictor whose "encode" waits until the test releases it.

    ``started`` is set when a worker is inside the encode, so a test can act at exactly that
    moment (cancel, remove a layer, close the widget, change the device).
    """

    def __init__(self) -> None:
        super().__init__()
        self.started = threading.Event()
        self.release = threading.Event()

    def set_image(self, image: np.ndarray, **kwargs: Any) -> None:
        self.started.set()
        assert self.release.wait(WORKER_TIMEOUT_MS / 1000), "the test never released the encode"
        super().set_image(image)


def press(viewer: Any, key: str) -> None:
    viewer.keymap[coerce_keybinding(key)](viewer)


def wait_idle(w: SimpleNamespace) -> None:
    widget = w.widget
    w.qtbot.waitUntil(
        lambda: widget.worker is None and not widget.interactive.timer.isActive(),
        timeout=WORKER_TIMEOUT_MS,
    )


def wait_encoding(w: SimpleNamespace) -> None:
    """Wait, running the event loop (workers are started from it), until a worker is inside
    the gated encode."""
    w.qtbot.waitUntil(w.predictor.started.is_set, timeout=WORKER_TIMEOUT_MS)
    assert w.widget.worker is not None


@pytest.fixture
def dock(make_napari_viewer, qtbot, monkeypatch):
    """``dock(data, predictor=None, **image_kwargs)``: a viewer with the widget docked from the
    plugin menu, prompt layers, and a target Labels layer that already holds label 7."""

    docked: list[SimpleNamespace] = []

    def make(data: Any, predictor: Any = None, **image_kwargs: Any) -> SimpleNamespace:
        viewer = make_napari_viewer()
        image = viewer.add_image(data, **image_kwargs)
        dock_widget, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
        predictor = predictor or FakePredictor()
        widget.use_predictor(predictor, None, "cpu")
        labels = create_aligned_labels(image)
        labels.data[..., :3, :3] = 7
        viewer.add_layer(labels)
        widget.set_labels_layer(labels)
        points, shapes = widget.create_prompt_layers()
        w = SimpleNamespace(
            viewer=viewer,
            image=image,
            widget=widget,
            dock=dock_widget,
            labels=labels,
            points=points,
            shapes=shapes,
            predictor=predictor,
            qtbot=qtbot,
            monkeypatch=monkeypatch,
        )
        docked.append(w)
        return w

    yield make
    # A failed row must not leave a worker waiting in a gated encode for the next rows.
    for w in docked:
        if isinstance(w.predictor, GatedPredictor):
            w.predictor.release.set()
        qtbot.waitUntil(lambda w=w: w.widget.worker is None, timeout=WORKER_TIMEOUT_MS)


PLANE = np.random.default_rng(3).integers(0, 255, (40, 50), dtype=np.uint8)


def status(w: SimpleNamespace) -> str:
    return str(w.widget._status_label.value)


def synchronous_no_op(id: str, given: str, add: Callable[[SimpleNamespace], None], says: str):
    """A widget row where the prompts give no object: the status says why, K commits nothing."""

    def check(ctx: Any) -> None:
        w = ctx.dock(np.stack([PLANE] * 3) if "slice" in id else PLANE)
        w.widget.live = False
        with unchanged(w.labels):
            add(w)
            assert w.widget.segment() == []
            assert says in status(w)
            press(w.viewer, "k")
            assert w.predictor.calls == []
        assert "nothing to commit" in status(w)

    widget_row(id, given, "no-op")(check)


synchronous_no_op("widget-no-prompt", "Segment and K with no prompt", lambda w: None, "0 object")
synchronous_no_op(
    "widget-point-off-image",
    "a click beside the image",
    lambda w: w.points.add([[-20, 70]]),
    "1 point(s) outside the image ignored",
)
synchronous_no_op(
    "widget-point-off-slice",
    "a point on slice 2 while slice 0 is shown",
    lambda w: w.points.add([[2, 10, 10]]),
    "0 object(s)",
)
synchronous_no_op(
    "widget-negative-only",
    "negative points only",
    lambda w: (w.widget.toggle_point_polarity(), w.points.add([[10, 10], [20, 20]])),
    "2 negative point(s) with no object ignored",
)
synchronous_no_op(
    "widget-non-rectangles",
    "an ellipse and a polygon in the boxes layer",
    lambda w: (
        w.shapes.add_ellipses(np.array([[5, 5], [5, 15], [15, 15], [15, 5]])),
        w.shapes.add_polygons(np.array([[5, 5], [20, 8], [9, 30]])),
    ),
    "2 non-rectangle shape(s) ignored",
)
synchronous_no_op(
    "widget-box-outside",
    "a rectangle drawn beside the image",
    lambda w: w.shapes.add_rectangles(np.array([[-30, -30], [-30, -5], [-10, -5], [-10, -30]])),
    "1 box(es) outside the image ignored",
)


@widget_row("widget-box-partly-outside", "a rectangle dragged past the image's corner", "ok")
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE)
    w.widget.live = False
    before = w.labels.data.copy()
    w.shapes.add_rectangles(np.array([[30, 40], [30, 90], [80, 90], [80, 40]]))
    objects = w.widget.segment()
    np.testing.assert_allclose(w.predictor.calls[0]["box"], [40, 30, 49.5, 39.5])
    ids = w.widget.commit()
    assert ids == [8]
    changed = w.labels.data != before
    assert changed.any() and (w.labels.data[changed] == 8).all()  # only the new id was written
    assert objects[0].mask.shape == PLANE.shape


@widget_row("widget-3d-view", "Segment while the viewer shows 3D", "error")
def _(ctx: Any) -> None:
    w = ctx.dock(np.stack([PLANE] * 3))
    w.widget.live = False
    w.points.add([[0, 10, 10]])
    w.viewer.dims.ndisplay = 3
    with unchanged(w.labels):
        with pytest.raises(PlaneError, match="switch the viewer to the 2D view"):
            w.widget.segment()
        w.widget.interactive.segment_clicked()  # the button: the message goes to the status line
    assert "switch the viewer to the 2D view" in status(w)


def widget_commit_refused(
    id: str, given: str, make: Callable[[SimpleNamespace], Labels], says: str
):
    """A widget row where the chosen Labels layer cannot take the masks."""

    def check(ctx: Any) -> None:
        w = ctx.dock(PLANE)
        w.widget.live = False
        target = make(w)
        w.viewer.add_layer(target)
        w.widget.set_labels_layer(target)
        w.points.add([[10, 10]])
        shown: list[str] = []
        w.monkeypatch.setattr("napari_mobilesam.widget.status_line.show_warning", shown.append)
        with unchanged(target):
            press(w.viewer, "k")  # the K key: a notification, no traceback
            with pytest.raises(LabelsError, match=says):
                w.widget.commit()  # the scripting call raises
        assert len(shown) == 1 and says.split(" ")[0] in shown[0]
        assert status(w).startswith("not committed:")
        assert len(w.points.data) == 1  # the prompts are kept for another try

    widget_row(id, given, "error")(check)


widget_commit_refused(
    "widget-labels-other-shape",
    "the chosen Labels layer is (10, 10)",
    lambda w: Labels(np.zeros((10, 10), np.uint16), name="small"),
    "has shape",
)
widget_commit_refused(
    "widget-labels-full",
    "uint8 Labels with 255 used",
    lambda w: Labels(np.full(PLANE.shape, 255, np.uint8), name="full"),
    "is full",
)
widget_commit_refused(
    "widget-labels-misaligned",
    "Labels of the right shape but translated",
    lambda w: Labels(np.zeros(PLANE.shape, np.uint8), translate=(3, 3), name="moved"),
    "do not line up",
)


def widget_image_row(id: str, given: str, data: Any, **image_kwargs: Any):
    """An image of some dtype or layout: the model gets uint8 RGB of the plane, commit works."""

    def check(ctx: Any) -> None:
        w = ctx.dock(data, **image_kwargs)
        w.widget.live = False
        w.points.add([[10, 12]])
        with no_warnings():
            objects = w.widget.segment()
        (encoded,) = w.predictor.encoded
        assert encoded.shape == (*PLANE.shape, 3) and encoded.dtype == np.uint8
        assert len(objects) == 1
        assert w.widget.commit() == [8] and (w.labels.data == 8).any()

    widget_row(id, given, "ok")(check)


widget_image_row("widget-image-rgba", "an RGBA image", np.dstack([PLANE] * 4), rgb=True)
widget_image_row("widget-image-uint16", "a 16-bit image", PLANE.astype(np.uint16) * 200)
widget_image_row("widget-image-int16", "a signed image", PLANE.astype(np.int16) - 128)
widget_image_row("widget-image-bool", "a boolean image", PLANE > 128)
NAN_PLANE = PLANE.astype(np.float32)
NAN_PLANE[:5] = np.nan
NAN_PLANE[5, :5] = np.inf
widget_image_row("widget-image-float-nan", "float32 with NaN and inf rows", NAN_PLANE)
widget_image_row("widget-image-all-nan", "an all-NaN float image", np.full(PLANE.shape, np.nan))


@widget_row(
    "widget-prompts-other-ndim-scale", "2D points with their own scale over a 3D image", "ok"
)
def _(ctx: Any) -> None:
    w = ctx.dock(np.stack([PLANE] * 3), scale=(1, 2, 2))
    w.widget.live = False
    points = w.viewer.add_points([[20, 24]], scale=(1, 1))  # world (20, 24) = image (10, 12)
    w.widget.set_prompt_layers(points, None)
    w.viewer.dims.set_point(0, 1)
    objects = w.widget.segment()
    assert len(objects) == 1 and objects[0].plane.slice_index == (1, None, None)
    np.testing.assert_allclose(w.predictor.calls[0]["point_coords"], [[12, 10]])


@widget_row(
    "widget-remove-image-mid-run", "the image layer is removed while it is encoded", "no-op"
)
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    with unchanged(w.labels):
        w.points.add([[10, 10]])
        wait_encoding(w)
        w.viewer.layers.remove(w.image)
        w.predictor.release.set()
        wait_idle(w)
    assert w.widget.objects == [] and w.widget.image_layer is None
    assert "Choose an image layer" in status(w)
    assert w.widget.preview_layer is None


@widget_row("widget-remove-points-mid-run", "the points layer is removed while encoding", "no-op")
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    with unchanged(w.labels):
        w.points.add([[10, 10]])
        wait_encoding(w)
        w.viewer.layers.remove(w.points)
        w.predictor.release.set()
        wait_idle(w)
    assert w.widget.points_layer is None and w.widget.objects == []
    assert "0 object(s)" in status(w)


@widget_row("widget-remove-labels-mid-commit", "the target Labels is removed while K waits", "ok")
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    old = w.labels
    with unchanged(old):
        w.points.add([[10, 10]])
        wait_encoding(w)
        press(w.viewer, "k")  # commit as soon as the run is done
        w.viewer.layers.remove(old)
        w.predictor.release.set()
        wait_idle(w)
    new = w.widget.labels_layer
    assert new is not None and new is not old and (new.data == 1).any()  # a new layer got it


@widget_row("widget-close-mid-run", "the widget is closed while it encodes", "no-op")
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    errors: list[Exception] = []
    with unchanged(w.labels):
        w.points.add([[10, 10]])
        wait_encoding(w)
        worker = w.widget.worker
        worker.errored.connect(errors.append)
        press(w.viewer, "k")
        w.viewer.window.remove_dock_widget(w.dock)
        with w.qtbot.waitSignal(worker.finished, timeout=WORKER_TIMEOUT_MS):
            w.predictor.release.set()
    assert errors == [] and w.widget.objects == []
    assert coerce_keybinding("k") not in w.viewer.keymap
    assert all(layer.name != "MobileSAM preview" for layer in w.viewer.layers)


@widget_row("widget-cancel-mid-encode", "Cancel (after K) while the plane is encoded", "no-op")
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    with unchanged(w.labels):
        w.points.add([[10, 10]])
        wait_encoding(w)
        worker = w.widget.worker
        press(w.viewer, "k")
        w.widget._cancel_button.native.click()
        with w.qtbot.waitSignal(worker.finished, timeout=WORKER_TIMEOUT_MS):
            w.predictor.release.set()
        wait_idle(w)
    # K asked for a commit; Cancel means it is not done, and the status line says so.
    assert w.widget.objects == [] and status(w) == "not committed: cancelled"
    assert len(w.points.data) == 1  # the prompt is still there


class FailingGatedPredictor(GatedPredictor):
    """The gated encode fails once released (a model error in the worker)."""

    def set_image(self, image: np.ndarray, **kwargs: Any) -> None:
        super().set_image(image)
        raise RuntimeError("simulated model failure")


@widget_row(
    "widget-commit-after-rescale-mid-run",
    "K right after a click while the image is rescaled and the plane is encoded",
    "ok",
)
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    w.points.add([[20, 30]])
    wait_encoding(w)
    w.image.contrast_limits = (10, 200)  # the run in flight is now stale
    press(w.viewer, "k")
    w.predictor.release.set()
    wait_idle(w)
    # Done after the run, from the prompts on screen, with the new limits.
    assert status(w).startswith("committed id(s) [8]"), status(w)
    assert (w.labels.data == 8).sum() == 9 and len(w.points.data) == 0
    assert w.widget.objects == []


@widget_row("widget-commit-during-failing-run", "K while a run is on that then fails", "error")
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=FailingGatedPredictor())
    shown: list[str] = []
    w.monkeypatch.setattr("napari_mobilesam.widget.status_line.show_error", shown.append)
    with unchanged(w.labels):
        w.points.add([[20, 30]])
        wait_encoding(w)
        press(w.viewer, "k")
        w.predictor.release.set()
        wait_idle(w)
    assert status(w) == "not committed: the run failed: RuntimeError: simulated model failure"
    assert len(shown) == 1 and "simulated model failure" in shown[0]
    assert len(w.points.data) == 1  # the prompt is kept for another try


@widget_row(
    "widget-commit-then-image-removed",
    "K while the plane is encoded, then the image layer is removed",
    "no-op",
)
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    with unchanged(w.labels):
        w.points.add([[20, 30]])
        wait_encoding(w)
        press(w.viewer, "k")
        w.viewer.layers.remove(w.image)
        w.predictor.release.set()
        wait_idle(w)
    assert status(w).startswith("not committed: Choose an image layer"), status(w)


@widget_row(
    "widget-rapid-edits",
    "90 point edits (add, remove, add) in a burst while a run is in flight",
    "ok",
)
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    applied: list[int] = []
    apply = w.widget.interactive.apply_result

    def spy(generation: int, request: Any, result: Any) -> bool:
        landed = apply(generation, request, result)
        if landed:
            applied.append(len(request.prompts.point_indices))
        return landed

    w.widget.interactive.apply_result = spy
    with unchanged(w.labels):
        w.points.add([[10, 10]])
        wait_encoding(w)
        for i in range(30):
            w.points.add([[11 + i % 20, 12 + i % 25]])
            w.points.selected_data = {len(w.points.data) - 1}
            w.points.remove_selected()
            w.points.add([[12 + i % 20, 10 + i % 25]])
        w.predictor.release.set()
        wait_idle(w)
    assert applied[-1] == 31 and all(n == 31 for n in applied)  # only the newest prompts landed
    assert len(w.predictor.encoded) == 1  # the plane was encoded once, then cached
    assert len(w.widget.objects) == 1


@widget_row("widget-device-switch-mid-run", "the device is changed while a run is on", "ok")
def _(ctx: Any) -> None:
    w = ctx.dock(PLANE, predictor=GatedPredictor())
    with unchanged(w.labels):
        w.points.add([[10, 10]])
        wait_encoding(w)
        w.widget.device = "auto"  # resolves to the CPU here: the same predictor is kept
        w.predictor.release.set()
        wait_idle(w)
    assert len(w.widget.objects) == 1
    assert len(w.predictor.encoded) == 2  # embeddings belong to a model: encoded again
    assert "1 object(s)" in status(w)


@widget_row(
    "widget-cuda-oom-falls-back",
    "CUDA 'out of memory' on the first encode (simulated), in the worker",
    "warning+result",
)
def _(ctx: Any) -> None:
    cpu = FakePredictor()
    pretend_cuda(ctx.monkeypatch, cpu)
    w = ctx.dock(PLANE, predictor=FailingOnGpu())
    w.widget.use_predictor(w.predictor, None, "cuda")
    shown: list[str] = []
    w.monkeypatch.setattr("napari_mobilesam.widget.status_line.show_warning", shown.append)
    with unchanged(w.labels):
        w.points.add([[10, 10]])
        w.qtbot.waitUntil(lambda: len(w.widget.objects) == 1, timeout=WORKER_TIMEOUT_MS)
        wait_idle(w)
    (message,) = shown  # in the notification area
    assert "failed on cuda" in message and "out of memory" in message and "the CPU" in message
    assert len(w.widget.objects) == 1 and len(cpu.encoded) == 1
    assert w.widget._device_label.value.startswith("cpu")


# ------------------------------------------------------------------------- run the table
@pytest.mark.qt
@pytest.mark.parametrize("case", WIDGET, ids=[r.id for r in WIDGET])
def test_widget(case: Row, dock: Callable[..., SimpleNamespace], monkeypatch) -> None:
    case.check(SimpleNamespace(dock=dock, monkeypatch=monkeypatch))


def test_the_table_covers_enough() -> None:
    rows = HEADLESS + WIDGET
    assert len({r.id for r in rows}) == len(rows) >= 40
    assert {r.outcome for r in rows} == set(OUTCOMES)


# ------------------------------------------------------------------- random input (hypothesis)
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Mostly near the image, sometimes far outside, huge, negative or not finite.
COORDINATE = st.one_of(
    st.floats(-300, 700, allow_nan=False),
    st.sampled_from([0.0, -1.0, 1e7, -1e7, 1e38, -1e300, 1e300, np.nan, np.inf, -np.inf]),
)


def far_outside(xy: np.ndarray, size: tuple[int, int]) -> bool:
    """The documented limit: more than one image size outside the image."""
    height, width = size
    x, y = xy[..., 0], xy[..., 1]
    return bool(((x < -width) | (x > 2 * width) | (y < -height) | (y > 2 * height)).any())


@FAST
@given(
    size=st.tuples(st.integers(1, 300), st.integers(1, 300)),
    points=st.lists(st.tuples(COORDINATE, COORDINATE), max_size=4),
    box=st.none() | st.tuples(COORDINATE, COORDINATE, COORDINATE, COORDINATE),
    multimask=st.booleans(),
    data=st.data(),
)
def test_random_prompts_give_masks_or_a_value_error(env, size, points, box, multimask, data):
    """Any prompt gives valid masks with finite scores, or a ValueError that says why."""
    labels = data.draw(
        st.lists(st.sampled_from([0, 1, 1, 2]), min_size=len(points), max_size=len(points))
    )
    predictor = image_predictor(env, size)
    coords = np.array(points, dtype=np.float64).reshape(-1, 2)
    box_arr = None if box is None else np.array(box, dtype=np.float64)
    prompts = [coords] + ([] if box_arr is None else [box_arr.reshape(2, 2)])
    expect_error = (
        not all(np.isfinite(p).all() for p in prompts)
        or any(far_outside(p, size) for p in prompts if np.isfinite(p).all())
        or (box_arr is not None and (box_arr[2] < box_arr[0] or box_arr[3] < box_arr[1]))
        or 2 in labels
    )
    kwargs = {"box": box_arr, "multimask_output": multimask}
    if points:
        kwargs.update(point_coords=coords, point_labels=np.array(labels))
    try:
        out = predictor.predict(**kwargs)
    except ValueError as exc:
        assert expect_error and str(exc), (kwargs, exc)
        return
    assert not expect_error, kwargs
    assert_prediction(out, size, 3 if multimask else 1)


IMAGE_DTYPES = [np.bool_, np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64]
IMAGE_DTYPES += [np.float16, np.float32, np.float64]


@st.composite
def images(draw: Any, dtypes: list[Any] = IMAGE_DTYPES, max_side: int = 40) -> np.ndarray:
    """Small images of any dtype, 2D or with 1 to 5 channels; floats may hold NaN and inf."""
    shape = draw(st.tuples(st.integers(1, max_side), st.integers(1, max_side)))
    channels = draw(st.sampled_from([None, None, 1, 2, 3, 4, 5]))
    shape = shape if channels is None else (*shape, channels)
    return draw(hnp.arrays(draw(st.sampled_from(dtypes)), shape))


@FAST
@given(
    image=images(),
    points=st.none() | st.lists(st.tuples(COORDINATE, COORDINATE), min_size=1, max_size=3),
    bboxes=st.none() | st.lists(st.tuples(*[st.floats(-20, 60)] * 4), min_size=1, max_size=2),
)
def test_random_images_through_mobilesam(env, image, points, bboxes):
    """MobileSAM.predict on any small image and prompts: valid Results or a ValueError.

    Without prompts the call segments everything (a 2x2 grid here, to stay quick): any number
    of objects, 0 included."""
    everything = points is None and bboxes is None
    grid = {"points_per_side": 2} if everything else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoContrastWarning)
        try:
            res = env.sam.predict(image, points=points, bboxes=bboxes, **grid)
        except ValueError as exc:
            assert str(exc)
            return
    n = len(res)
    assert n >= (0 if everything else 1)
    assert res.masks.shape == (n, *image.shape[:2]) and res.masks.dtype == np.bool_
    assert res.scores.shape == (n,) and np.isfinite(res.scores).all()
    assert res.orig_shape == image.shape[:2]


LIMIT = st.floats(allow_nan=True, allow_infinity=True)


@FAST
@given(
    image=hnp.arrays(
        st.sampled_from([*IMAGE_DTYPES, np.complex64]),
        hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=6),
    ),
    contrast_limits=st.none()
    | st.tuples(LIMIT, LIMIT)
    | st.tuples(LIMIT)
    | st.tuples(LIMIT, LIMIT, LIMIT),
    rgb=st.none() | st.booleans(),
)
def test_random_arrays_through_to_uint8_rgb(image, contrast_limits, rgb):
    """to_uint8_rgb of anything: (H, W, 3) C-contiguous uint8, or a ValueError that says why."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value noise from numpy
        warnings.simplefilter("ignore", NoContrastWarning)
        try:
            out = to_uint8_rgb(image, contrast_limits=contrast_limits, rgb=rgb)
        except ValueError as exc:
            assert str(exc)
            return
    assert out.shape == (*image.shape[:2], 3) and out.dtype == np.uint8
    assert out.flags.c_contiguous
