"""MobileSAM as pure torch modules (no napari, no Qt): one module per part, as in SAM."""

from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

__all__ = ["MaskDecoder", "PromptEncoder", "Sam", "TinyViT", "TwoWayTransformer"]
