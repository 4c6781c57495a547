"""napari-mobilesam: interactive MobileSAM segmentation for napari, and a headless Python API.

The public API is importable from here, lazily (loading the napari manifest does not import
torch, and the headless names do not import napari):

- :func:`build_mobile_sam` builds the model and loads ``mobile_sam.pt``;
- :class:`SamPredictor` is segment-anything's predictor interface;
- :class:`MobileSAM` is the one-call interface ``MobileSAM(weights).predict(image, points=...)``;
- :func:`to_uint8_rgb` is the rule that turns any image into the uint8 RGB the model takes;
- stacks: :class:`EmbeddingCache`, :class:`DiskEmbeddingCache`, :func:`precompute_stack`,
  :func:`segment_stack` (:class:`Cancelled`), :func:`propagate` with :class:`Seed` and
  :class:`PropagationSettings`; napari layers: :func:`segment_from_layers`, :func:`commit_objects`,
  :func:`create_aligned_labels`;
- export and encoder runtimes: :func:`export_onnx` (ONNX / OpenVINO files), :func:`use_runtime`
  and :func:`available_runtimes` (ONNX Runtime or OpenVINO for the image encoder).

The package is layered (see ``docs/architecture.md``): ``model`` (pure torch) <- ``engine``
(numpy + torch, no napari) <- ``layers`` (napari layers, no widgets) <- ``widget`` (Qt). Modules
inside the package never import this file.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The one place the version is written: pyproject.toml reads it from here (hatch's version source).
__version__ = "0.1.0"

# The public API: name -> the module (below the package) that defines it. A new name is one line
# here and its import in the TYPE_CHECKING block below (for type checkers and editors);
# tests/test_packaging.py checks that the two agree and that every name resolves.
_LAZY = {
    "build_mobile_sam": "model.build",
    "CheckpointError": "model.checkpoint",
    "SamPredictor": "engine.predictor",
    "ResizeLongestSide": "engine.transforms",
    "MobileSAM": "engine.mobile_sam",
    "Results": "engine.mobile_sam",
    "to_uint8_rgb": "engine.image_conversion",
    "EmbeddingCache": "engine.embedding_cache",
    "DiskEmbeddingCache": "engine.disk_cache",
    "default_cache_folder": "engine.disk_cache",
    "model_fingerprint": "engine.disk_cache",
    "StackEmbeddings": "engine.stack",
    "precompute_stack": "engine.stack",
    "segment_stack": "engine.stack",
    "PropagationSettings": "engine.propagation",
    "Seed": "engine.propagation",
    "propagate": "engine.propagation",
    "Cancelled": "engine.steps",
    "resolve_weights": "engine.weights",
    "segment_from_layers": "layers.segment",
    "commit_objects": "layers.segment",
    "create_aligned_labels": "layers.labels_writer",
    "make_nuclei_stack": "layers.sample_data",
    "SamAutomaticMaskGenerator": "engine.automatic_mask_generator",
    "masks_to_labels": "engine.instance_labels",
    "segment_everything": "engine.everything",
    "export_onnx": "engine.export",
    "use_runtime": "engine.runtimes",
    "available_runtimes": "engine.runtimes",
    "refine_labels": "engine.refine",
    "find_seeds": "engine.seeds",
    "replay_project": "engine.replay",
}

# Everything public, in the order above; `dir()` and `from napari_mobilesam import *` use it.
__all__ = list(_LAZY)

if TYPE_CHECKING:
    from napari_mobilesam.engine.automatic_mask_generator import SamAutomaticMaskGenerator
    from napari_mobilesam.engine.disk_cache import (
        DiskEmbeddingCache,
        default_cache_folder,
        model_fingerprint,
    )
    from napari_mobilesam.engine.embedding_cache import EmbeddingCache
    from napari_mobilesam.engine.everything import segment_everything
    from napari_mobilesam.engine.export import export_onnx
    from napari_mobilesam.engine.image_conversion import to_uint8_rgb
    from napari_mobilesam.engine.instance_labels import masks_to_labels
    from napari_mobilesam.engine.mobile_sam import MobileSAM, Results
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.engine.propagation import PropagationSettings, Seed, propagate
    from napari_mobilesam.engine.refine import refine_labels
    from napari_mobilesam.engine.replay import replay_project
    from napari_mobilesam.engine.runtimes import available_runtimes, use_runtime
    from napari_mobilesam.engine.seeds import find_seeds
    from napari_mobilesam.engine.stack import StackEmbeddings, precompute_stack, segment_stack
    from napari_mobilesam.engine.steps import Cancelled
    from napari_mobilesam.engine.transforms import ResizeLongestSide
    from napari_mobilesam.engine.weights import resolve_weights
    from napari_mobilesam.layers.labels_writer import create_aligned_labels
    from napari_mobilesam.layers.sample_data import make_nuclei_stack
    from napari_mobilesam.layers.segment import commit_objects, segment_from_layers
    from napari_mobilesam.model.build import build_mobile_sam
    from napari_mobilesam.model.checkpoint import CheckpointError


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
