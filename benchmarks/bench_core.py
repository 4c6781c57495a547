"""Benchmark of the core MobileSAM model: encoder, set_image, clicks and batched prompts.

Run from the repository root (``PYTHONPATH=src`` if the package is not installed)::

    python benchmarks/bench_core.py                  # CPU, plus CUDA when available
    python benchmarks/bench_core.py --device cpu --repeats 5 --json bench.json

Every figure is the median of ``--repeats`` timed runs that follow ``--warmup`` untimed ones,
all measured in this one process, together with the machine's own fp32 GEMM rate so that the
model's throughput can be read as a fraction of what the hardware does on a plain matmul.

The table has one column per *path* (a way of running the model). For now there is one path,
``eager fp32`` (the model exactly as :func:`build_mobile_sam` returns it); another path is
added by appending ``(name, factory)`` to :func:`default_paths`, and the table then gains a
column for it and a ratio column (last path / first path).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from napari_mobilesam import SamPredictor, build_mobile_sam

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT.parent / "shared" / "golden" / "synthetic_mobile_sam.pt"

# Work per call, for effective-throughput figures. The encoder figure is the TinyViT encoder's
# multiply-adds at 1024x1024 (about 38.7 G) counted as 2 FLOPs each; the click figure is the
# same count for the prompt encoder + two-way mask decoder on one prompt (about 1.8 G MACs).
ENCODER_GFLOP = 77.5
CLICK_GFLOP = 3.6

IMAGE_HW = (480, 640)  # the set_image / click benchmarks use an image of this (H, W)
N_BATCH_PROMPTS = 64
BATCH_MULTIMASK = True  # like an automatic "segment everything" pass

PredictorFactory = Callable[[torch.device], SamPredictor]


# --------------------------------------------------------------------------- helpers
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_runs(
    fn: Callable[[], object], device: torch.device, repeats: int, warmup: int
) -> list[float]:
    """Seconds per call of ``fn`` for ``repeats`` runs, after ``warmup`` untimed runs."""
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        samples.append(time.perf_counter() - start)
    return samples


def _median_ms(samples: list[float]) -> float:
    return 1e3 * statistics.median(samples)


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mib() -> float:
    """Current resident set size (from /proc where present, otherwise the peak so far)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mib()


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def resolve_devices(choice: str) -> list[torch.device]:
    if choice == "cpu":
        return [torch.device("cpu")]
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda was given but torch.cuda.is_available() is False.")
        return [torch.device("cuda")]
    devices = [torch.device("cpu")]
    if torch.cuda.is_available():
        devices.append(torch.device("cuda"))
    return devices


# ------------------------------------------------------------------------ measurements
def bench_gemm(device: torch.device, size: int, repeats: int, warmup: int) -> dict[str, float]:
    """fp32 ``torch.mm`` of two (size, size) matrices: median ms and GFLOP/s."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(size, size, generator=gen).to(device)
    b = torch.randn(size, size, generator=gen).to(device)
    out = torch.empty(size, size, device=device)
    samples = time_runs(lambda: torch.mm(a, b, out=out), device, repeats, warmup)
    ms = _median_ms(samples)
    return {"gemm_ms": ms, "gemm_gflops": 2 * size**3 / (ms * 1e-3) / 1e9}


def bench_path(
    name: str,
    predictor_factory: PredictorFactory,
    device: torch.device,
    *,
    repeats: int,
    warmup: int,
    gemm_size: int,
) -> dict[str, float | str]:
    """Measure one way of running the model on ``device``; returns metric name -> value."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    predictor = predictor_factory(device)
    _sync(device)
    result: dict[str, float | str] = {"path": name, "rss_after_build_mib": current_rss_mib()}
    model = predictor.model

    # The machine's matmul rate, measured just before this path so both see the same state.
    result.update(bench_gemm(device, gemm_size, repeats, warmup))
    gemm = float(result["gemm_gflops"])

    # Encoder alone on a preprocessed 1024x1024 input.
    gen = torch.Generator().manual_seed(1)
    raw = (torch.rand(1, 3, 1024, 1024, generator=gen) * 255).to(device)
    with torch.inference_mode():
        encoder_input = model.preprocess(raw)

        def encode() -> torch.Tensor:
            return model.image_encoder(encoder_input)

        ms = _median_ms(time_runs(encode, device, repeats, warmup))
    result["encoder_ms"] = ms
    result["encoder_gflops"] = ENCODER_GFLOP / (ms * 1e-3)
    result["encoder_vs_gemm"] = result["encoder_gflops"] / gemm

    # set_image end to end: resize + normalise + encode of an RGB uint8 image.
    rng = np.random.default_rng(2)
    h, w = IMAGE_HW
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    result["set_image_ms"] = _median_ms(
        time_runs(lambda: predictor.set_image(image), device, repeats, warmup)
    )

    # One positive click, as the napari widget sends it (numpy in, numpy masks out).
    point = np.array([[w / 2, h / 2]], dtype=np.float64)
    label = np.array([1])
    for multimask, key in ((True, "click_multi"), (False, "click_single")):
        ms = _median_ms(
            time_runs(
                lambda m=multimask: predictor.predict(
                    point_coords=point, point_labels=label, multimask_output=m
                ),
                device,
                repeats,
                warmup,
            )
        )
        result[f"{key}_ms"] = ms
        result[f"{key}_gflops"] = CLICK_GFLOP / (ms * 1e-3)
        result[f"{key}_vs_gemm"] = result[f"{key}_gflops"] / gemm

    # A batch of single-point prompts on an even grid, through predict_torch.
    side = int(np.ceil(np.sqrt(N_BATCH_PROMPTS)))
    xs, ys = np.meshgrid((np.arange(side) + 0.5) * w / side, (np.arange(side) + 0.5) * h / side)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)[:N_BATCH_PROMPTS]
    coords = predictor.transform.apply_coords_torch(
        torch.as_tensor(grid, dtype=torch.float32)[:, None, :], (h, w)
    ).to(device)
    labels = torch.ones(N_BATCH_PROMPTS, 1, dtype=torch.int, device=device)
    ms = _median_ms(
        time_runs(
            lambda: predictor.predict_torch(coords, labels, multimask_output=BATCH_MULTIMASK),
            device,
            repeats,
            warmup,
        )
    )
    result["batch_ms"] = ms
    result["batch_per_prompt_ms"] = ms / N_BATCH_PROMPTS
    result["batch_gflops"] = N_BATCH_PROMPTS * CLICK_GFLOP / (ms * 1e-3)

    result["peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        result["cuda_max_alloc_mib"] = torch.cuda.max_memory_allocated(device) / 2**20

    return result


def default_paths(checkpoint: Path | None) -> list[tuple[str, PredictorFactory]]:
    """The paths to compare, first one = baseline of the ratio column."""

    def eager_fp32(device: torch.device) -> SamPredictor:
        return SamPredictor(build_mobile_sam(checkpoint, device=device, optimize=False))

    def default(device: torch.device) -> SamPredictor:
        return SamPredictor(build_mobile_sam(checkpoint, device=device))

    return [("eager fp32", eager_fp32), ("default", default)]


# ----------------------------------------------------------------------------- output
# (key, label, unit, format); rows whose key a path lacks are left out for it (e.g. CUDA memory).
ROWS: list[tuple[str, str, str, str]] = [
    ("gemm_gflops", "GEMM fp32 {gemm}x{gemm} (torch.mm)", "GFLOP/s", "{:.1f}"),
    ("encoder_ms", "encoder 1024x1024", "ms", "{:.1f}"),
    ("encoder_gflops", "  effective (77.5 GFLOP/encode)", "GFLOP/s", "{:.1f}"),
    ("encoder_vs_gemm", "  / GEMM rate", "x", "{:.3f}"),
    ("set_image_ms", "set_image {h}x{w} (resize+norm+encode)", "ms", "{:.1f}"),
    ("click_multi_ms", "click, 1 point, multimask on", "ms", "{:.2f}"),
    ("click_multi_gflops", "  effective (3.6 GFLOP/click)", "GFLOP/s", "{:.1f}"),
    ("click_multi_vs_gemm", "  / GEMM rate", "x", "{:.3f}"),
    ("click_single_ms", "click, 1 point, multimask off", "ms", "{:.2f}"),
    ("click_single_gflops", "  effective (3.6 GFLOP/click)", "GFLOP/s", "{:.1f}"),
    ("click_single_vs_gemm", "  / GEMM rate", "x", "{:.3f}"),
    ("batch_ms", "{n} prompts, predict_torch, multimask {mm}", "ms", "{:.1f}"),
    ("batch_per_prompt_ms", "  per prompt", "ms", "{:.2f}"),
    ("batch_gflops", "  effective (3.6 GFLOP/prompt)", "GFLOP/s", "{:.1f}"),
    ("rss_after_build_mib", "RSS after import + model build", "MiB", "{:.0f}"),
    ("peak_rss_mib", "peak RSS of the process so far", "MiB", "{:.0f}"),
    ("cuda_max_alloc_mib", "torch.cuda.max_memory_allocated", "MiB", "{:.0f}"),
]


def format_table(results: list[dict], gemm_size: int) -> str:
    names = [str(r["path"]) for r in results]
    header = ["metric", "unit", *names]
    if len(results) > 1:
        header.append(f"{names[-1]} / {names[0]}")
    subs = {
        "gemm": gemm_size,
        "h": IMAGE_HW[0],
        "w": IMAGE_HW[1],
        "n": N_BATCH_PROMPTS,
        "mm": "on" if BATCH_MULTIMASK else "off",
    }
    lines = [header]
    for key, label, unit, fmt in ROWS:
        if not any(key in r for r in results):
            continue
        cells = [label.format(**subs), unit]
        cells += [fmt.format(r[key]) if key in r else "-" for r in results]
        if len(results) > 1:
            first, last = results[0].get(key), results[-1].get(key)
            cells.append(f"{last / first:.2f}" if first and last is not None else "-")
        lines.append(cells)
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = []
    for i, row in enumerate(lines):
        text = "  ".join(
            cell.ljust(widths[j]) if j < 2 else cell.rjust(widths[j]) for j, cell in enumerate(row)
        )
        out.append(text.rstrip())
        if i == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"cpu: {cpu_model()} ({os.cpu_count()} logical CPUs, torch threads {threads})"


# ------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: CPU, and CUDA too when available (default)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per figure (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed runs before timing")
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None,
        help="weights to load (default: the synthetic golden checkpoint if present, otherwise "
        "random weights; timing does not depend on the weight values)",
    )
    parser.add_argument(
        "--gemm-size",
        type=int,
        default=None,
        help="matrix side of the reference GEMM (default 2048 on CPU, 8192 on CUDA)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    devices = resolve_devices(args.device)
    started = time.perf_counter()
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "load_average_at_start": _load_average(),
        "checkpoint": str(args.checkpoint) if args.checkpoint else "random weights",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "encoder_gflop": ENCODER_GFLOP,
        "click_gflop": CLICK_GFLOP,
    }
    print(f"napari-mobilesam core benchmark, {meta['date']}")
    print(f"python {meta['python']}, torch {meta['torch']}, {meta['platform']}")
    print(f"checkpoint: {meta['checkpoint']}")
    print(f"medians of {args.repeats} runs after {args.warmup} warm-up runs")

    paths = default_paths(args.checkpoint)
    report: dict[str, object] = {"meta": meta, "results": {}}
    for device in devices:
        gemm_size = args.gemm_size or (8192 if device.type == "cuda" else 2048)
        results = []
        for name, factory in paths:
            results.append(
                bench_path(
                    name,
                    factory,
                    device,
                    repeats=args.repeats,
                    warmup=args.warmup,
                    gemm_size=gemm_size,
                )
            )
            gc.collect()  # the path's model is freed once bench_path returns
            if device.type == "cuda":
                torch.cuda.empty_cache()
        print()
        print(f"device {describe_device(device)}")
        print(format_table(results, gemm_size))
        report["results"][device.type] = {
            "device": describe_device(device),
            "gemm_size": gemm_size,
            "paths": results,
        }
    elapsed = time.perf_counter() - started
    meta["elapsed_s"] = round(elapsed, 1)
    meta["load_average_at_end"] = _load_average()
    print(f"\ntotal {elapsed:.0f} s")
    if meta["load_average_at_start"] is not None:
        print(
            f"load average (1 min) at start / end: {meta['load_average_at_start']:.2f} / "
            f"{meta['load_average_at_end']:.2f} ({os.cpu_count()} logical CPUs, "
            f"{meta['torch_threads']} torch threads; more load = shared CPUs)"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
