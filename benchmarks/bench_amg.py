"""Benchmark of automatic mask generation ("segment everything") on a 1024x1024 image.

Run from the repository root::

    python benchmarks/bench_amg.py                      # 2 rounds, SAM defaults and 16x16
    python benchmarks/bench_amg.py --repeats 3 --json amg.json
    python benchmarks/bench_amg.py --quick              # 16x16, one round (a few minutes)

Every figure is the median over ``--repeats`` rounds of one full ``generate(image)`` call (image
encoding included): wall seconds, and the process's CPU seconds (all threads together; less
sensitive to other processes than wall time, about wall time x threads on a quiet machine).
As in ``bench_core.py``, the paths are timed call by call in alternating
order (forward in even rounds, backward in odd ones), with one fp32 GEMM before each
configuration of a round, so a change of machine load hits all of them alike. Paths:

- ``segment-anything`` (the reference, left out with ``--no-segment-anything``): Meta's own
  ``SamAutomaticMaskGenerator`` around our plain eager model with segment-anything's mask
  upscaling: the original algorithm on modules equal to the original's;
- ``eager fp32``: ``SamAutomaticMaskGenerator(build_mobile_sam(ckpt, optimize=False))``;
- ``default``: ``SamAutomaticMaskGenerator(build_mobile_sam(ckpt))``, what the API uses;
- one row per installed encoder runtime (``use_runtime(default model, name)``);
- ``bf16 decoder`` (CPUs with native bf16 only): the default model with
  ``decoder_precision="bf16"``.

``time / segment-anything`` is the row's time over the reference's; ``decoder / GEMM`` is
prompts/s x the original decoder's GFLOP per prompt (counted with ``torch.utils.flop_counter``)
divided by the fp32 GEMM rate of the same run (encoding included, so a lower bound).

Configurations: segment-anything's defaults (32 x 32 = 1024 prompts, 3 masks each), the same
with 16 points per side (256 prompts), and 32 x 32 with the predicted-IoU filter off
(``pred_iou_thresh=0``). The synthetic weights' candidates never reach SAM's 0.88, so in the
first two every prompt of ours stops after the decoder's IoU head (a prompt with no candidate
above the threshold skips the upscaling); with the filter off every prompt is decoded in full
and every candidate upscaled and scored, by every path. A real image lies between the two.
``--paths default,segment-anything --configs 1,3`` times a subset (keep a reference path).

The ``vs original`` column compares with the original
MobileSAM generator measured earlier on this 2-core machine: about 130 ms per prompt
(``ORIGINAL_S_PER_PROMPT``), i.e. about 130 s at SAM defaults.

Peak memory comes from a fresh Python process per path (``--rss-child PATH``) that builds the
model and runs one ``generate`` with 16 points per side: its ``VmHWM``. (The number of points
does not change the peak: crop-size logits are upscaled in chunks of a fixed byte budget.)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import (  # noqa: E402
    _load_average,
    cpu_model,
    decoder_gflop_per_prompt,
    installed_runtimes,
    peak_rss_mib,
)

from napari_mobilesam.engine.automatic_mask_generator import (  # noqa: E402
    SamAutomaticMaskGenerator,
)
from napari_mobilesam.engine.decoder_precision import bf16_decoder_supported  # noqa: E402
from napari_mobilesam.model.build import build_mobile_sam  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT.parent / "shared" / "golden" / "synthetic_mobile_sam.pt"
IMAGE_SIDE = 1024
ORIGINAL_S_PER_PROMPT = 0.130  # the original MobileSAM generator on this 2-core CPU
# Configuration -> (points per side, other generator settings). The synthetic weights' masks
# never pass SAM's predicted-IoU filter (0.88), so the first two rows time prompts that all
# stop after the IoU head; the third switches the filter off (every candidate is upscaled and
# scored for stability, by every path): the other end of what a real image costs.
CONFIGS: dict[str, tuple[int, dict]] = {
    "SAM defaults (32x32)": (32, {}),
    "16x16 points": (16, {}),
    "32x32, IoU filter off": (32, {"pred_iou_thresh": 0.0}),
}
RSS_PREFIX = "RSS_CHILD_JSON "


def test_image(side: int = IMAGE_SIDE) -> np.ndarray:
    """(side, side, 3) uint8: bright discs of several sizes on a textured background."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:side, :side]
    image = rng.normal(60, 12, (side, side)).clip(0, 255)
    for _ in range(60):
        cy, cx = rng.integers(0, side, 2)
        r = rng.integers(8, 80)
        image[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = rng.integers(120, 250)
    gray = image.astype(np.uint8)
    return np.stack([gray, np.roll(gray, 3, axis=1), gray // 2 + 60], axis=-1)


def make_generators(
    checkpoint: Path | None, with_sa: bool, only: str | None = None
) -> dict[str, Callable[[int], object]]:
    """Path name -> factory of a generator with ``points_per_side`` (SAM defaults otherwise).

    ``only``: build just that path's model (the fresh-process memory run).
    """
    paths: dict[str, Callable[[int], object]] = {}

    def wanted(name: str) -> bool:
        return only is None or only == name

    if with_sa and wanted("segment-anything"):
        try:
            from bench_core import segment_anything_predictor
            from segment_anything import SamAutomaticMaskGenerator as MetaGenerator
        except ImportError:
            print("segment-anything is not installed; its column is left out")
        else:
            # The original algorithm on modules equal to the original's (plain eager model,
            # segment-anything's own mask upscaling).
            meta = segment_anything_predictor(checkpoint, torch.device("cpu")).model
            paths["segment-anything"] = lambda n, **kw: MetaGenerator(meta, points_per_side=n, **kw)
    if wanted("eager fp32"):
        eager = build_mobile_sam(checkpoint, device="cpu", optimize=False)
        paths["eager fp32"] = partial(_generator, eager)
    if wanted("default") or wanted("bf16 decoder"):
        default = build_mobile_sam(checkpoint, device="cpu")
        if wanted("default"):
            paths["default"] = partial(_generator, default)
        if bf16_decoder_supported("cpu")[0]:
            paths["bf16 decoder"] = partial(_generator, default, decoder_precision="bf16")
    for runtime in installed_runtimes():
        if wanted(runtime):
            from napari_mobilesam import use_runtime

            model = use_runtime(build_mobile_sam(checkpoint, device="cpu"), runtime)
            paths[runtime] = partial(_generator, model)
    return paths


def _generator(model: object, n: int, **settings: object) -> SamAutomaticMaskGenerator:
    return SamAutomaticMaskGenerator(model, points_per_side=n, **settings)


def time_rounds(
    paths: dict[str, Callable[[int], object]], image: np.ndarray, repeats: int
) -> dict[str, dict[str, list[float]]]:
    """Seconds per generate() for every (config, path), interleaved round by round."""
    samples: dict[str, dict[str, list[float]]] = {c: {p: [] for p in paths} for c in CONFIGS}
    cpu: dict[str, dict[str, list[float]]] = {c: {p: [] for p in paths} for c in CONFIGS}
    counts: dict[str, dict[str, int]] = {c: {} for c in CONFIGS}
    gemm: list[float] = []
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    names = list(paths)
    for round_ in range(repeats):
        order = names if round_ % 2 == 0 else names[::-1]
        for config, (n, settings) in CONFIGS.items():
            start = time.perf_counter()
            torch.mm(a, b)  # the machine's fp32 GEMM rate over the same stretch of time
            gemm.append(2 * 2048**3 / (time.perf_counter() - start) / 1e9)
            for name in order:
                generator = paths[name](n, **settings)
                start, cpu_start = time.perf_counter(), time.process_time()
                records = generator.generate(image)
                samples[config][name].append(time.perf_counter() - start)
                cpu[config][name].append(time.process_time() - cpu_start)
                counts[config][name] = len(records)
                print(f"  round {round_}: {config}, {name}: {samples[config][name][-1]:.1f} s")
    return {"seconds": samples, "cpu_seconds": cpu, "masks": counts, "gemm_gflops": gemm}


def rss_child(name: str, checkpoint: Path | None) -> dict[str, float]:
    paths = make_generators(checkpoint, with_sa=name == "segment-anything", only=name)
    image = test_image()
    paths[name](16).generate(image)
    return {"peak_rss_mib": peak_rss_mib()}


def fresh_process_rss(name: str, checkpoint: Path | None) -> float | None:
    command = [sys.executable, str(Path(__file__).resolve()), "--rss-child", name]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RSS_PREFIX):
            return json.loads(line[len(RSS_PREFIX) :])["peak_rss_mib"]
    return None


def format_table(timing: dict, rss: dict[str, float | None], gflop: float) -> str:
    names = list(next(iter(timing["seconds"].values())))
    reference = "segment-anything" if "segment-anything" in names else "eager fp32"
    gemm = statistics.median(timing["gemm_gflops"])
    header = ["configuration", "path", "s (median)", "CPU s", "prompts/s", "masks"]
    header += [f"time / {reference}", "decoder / GEMM", "vs original", "peak RSS MiB"]
    rows = [header]
    for config, (n, _) in CONFIGS.items():
        prompts = n * n
        base = statistics.median(timing["seconds"][config][reference])
        for name in names:
            seconds = statistics.median(timing["seconds"][config][name])
            rows.append(
                [
                    config,
                    name,
                    f"{seconds:.1f}",
                    f"{statistics.median(timing['cpu_seconds'][config][name]):.1f}",
                    f"{prompts / seconds:.1f}",
                    str(timing["masks"][config][name]),
                    f"{seconds / base:.2f}",
                    f"{prompts / seconds * gflop / gemm:.2f}",
                    f"{ORIGINAL_S_PER_PROMPT * prompts / seconds:.2f}x",
                    f"{rss[name]:.0f}" if n == 16 and rss.get(name) else "-",
                ]
            )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=2, help="rounds (median over them)")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None,
    )
    parser.add_argument(
        "--segment-anything", action="store_true", help="(default; kept for old command lines)"
    )
    parser.add_argument("--no-rss", action="store_true", help="skip the fresh-process memory")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--quick", action="store_true", help="16x16 only, one round, no memory rows (minutes)"
    )
    parser.add_argument(
        "--no-segment-anything", action="store_true", help="leave out the reference generator"
    )
    parser.add_argument(
        "--paths", default=None, help="comma-separated paths to time (default: all available)"
    )
    parser.add_argument(
        "--configs",
        default=None,
        help="comma-separated configuration numbers, 1-based, in the order "
        + "; ".join(f"{i}: {name}" for i, name in enumerate(CONFIGS, 1)),
    )
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.rss_child is not None:
        print(RSS_PREFIX + json.dumps(rss_child(args.rss_child, args.checkpoint)), flush=True)
        return 0

    if args.quick:
        args.repeats, args.no_rss = 1, True
        args.configs = args.configs or "2"
    if args.configs:
        wanted = {list(CONFIGS)[int(i) - 1] for i in args.configs.split(",")}
        for name in list(CONFIGS):
            if name not in wanted:
                CONFIGS.pop(name)
    load_start = _load_average()
    flops = decoder_gflop_per_prompt(args.checkpoint)
    started = time.perf_counter()
    print(
        f"napari-mobilesam automatic mask generation benchmark, {_dt.datetime.now():%Y-%m-%d %H:%M}"
    )
    print(f"python {platform.python_version()}, torch {torch.__version__}, {platform.platform()}")
    print(
        f'cpu: "{cpu_model()}" ({os.cpu_count()} logical CPUs, torch threads '
        f"{torch.get_num_threads()}), checkpoint: {args.checkpoint or 'random weights'}"
    )
    image = test_image()
    paths = make_generators(args.checkpoint, not args.no_segment_anything)
    if args.paths:
        paths = {name: make for name, make in paths.items() if name in args.paths.split(",")}
    timing = time_rounds(paths, image, args.repeats)
    del paths
    rss = (
        {}
        if args.no_rss
        else {
            name: fresh_process_rss(name, args.checkpoint)
            for name in timing["masks"][next(iter(CONFIGS))]
        }
    )
    print()
    print(format_table(timing, rss, flops["reference"]))
    print(
        f"fp32 GEMM 2048x2048: {statistics.median(timing['gemm_gflops']):.1f} GFLOP/s (median "
        f"over the run); decoder / GEMM = prompts/s x {flops['reference']:.2f} GFLOP (the "
        "original decoder per 1-point multimask prompt, torch.utils.flop_counter) / GEMM, "
        f"encoding included; the default decoder executes {flops['executed']:.2f} GFLOP"
    )
    load_end = _load_average()
    print(
        f"\n{args.repeats} round(s), total {time.perf_counter() - started:.0f} s; load average "
        f"(1 min) at start / end: {load_start} / {load_end} on {os.cpu_count()} logical CPUs"
    )
    if args.json is not None:
        args.json.write_text(json.dumps({"timing": timing, "rss_mib": rss}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
