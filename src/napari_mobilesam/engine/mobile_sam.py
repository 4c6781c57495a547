"""``MobileSAM``: a one-call interface, ``MobileSAM("mobile_sam.pt").predict(image, points=...)``.

Prompt semantics (coordinates are (x, y) = (column, row) in image pixels, boxes XYXY):

- ``points=[x, y]``: one point, one object.
- ``points=[[x, y], [x, y]]`` with ``labels=[1, 1]``: one object per point.
- ``points=[[[x, y], [x, y]]]`` with ``labels=[[1, 0]]``: one object from several points
  (1 = foreground, 0 = background; background points are honoured).
- ``bboxes=[x0, y0, x1, y1]``: one object; a list of boxes gives one object per box.
- Boxes and point groups with the same index form one object; their counts must match.
- ``labels`` defaults to all foreground.

Images are numpy arrays, PIL images or paths; colour is RGB (not BGR). Grayscale, RGBA, 16-bit,
float and boolean images are converted by :func:`napari_mobilesam.to_uint8_rgb`; palette images,
16-bit PNGs and EXIF orientation by :func:`~.image_conversion.image_from_pil`.
"""

from __future__ import annotations

import hashlib
import os
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
    """Objects found for one image, in prompt order.

    Attributes:
      masks: (N, H, W) bool, one mask per object.
      scores: (N,) float32 predicted IoU of each mask.
      low_res_logits: (N, 256, 256) float32, usable as ``mask_input`` for refinement.
      orig_shape: (H, W) of the image.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray
    orig_shape: tuple[int, int]

    def __len__(self) -> int:
        return len(self.masks)


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
    ) -> Results:
        """Segment one object per prompt (see the module docstring for the prompt forms).

        With ``multimask_output=True`` each object gets its highest-scoring candidate.
        """
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
        )

    __call__ = predict
