"""Build the MobileSAM ``vit_t`` model and load a checkpoint with the official key layout."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from .checkpoint import (
    check_state_dict,
    load_weights_state_dict,
    unwrap_state_dict,
)
from .inference import optimize_for_inference
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import Sam
from .tiny_vit import TinyViT
from .transformer import TwoWayTransformer

PROMPT_EMBED_DIM = 256
IMAGE_SIZE = 1024
VIT_PATCH_SIZE = 16
IMAGE_EMBEDDING_SIZE = IMAGE_SIZE // VIT_PATCH_SIZE  # 64


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA, then Apple MPS, then CPU; anything else is taken as is."""
    if device is None or (isinstance(device, str) and device == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as exc:  # torch's own message lists every backend it knows
        raise ValueError(
            f"Unknown device {device!r}: use 'cpu', 'cuda' (or 'cuda:N'), 'mps', or None/'auto' "
            "for the best available one."
        ) from exc


def _build_sam_vit_t() -> Sam:
    image_encoder = TinyViT(
        img_size=IMAGE_SIZE,
        in_chans=3,
        num_classes=1000,
        embed_dims=(64, 128, 160, 320),
        depths=(2, 2, 6, 2),
        num_heads=(2, 4, 5, 10),
        window_sizes=(7, 7, 14, 7),
        mlp_ratio=4.0,
        mbconv_expand_ratio=4.0,
        out_chans=PROMPT_EMBED_DIM,
    )
    prompt_encoder = PromptEncoder(
        embed_dim=PROMPT_EMBED_DIM,
        image_embedding_size=(IMAGE_EMBEDDING_SIZE, IMAGE_EMBEDDING_SIZE),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    mask_decoder = MaskDecoder(
        transformer_dim=PROMPT_EMBED_DIM,
        transformer=TwoWayTransformer(
            depth=2, embedding_dim=PROMPT_EMBED_DIM, mlp_dim=2048, num_heads=8
        ),
        num_multimask_outputs=3,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
    )
    return Sam(image_encoder, prompt_encoder, mask_decoder)


def build_mobile_sam(
    checkpoint: str | os.PathLike[str] | Mapping[str, torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    optimize: bool = True,
    half: bool | None = None,
) -> Sam:
    """Build MobileSAM and load its weights.

    Arguments:
      checkpoint: path of ``mobile_sam.pt`` (or a file with the same layout), a state dict
        (also accepted nested under "model"/"state_dict" or with a "module." prefix),
        or None for random weights (tests only: the masks are meaningless).
      device: "cpu", "cuda", "mps", a torch.device, or None/"auto" (CUDA > MPS > CPU).
      optimize: rewrite the loaded model for inference (BatchNorm folded into convolutions,
        channels-last encoder on CPU); outputs stay within the golden tolerances. False keeps
        the plain eager model with the checkpoint's module layout (e.g. for fine-tuning).
      half: run the image encoder in float16 autocast. None: on CUDA only (about 2x faster
        there; its error bound is documented and tested). Never chosen automatically on CPU,
        where half precision is slower than float32.

    Returns:
      The float32 model on ``device`` in eval mode, loaded with ``strict=True``.

    Raises:
      FileNotFoundError: the path does not exist.
      CheckpointError: the file is unreadable, or keys are missing, unexpected or mis-shaped
        (the message names them, and says what the file looks like: another SAM, SAM 2, an
        image, an empty or truncated download...).
    """
    model = _build_sam_vit_t()
    if checkpoint is not None:
        # weights.py recognises foreign files (images, HTML, other SAMs...) before torch reads
        # them, and unwraps training checkpoints such as {"model": state_dict, "epoch": ...}.
        state_dict = (
            unwrap_state_dict(checkpoint)
            if isinstance(checkpoint, Mapping)
            else load_weights_state_dict(checkpoint)
        )
        check_state_dict(model, state_dict)
        model.load_state_dict(state_dict, strict=True)
    model.requires_grad_(False)
    model = model.to(resolve_device(device)).eval()
    if half is None:
        half = model.device.type == "cuda"
    model.encoder_dtype = torch.float16 if half else None
    return optimize_for_inference(model) if optimize else model
