"""MobileSAM as pure torch modules (no napari, no Qt): one module per part, as in SAM.

The parts are imported lazily, so ``napari_mobilesam.model.checkpoint`` (which names the official
weights file) can be read without loading torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "MaskDecoder": "mask_decoder",
    "PromptEncoder": "prompt_encoder",
    "Sam": "sam",
    "TinyViT": "tiny_vit",
    "TwoWayTransformer": "transformer",
}

__all__ = ["MaskDecoder", "PromptEncoder", "Sam", "TinyViT", "TwoWayTransformer"]

if TYPE_CHECKING:
    from .mask_decoder import MaskDecoder
    from .prompt_encoder import PromptEncoder
    from .sam import Sam
    from .tiny_vit import TinyViT
    from .transformer import TwoWayTransformer


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
