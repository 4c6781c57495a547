"""``SamAutomaticMaskGenerator``: segment everything in an image from a grid of point prompts.

The interface, defaults and records are segment-anything's; the work is organised for speed and
bounded memory:

- one image embedding per crop (the whole image is crop 0), then the prompts of that crop are
  decoded on it in batches, as :meth:`SamPredictor.predict_torch` does, but only to the
  decoder's 256 x 256 logits: the predicted-IoU filter comes first, and only the candidates it
  keeps are upscaled to the crop's size (with real weights and the default 0.88 that is a
  fraction of them; upscaling one 1024 x 1024 candidate costs about a tenth of decoding it);
- crop-size float logits exist for a bounded chunk of candidates at a time
  (``logits_budget_bytes``); what survives the filters is kept as the packed bits of its
  bounding box (:class:`~.mask_records.PackedMask`), so a 32 x 32 grid on a 4000 x 4000 image
  stays within a few hundred MiB;
- boxes, filters and NMS work on arrays (torchvision's NMS rule, without importing it).

:meth:`SamAutomaticMaskGenerator.generate_steps` is the same computation as a generator that
yields a :class:`GenerationProgress` after every batch, so a caller can show progress or stop.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .decoder_precision import check_decoder_precision, decoder_autocast
from .image_conversion import to_uint8_rgb
from .mask_records import (
    PackedMask,
    boxes_near_crop_edge,
    build_layer_point_grids,
    coco_encode_rle,
    generate_crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    remove_small_regions,
    stability_score,
    xyxy_to_xywh,
)
from .parameter_checks import checked_number, checked_whole
from .predictor import SamPredictor
from .prompt_threads import map_groups
from .steps import drive, map_steps

OUTPUT_MODES = ("binary_mask", "uncompressed_rle", "coco_rle")
# Upper bounds of the parameters that size the work (beyond them a run would take days or more
# memory than a machine has). 256 points a side is 65536 prompts per crop; 4 crop layers are
# 1 + 4 + 16 + 64 + 256 crops.
MAX_POINTS_PER_SIDE = 256
MAX_CROP_LAYERS = 4
MAX_GRID_POINTS = MAX_POINTS_PER_SIDE**2
MAX_POINTS_PER_BATCH = 1024  # about 0.8 GB of low-res logits at once
MAX_STABILITY_OFFSET = 100.0  # in logits; SAM's masks sit within about +-30


@dataclass
class MaskCandidate:
    """One mask that survived the filters, with segment-anything's numbers.

    Attributes:
      mask: the mask in the full image's frame, packed (its ``box`` is XYXY, inclusive).
      predicted_iou: the decoder's quality estimate (a float32 value).
      stability_score: IoU of the mask at logit thresholds +-offset (a float32 value).
      point: (x, y) prompt in image pixels (float64).
      crop_box: XYXY (exclusive x1, y1) of the crop the mask was found in.
    """

    mask: PackedMask
    predicted_iou: float
    stability_score: float
    point: tuple[float, float]
    crop_box: tuple[int, int, int, int]


@dataclass
class GenerationProgress:
    """Yielded by :meth:`SamAutomaticMaskGenerator.generate_steps` after each batch of prompts.

    Attributes:
      crop: index of the crop being processed; n_crops: how many crops in all.
      prompts_done / prompts_total: prompts decoded so far / in all crops.
      kept: candidates kept so far (before the NMS between crops and post-processing).
    """

    crop: int
    n_crops: int
    prompts_done: int
    prompts_total: int
    kept: int


class SamAutomaticMaskGenerator:
    """Generates masks for a whole image by prompting the model with a grid of points.

    Arguments:
      model_or_predictor: a MobileSAM model (from :func:`napari_mobilesam.build_mobile_sam`) or a
        :class:`~napari_mobilesam.SamPredictor` around one (its current image is replaced).
      points_per_side: the grid has points_per_side**2 points over the image. None when
        ``point_grids`` is given.
      points_per_batch: prompts decoded together (it does not change the result; progress is
        reported once per batch).
      pred_iou_thresh: keep masks whose predicted IoU is above this (0 keeps all).
      stability_score_thresh: keep masks whose stability score is at least this (0 keeps all).
      stability_score_offset: logit offset used by the stability score.
      box_nms_thresh: box IoU above which the lower-scoring of two masks of one crop is dropped.
      crop_n_layers: if > 0, also run on 2^k x 2^k overlapping crops for k = 1..crop_n_layers.
      crop_nms_thresh: box IoU above which a duplicate mask from another crop is dropped
        (masks from smaller crops win).
      crop_overlap_ratio: overlap of the layer-1 crops as a fraction of the image's short side.
      crop_n_points_downscale_factor: layer k uses points_per_side / factor**k points a side.
      point_grids: explicit grids, one (N_k, 2) array per crop layer, (x, y) normalised to
        [0, 1].
      min_mask_region_area: if > 0, fill holes and remove islands smaller than this many pixels
        (8-connected regions) in every mask, then drop new duplicates.
      output_mode: "binary_mask" ((H, W) bool), "uncompressed_rle" (COCO RLE dict with a list of
        counts) or "coco_rle" (compressed, needs pycocotools).
      decoder_precision: "fp32" (default) or "bf16", opt-in where the device has native bf16:
        faster and approximate (bounds in :mod:`napari_mobilesam.engine.decoder_precision`).
    """

    # Crop-size float logits upscaled at a time (8 masks at 1024 x 1024). With every candidate
    # passing the IoU filter (16x16 on 1024 x 1024, 2-core Xeon) a run peaked at 1122 MiB with
    # this budget and at 1528 MiB with 256 MiB, in the same time.
    logits_budget_bytes = 32 * 2**20
    # Prompts decoded together on a CPU. Each prompt's decoder streams its own 4 MiB copies of
    # the image tokens through a dozen passes: 2 at a time keep them in cache. On the 2-core
    # test machine (Xeon, 2 MiB L2 per core) 64 prompts took 13.8 ms each in groups of 2,
    # 15.2-15.8 in groups of 1, 3 or 4 and 23.1 in groups of 8 (benchmarks/README.md).
    decode_chunk = 2

    def __init__(
        self,
        model_or_predictor: Any,
        points_per_side: int | None = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        crop_n_layers: int = 0,
        crop_nms_thresh: float = 0.7,
        crop_overlap_ratio: float = 512 / 1500,
        crop_n_points_downscale_factor: int = 1,
        point_grids: Sequence[np.ndarray] | None = None,
        min_mask_region_area: int = 0,
        output_mode: str = "binary_mask",
        decoder_precision: str = "fp32",
    ) -> None:
        if (points_per_side is None) == (point_grids is None):
            raise ValueError(
                "Give exactly one of points_per_side (a regular grid, e.g. 32) and point_grids "
                "(explicit normalised points); set the other to None."
            )
        # Every parameter that sizes the work is bounded, so a typo cannot hang the constructor
        # or allocate terabytes; every threshold must be a finite number (NaN would silently
        # switch its filter off, since comparisons with NaN are false).
        crop_n_layers = checked_whole(
            "crop_n_layers", crop_n_layers, 0, MAX_CROP_LAYERS,
            hint="Layer k adds 4**k crops (each encoded once); 0 or 1 is usual.",
        )  # fmt: skip
        if points_per_side is not None:
            points_per_side = checked_whole(
                "points_per_side", points_per_side, 1, MAX_POINTS_PER_SIDE,
                hint="(32 is segment-anything's default; 16 is quicker on a CPU).",
            )  # fmt: skip
            factor = checked_whole(
                "crop_n_points_downscale_factor", crop_n_points_downscale_factor, 1,
                MAX_POINTS_PER_SIDE,
            )  # fmt: skip
            for layer in range(crop_n_layers + 1):
                if int(points_per_side / factor**layer) < 1:
                    raise ValueError(
                        f"Crop layer {layer} gets no points: points_per_side={points_per_side} "
                        f"divided by crop_n_points_downscale_factor**{layer} is below 1; use "
                        "more points per side, fewer crop layers or a smaller factor."
                    )
            grids = build_layer_point_grids(points_per_side, crop_n_layers, factor)
        else:
            factor = crop_n_points_downscale_factor
            grids = [_checked_grid(g, k) for k, g in enumerate(point_grids)]
            if len(grids) < crop_n_layers + 1:
                raise ValueError(
                    f"point_grids has {len(grids)} grid(s) but crop_n_layers={crop_n_layers} "
                    f"needs {crop_n_layers + 1} (one for the whole image and one per layer)."
                )
        points_per_batch = checked_whole(
            "points_per_batch", points_per_batch, 1, MAX_POINTS_PER_BATCH,
            hint="(it does not change the result; 64 is segment-anything's default).",
        )  # fmt: skip
        if output_mode not in OUTPUT_MODES:
            raise ValueError(f"output_mode must be one of {OUTPUT_MODES}, not {output_mode!r}.")
        if output_mode == "coco_rle":
            try:
                from pycocotools import mask as _  # noqa: F401
            except ImportError as exc:
                raise ImportError(
                    'output_mode="coco_rle" needs pycocotools (pip install pycocotools); '
                    '"uncompressed_rle" and "binary_mask" work without it.'
                ) from exc
        thresholds = {
            name: checked_number(name, value, 0.0, 1.0)
            for name, value in (
                ("pred_iou_thresh", pred_iou_thresh),
                ("stability_score_thresh", stability_score_thresh),
                ("box_nms_thresh", box_nms_thresh),
                ("crop_nms_thresh", crop_nms_thresh),
            )
        }
        stability_score_offset = checked_number(
            "stability_score_offset", stability_score_offset, 0.0, MAX_STABILITY_OFFSET
        )
        crop_overlap_ratio = checked_number(
            "crop_overlap_ratio", crop_overlap_ratio, 0.0, 1.0, high_open=True
        )
        min_mask_region_area = checked_whole("min_mask_region_area", min_mask_region_area, 0, 2**62)

        if isinstance(model_or_predictor, SamPredictor) or hasattr(
            model_or_predictor, "predict_torch"
        ):
            self.predictor = model_or_predictor
        else:
            self.predictor = SamPredictor(model_or_predictor)
        self.points_per_side = points_per_side
        self.point_grids = grids
        self.points_per_batch = points_per_batch
        self.pred_iou_thresh = thresholds["pred_iou_thresh"]
        self.stability_score_thresh = thresholds["stability_score_thresh"]
        self.stability_score_offset = stability_score_offset
        self.box_nms_thresh = thresholds["box_nms_thresh"]
        self.crop_n_layers = crop_n_layers
        self.crop_nms_thresh = thresholds["crop_nms_thresh"]
        self.crop_overlap_ratio = crop_overlap_ratio
        self.crop_n_points_downscale_factor = factor
        self.min_mask_region_area = min_mask_region_area
        self.output_mode = output_mode
        self.decoder_precision = check_decoder_precision(
            decoder_precision, self.predictor.model.device
        )

    # ------------------------------------------------------------------ public entry points
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks for the whole image.

        Arguments:
          image: (H, W, 3) uint8 RGB. Other images (grayscale, RGBA, 16-bit, float) are first
            converted by :func:`napari_mobilesam.to_uint8_rgb`.

        Returns:
          One dict per mask: ``segmentation`` (see ``output_mode``), ``area`` (int),
          ``bbox`` (XYWH), ``predicted_iou``, ``point_coords`` ([[x, y]]),
          ``stability_score`` and ``crop_box`` (XYWH), ordered as segment-anything orders them.
        """
        return self.to_records(self.generate_candidates(image))

    def generate_candidates(
        self, image: np.ndarray, embedding: torch.Tensor | None = None
    ) -> list[MaskCandidate]:
        """:meth:`generate` without building the records (masks stay packed)."""
        return drive(self.generate_steps(image, embedding))

    def generate_steps(
        self, image: np.ndarray, embedding: torch.Tensor | None = None
    ) -> Generator[GenerationProgress, None, list[MaskCandidate]]:
        """The generation as a generator: yields progress after every batch, returns the
        candidates (closing it early stops the work and leaves nothing behind).

        Arguments:
          image: see :meth:`generate`.
          embedding: (1, 256, 64, 64) embedding of the whole image if already known (e.g. from
            a cache); crops of deeper layers are always encoded.
        """
        image = checked_image(image)
        height, width = image.shape[:2]
        crop_boxes, layers = generate_crop_boxes(
            (height, width), self.crop_n_layers, self.crop_overlap_ratio
        )
        total = sum(len(self.point_grids[layer]) for layer in layers)
        done = 0
        candidates: list[MaskCandidate] = []
        for index, (crop_box, layer) in enumerate(zip(crop_boxes, layers, strict=True)):
            crop_embedding = embedding if index == 0 else None

            def counted(n_prompts: int, crop: int = index) -> GenerationProgress:
                nonlocal done
                done += n_prompts
                return GenerationProgress(crop, len(crop_boxes), done, total, len(candidates))

            crop_steps = self._crop_steps(image, crop_box, layer, crop_embedding)
            candidates.extend((yield from map_steps(crop_steps, counted)))

        if len(crop_boxes) > 1 and candidates:
            # Duplicates across crops: the mask from the smaller crop wins.
            areas = torch.as_tensor(
                [
                    (c.crop_box[2] - c.crop_box[0]) * (c.crop_box[3] - c.crop_box[1])
                    for c in candidates
                ],
                dtype=torch.int64,
            )
            candidates = _nms(candidates, 1 / areas, self.crop_nms_thresh)
        if self.min_mask_region_area > 0 and candidates:
            candidates = self._remove_small_regions(candidates)
        return candidates

    def to_records(self, candidates: list[MaskCandidate]) -> list[dict[str, Any]]:
        """segment-anything's record dicts for ``candidates``, in ``output_mode``."""
        records = []
        for c in candidates:
            mask = c.mask.to_mask()
            if self.output_mode == "binary_mask":
                segmentation: Any = mask
            else:
                segmentation = mask_to_rle(mask)
                if self.output_mode == "coco_rle":
                    segmentation = coco_encode_rle(segmentation)
            records.append(
                {
                    "segmentation": segmentation,
                    "area": c.mask.area,
                    "bbox": xyxy_to_xywh(c.mask.box),
                    "predicted_iou": c.predicted_iou,
                    "point_coords": [[float(c.point[0]), float(c.point[1])]],
                    "stability_score": c.stability_score,
                    "crop_box": xyxy_to_xywh(c.crop_box),
                }
            )
        return records

    # ------------------------------------------------------------------ one crop
    def _crop_steps(
        self,
        image: np.ndarray,
        crop_box: list[int],
        layer: int,
        embedding: torch.Tensor | None,
    ) -> Generator[int, None, list[MaskCandidate]]:
        """Encode one crop, decode its points batch by batch (yielding the batch size), then
        drop duplicates within the crop; returns the survivors in the image frame."""
        x0, y0, x1, y1 = crop_box
        crop = image[y0:y1, x0:x1]
        crop_size = (y1 - y0, x1 - x0)
        predictor = self.predictor
        if embedding is not None:
            predictor.set_image_embedding(embedding, crop_size)
        else:
            predictor.set_image(crop)
        # Grid points (x, y) in the crop's pixels, then in the model's 1024 frame.
        points = self.point_grids[layer] * np.array(crop_size[::-1], dtype=np.float64)[None]
        model_points = predictor.transform.apply_coords(points, crop_size)
        image_box = [0, 0, image.shape[1], image.shape[0]]
        kept: list[MaskCandidate] = []
        scores: list[float] = []
        try:
            for start in range(0, len(points), self.points_per_batch):
                part = slice(start, start + self.points_per_batch)
                found = self._process_batch(
                    model_points[part], points[part], crop_box, image_box, image.shape[:2]
                )
                kept.extend(found)
                scores.extend(c.predicted_iou for c in found)
                yield len(points[part])
        finally:
            predictor.reset_image()
        if not kept:
            return []
        return _nms(kept, torch.tensor(scores, dtype=torch.float32), self.box_nms_thresh)

    @torch.inference_mode()
    def _decode_low_res(
        self, model_points: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predicted IoUs (B, 3) of single-point prompts given in the model's 1024 frame, on
        the predictor's current embedding, and the low-res logits (K, 3, 256, 256) of the K
        prompts (indices (K,)) with a candidate above ``pred_iou_thresh``.

        This is :meth:`SamPredictor.predict_torch` without the upscaling to the image: the
        generator upscales only the candidates that pass the predicted-IoU filter. The IoUs
        come before the decoder's own upscaling, so a prompt whose three candidates all fail
        the filter skips that too (see :meth:`MaskDecoder.forward_kept`).
        """
        predictor = self.predictor
        model = predictor.model
        coords = torch.as_tensor(model_points, device=predictor.device)[:, None, :]
        labels = torch.ones(coords.shape[:2], dtype=torch.int, device=predictor.device)
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
        # The predictor's per-image decoder constants (dense positional encoding and the
        # prompt-independent projections of the first block), where it provides them: they
        # are the same for every point prompt of this crop.
        constants_of = getattr(predictor, "_decoder_constants", None)
        extra: dict[str, Any] = {}
        if constants_of is not None:
            image_pe, extra["image_constants"] = constants_of()
        else:
            image_pe = model.prompt_encoder.get_dense_pe()
        threshold = self.pred_iou_thresh

        def keep(iou_pred: torch.Tensor) -> torch.Tensor:
            if threshold <= 0.0:  # the filter is off: every candidate goes on
                return torch.ones(iou_pred.shape[0], dtype=torch.bool, device=iou_pred.device)
            return (iou_pred.float() > threshold).any(dim=1)

        batch = sparse.shape[0]
        step = max(1, self.decode_chunk if predictor.device.type == "cpu" else batch)

        @torch.inference_mode()
        def decode(start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            part = slice(start, start + step)
            with decoder_autocast(self.decoder_precision, predictor.device):
                lr, io, rows = model.mask_decoder.forward_kept(
                    image_embeddings=predictor.features,
                    image_pe=image_pe,
                    sparse_prompt_embeddings=sparse[part],
                    dense_prompt_embeddings=dense[part],
                    multimask_output=True,
                    keep=keep,
                    **extra,
                )
            return lr.float(), io.float(), rows + start

        # Groups side by side, one torch thread each, on a CPU (engine/prompt_threads.py).
        low_res, iou, kept = zip(
            *map_groups(decode, range(0, batch, step), predictor.device), strict=True
        )
        return torch.cat(low_res), torch.cat(iou), torch.cat(kept)

    @torch.inference_mode()
    def _process_batch(
        self,
        model_points: np.ndarray,
        points: np.ndarray,
        crop_box: list[int],
        image_box: list[int],
        image_size: tuple[int, int],
    ) -> list[MaskCandidate]:
        """Decode one batch of single-point prompts and keep the masks that pass the filters
        (predicted IoU, stability, crop edge), in point-major order."""
        predictor = self.predictor
        low_res, iou, kept = self._decode_low_res(model_points)
        per_point = iou.shape[1]
        # Row of each prompt's logits in low_res (-1: not decoded, every candidate failed).
        row_of = torch.full((iou.shape[0],), -1, dtype=torch.long, device=iou.device)
        row_of[kept] = torch.arange(kept.numel(), device=iou.device)
        low_res = low_res.flatten(0, 1)
        iou = iou.flatten(0, 1).float()
        keep = torch.zeros(iou.shape, dtype=torch.bool, device=iou.device)
        keep.view(-1, per_point)[kept] = True
        if self.pred_iou_thresh > 0.0:
            keep &= iou > self.pred_iou_thresh
        index = keep.nonzero().flatten()
        crop_size = predictor.original_size
        # Crop-size float logits exist for one chunk of candidates at a time.
        chunk = max(1, self.logits_budget_bytes // (4 * crop_size[0] * crop_size[1]))
        out = []
        for start in range(0, index.numel(), chunk):
            part = index[start : start + chunk]
            rows = row_of[part // per_point] * per_point + part % per_point
            # The whole part at once: its size is already bounded by logits_budget_bytes.
            logits = predictor.model.postprocess_masks(
                low_res[rows][:, None], predictor.input_size, crop_size, chunk=chunk
            )[:, 0]
            out += self._filter_masks(
                logits, part, iou[part], points, per_point, crop_box, image_box, image_size
            )
        return out

    def _filter_masks(
        self,
        logits: torch.Tensor,
        index: torch.Tensor,
        iou: torch.Tensor,
        points: np.ndarray,
        per_point: int,
        crop_box: list[int],
        image_box: list[int],
        image_size: tuple[int, int],
    ) -> list[MaskCandidate]:
        """Stability and crop-edge filters on (N, h, w) crop-size logits; pack the survivors.

        ``index`` gives each mask's position in the batch (point index * per_point + output).
        """
        threshold = self.predictor.model.mask_threshold
        stability = stability_score(logits, threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0.0:
            passed = (stability >= self.stability_score_thresh).nonzero().flatten()
            index, logits, iou, stability = (
                index[passed],
                logits[passed],
                iou[passed],
                stability[passed],
            )
        binary = logits > threshold
        boxes = masks_to_boxes(binary)
        inside = ~boxes_near_crop_edge(boxes, crop_box, image_box)
        x0, y0 = crop_box[:2]
        binary_np = binary.cpu().numpy()
        out = []
        for i in inside.nonzero().flatten().tolist():
            px, py = points[int(index[i]) // per_point]
            out.append(
                MaskCandidate(
                    PackedMask.from_crop(
                        binary_np[i], tuple(boxes[i].tolist()), (x0, y0), image_size
                    ),
                    float(iou[i]),
                    float(stability[i]),
                    (float(px) + x0, float(py) + y0),
                    tuple(int(v) for v in crop_box),
                )
            )
        return out

    # ------------------------------------------------------------------ post-processing
    def _remove_small_regions(self, candidates: list[MaskCandidate]) -> list[MaskCandidate]:
        """Fill small holes, remove small islands, then NMS that prefers unchanged masks."""
        area = self.min_mask_region_area
        new_masks: list[PackedMask] = []
        unchanged: list[float] = []
        for c in candidates:
            full = c.mask.to_mask()
            filled, holes_changed = remove_small_regions(full, area, "holes")
            cleaned, islands_changed = remove_small_regions(filled, area, "islands")
            changed = holes_changed or islands_changed
            new_masks.append(PackedMask.from_mask(cleaned) if changed else c.mask)
            unchanged.append(0.0 if changed else 1.0)
        boxes = torch.as_tensor([m.box for m in new_masks], dtype=torch.int64)
        keep = _nms_indices(
            boxes,
            torch.as_tensor(unchanged, dtype=torch.float32),
            max(self.box_nms_thresh, self.crop_nms_thresh),
        )
        out = []
        for i in keep:
            c = candidates[i]
            if unchanged[i] == 0.0:
                c = MaskCandidate(
                    new_masks[i], c.predicted_iou, c.stability_score, c.point, c.crop_box
                )
            out.append(c)
        return out


# ------------------------------------------------------------------------ helpers
def _nms_indices(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> list[int]:
    """Indices kept by greedy box NMS, highest score first.

    torchvision's ``nms`` rule: boxes XYXY, areas without +1, IoU in float32, a box is dropped
    when its IoU with a kept box is > ``threshold``. Written out because importing
    ``torchvision.ops`` loads ``torch._dynamo`` and with it triton, whose LLVM crashes a process
    that holds a Mesa OpenGL context (napari's canvas). Memory stays O(N): one row of IoUs per
    kept box, never an N x N matrix.

    Arguments:
      boxes: (N, 4) XYXY boxes.
      scores: (N,) scores; ties keep the earlier box.
    """
    n = int(boxes.shape[0])
    if n == 0:
        return []
    order = torch.argsort(scores, descending=True, stable=True).numpy()
    b = boxes.numpy().astype(np.float32)[order]
    x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    areas = (x1 - x0) * (y1 - y0)
    alive = np.ones(n, dtype=bool)
    keep = []
    for i in range(n):
        if not alive[i]:
            continue
        keep.append(i)
        rest = slice(i + 1, n)
        width = np.maximum(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0)
        height = np.maximum(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0)
        inter = width * height
        with np.errstate(divide="ignore", invalid="ignore"):  # two empty boxes: 0/0, kept
            iou = inter / (areas[i] + areas[rest] - inter)
        # The float32 IoU is compared with the threshold in float64, as torchvision does.
        alive[rest] &= ~(iou.astype(np.float64) > threshold)
    return order[keep].tolist()


def _nms(
    candidates: list[MaskCandidate], scores: torch.Tensor, threshold: float
) -> list[MaskCandidate]:
    boxes = torch.as_tensor([c.mask.box for c in candidates], dtype=torch.int64)
    return [candidates[i] for i in _nms_indices(boxes, scores, threshold)]


def _checked_grid(grid: Any, layer: int) -> np.ndarray:
    try:
        points = np.asarray(grid, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"point_grids[{layer}] must be numbers, got {grid!r}.") from exc
    if points.ndim != 2 or points.shape[1] != 2 or not 1 <= points.shape[0] <= MAX_GRID_POINTS:
        raise ValueError(
            f"point_grids[{layer}] must be an (N, 2) array of (x, y) points with 1 <= N <= "
            f"{MAX_GRID_POINTS}, got "
            f"shape {points.shape}."
        )
    if not np.isfinite(points).all() or points.min() < 0.0 or points.max() > 1.0:
        raise ValueError(
            f"point_grids[{layer}] has points outside [0, 1]: grids are normalised (x, y), "
            "divide pixel positions by the image's (width, height)."
        )
    return points


def checked_image(image: Any) -> np.ndarray:
    """The image as (H, W, 3) uint8 RGB, or a ValueError that says what is wrong with it.

    Refused: empty images, images thinner than 2 pixels and constant images (nothing to
    segment; :func:`~napari_mobilesam.engine.everything.segment_everything` gives an empty
    label image for those instead).
    """
    shape = tuple(np.shape(image))
    if len(shape) < 2 or int(np.prod(shape)) == 0:
        raise ValueError(f"The image is empty (shape {shape}); give an (H, W, 3) RGB image.")
    if min(shape[:2]) < 2:
        raise ValueError(
            f"The image is {shape[0]} x {shape[1]} pixels: automatic segmentation needs at least "
            "2 pixels in each direction (a line of pixels has no objects to find)."
        )
    arr = np.asarray(image)
    if not (arr.ndim == 3 and arr.shape[2] == 3 and arr.dtype == np.uint8):
        arr = to_uint8_rgb(arr)
    first = arr.reshape(-1, 3)[0]
    if (arr == first).all():
        raise ValueError(
            f"The image is constant (every pixel is {first.tolist()}): there is nothing to "
            "segment. Check the channel or plane that was passed."
        )
    return arr
