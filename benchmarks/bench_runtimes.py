"""Benchmark of the encoder runtimes: torch (eager and default), ONNX Runtime, OpenVINO.

Run from the repository root (``PYTHONPATH=src`` if the package is not installed)::

    python benchmarks/bench_runtimes.py                    # every installed runtime, CPU
    python benchmarks/bench_runtimes.py --repeats 5 --json runtimes.json

One row per runtime; columns: the 1024x1024 encoder (median ms), its efficiency (77.54 GFLOP per
encode / time, divided by the fp32 GEMM rate measured in the same run), the CPU time one encode
consumes over all threads (less sensitive to a shared machine's load than wall time), one click
on a cached embedding (multimask on, median ms), and the peak RSS of a fresh process that builds
the model, sets one image and makes 10 clicks. The runtimes are timed call by call in alternating
order with one reference GEMM per round (``bench_core._Interleaved``), so a change of load hits
them all alike. The graphs come from the on-disk cache (built on the first run, not timed).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import (  # noqa: E402 - the sibling script, importable once its folder is on the path
    DEFAULT_CHECKPOINT,
    IMAGE_HW,
    RSS_CHILD_PREFIX,
    RSS_CHILD_TIMEOUT_S,
    BenchPath,
    _Interleaved,
    _load_average,
    cpu_model,
    format_grid,
    rss_child,
)

from napari_mobilesam import SamPredictor, build_mobile_sam  # noqa: E402

ENCODER_GFLOP = 77.54  # multiply-adds of the TinyViT encoder at 1024x1024, counted twice
CPU_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def runtime_paths(checkpoint: Path | None) -> list[BenchPath]:
    """The rows: torch eager fp32 (baseline), torch default, then the installed engines."""
    from napari_mobilesam.engine.runtimes import available_runtimes, bf16_supported, use_runtime

    def torch_model(optimize: bool, device: torch.device) -> SamPredictor:
        return SamPredictor(build_mobile_sam(checkpoint, device=device, optimize=optimize))

    def engine(runtime: str, precision: str, device: torch.device) -> SamPredictor:
        model = build_mobile_sam(checkpoint, device=device)
        use_runtime(model, runtime, precision=precision, progress=lambda m: print(m, flush=True))
        return SamPredictor(model)

    paths = [
        BenchPath("torch eager fp32", partial(torch_model, False), device_types=("cpu",)),
        BenchPath("torch default", partial(torch_model, True), device_types=("cpu",)),
    ]
    statuses = available_runtimes()
    for name in ("onnxruntime", "openvino"):
        if statuses[name].available:
            paths.append(BenchPath(name, partial(engine, name, "fp32"), device_types=("cpu",)))
        else:
            print(f"{name}: skipped ({statuses[name].reason})")
    if statuses["openvino"].available and bf16_supported()[0]:
        paths.append(
            BenchPath(
                "openvino bf16 (approx.)",
                partial(engine, "openvino", "bf16"),
                device_types=("cpu",),
            )
        )
    return paths


def bench(paths: list[BenchPath], repeats: int, warmup: int, gemm_size: int) -> list[dict]:
    device = torch.device("cpu")
    predictors = [path.factory(device) for path in paths]
    timer = _Interleaved(paths, device, gemm_size, repeats, warmup)
    results: list[dict] = [{"path": path.name} for path in paths]

    gen = torch.Generator().manual_seed(1)
    raw = torch.rand(1, 3, 1024, 1024, generator=gen) * 255
    with torch.inference_mode():
        encoder_input = predictors[0].model.preprocess(raw)
    cpu_seconds: list[list[float]] = [[] for _ in paths]

    def encode(i: int) -> None:
        start = time.process_time()
        with torch.inference_mode():
            predictors[i].model.image_encoder(encoder_input)
        cpu_seconds[i].append(time.process_time() - start)

    for result, ms in zip(
        results, timer.median_ms([partial(encode, i) for i in range(len(paths))]), strict=True
    ):
        result["encoder_ms"] = ms
    for result, seconds in zip(results, cpu_seconds, strict=True):
        result["encoder_cpu_ms"] = 1e3 * float(np.median(seconds[warmup:] or seconds))

    rng = np.random.default_rng(2)
    h, w = IMAGE_HW
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    for predictor in predictors:
        predictor.set_image(image)
    point, label = np.array([[w / 2, h / 2]]), np.array([1])
    calls = [
        partial(p.predict, point_coords=point, point_labels=label, multimask_output=True)
        for p in predictors
    ]
    for result, ms in zip(results, timer.median_ms(calls), strict=True):
        result["click_ms"] = ms

    # Agreement with the torch default path on this image (same weights, same input).
    reference = predictors[1].get_image_embedding()
    gemm = timer.gemm()
    for predictor, result in zip(predictors, results, strict=True):
        result.update(gemm)
        result["encoder_vs_gemm"] = (
            ENCODER_GFLOP / (result["encoder_ms"] * 1e-3) / result["gemm_gflops"]
        )
        result["max_abs_vs_default"] = float(
            (predictor.get_image_embedding() - reference).abs().max()
        )
    return results


def fresh_process_rss(name: str, checkpoint: Path | None) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--rss-child", name]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RSS_CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"child_error": "timed out"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RSS_CHILD_PREFIX):
            return json.loads(line[len(RSS_CHILD_PREFIX) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"child_error": f"exit code {done.returncode}: {tail[0]}"}


def cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [flag for flag in CPU_FLAGS if flag in present]
    except OSError:
        pass
    return []


def format_results(results: list[dict]) -> str:
    header = [
        "runtime",
        "",
        "encoder ms",
        "encoder / GEMM",
        "encoder CPU ms",
        "click ms",
        "peak RSS MiB",
        "max |emb - default|",
    ]
    lines = [header]
    for r in results:
        rss = r.get("child_peak_rss_mib")
        lines.append(
            [
                r["path"],
                "",
                f"{r['encoder_ms']:.0f}",
                f"{r['encoder_vs_gemm']:.2f}",
                f"{r['encoder_cpu_ms']:.0f}",
                f"{r['click_ms']:.1f}",
                "-" if rss is None else f"{rss:.0f}",
                f"{r['max_abs_vs_default']:.1e}",
            ]
        )
    return format_grid(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--gemm-size", type=int, default=2048)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None,
    )
    parser.add_argument("--no-rss", action="store_true", help="skip the fresh-process rows")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--rss-child", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child is not None:
        paths = {p.name: p for p in runtime_paths(args.checkpoint)}
        result = rss_child(paths[args.rss_child], torch.device("cpu"))
        print(RSS_CHILD_PREFIX + json.dumps(result), flush=True)
        return 0
    paths = runtime_paths(args.checkpoint)
    meta = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average_at_start": _load_average(),
        "repeats": args.repeats,
        "warmup": args.warmup,
    }
    from napari_mobilesam.engine.runtimes import available_runtimes

    meta["runtimes"] = {name: s.version for name, s in available_runtimes().items()}
    results = bench(paths, args.repeats, args.warmup, args.gemm_size)
    if not args.no_rss:
        for result in results:
            result.update(fresh_process_rss(str(result["path"]), args.checkpoint))
    meta["load_average_at_end"] = _load_average()

    print(f"napari-mobilesam runtime benchmark, {meta['date']}")
    print(
        f"cpu: {meta['cpu']} ({meta['logical_cpus']} logical CPUs, torch threads "
        f"{meta['torch_threads']}); flags: {', '.join(meta['cpu_flags']) or 'none of interest'}"
    )
    print(", ".join(f"{k} {v}" for k, v in meta["runtimes"].items() if v))
    print(f"GEMM fp32 {args.gemm_size}^2: {results[0]['gemm_gflops']:.1f} GFLOP/s (same run)")
    print(
        f"medians of {args.repeats} interleaved rounds after {args.warmup} warm-up rounds; load "
        f"average (1 min) at start / end: {meta['load_average_at_start']} / "
        f"{meta['load_average_at_end']}"
    )
    print()
    print(format_results(results))
    for result in results:
        if "child_error" in result:
            print(f"fresh process for {result['path']} failed: {result['child_error']}")
    if args.json is not None:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
