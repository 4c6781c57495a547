"""The mask decoder's precision: float32 (default) or an opt-in, approximate bfloat16.

bf16 runs the decoder's matrix products under ``torch.autocast`` in bfloat16: about twice as
fast where the processor multiplies bf16 natively (AVX512-BF16, AMX), and approximate. It is
never chosen automatically, and refused where bf16 would be emulated (slower than float32).
The bounds below are checked on every golden case by tests/engine/test_decoder_precision.py.
"""

from __future__ import annotations

import contextlib

import torch

DECODER_PRECISIONS = ("fp32", "bf16")

# bf16 against float32 on the same embedding and prompts (tests/engine/test_decoder_precision.py
# checks these on every golden prompt set). Measured on the public golden cases: predicted IoU
# off by at most 0.014, each mask's IoU with the float32 mask at least 0.986.
BF16_IOU_ATOL = 0.03  # predicted IoU scores, max abs difference
BF16_MIN_MASK_IOU = 0.97  # each binary mask against the float32 one


def bf16_decoder_supported(device: torch.device | str = "cpu") -> tuple[bool, str]:
    """Whether ``device`` multiplies bfloat16 natively, and how that was found."""
    device = torch.device(device)
    if device.type == "cuda":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return True, "the CUDA device supports bf16"
        return False, "the CUDA device has no native bf16"
    if device.type != "cpu":
        return False, f"bf16 decoding is offered on CPU and CUDA, not on {device.type!r}"
    from napari_mobilesam.engine.runtimes import bf16_supported  # reads the CPU's flags

    return bf16_supported()


def check_decoder_precision(precision: str, device: torch.device | str = "cpu") -> str:
    """``precision`` if it can run on ``device``; otherwise a ValueError that says why.

    Arguments:
      precision: "fp32" or "bf16".
    """
    if precision not in DECODER_PRECISIONS:
        raise ValueError(
            f"decoder_precision must be one of {DECODER_PRECISIONS}, not {precision!r}."
        )
    if precision == "bf16":
        supported, why = bf16_decoder_supported(device)
        if not supported:
            raise ValueError(
                f"decoder_precision='bf16' needs native bf16 on the device ({why}); "
                "use decoder_precision='fp32'."
            )
    return precision


def decoder_autocast(
    precision: str, device: torch.device | str = "cpu"
) -> contextlib.AbstractContextManager:
    """The context to run decoder calls in: nothing for fp32, a bf16 autocast for bf16.

    Outputs made inside may be bfloat16: convert them with ``.float()``.
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
