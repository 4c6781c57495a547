"""Export MobileSAM as ONNX (or OpenVINO) files that SAM's ONNX tools load unchanged.

``export_onnx(weights, out_dir)`` writes (see docs/export.md)

* ``mobile_sam.encoder.onnx``: input ``image`` float32 (1, 3, 1024, 1024), the RGB image resized
  so its longest side is 1024, normalised with SAM's mean/std and zero-padded at the bottom and
  right (what ``Sam.preprocess`` makes); output ``image_embeddings`` (1, 256, 64, 64);
* ``mobile_sam.encoder.preprocess.onnx``: input ``input_image`` float32 (H, W, 3) RGB 0-255,
  H and W dynamic (longest side at most 1024, resized by the caller); normalisation, channels
  first and padding inside (:mod:`napari_mobilesam.model.onnx_encoder`), the layout of
  samexporter's ``--use-preprocess`` that X-AnyLabeling and AnyLabeling feed;
* ``mobile_sam.decoder.onnx``: SAM's official decoder interface (see
  :mod:`napari_mobilesam.model.onnx_decoder`), by default with segment-anything's default
  outputs (all 4 masks, token 0 first);
* ``mobile_sam.decoder.single.onnx``: the same with segment-anything's ``--return-single-mask``
  choice (``select_masks``), what the annotators expect;
* ``mobile_sam.anylabeling.yaml``: the X-AnyLabeling / AnyLabeling model config ("Load custom
  model") naming the preprocessing encoder and the single-mask decoder;
* ``mobile_sam.export.json``: what each file is and how to feed it (weights' sha256, opset,
  preprocessing, mask semantics, point convention), so the folder explains itself.

With ``format="openvino"`` the same graphs are written as OpenVINO IR (``.xml`` + ``.bin``,
float32 weights) and no annotator config. Every file goes through
:mod:`napari_mobilesam.engine.atomic_files` (temporary name, then rename), so an interrupted
export never leaves a truncated graph under a final name; temporaries a killed export left
behind are swept by the next export into that folder.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import platform
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_mobilesam.engine.atomic_files import (
    is_temporary,
    remove_path,
    sweep_temporaries,
    temporary_name,
    write_atomically,
    write_text_atomically,
)

if TYPE_CHECKING:
    from napari_mobilesam.model.sam import Sam

FORMATS = ("onnx", "openvino")
DEFAULT_OPSET = 17
# The graphs need ONNX's Attention building blocks of opset 14 (scaled_dot_product_attention);
# torch's TorchScript exporter writes opsets up to 20. Outside that range it fails deep inside.
MIN_OPSET, MAX_OPSET = 14, 20
ENCODER_STEM = "mobile_sam.encoder"
PREPROCESS_ENCODER_STEM = "mobile_sam.encoder.preprocess"
DECODER_STEM = "mobile_sam.decoder"
SINGLE_DECODER_STEM = "mobile_sam.decoder.single"
METADATA_NAME = "mobile_sam.export.json"
ANYLABELING_CONFIG_NAME = "mobile_sam.anylabeling.yaml"
IMAGE_SIZE = 1024
# Which masks ``mobile_sam.decoder.onnx`` returns: segment-anything's default export first.
MASK_CHOICES = ("all", "single", "first", "multimask")

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
    preprocess_encoder: Path | None = None
    single_decoder: Path | None = None  # None when ``decoder`` already is the single-mask one
    anylabeling_config: Path | None = None  # ONNX format only

    @property
    def files(self) -> list[Path]:
        graphs = [self.encoder, self.preprocess_encoder, self.decoder, self.single_decoder]
        configs = [self.anylabeling_config, self.metadata]
        return [p for p in graphs if p] + self.extra_files + [p for p in configs if p]


def check_opset(opset: object) -> int:
    """``opset`` as an int, or a ValueError naming the accepted range."""
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise ValueError(f"opset must be a whole number, got {opset!r}.")
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ValueError(
            f"opset must be from {MIN_OPSET} to {MAX_OPSET} (the graphs need opset {MIN_OPSET}'s "
            f"attention operators; torch's exporter writes up to {MAX_OPSET}), got {opset}."
        )
    return opset


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

    The TorchScript exporter (``dynamo=False``) is kept on purpose although torch deprecates
    it. The dynamo-based exporter (``dynamo=True``, torch 2.14 with onnxscript 0.7.2) was tried
    on the single-mask decoder and the preprocessing encoder: both exported, the decoder's
    output size still followed ``orig_im_size`` (480x640, 640x480, 7x3000) and both stayed
    within 1.6e-5 of torch on random inputs. It was not run through the golden and client
    suites, and it is not used because it needs onnxscript, a package neither the ``onnx``
    extra nor CI installs (and whose releases must track torch's), and it took about 17 s for
    the decoder where this exporter takes 3-4 s on the same loaded 2-core machine (four graphs
    per export, one more for each runtime-cache rebuild). The TorchScript graphs pass the
    golden and client tests (tests/engine/test_export.py, test_onnx_clients.py).
    """
    import torch

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        yield


def export_encoder(
    model: Sam, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET, preprocess: bool = False
) -> Path:
    """Write the image encoder as ONNX to ``path`` (written as is: callers pick a temp name).

    Arguments:
      model: a model from :func:`exportable_copy` (plain torch ops, CPU, float32).
      path: the .onnx file to write.
      opset: ONNX opset version (:data:`MIN_OPSET` to :data:`MAX_OPSET`).
      preprocess: False: input ``image`` (1, 3, 1024, 1024), normalised and padded by the
        caller. True: input ``input_image`` (H, W, 3) RGB 0-255 with H and W dynamic, the
        preprocessing in the graph (``onnx_encoder.SamOnnxPreprocessEncoder``).

    Returns:
      ``path``. The graph's output is ``image_embeddings`` (1, 256, 64, 64).
    """
    import torch

    from napari_mobilesam.model import onnx_encoder

    opset = check_opset(opset)
    if preprocess:
        module = onnx_encoder.SamOnnxPreprocessEncoder(model).eval()
        # An example whose sides are neither 1024 nor equal: both must stay symbolic.
        example = torch.zeros(683, 1021, 3)
        input_name = onnx_encoder.INPUT_NAME
        dynamic_axes = {input_name: {0: "height", 1: "width"}}
    else:
        module = model.image_encoder
        example = torch.zeros(1, 3, IMAGE_SIZE, IMAGE_SIZE)
        input_name, dynamic_axes = "image", None
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            dynamo=False,
            opset_version=opset,
            input_names=[input_name],
            output_names=[onnx_encoder.OUTPUT_NAME],
            dynamic_axes=dynamic_axes,
        )
    if preprocess:
        _fix_output_shape(path, (1, 256, 64, 64))
    return Path(path)


def _fix_output_shape(path: str | os.PathLike[str], shape: tuple[int, ...]) -> None:
    """Declare the first output's fixed shape: with a dynamic input the tracer names every
    output axis symbolically, although the encoder always gives (1, 256, 64, 64)."""
    onnx = require("onnx")
    graph = onnx.load(str(path))
    dims = graph.graph.output[0].type.tensor_type.shape.dim
    for dim, size in zip(dims, shape, strict=True):
        dim.Clear()
        dim.dim_value = size
    onnx.save(graph, str(path))


def export_decoder(
    model: Sam, path: str | os.PathLike[str], opset: int = DEFAULT_OPSET, masks: str = "all"
) -> Path:
    """Write the prompt encoder + mask decoder with SAM's ONNX interface to ``path``.

    Arguments:
      model: a model from :func:`exportable_copy`.
      path: the .onnx file to write.
      opset: ONNX opset version (:data:`MIN_OPSET` to :data:`MAX_OPSET`).
      masks: which masks the graph returns, one of :data:`MASK_CHOICES`: "all" (SAM's default
        export: 4, token 0 first), "single" (SAM's ``--return-single-mask``), "first" (the
        single-object mask, ``multimask_output=False``), "multimask" (the 3 candidates).
    """
    import torch

    from napari_mobilesam.model.onnx_decoder import INPUT_NAMES, OUTPUT_NAMES, SamOnnxDecoder

    opset = check_opset(opset)
    wrapper = SamOnnxDecoder(model, masks=masks).eval()
    # A tracing example whose aspect ratio matches no common image: every size in the graph
    # must come from orig_im_size, and the round-trip tests check portrait, landscape and strips.
    # Its 3 points make select_masks pick token 0 and a 2-point call must still pick another:
    # the point count is read from the input's shape in the graph.
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
            opset_version=opset,
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


def prepare_folder(out_dir: str | os.PathLike[str], overwrite: bool) -> Path:
    """Create ``out_dir`` if needed; refuse a folder that holds files unless ``overwrite``.

    Temporaries that an earlier, killed export left in the folder (this package's marked
    temporaries whose writer is gone) are removed first; nothing else is touched.

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
    sweep_temporaries(out)
    present = sorted(p.name for p in out.iterdir() if not is_temporary(p))
    if present and not overwrite:
        shown = ", ".join(present[:5]) + (", ..." if len(present) > 5 else "")
        raise FileExistsError(
            f"The export folder {out} is not empty ({shown}). Choose an empty or new folder, or "
            "pass overwrite=True (--overwrite) to replace the export files in it."
        )
    # A probe under the atomic helper's temporary mark: a kill before its removal leaves a
    # file the next sweep recognises.
    probe = temporary_name(out / "probe")
    try:
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
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


# What each decoder file's masks are, in the metadata's words.
MASK_SEMANTICS = {
    "all": (
        "segment-anything's default export: the decoder's 4 masks, token 0 (the single-object "
        "mask of multimask_output=False) first, then the 3 candidates of multimask_output=True"
    ),
    "single": (
        "segment-anything's --return-single-mask: one mask chosen by select_masks, score = "
        "iou + (N - 2.5) * [1000, 0, 0, 0] with N = point_coords.shape[1] (padding point and box "
        "corners included), argmax; one click + padding gives the best of the 3 candidates, 3 "
        "or more points give token 0"
    ),
    "first": "token 0 only: the single-object mask of multimask_output=False",
    "multimask": "tokens 1..3: the 3 candidates of multimask_output=True",
}


def _decoder_metadata(file: str, masks: str) -> dict[str, Any]:
    from napari_mobilesam.model.onnx_decoder import MASK_OUTPUTS

    n = MASK_OUTPUTS[masks]
    return {
        "file": file,
        "masks": masks,
        "semantics": MASK_SEMANTICS[masks],
        "outputs": {
            "masks": [1, n, "H", "W"],
            "iou_predictions": [1, n],
            "low_res_masks": [1, n, 256, 256],
        },
    }


def _metadata(
    source: dict[str, Any],
    fmt: str,
    opset: int,
    quantize: bool,
    masks: str,
    files: dict[str, str],
) -> dict[str, Any]:
    import torch

    from napari_mobilesam.model.sam import PIXEL_MEAN, PIXEL_STD

    try:
        from importlib.metadata import version

        package_version = version("napari-mobilesam")
    except Exception:  # not installed (run from a checkout)
        package_version = "unknown"
    normalize = {"mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)}
    decoders = [_decoder_metadata(files["decoder"], masks)]
    if "decoder_single" in files:
        decoders.append(_decoder_metadata(files["decoder_single"], "single"))
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
            "file": files["encoder"],
            "input": {"name": "image", "shape": [1, 3, IMAGE_SIZE, IMAGE_SIZE], "dtype": "float32"},
            "output": {"name": "image_embeddings", "shape": [1, 256, 64, 64]},
            "preprocessing": {
                "color": "RGB, 0-255 scale",
                "resize": (
                    "longest side to 1024: scale = 1024 / max(H, W), new size = "
                    "int(side * scale + 0.5) (at least 1); PIL bilinear (antialiased) on uint8"
                ),
                "normalize": normalize,
                "pad": "zeros at the bottom and right to 1024 x 1024, after normalisation",
                "layout": "NCHW",
            },
        },
        "encoder_preprocess": {
            "file": files["encoder_preprocess"],
            "input": {"name": "input_image", "shape": ["H", "W", 3], "dtype": "float32"},
            "output": {"name": "image_embeddings", "shape": [1, 256, 64, 64]},
            "preprocessing": {
                "caller": (
                    "RGB, 0-255 scale, HWC, resized so that the longest side is at most 1024 "
                    "(SAM's clients resize it to exactly 1024 or into a 684 x 1024 canvas)"
                ),
                "in_graph": "normalise (mean/std below), HWC -> CHW, zero-pad to 1024 x 1024",
                "normalize": normalize,
            },
        },
        "decoders": decoders,
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
        "anylabeling_config": files.get("anylabeling_config"),
    }


def anylabeling_config(encoder_file: str, decoder_file: str) -> str:
    """The X-AnyLabeling / AnyLabeling model config ("Load custom model") as YAML text.

    Both apps read ``type``, ``name``, ``display_name``, the two model paths (tried as given,
    then relative to the YAML's folder) and require ``input_size``, ``max_width`` and
    ``max_height`` (the values of their own SAM configs). Their client resizes the image into a
    684 x 1024 canvas, feeds it as (H, W, 3) float32 RGB to the encoder, appends a padding point
    to every prompt and keeps the decoder's first mask: hence the preprocessing encoder and the
    single-mask decoder.
    """
    fields = {
        "type": "segment_anything",
        "name": "mobile_sam_napari_mobilesam",
        "display_name": "MobileSAM (napari-mobilesam export)",
        "encoder_model_path": encoder_file,
        "decoder_model_path": decoder_file,
        "input_size": 1024,
        "max_width": 1024,
        "max_height": 682,
    }
    # JSON strings are valid YAML double-quoted scalars: no YAML writer needed.
    lines = [f"{key}: {json.dumps(value)}" for key, value in fields.items()]
    return "# X-AnyLabeling / AnyLabeling: Auto Labeling > Load custom model > this file\n" + (
        "\n".join(lines) + "\n"
    )


def _install(source: Path, target: Path) -> Path:
    """Move a finished file from the work folder to ``target`` through the atomic helper."""
    return write_atomically(target, lambda tmp: os.replace(source, tmp))


def export_onnx(
    model_or_weights: Sam | str | os.PathLike[str] | None,
    out_dir: str | os.PathLike[str],
    opset: int = DEFAULT_OPSET,
    quantize: bool = False,
    format: str = "onnx",  # noqa: A002 - the documented keyword, as in the CLI's --format
    overwrite: bool = False,
    multimask: bool = False,
    progress: Callable[[str], None] | None = None,
    masks: str | None = None,
) -> ExportResult:
    """Export the encoders and decoders (SAM's ONNX interface) to ``out_dir``.

    Arguments:
      model_or_weights: a loaded model (e.g. ``build_mobile_sam(...)``), a weights file, or
        None for the default weights (``$NAPARI_MOBILESAM_WEIGHTS``, the cache, a download).
      out_dir: the output folder; created if needed; must be empty unless ``overwrite``.
      opset: ONNX opset version (17 by default; :data:`MIN_OPSET` to :data:`MAX_OPSET`).
      quantize: dynamic int8 quantisation of every ONNX graph (smaller, approximate; its error
        against float32 is in docs/export.md). ONNX format only. Never the default.
      format: "onnx" (``.onnx`` files) or "openvino" (OpenVINO IR ``.xml`` + ``.bin``).
      overwrite: replace the export files in a folder that already holds files.
      multimask: the same as ``masks="multimask"`` (kept for earlier scripts).
      progress: called with a short message before each step (e.g. ``print``).
      masks: what ``mobile_sam.decoder.onnx`` returns, one of :data:`MASK_CHOICES`; default
        "all" (segment-anything's default export). ``mobile_sam.decoder.single.onnx`` (SAM's
        ``--return-single-mask``) is written beside it unless ``masks="single"``.

    Returns:
      An :class:`ExportResult` with the paths written.

    Raises:
      ValueError: unknown format or masks, an opset out of range, or ``quantize`` with the
        OpenVINO format.
      FileExistsError: ``out_dir`` holds files and ``overwrite`` is False.
      PermissionError: ``out_dir`` is read-only.
      FileNotFoundError / CheckpointError: the weights file is missing / is not MobileSAM.
      MissingExtraError: the OpenVINO or onnx package needed for the request is not installed.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {format!r}.")
    if masks is None:
        masks = "multimask" if multimask else "all"
    elif multimask and masks != "multimask":
        raise ValueError(f"multimask=True asks for masks='multimask', but masks={masks!r}.")
    if masks not in MASK_CHOICES:
        raise ValueError(f"masks must be one of {MASK_CHOICES}, got {masks!r}.")
    opset = check_opset(opset)
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

    graphs: list[tuple[str, str, Callable[[Path], object]]] = [
        (ENCODER_STEM, "encoder", lambda path: export_encoder(model, path, opset)),
        (
            PREPROCESS_ENCODER_STEM,
            "encoder with preprocessing",
            lambda path: export_encoder(model, path, opset, preprocess=True),
        ),
        (
            DECODER_STEM,
            f"decoder ({masks} masks)",
            lambda path: export_decoder(model, path, opset, masks),
        ),
    ]
    if masks != "single":
        graphs.append(
            (
                SINGLE_DECODER_STEM,
                "single-mask decoder",
                lambda path: export_decoder(model, path, opset, "single"),
            )
        )

    # Every graph is made in one hidden work folder carrying the atomic helper's temporary mark
    # (removed at the end, swept by a later export if this one is killed), and only moved into
    # place once all of them are done: an interrupted export leaves no file of its own.
    work = temporary_name(out / "export")
    finals: dict[str, Path] = {}
    extra: list[Path] = []
    try:
        work.mkdir()
        made: dict[str, list[Path]] = {}
        for stem, what, write in graphs:
            say(f"Exporting the {what} (ONNX opset {opset})...")
            graph = work / f"{stem}.onnx"
            write(graph)
            if quantize:
                say(f"Quantising the {what} (dynamic int8)...")
                graph = quantize_onnx(graph, work / f"{stem}.int8.onnx")
            if format == "onnx":
                made[stem] = [graph]
            else:
                say(f"Converting {stem} to OpenVINO IR...")
                xml = onnx_to_openvino(graph, work / f"{stem}.xml")
                # The weights first: a folder never holds a new .xml next to an old .bin.
                made[stem] = [xml.with_suffix(".bin"), xml]
        for stem, paths in made.items():
            for path in paths:
                installed = _install(path, out / f"{stem}{path.suffix}")
                if path.suffix == ".bin":
                    extra.append(installed)
                else:
                    finals[stem] = installed
    finally:
        remove_path(work)

    files = {
        "encoder": finals[ENCODER_STEM].name,
        "encoder_preprocess": finals[PREPROCESS_ENCODER_STEM].name,
        "decoder": finals[DECODER_STEM].name,
    }
    single = finals.get(SINGLE_DECODER_STEM)
    if single is not None:
        files["decoder_single"] = single.name
    config = None
    if format == "onnx":
        config = out / ANYLABELING_CONFIG_NAME
        files["anylabeling_config"] = config.name
        decoder_for_apps = (single or finals[DECODER_STEM]).name
        write_text_atomically(
            config, anylabeling_config(files["encoder_preprocess"], decoder_for_apps)
        )
    metadata_path = out / METADATA_NAME
    meta = _metadata(source, format, opset, quantize, masks, files)
    write_text_atomically(metadata_path, json.dumps(meta, indent=2) + "\n")
    say(f"Wrote {', '.join(sorted(files.values()))} and {METADATA_NAME} to {out}")
    return ExportResult(
        encoder=finals[ENCODER_STEM],
        decoder=finals[DECODER_STEM],
        metadata=metadata_path,
        extra_files=extra,
        preprocess_encoder=finals[PREPROCESS_ENCODER_STEM],
        single_decoder=single,
        anylabeling_config=config,
    )
