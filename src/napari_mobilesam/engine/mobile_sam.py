"""``MobileSAM``: a one-call interface, ``MobileSAM("mobile_sam.pt").predict(image, points=...)``.

Prompt semantics (coordinates are (x, y) = (column, row) in image pixels, boxes XYXY):

- ``points=[x, y]``: one point, one object.
- ``points=[[x, y], [x, y]]`` with ``labels=[1, 1]``: one object per point.
- ``points=[[[x, y], [x, y]]]`` with ``labels=[[1, 0]]``: one object from several points
  (1 = foreground, 0 = background; background points are honoured).
- ``bboxes=[x0, y0, x1, y1]``: one object; a list of boxes gives one object per box.
- Boxes and point groups with the same index form one object; their counts must match.
- ``labels`` defaults to all foreground.
- ``each_point=True`` with ``points=[[x, y], ...]``: one object per foreground point, every
  background point added to each of them; decoded in batches.

Images are numpy arrays, PIL images or paths; colour is RGB (not BGR). Grayscale, RGBA, 16-bit,
float and boolean images are converted by :func:`napari_mobilesam.to_uint8_rgb`; palette images,
16-bit PNGs and EXIF orientation by :func:`~.image_conversion.image_from_pil`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.engine.image_conversion import (
    image_from_pil,
    is_pil_image,
    shrink_for_encoder,
    to_uint8_rgb,
)
from napari_mobilesam.engine.prompt_checks import as_float_array, check_labels


@dataclass
class Results:
    """Objects found for one image, in prompt order (by predicted IoU, best first, for
    automatic segmentation).

    Attributes:
      masks: (N, H, W) bool, one mask per object.
      scores: (N,) float32 predicted IoU of each mask.
      low_res_logits: (N, 256, 256) float32, usable as ``mask_input`` for refinement; None
        for automatic segmentation (no prompts).
      orig_shape: (H, W) of the image.
      image: (H, W, 3) uint8 RGB the model saw (for :meth:`plot`), or None.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray | None
    orig_shape: tuple[int, int]
    image: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.masks)

    @property
    def boxes(self) -> np.ndarray:
        """(N, 4) float32 XYXY boxes of the masks, last column/row inclusive (segment-anything's
        convention); an empty mask gives (0, 0, 0, 0)."""
        out = np.zeros((len(self.masks), 4), dtype=np.float32)
        for i, mask in enumerate(self.masks):
            rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
            if rows.size:
                out[i] = (cols[0], rows[0], cols[-1], rows[-1])
        return out

    def to_labels(self, min_size: int = 0, order: str = "area") -> np.ndarray:
        """(H, W) int32 instance labels 1..N without overlaps; see
        :func:`napari_mobilesam.masks_to_labels` for ``order`` and ``min_size``."""
        from napari_mobilesam.engine.instance_labels import masks_to_labels

        records = [
            {"segmentation": m, "predicted_iou": float(s)}
            for m, s in zip(self.masks, self.scores, strict=True)
        ]
        return masks_to_labels(records, self.orig_shape, min_size=min_size, order=order)

    def plot(self, alpha: float = 0.5, boxes: bool = True) -> np.ndarray:
        """(H, W, 3) uint8 RGB picture: the image with every mask tinted in its own colour
        (and its box outlined), e.g. ``PIL.Image.fromarray(res.plot()).save("out.png")``."""
        if self.image is not None and self.image.shape[:2] == tuple(self.orig_shape):
            canvas = self.image.astype(np.float32)
        else:
            canvas = np.zeros((*self.orig_shape, 3), dtype=np.float32)
        colours = _palette(len(self.masks))
        # Larger masks first, so a small object on a large one stays visible.
        for i in np.argsort([-int(m.sum()) for m in self.masks], kind="stable"):
            mask = self.masks[i]
            canvas[mask] = canvas[mask] * (1 - alpha) + colours[i] * alpha
        if boxes:
            for i, (x0, y0, x1, y1) in enumerate(self.boxes.astype(int)):
                if self.masks[i].any():
                    canvas[y0 : y1 + 1, [x0, x1]] = colours[i]
                    canvas[[y0, y1], x0 : x1 + 1] = colours[i]
        return np.clip(canvas + 0.5, 0, 255).astype(np.uint8)


def _palette(n: int) -> np.ndarray:
    """(n, 3) float32 distinct bright colours (hues spaced by the golden ratio)."""
    hues = (np.arange(n) * 0.618033988749895) % 1.0
    k = (np.array([5.0, 3.0, 1.0])[None] + hues[:, None] * 6) % 6
    rgb = 1 - np.clip(np.minimum(k, 4 - k), 0, 1) * 0.85
    return (rgb * 255).astype(np.float32)


def _load_image(source: str | os.PathLike[str] | np.ndarray | Any) -> np.ndarray:
    """The pixels of a path, a PIL image or an array (palette, 16-bit and EXIF orientation
    handled by :func:`~.image_conversion.image_from_pil`)."""
    if isinstance(source, (str, os.PathLike)):
        from PIL import Image

        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"Image file not found: {path}")
        with Image.open(path) as img:
            return image_from_pil(img)
    if isinstance(source, np.ndarray):
        return source
    if is_pil_image(source):
        return image_from_pil(source)
    raise TypeError(
        f"source must be an image path or a numpy array (or a PIL image), not "
        f"{type(source).__name__}."
    )


_POINT_FORMS = (
    "[x, y], [[x, y], ...] (one object per point) or [[[x, y], ...], ...] (one object per "
    "group, every group with the same number of points)"
)


def _point_groups(
    points: Sequence | np.ndarray | None, labels: Sequence | np.ndarray | int | None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Normalise ``points``/``labels`` to a list of ((N, 2) coords, (N,) labels) per object."""
    if points is None:
        if labels is not None:
            raise ValueError("labels were given without points.")
        return []
    pts = as_float_array(points, "points", _POINT_FORMS)
    if pts.size == 0:
        return []
    if pts.shape[-1] != 2 or pts.ndim > 3:
        raise ValueError(
            "points must be [x, y], [[x, y], ...] (one object per point) or "
            f"[[[x, y], ...], ...] (one object per group); got shape {pts.shape}."
        )
    # Every form becomes (objects, points per object, 2).
    groups = {1: pts[None, None], 2: pts[:, None], 3: pts}[pts.ndim]
    n_objects, n_points = groups.shape[:2]
    if labels is None:
        lab = np.ones((n_objects, n_points), dtype=np.int64)
    else:
        expected = f"one entry per point: {n_objects * n_points} for points of shape {pts.shape}"
        lab = as_float_array(labels, "labels", expected)
        if lab.size != n_objects * n_points:
            raise ValueError(f"labels must have {expected}, got {lab.size}.")
        # The same rule as SamPredictor's: a fractional label is refused, never truncated.
        lab = check_labels(lab.reshape(n_objects, n_points), "labels")
    return [(groups[i], lab[i]) for i in range(groups.shape[0])]


def _boxes(bboxes: Sequence | np.ndarray | None) -> list[np.ndarray]:
    if bboxes is None:
        return []
    boxes = as_float_array(bboxes, "bboxes", "[x0, y0, x1, y1] or a list of such boxes")
    if boxes.size == 0:
        return []
    if boxes.shape[-1] != 4 or boxes.ndim > 2:
        raise ValueError(
            f"bboxes must be [x0, y0, x1, y1] or a list of such boxes; got shape {boxes.shape}."
        )
    return list(boxes.reshape(-1, 4))


class MobileSAM:
    """Load MobileSAM once, then segment images with point and box prompts.

    Arguments:
      weights: path of ``mobile_sam.pt`` (or a file with the same layout); None looks in
        ``$NAPARI_MOBILESAM_WEIGHTS``, then the cache, then downloads (see README, Weights).
      device: "cpu", "cuda", "mps" or None for automatic (CUDA > MPS > CPU).
      runtime: what runs the image encoder: "torch" (default), "onnxruntime", "openvino", or
        "auto" (the fastest installed engine that passes its self-check on a CPU, torch on a
        GPU); see :func:`napari_mobilesam.engine.runtimes.use_runtime`.

    Example::

        model = MobileSAM("mobile_sam.pt")
        res = model.predict("cells.png", points=[[120, 80], [300, 210]], labels=[1, 1])
        res.masks  # (2, H, W) bool, one object per point
    """

    def __init__(
        self,
        weights: str | os.PathLike[str] | None = None,
        device: str | None = None,
        runtime: str = "torch",
    ) -> None:
        from napari_mobilesam.engine.predictor import SamPredictor
        from napari_mobilesam.engine.weights import resolve_weights
        from napari_mobilesam.model.build import build_mobile_sam

        # None follows the documented order: $NAPARI_MOBILESAM_WEIGHTS, the cache, a download.
        self.weights = resolve_weights(weights)
        self.model = build_mobile_sam(self.weights, device=device)
        if runtime != "torch":
            from napari_mobilesam.engine.runtimes import use_runtime

            use_runtime(self.model, runtime)
        self.predictor = SamPredictor(self.model)
        self._image_key: tuple | None = None
        self._model_image: np.ndarray | None = None

    @property
    def runtime(self) -> str:
        """What runs the image encoder: "torch", "onnxruntime" or "openvino"."""
        from napari_mobilesam.engine.runtimes import runtime_of

        return runtime_of(self.model)

    def export(self, format: str = "onnx", *, out: str | os.PathLike[str], **options: Any) -> Any:
        """Write the encoder and decoder as ONNX (or OpenVINO IR) files into the folder ``out``.

        ``options`` go to :func:`napari_mobilesam.engine.export.export_onnx` (opset, quantize,
        overwrite, multimask, progress). Returns its ``ExportResult`` (the paths written).
        """
        from napari_mobilesam.engine.export import export_onnx

        return export_onnx(self.weights, out, format=format, **options)

    @property
    def device(self):
        return self.model.device

    def set_image(self, source: str | os.PathLike[str] | np.ndarray) -> tuple[int, int]:
        """Encode an image (skipped when it is the same content as the last one); returns (H, W).

        A plane of 4096 pixels or more on a side is reduced by block averaging before it is
        converted (see :func:`~.image_conversion.shrink_for_encoder`), so a huge
        memmap costs memory for the reduced plane only.
        """
        pixels = _load_image(source)
        shape = tuple(int(s) for s in pixels.shape)
        if pixels.size == 0:
            raise ValueError(f"The image is empty (shape {shape}); nothing to segment.")
        size = (shape[0], shape[1]) if len(shape) >= 2 else (shape[0], 1)
        image = to_uint8_rgb(shrink_for_encoder(pixels, self.predictor.transform.target_length))
        # What Results.plot draws on and automatic segmentation reads (full size unless huge).
        self._model_image = image
        key = (size, image.shape, hashlib.blake2b(image.tobytes(), digest_size=16).hexdigest())
        if key != self._image_key:
            self._image_key = None
            self.predictor.set_image(image, original_size=size)
            self._image_key = key
        return size

    def predict(
        self,
        source: str | os.PathLike[str] | np.ndarray,
        points: Sequence | np.ndarray | None = None,
        labels: Sequence | np.ndarray | int | None = None,
        bboxes: Sequence | np.ndarray | None = None,
        multimask_output: bool = False,
        conf: float | None = None,
        verbose: bool = False,
        *,
        each_point: bool = False,
        **everything: Any,
    ) -> Results | list[Results]:
        """Segment one object per prompt (see the module docstring for the prompt forms), or,
        without any prompt, every object in the image.

        Arguments:
          source: an image path, a numpy array, a PIL image, or a list of these (then a list
            of results comes back, one per image, with the same prompts for each).
          multimask_output: each object gets the highest-scoring of 3 candidates.
          conf: drop objects whose predicted IoU is below this (default None keeps all).
          verbose: print one line per image (size, objects, seconds).
          each_point: one object per positive point of ``points`` ((N, 2) with ``labels``
            (N,)); every background point is added to every object's prompt, and all objects
            are decoded in batches (see :mod:`~napari_mobilesam.engine.point_objects`).
          **everything: without prompts, :class:`SamAutomaticMaskGenerator` parameters
            (points_per_side=32, pred_iou_thresh=0.88, ... segment-anything's defaults).
        """
        if isinstance(source, (list, tuple)):
            return [
                self.predict(
                    item,
                    points,
                    labels,
                    bboxes,
                    multimask_output,
                    conf,
                    verbose,
                    each_point=each_point,
                    **everything,
                )  # fmt: skip
                for item in source
            ]
        started = time.perf_counter()
        if each_point:
            if everything or bboxes is not None:
                raise ValueError("each_point=True takes points (and labels) only, no bboxes.")
            result = self._predict_each_point(source, points, labels, multimask_output)
        elif points is None and labels is None and bboxes is None:
            result = self._segment_everything(source, everything)
        else:
            if everything:
                raise TypeError(
                    f"Unexpected arguments {sorted(everything)}: automatic segmentation "
                    "parameters apply only without points and boxes."
                )
            result = self._predict_prompts(source, points, labels, bboxes, multimask_output)
        if conf is not None:
            keep = result.scores >= conf
            result = Results(
                result.masks[keep],
                result.scores[keep],
                None if result.low_res_logits is None else result.low_res_logits[keep],
                result.orig_shape,
                result.image,
            )
        if verbose:
            h, w = result.orig_shape
            print(f"{w}x{h}: {len(result)} objects, {time.perf_counter() - started:.2f} s")
        return result

    def _segment_everything(self, source: Any, params: dict[str, Any]) -> Results:
        """Automatic segmentation (segment-anything's generator) of one image."""
        import copy

        from napari_mobilesam.engine.automatic_mask_generator import (
            SamAutomaticMaskGenerator,
            checked_image,
        )

        size = self.set_image(source)
        image = self._model_image
        if image.shape[:2] != size:  # reduced for the encoder: the masks need full size
            image = to_uint8_rgb(_load_image(source))
        image = checked_image(image)
        # A predictor of its own around the same model (no second copy of the weights), so
        # the embedding cached for prompts stays; it starts from that embedding.
        twin = copy.copy(self.predictor)
        generator = SamAutomaticMaskGenerator(twin, **params)
        found = generator.generate_candidates(image, self.predictor.get_image_embedding())
        masks = np.zeros((len(found), *size), dtype=bool)
        for i, c in enumerate(found):
            masks[i][c.mask.slices()] = c.mask.crop()
        return Results(
            masks=masks,
            scores=np.asarray([c.predicted_iou for c in found], dtype=np.float32),
            low_res_logits=None,
            orig_shape=size,
            image=image,
        )

    def _predict_each_point(
        self,
        source: Any,
        points: Sequence | np.ndarray | None,
        labels: Sequence | np.ndarray | int | None,
        multimask_output: bool,
    ) -> Results:
        """One object per positive point, decoded in batches."""
        from napari_mobilesam.engine.point_objects import decode_objects, each_point_prompts

        if points is None:
            raise ValueError("each_point=True needs points=[[x, y], ...].")
        pts = as_float_array(points, "points", "(N, 2) (x, y) points")
        pts = pts.reshape(-1, 2) if pts.size and pts.shape[-1] == 2 else pts
        labs = None if labels is None else np.reshape(as_float_array(labels, "labels", "(N,)"), -1)
        prompts = each_point_prompts(pts, labs)
        if not prompts:
            raise ValueError("each_point=True needs at least one foreground point (label 1).")
        h, w = self.set_image(source)
        decoded = decode_objects(self.predictor, prompts, multimask_output)
        return Results(
            masks=np.stack([decoded.mask(i) for i in range(len(decoded))]),
            scores=decoded.scores,
            low_res_logits=decoded.low_res_logits,
            orig_shape=(h, w),
            image=self._model_image if self._model_image.shape[:2] == (h, w) else None,
        )

    def _predict_prompts(
        self,
        source: Any,
        points: Sequence | np.ndarray | None,
        labels: Sequence | np.ndarray | int | None,
        bboxes: Sequence | np.ndarray | None,
        multimask_output: bool,
    ) -> Results:
        groups = _point_groups(points, labels)
        boxes = _boxes(bboxes)
        if groups and boxes and len(groups) != len(boxes):
            raise ValueError(
                f"{len(boxes)} box(es) and {len(groups)} point group(s) were given; boxes and "
                "point groups with the same index form one object, so their counts must match."
            )
        if not groups and not boxes:
            raise ValueError("Give at least one prompt: points=[x, y] or bboxes=[x0, y0, x1, y1].")
        for i, (_, labs) in enumerate(groups):
            if not boxes and not (labs == 1).any():
                raise ValueError(
                    f"Point group {i} has only background points (label 0) and no box, so it "
                    "describes no object; add a foreground point (label 1) or a box."
                )
        h, w = self.set_image(source)

        masks, scores, low_res = [], [], []
        for i in range(max(len(groups), len(boxes))):
            coords, labs = groups[i] if groups else (None, None)
            m, s, lr = self.predictor.predict(
                point_coords=coords,
                point_labels=labs,
                box=boxes[i] if boxes else None,
                multimask_output=multimask_output,
            )
            best = int(np.argmax(s))
            masks.append(m[best])
            scores.append(s[best])
            low_res.append(lr[best])
        return Results(
            masks=np.stack(masks),
            scores=np.asarray(scores, dtype=np.float32),
            low_res_logits=np.stack(low_res).astype(np.float32),
            orig_shape=(h, w),
            image=self._model_image if self._model_image.shape[:2] == (h, w) else None,
        )

    __call__ = predict
