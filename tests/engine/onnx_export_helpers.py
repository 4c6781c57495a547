"""One export of the synthetic checkpoint per test session, shared by the export and client tests,
and the reference for SAM's ONNX semantics: segment-anything's own ``SamOnnxModel`` in torch."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from golden_cases import SYNTHETIC_CHECKPOINT

DECODER_INPUTS = (
    "image_embeddings",
    "point_coords",
    "point_labels",
    "mask_input",
    "has_mask_input",
    "orig_im_size",
)


@functools.cache
def export_once():
    """``(ExportResult, first_decoder_path)``: the default export of the synthetic checkpoint,
    plus a decoder with the token-0-only output ("first") beside it. Removed at exit."""
    from napari_mobilesam.engine.export import export_decoder, export_onnx, exportable_copy
    from napari_mobilesam.model.build import build_mobile_sam

    folder = Path(tempfile.mkdtemp(prefix="napari_mobilesam_export_test_"))
    atexit.register(shutil.rmtree, folder, True)
    result = export_onnx(SYNTHETIC_CHECKPOINT, folder / "export")
    model = exportable_copy(build_mobile_sam(SYNTHETIC_CHECKPOINT, device="cpu", optimize=False))
    first = export_decoder(model, folder / "mobile_sam.decoder.first.onnx", masks="first")
    return result, first


def session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@functools.cache
def sam_reference(single: bool):
    """segment-anything's ``SamOnnxModel`` (what its ``export_onnx_model.py`` exports) around
    the golden float32 model: the semantics the exported decoders must have."""
    from segment_anything.utils.onnx import SamOnnxModel

    from napari_mobilesam.model.build import build_mobile_sam

    model = build_mobile_sam(SYNTHETIC_CHECKPOINT, device="cpu", optimize=False).eval()
    return SamOnnxModel(model, return_single_mask=single).eval()


def run_sam_reference(single: bool, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    """(masks, iou_predictions, low_res_masks) of SAM's own ONNX wrapper for the same inputs."""
    with torch.no_grad():
        outputs = sam_reference(single)(*(torch.from_numpy(inputs[k]) for k in DECODER_INPUTS))
    return [t.numpy() for t in outputs]


def assert_outputs_match(outputs, reference, atol_iou: float, atol_low_res: float) -> None:
    """Decoder outputs equal the reference's: shapes, IoU and low-res logits within the golden
    tolerances, mask pixels (logit > 0) differing only where the reference logit is within 1e-3
    of the threshold."""
    masks, iou, low_res = outputs
    ref_masks, ref_iou, ref_low_res = reference
    assert masks.shape == ref_masks.shape and iou.shape == ref_iou.shape
    np.testing.assert_allclose(iou, ref_iou, rtol=0, atol=atol_iou)
    np.testing.assert_allclose(low_res, ref_low_res, rtol=0, atol=atol_low_res)
    differ = (masks > 0) != (ref_masks > 0)
    assert not (differ & (np.abs(ref_masks) >= 1e-3)).any()
