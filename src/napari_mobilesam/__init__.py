"""napari-mobilesam: interactive MobileSAM segmentation for napari, and a headless Python API.

Entry points (imported lazily, so loading the napari manifest does not import torch):

- :func:`build_mobile_sam` builds the model and loads ``mobile_sam.pt``;
- :class:`SamPredictor` is segment-anything's predictor interface;
- :class:`MobileSAM` is the one-call interface ``MobileSAM(weights).predict(image, points=...)``;
- :func:`to_uint8_rgb` is the rule that turns any image into the uint8 RGB the model takes.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "build_mobile_sam": "build",
    "CheckpointError": "build",
    "SamPredictor": "predictor",
    "ResizeLongestSide": "transforms",
    "MobileSAM": "segmenter",
    "Results": "segmenter",
    "to_uint8_rgb": "image_conversion",
}

__all__ = [
    "CheckpointError",
    "MobileSAM",
    "ResizeLongestSide",
    "Results",
    "SamPredictor",
    "build_mobile_sam",
    "to_uint8_rgb",
]

if TYPE_CHECKING:
    from .build import CheckpointError, build_mobile_sam
    from .image_conversion import to_uint8_rgb
    from .predictor import SamPredictor
    from .segmenter import MobileSAM, Results
    from .transforms import ResizeLongestSide


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
