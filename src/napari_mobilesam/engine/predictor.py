"""``SamPredictor``: segment-anything's predictor interface on top of MobileSAM.

Every coordinate here is SAM's (x, y) = (column, row) in pixels, and boxes are XYXY; napari's
(row, col) order is converted elsewhere, once, at the layer boundary.
"""

from __future__ import annotations

import numpy as np
import torch

from napari_mobilesam.engine.decoder_precision import check_decoder_precision, decoder_autocast
from napari_mobilesam.engine.image_conversion import (
    image_from_pil,
    is_pil_image,
    shrink_for_encoder,
    to_uint8_rgb,
)
from napari_mobilesam.engine.mask_upscaling import binary_masks
from napari_mobilesam.engine.prompt_checks import as_float_array, as_mask_input, check_labels
from napari_mobilesam.engine.prompt_threads import map_groups
from napari_mobilesam.engine.transforms import ResizeLongestSide
from napari_mobilesam.model import Sam


class SamPredictor:
    """Computes an image's embedding once, then predicts masks for any number of prompts.

    Arguments:
      sam_model: the model, e.g. from :func:`napari_mobilesam.build_mobile_sam`.
      decoder_precision: "fp32" (default) or "bf16": the mask decoder under a bfloat16
        autocast, faster where the device has native bf16 and approximate (bounds in
        :mod:`napari_mobilesam.engine.decoder_precision`); refused elsewhere.
    """

    # Prompts decoded together on a CPU (see predict_torch): 2 at a time ran fastest, as for
    # SamAutomaticMaskGenerator.decode_chunk.
    cpu_prompt_chunk = 2

    def __init__(self, sam_model: Sam, decoder_precision: str = "fp32") -> None:
        self.model = sam_model
        self.decoder_precision = check_decoder_precision(decoder_precision, sam_model.device)
        self.transform = ResizeLongestSide(sam_model.image_encoder.img_size)
        self.reset_image()

    @property
    def device(self) -> torch.device:
        return self.model.device

    # ----------------------------------------------------------------- image embedding
    def set_image(
        self,
        image: np.ndarray,
        image_format: str = "RGB",
        original_size: tuple[int, int] | None = None,
    ) -> None:
        """Compute the embedding of ``image``.

        Arguments:
          image: (H, W, 3) uint8 in ``image_format`` channel order. Grayscale (H, W), 2-channel,
            RGBA and non-uint8 images are first converted by
            :func:`napari_mobilesam.to_uint8_rgb`. Any array that can be sliced by rows works
            (numpy memmap, dask, zarr): a plane with a side of 4096 pixels or more is first
            reduced by block averaging, read a band at a time (see
            :func:`napari_mobilesam.engine.image_conversion.shrink_for_encoder`), so memory stays
            bounded whatever its size.
          image_format: "RGB" or "BGR".
          original_size: (H, W) of the plane ``image`` was already reduced from, if it was;
            prompts and masks then refer to that plane's pixels.
        """
        if image_format not in ("RGB", "BGR"):
            raise ValueError(f"image_format must be 'RGB' or 'BGR', not {image_format!r}.")
        if is_pil_image(image):  # palette, grey + alpha, 16-bit, EXIF orientation
            image = image_from_pil(image)
        shape = tuple(np.shape(image))
        if int(np.prod(shape)) == 0:
            raise ValueError(f"The image is empty (shape {shape}); nothing to segment.")
        if original_size is None:
            original_size = (int(shape[0]), int(shape[1])) if len(shape) >= 2 else shape
            image = shrink_for_encoder(image, self.transform.target_length)
        else:
            original_size = (int(original_size[0]), int(original_size[1]))
            if min(original_size) < 1:
                raise ValueError(f"original_size must be a positive (H, W), got {original_size}.")
            image = np.asarray(image)
        if image_format != self.model.image_format and image.ndim == 3 and image.shape[-1] >= 3:
            image = image[..., [2, 1, 0]]
        if image.ndim != 3 or image.shape[-1] != 3 or image.dtype != np.uint8:
            image = to_uint8_rgb(image)
        input_image = self.transform.apply_image(image, original_size)
        input_image_torch = torch.as_tensor(input_image, device=self.device)
        input_image_torch = input_image_torch.permute(2, 0, 1).contiguous()[None]
        self.set_torch_image(input_image_torch, original_size)

    @torch.inference_mode()
    def set_torch_image(
        self, transformed_image: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Compute the embedding of an image already resized to a longest side of 1024.

        Arguments:
          transformed_image: (1, 3, h, w) with max(h, w) == 1024, RGB on the 0-255 scale.
          original_image_size: (H, W) of the image before resizing.
        """
        size = self.model.image_encoder.img_size
        shape = tuple(transformed_image.shape)
        if len(shape) != 4 or shape[1] != 3 or max(shape[2:]) != size:
            raise ValueError(
                f"set_torch_image expects a (B, 3, h, w) tensor with max(h, w) == {size}, "
                f"got {shape}; resize with predictor.transform.apply_image first."
            )
        self.reset_image()
        self.original_size = (int(original_image_size[0]), int(original_image_size[1]))
        self.input_size = (int(shape[2]), int(shape[3]))
        input_image = self.model.preprocess(transformed_image.to(self.device))
        dtype = self.model.encoder_dtype
        if dtype is None:
            self.features = self.model.image_encoder(input_image)
        else:
            # Half precision for the encoder only (CUDA by default); the decoder stays float32.
            with torch.autocast(self.device.type, dtype=dtype):
                self.features = self.model.image_encoder(input_image).float()
        self.is_image_set = True

    def set_image_embedding(
        self, embedding: torch.Tensor, original_image_size: tuple[int, ...]
    ) -> None:
        """Use a previously computed embedding (e.g. from a cache) instead of encoding again.

        Arguments:
          embedding: (1, 256, 64, 64), as returned by :meth:`get_image_embedding`.
          original_image_size: (H, W) of the image it was computed from.
        """
        if tuple(embedding.shape) != (1, 256, 64, 64):
            raise ValueError(f"embedding must be (1, 256, 64, 64), got {tuple(embedding.shape)}.")
        h, w = int(original_image_size[0]), int(original_image_size[1])
        constants = self._image_constants
        self.reset_image()
        self.original_size = (h, w)
        self.input_size = self.transform.get_preprocess_shape(h, w, self.transform.target_length)
        self.features = embedding.to(self.device)
        if constants is not None and constants[0] is self.features:
            # The same embedding again (the widget sets it from its cache on every run): its
            # decoder constants still hold, and making them took 5-50 ms per click.
            self._image_constants = constants
        self.is_image_set = True

    def get_image_embedding(self) -> torch.Tensor:
        """The current image's embedding, (1, 256, 64, 64)."""
        self._require_image()
        return self.features

    def reset_image(self) -> None:
        """Forget the current image and its embedding."""
        self.is_image_set = False
        self.features: torch.Tensor | None = None
        self.original_size: tuple[int, int] | None = None
        self.input_size: tuple[int, int] | None = None
        # (features they were computed from, dense PE, first-block projections)
        self._image_constants: tuple[torch.Tensor, torch.Tensor, dict] | None = None

    def _decoder_constants(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(dense positional encoding, first-block projections) of the current image.

        Both depend on the image alone (the projections on the embedding plus the no-mask
        embedding), so they are computed once per image and reused for every prompt that has
        no mask prompt: about a third of the image-token projections of a click.
        """
        cached = self._image_constants
        # Checked by identity: tools such as micro-sam assign ``features`` directly.
        if cached is None or cached[0] is not self.features:
            image_pe = self.model.prompt_encoder.get_dense_pe()
            no_mask = self.model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
            src = self.features + no_mask.expand(1, -1, *self.features.shape[-2:])
            transformer = self.model.mask_decoder.transformer
            cached = (self.features, image_pe, transformer.image_constants(src, image_pe))
            self._image_constants = cached
        return cached[1], cached[2]

    def _require_image(self) -> None:
        if not self.is_image_set:
            raise RuntimeError("An image must be set with .set_image(...) before mask prediction.")

    # ----------------------------------------------------------------------- prompts
    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Predict masks for one object on the current image.

        Arguments:
          point_coords: (N, 2) points as (x, y) = (column, row) in original image pixels.
          point_labels: (N,) 1 for a foreground point, 0 for a background point.
          box: (4,) box as XYXY = (x0, y0, x1, y1) in original image pixels.
          mask_input: (1, 256, 256) low-res logits from an earlier prediction (refinement).
          multimask_output: return 3 candidates (good for a single ambiguous click) or 1.
          return_logits: return unthresholded logits instead of boolean masks.

        Returns:
          masks: (C, H, W) bool (float32 logits if ``return_logits``), C = 3 or 1.
          iou_predictions: (C,) predicted quality of each mask.
          low_res_logits: (C, 256, 256), to feed back as ``mask_input``.
        """
        self._require_image()
        coords_t = labels_t = box_t = mask_t = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords (1 = fg, 0 = bg).")
            coords = _as_float_array(point_coords, "point_coords")
            labels = _as_float_array(point_labels, "point_labels")
            if coords.ndim != 2 or coords.shape[1] != 2:
                raise ValueError(f"point_coords must be (N, 2) (x, y), got {coords.shape}.")
            if labels.shape != (coords.shape[0],):
                raise ValueError(
                    f"point_labels must be ({coords.shape[0]},) to match point_coords, "
                    f"got {labels.shape}."
                )
            labels = check_labels(labels, "point_labels")  # the same rule as MobileSAM's
            _check_near_image(coords, self.original_size, "point_coords")
            coords = self.transform.apply_coords(coords, self.original_size)
            coords_t = torch.as_tensor(coords, dtype=torch.float, device=self.device)[None]
            labels_t = torch.as_tensor(labels, dtype=torch.int, device=self.device)[None]
        elif point_labels is not None:
            raise ValueError("point_labels was given without point_coords.")
        if box is not None:
            box_arr = _as_float_array(box, "box")
            if box_arr.size != 4:
                raise ValueError(f"box must be (4,) XYXY, got {box_arr.shape}.")
            x0, y0, x1, y1 = box_arr.reshape(4)
            if x1 < x0 or y1 < y0:
                # SAM encodes the two corners as they come; swapped corners give a meaningless
                # mask, and are most often an XYWH box or (row, col) order passed by mistake.
                raise ValueError(
                    f"box must be XYXY [x0, y0, x1, y1] with x0 <= x1 and y0 <= y1, got "
                    f"{box_arr.reshape(4).tolist()}; convert an XYWH box with x1 = x0 + w, "
                    "y1 = y0 + h."
                )
            _check_near_image(box_arr.reshape(2, 2), self.original_size, "box")
            box_arr = self.transform.apply_boxes(box_arr, self.original_size)
            box_t = torch.as_tensor(box_arr, dtype=torch.float, device=self.device)[None]
        if mask_input is not None:
            mask_t = torch.as_tensor(as_mask_input(mask_input), device=self.device)[None]

        masks, iou, low_res = self.predict_torch(
            coords_t, labels_t, box_t, mask_t, multimask_output, return_logits=return_logits
        )
        return (
            masks[0].detach().cpu().numpy(),
            iou[0].detach().float().cpu().numpy(),
            low_res[0].detach().float().cpu().numpy(),
        )

    @torch.inference_mode()
    def predict_torch(
        self,
        point_coords: torch.Tensor | None,
        point_labels: torch.Tensor | None,
        boxes: torch.Tensor | None = None,
        mask_input: torch.Tensor | None = None,
        multimask_output: bool = True,
        return_logits: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Predict masks for a batch of B prompts, given in the resized (1024) frame.

        Transform coordinates first with ``predictor.transform.apply_coords_torch`` /
        ``apply_boxes_torch``.

        Arguments:
          point_coords: (B, N, 2) (x, y) points in the resized frame, or None.
          point_labels: (B, N) labels, 1 = foreground, 0 = background.
          boxes: (B, 4) XYXY boxes in the resized frame, or None.
          mask_input: (B, 1, 256, 256) low-res logits, or None.
          multimask_output: 3 candidates per prompt (True) or 1.
          return_logits: logits instead of boolean masks.

        Returns:
          masks (B, C, H, W), iou_predictions (B, C), low_res_logits (B, C, 256, 256).
        """
        self._require_image()
        points = None
        if point_coords is not None:
            if point_labels is None:
                raise ValueError("point_labels must be given with point_coords.")
            points = (point_coords.to(self.device), point_labels.to(self.device))
        sparse, dense = self.model.prompt_encoder(
            points=points,
            boxes=None if boxes is None else boxes.to(self.device),
            masks=None if mask_input is None else mask_input.to(self.device),
        )
        image_pe, constants = self._decoder_constants()
        if mask_input is not None:
            constants = None  # a mask prompt changes the image tokens: nothing to reuse
        batch = sparse.shape[0]
        # Each prompt's decoder works on its own copies of the 4096 image tokens (4 MiB each);
        # on a CPU a few prompts at a time keep them in cache and bound the memory, and groups
        # run side by side, one torch thread each (engine/prompt_threads.py).
        step = max(1, self.cpu_prompt_chunk if self.device.type == "cpu" else batch)

        @torch.inference_mode()
        def decode(start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            part = slice(start, start + step)
            with decoder_autocast(self.decoder_precision, self.device):
                low_res, iou = self.model.mask_decoder(
                    image_embeddings=self.features,
                    image_pe=image_pe,
                    sparse_prompt_embeddings=sparse[part],
                    dense_prompt_embeddings=dense[part],
                    multimask_output=multimask_output,
                    image_constants=constants,
                )
            low_res, iou = low_res.float(), iou.float()
            return self._upscale(low_res, return_logits), iou, low_res

        outputs = map_groups(decode, range(0, max(batch, 1), step), self.device)
        if len(outputs) == 1:
            return outputs[0]
        masks, iou, low_res = (torch.cat(parts) for parts in zip(*outputs, strict=True))
        return masks, iou, low_res

    def _upscale(self, low_res: torch.Tensor, return_logits: bool) -> torch.Tensor:
        """(B, C, 256, 256) logits -> (B, C, H, W) logits or boolean masks at the image's size."""
        model = self.model
        size = (self.input_size, self.original_size)
        if return_logits:
            return model.postprocess_masks(low_res, *size)
        # Only around each mask's positive logits where that is exact (mask_upscaling.py).
        return binary_masks(low_res, *size, model.postprocess_masks, model.mask_threshold)


_EXPECTED = {
    "point_coords": "(N, 2) (x, y) points",
    "point_labels": "(N,) labels, 1 = foreground, 0 = background",
    "box": "(4,) XYXY box",
}


def _as_float_array(value: object, name: str) -> np.ndarray:
    return as_float_array(value, name, _EXPECTED[name])


def _check_near_image(xy: np.ndarray, size: tuple[int, int] | None, name: str) -> None:
    """Refuse (x, y) positions more than one image size outside the image.

    SAM accepts positions a little outside the image, but far away they mean nothing (and past
    float32's range they turn the masks into NaN); that is nearly always a mix-up of frames,
    such as world coordinates or another image's pixels.
    """
    if size is None or xy.size == 0:
        return
    height, width = size
    x, y = xy[..., 0], xy[..., 1]
    if (x < -width).any() or (x > 2 * width).any() or (y < -height).any() or (y > 2 * height).any():
        raise ValueError(
            f"{name} has (x, y) positions far outside the {width} x {height} (width x height) "
            f"image: {xy.reshape(-1, 2).tolist()[:4]}. Give (x, y) = (column, row) in this "
            "image's pixels; positions at most one image size outside it are accepted."
        )
