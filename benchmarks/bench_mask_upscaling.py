"""Boolean masks at the image's size: the full upscaling against the one around positive logits.

Run from the repository root::

    python benchmarks/bench_mask_upscaling.py            # 3 masks per call, 15 rounds
    python benchmarks/bench_mask_upscaling.py --rounds 31

A click returns 3 candidate masks at the image's size. ``full`` is ``postprocess_masks(...) >
0`` (bilinear to the 1024 frame, crop, bilinear to the image); ``around positives`` is
``engine.mask_upscaling.binary_masks``, which upscales only a box around each mask's positive
logits and gives the same bits (checked here on every call, and in the tests). The synthetic
weights make noise masks that cover the whole image, so the logits are made here: a
nucleus-sized disc (radius 6 low-res pixels, 48 px across at 1024), a large disc (radius 40,
320 px) and noise positive all over (which takes the full path). The two ways alternate call
by call; medians in ms per call of 3 masks. Quote the CPU (printed) and the load.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import _load_average, cpu_model  # noqa: E402

from napari_mobilesam.engine.mask_upscaling import binary_masks  # noqa: E402
from napari_mobilesam.engine.transforms import ResizeLongestSide  # noqa: E402
from napari_mobilesam.model.build import build_mobile_sam  # noqa: E402

SIZES = [(1024, 1024), (512, 512), (700, 500), (2048, 2048)]


def logits(kind: str) -> torch.Tensor:
    """(3, 1, 256, 256) low-res logits of one kind."""
    gen = torch.Generator().manual_seed(0)
    if kind == "noise":
        return torch.randn(3, 1, 256, 256, generator=gen) * 3
    radius = {"nucleus": 6, "large disc": 40}[kind]
    yy, xx = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    disc = (((yy - 110) ** 2 + (xx - 140) ** 2) <= radius**2).float()
    return torch.randn(3, 1, 256, 256, generator=gen) - 8 + 16 * disc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    model = build_mobile_sam(None)
    print(f"CPU: {cpu_model()}; torch threads: {torch.get_num_threads()}")
    print(f"load average before: {_load_average()}")
    print("| image | logits | full (ms) | around positives (ms) | ratio |")
    print("|---|---|---|---|---|")
    for size in SIZES:
        input_size = ResizeLongestSide(1024).get_preprocess_shape(*size, 1024)
        for kind in ("nucleus", "large disc", "noise"):
            args_ = (logits(kind), input_size, size)
            ways = {
                "full": lambda a=args_: model.postprocess_masks(*a) > 0,
                "around": lambda a=args_: binary_masks(*a, model.postprocess_masks),
            }
            if not torch.equal(ways["full"](), ways["around"]()):
                raise SystemExit(f"different masks for {size} {kind}")
            times: dict[str, list[float]] = {name: [] for name in ways}
            for r in range(args.rounds):
                for name in ways if r % 2 == 0 else list(ways)[::-1]:
                    start = time.perf_counter()
                    ways[name]()
                    times[name].append(1e3 * (time.perf_counter() - start))
            full, around = (statistics.median(times[n]) for n in ("full", "around"))
            print(
                f"| {size[1]} x {size[0]} | {kind} | {full:.2f} | {around:.2f} "
                f"| {around / full:.2f} |"
            )
    print(f"load average after: {_load_average()}")


if __name__ == "__main__":
    main()
