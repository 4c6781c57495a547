"""Build the MobileSAM ``vit_t`` model and load a checkpoint with the official key layout."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .modeling import MaskDecoder, PromptEncoder, Sam, TinyViT, TwoWayTransformer
from .modeling.inference import optimize_for_inference
from .weights import layout_hint, load_weights_state_dict, unwrap_state_dict

PROMPT_EMBED_DIM = 256
IMAGE_SIZE = 1024
VIT_PATCH_SIZE = 16
IMAGE_EMBEDDING_SIZE = IMAGE_SIZE // VIT_PATCH_SIZE  # 64


class CheckpointError(ValueError):
    """A checkpoint that does not have the MobileSAM (``vit_t``) layout."""


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


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, object]) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = []
    for key, value in state_dict.items():
        if key in expected:
            if not isinstance(value, torch.Tensor):
                mismatched.append(f"{key} (not a tensor: {type(value).__name__})")
            elif tuple(value.shape) != tuple(expected[key].shape):
                mismatched.append(
                    f"{key} (checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)})"
                )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_summarise(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} key(s) with the wrong shape: {_summarise(mismatched)}")
    if problems:
        raise CheckpointError(
            "The checkpoint does not have the MobileSAM (vit_t) layout: "
            + "; ".join(problems)
            + ". Use the official mobile_sam.pt or a fine-tuned file with the same layout."
            + layout_hint(state_dict)
        )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict safely (``weights_only=True``: no pickled code is executed)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MobileSAM checkpoint not found: {path}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"Could not read {path} as a PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            "The file may be truncated or not a torch file; download mobile_sam.pt again."
        ) from exc
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors."
        )
    return dict(state_dict)


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
