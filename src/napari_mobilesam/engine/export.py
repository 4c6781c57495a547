"""Export MobileSAM as two ONNX (or OpenVINO) files that drop into SAM's ONNX tooling.

``export_onnx(weights, out_dir)`` writes

* ``mobile_sam.encoder.onnx``: input ``image`` float32 (1, 3, 1024, 1024), the RGB image resized
  so its longest side is 1024, normalised with SAM's mean/std and zero-padded at the bottom and
  right (what ``Sam.preprocess`` makes); output ``image_embeddings`` (1, 256, 64, 64);
* ``mobile_sam.decoder.onnx``: SAM's official decoder interface (see
  :mod:`napari_mobilesam.model.onnx_decoder`), N points dynamic, masks for any aspect ratio;
* ``mobile_sam.export.json``: what the files are and how to feed them (weights' sha256, opset,
  preprocessing, point convention), so the folder explains itself.

With ``format="openvino"`` the same graphs are written as OpenVINO IR (``.xml`` + ``.bin``,
float32 weights). Every file is written to a temporary name in the output folder and renamed
into place, so an interrupted export never leaves a truncated graph under the final name.

The ``export`` command's arguments live in :mod:`napari_mobilesam.cli.export_command`.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import tempfile
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_mobilesam.model.sam import Sam

FORMATS = ("onnx", "openvino")
DEFAULT_OPSET = 17
ENCODER_STEM = "mobile_sam.encoder"
DECODER_STEM = "mobile_sam.decoder"
METADATA_NAME = "mobile_sam.export.json"
IMAGE_SIZE = 1024

# Operators the dynamic int8 quantisation rewrites. Only the matrix products: ONNX Runtime's
# integer convolution (ConvInteger) has no fast CPU kernel, and the convolutions hold only a
# small share of the weights.
QUANTIZE_OP_TYPES = ("MatMul", "Gemm")

# How to install each optional runtime; named in every "missing extra" message.
EXTRAS = {
    "onnxruntime": ("onnx", "ONNX Runtime"),
    "onnx": ("onnx", "the onnx package"),
    "openvino": ("openvino", "OpenVINO"),
}


class MissingExtraError(ImportError):
    """An optional runtime package is not installed; the message says which extra brings it."""


def require(module: str) -> Any:
    """Import an optional runtime package, or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        extra, what = EXTRAS.get(module, (module, module))
        raise MissingExtraError(
            f"{what} is not installed (import {module!r} failed: {exc}). Install it with "
            f'pip install "napari-mobilesam[{extra}]".'
        ) from exc


@dataclass
class ExportResult:
    """The files one export wrote (paths in the output folder)."""

    encoder: Path
    decoder: Path
    metadata: Path
    extra_files: list[Path] = field(default_factory=list)  # OpenVINO's .bin weights

    @property
    def files(self) -> list[Path]:
        return [self.encoder, self.decoder, *self.extra_files, self.metadata]


# ------------------------------------------------------------------------------ the model


def exportable_copy(model: Sam) -> Sam:
    """A float32 CPU copy of ``model`` made of standard torch ops only, ready for tracing.

    The default (optimised) model fuses GELUs into oneDNN-only ops that no exporter knows; they
    are split back into a convolution or linear layer plus ``nn.GELU``. BatchNorm is folded
    (the runtimes would do it anyway), and the channels-last switch is turned off.
    """
    from torch import nn

    from napari_mobilesam.model.inference import ConvGELU, LinearGELU, fold_batchnorm

    clone = copy.deepcopy(model).cpu().float().eval()
    for parent in list(clone.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, ConvGELU):
                weight = child.weight
                conv = nn.Conv2d(
                    weight.shape[1] * child.groups,
                    weight.shape[0],
                    tuple(weight.shape[2:]),
                    stride=tuple(child.stride),
                    padding=tuple(child.padding),
                    dilation=tuple(child.dilation),
                    groups=child.groups,
                    bias=child.bias is not None,
                )
                conv.weight = nn.Parameter(weight.detach().contiguous(), requires_grad=False)
                if child.bias is not None:
                    conv.bias = nn.Parameter(child.bias.detach().clone(), requires_grad=False)
                setattr(parent, name, nn.Sequential(conv, nn.GELU()))
            elif isinstance(child, LinearGELU):
                linear = nn.Linear(child.weight.shape[1], child.weight.shape[0])
                linear.weight = nn.Parameter(child.weight.detach().clone(), requires_grad=False)
                linear.bias = nn.Parameter(child.bias.detach().clone(), requires_grad=False)
                setattr(parent, name, nn.Sequential(linear, nn.GELU()))
    fold_batchnorm(clone)
    clone.image_encoder.channels_last = False
    clone.encoder_dtype = None
    return clone.requires_grad_(False)


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the TorchScript exporter's notices (deprecation, tracer hints) during export.

    The TorchScript exporter is chosen on purpose: it records the decoder's size arithmetic on
    ``orig_im_size`` as graph operations, and gave the fastest static encoder graph.
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def export_encoder(model: Sam, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET) -> Path:
    """Write the image encoder as ONNX to ``path`` (written as is: callers pick a temp name).

    Arguments:
      model: a model from :func:`exportable_copy` (plain torch ops, CPU, float32).
      path: the .onnx file to write.
      opset: ONNX opset version.

    Returns:
      ``path``. The graph maps ``image`` (1, 3, 1024, 1024) to ``image_embeddings``
      (1, 256, 64, 64).
    """
    import torch

    example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            model.image_encoder,
            (example,),
            str(path),
            dynamo=False,
            opset_version=int(opset),
            input_names=["image"],
            output_names=["image_embeddings"],
        )
    return Path(path)


def export_decoder(
    model: Sam, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET, multimask: bool = False
) -> Path:
    """Write the prompt encoder + mask decoder with SAM's ONNX interface to ``path``.

    Arguments:
      model: a model from :func:`exportable_copy`.
      path: the .onnx file to write.
      opset: ONNX opset version.
      multimask: 3 candidate masks per call (True) or the single-object mask (False).
    """
    import torch

    from napari_mobilesam.model.onnx_decoder import INPUT_NAMES, OUTPUT_NAMES, SamOnnxDecoder

    wrapper = SamOnnxDecoder(model, multimask=multimask).eval()
    # A tracing example whose aspect ratio matches no common image: every size in the graph
    # must come from orig_im_size, and the round-trip tests check portrait, landscape and strips.
    example = (
        torch.zeros(1, 256, 64, 64),
        torch.tensor([[[300.0, 200.0], [10.0, 20.0], [0.0, 0.0]]]),
        torch.tensor([[1.0, 0.0, -1.0]]),
        torch.zeros(1, 1, 256, 256),
        torch.tensor([1.0]),
        torch.tensor([1500.0, 2250.0]),
    )
    dynamic_axes = {
        "point_coords": {1: "num_points"},
        "point_labels": {1: "num_points"},
        "masks": {2: "height", 3: "width"},
    }
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            dynamo=False,
            opset_version=int(opset),
            input_names=list(INPUT_NAMES),
            output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic_axes,
        )
    return Path(path)


def quantize_onnx(source: str | os.PathLike[str], target: str | os.PathLike[str]) -> Path:
    """Dynamic int8 quantisation (weights int8, activations quantised on the fly) of a graph."""
    import logging

    require("onnx")
    quantization = require("onnxruntime.quantization")

    class _NoPreprocessHint(logging.Filter):
        # The quantiser logs a generic hint on the root logger; shape inference is not needed
        # for dynamic quantisation of MatMul/Gemm weights.
        def filter(self, record: logging.LogRecord) -> bool:
            return "pre-processing before quantization" not in record.getMessage()

    hint_filter = _NoPreprocessHint()
    root = logging.getLogger()
    root.addFilter(hint_filter)
    try:
        quantization.quantize_dynamic(
            str(source),
            str(target),
            op_types_to_quantize=list(QUANTIZE_OP_TYPES),
            weight_type=quantization.QuantType.QInt8,
        )
    finally:
        root.removeFilter(hint_filter)
    return Path(target)


def onnx_to_openvino(source: str | os.PathLike[str], xml: str | os.PathLike[str]) -> Path:
    """Convert an ONNX file to OpenVINO IR at ``xml`` (+ its ``.bin``), keeping float32 weights."""
    ov = require("openvino")
    ov.save_model(ov.convert_model(str(source)), str(xml), compress_to_fp16=False)
    return Path(xml)


# ----------------------------------------------------------------------------- the folder


def _temp_path(folder: Path, suffix: str) -> Path:
    """A fresh hidden file name in ``folder`` (not created: the writer creates it with the
    usual permissions, which ``mkstemp``'s owner-only mode would not give)."""
    return folder / f".mobile_sam.{uuid.uuid4().hex}{suffix}"


def prepare_folder(out_dir: str | os.PathLike[str], overwrite: bool) -> Path:
    """Create ``out_dir`` if needed; refuse a folder that holds files unless ``overwrite``.

    Raises:
      FileExistsError: the folder is not empty and ``overwrite`` is False, or it is a file.
      PermissionError: the folder cannot be created or written to.
    """
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} is a file, not a folder; give a folder for the export.")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except PermissionError as exc:
        raise PermissionError(
            f"Cannot create the export folder {out}: permission denied. Choose a folder you can "
            "write to."
        ) from exc
    present = sorted(p.name for p in out.iterdir() if not p.name.startswith(".mobile_sam."))
    if present and not overwrite:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise FileExistsError(
            f"The export folder {out} is not empty ({shown}). Choose an empty or new folder, or "
            "pass overwrite=True (--overwrite) to replace the export files in it."
        )
    try:
        fd, probe = tempfile.mkstemp(dir=out, prefix=".mobile_sam.", suffix=".probe")
        os.close(fd)
        os.unlink(probe)
    except PermissionError as exc:
        raise PermissionError(
            f"Cannot write to the export folder {out}: it is read-only. Choose a folder you "
            "can write to."
        ) from exc
    return out


def _load_for_export(
    model_or_weights: Sam | str | os.PathLike[str] | None,
) -> tuple[Sam, dict[str, Any]]:
    """The exportable model and a description of its source for the metadata."""
    from torch import nn

    if isinstance(model_or_weights, nn.Module):
        from napari_mobilesam.engine.disk_cache import model_fingerprint

        source = {"kind": "model", "fingerprint": model_fingerprint(model_or_weights)}
        return exportable_copy(model_or_weights), source

    from napari_mobilesam.engine.weights import file_sha256, resolve_weights
    from napari_mobilesam.model.build import build_mobile_sam
    from napari_mobilesam.model.checkpoint import load_weights_state_dict

    path = Path(resolve_weights(model_or_weights))
    # Raises CheckpointError, explaining what the file is, when it is not MobileSAM.
    model = build_mobile_sam(load_weights_state_dict(path), device="cpu", optimize=False)
    source = {"kind": "file", "name": path.name, "sha256": file_sha256(path)}
    return exportable_copy(model), source


def _metadata(
    source: dict[str, Any],
    fmt: str,
    opset: int,
    quantize: bool,
    multimask: bool,
    files: dict[str, str],
) -> dict[str, Any]:
    import torch

    from napari_mobilesam.model.sam import PIXEL_MEAN, PIXEL_STD

    try:
        from importlib.metadata import version

        package_version = version("napari-mobilesam")
    except Exception:  # not installed (run from a checkout)
        package_version = "unknown"
    n_masks = 3 if multimask else 1
    return {
        "model": "MobileSAM (vit_t: TinyViT-5M image encoder, SAM prompt encoder and mask decoder)",
        "format": fmt,
        "files": files,
        "source_weights": source,
        "opset": int(opset),
        "quantized": "dynamic int8 (MatMul/Gemm weights; approximate)" if quantize else None,
        "exported_with": {
            "napari-mobilesam": package_version,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "encoder": {
            "input": {"name": "image", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": "float32"},
            "output": {"name": "image_embeddings", "shape": [1, 256, 64, 64]},
            "preprocessing": {
                "color": "RGB, 0-255 scale",
                "resize": (
                    "longest side to 1024: scale = 1024 / max(H, W), new size = "
                    "int(side * scale + 0.5) (at least 1); PIL bilinear (antialiased) on uint8"
                ),
                "normalize": {"mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)},
                "pad": "zeros at the bottom and right to 1024 x 1024, after normalisation",
                "layout": "NCHW",
            },
        },
        "decoder": {
            "interface": "segment-anything ONNX decoder (SamOnnxModel)",
            "inputs": {
                "image_embeddings": [1, 256, 64, 64],
                "point_coords": [1, "N", 2],
                "point_labels": [1, "N"],
                "mask_input": [1, 1, 256, 256],
                "has_mask_input": [1],
                "orig_im_size": [2],
            },
            "outputs": {
                "masks": [1, n_masks, "H", "W"],
                "iou_predictions": [1, n_masks],
                "low_res_masks": [1, n_masks, 256, 256],
            },
            "multimask": bool(multimask),
            "masks": (
                "the 3 candidates of multimask_output=True"
                if multimask
                else "the single-object mask of multimask_output=False"
            ),
            "point_convention": (
                "(x, y) = (column, row) in the resized 1024 frame: x * neww / W, y * newh / H "
                "(before the +0.5 pixel-centre shift, which the graph adds)"
            ),
            "point_labels": {
                "1": "foreground point",
                "0": "background point",
                "2": "box top-left corner",
                "3": "box bottom-right corner",
                "-1": "padding point (0, 0): append one when the prompt has no box",
            },
            "mask_threshold": 0.0,
            "orig_im_size": "(H, W) of the original image, float32",
        },
    }


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = _temp_path(path.parent, ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def export_onnx(
    model_or_weights: Sam | str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
    format: str = "onnx",  # noqa: A002 - the documented keyword, as in the CLI's --format
    overwrite: bool = False,
    multimask: bool = False,
    progress: Callable[[str], None] | None = None,
) -> ExportResult:
    """Export the encoder and the decoder (SAM's ONNX interface) to ``out_dir``.

    Arguments:
      model_or_weights: a loaded model (e.g. ``build_mobile_sam(...)``), a weights file, or
        None for the default weights (``$NAPARI_MOBILESAM_WEIGHTS``, the cache, a download).
      out_dir: the output folder; created if needed; must be empty unless ``overwrite``.
      opset: ONNX opset version (17 by default).
      quantize: dynamic int8 quantisation of the ONNX graphs (smaller, approximate; its error
        against float32 is in the README). ONNX format only. Never the default.
      format: "onnx" (``.onnx`` files) or "openvino" (OpenVINO IR ``.xml`` + ``.bin``).
      overwrite: replace the export files in a folder that already holds files.
      multimask: the decoder returns the 3 candidate masks (True) or the single-object mask.
      progress: called with a short message before each step (e.g. ``print``).

    Returns:
      An :class:`ExportResult` with the paths written.

    Raises:
      ValueError: unknown format, or ``quantize`` with the OpenVINO format.
      FileExistsError: ``out_dir`` holds files and ``overwrite`` is False.
      PermissionError: ``out_dir`` is read-only.
      FileNotFoundError / CheckpointError: the weights file is missing / is not MobileSAM.
      MissingExtraError: the OpenVINO or onnx package needed for the request is not installed.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    if quantize and format != "onnx":
        raise ValueError("quantize applies to the ONNX format only (format='onnx').")
    say = progress or (lambda message: None)
    require("onnx")  # torch's exporter writes the graph with it
    if format == "openvino":
        require("openvino")
    if quantize:
        require("onnxruntime")
    out = prepare_folder(out_dir, overwrite)
    say("Loading the model...")
    model, source = _load_for_export(model_or_weights)

    written: list[Path] = []  # temporary files, removed if anything fails
    try:
        graphs = {}
        for stem, what in ((ENCODER_STEM, "encoder"), (DECODER_STEM, "decoder")):
            say(f"Exporting the {what} (ONNX opset {opset})...")
            tmp = _temp_path(out, ".onnx")
            written.append(tmp)
            if what == "encoder":
                export_encoder(model, tmp, opset)
            else:
                export_decoder(model, tmp, opset, multimask)
            if quantize:
                say(f"Quantising the {what} (dynamic int8)...")
                quantized = _temp_path(out, ".onnx")
                written.append(quantized)
                quantize_onnx(tmp, quantized)
                tmp = quantized
            graphs[stem] = tmp

        finals: dict[str, Path] = {}
        extra: list[Path] = []
        if format == "onnx":
            for stem, tmp in graphs.items():
                finals[stem] = out / f"{stem}.onnx"
                os.replace(tmp, finals[stem])
        else:
            for stem, tmp in graphs.items():
                say(f"Converting {stem} to OpenVINO IR...")
                xml = _temp_path(out, ".xml")
                written += [xml, xml.with_suffix(".bin")]
                onnx_to_openvino(tmp, xml)
                finals[stem] = out / f"{stem}.xml"
                extra.append(out / f"{stem}.bin")
                # The weights first: a folder never holds a new .xml next to an old .bin.
                os.replace(xml.with_suffix(".bin"), extra[-1])
                os.replace(xml, finals[stem])
    finally:
        for tmp in written:
            tmp.unlink(missing_ok=True)

    metadata_path = out / METADATA_NAME
    files = {"encoder": finals[ENCODER_STEM].name, "decoder": finals[DECODER_STEM].name}
    meta = _metadata(source, format, opset, quantize, multimask, files)
    _write_text_atomic(metadata_path, json.dumps(meta, indent=2) + "\n")
    say(f"Wrote {', '.join(sorted(files.values()))} and {METADATA_NAME} to {out}")
    return ExportResult(finals[ENCODER_STEM], finals[DECODER_STEM], metadata_path, extra)
