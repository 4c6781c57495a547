"""Click and encoder time per encoder runtime, in one process, after ``use_runtime``.

Does an engine's encoder make the torch decoder's click slower? Every runtime gets its own
model in this one process (as a widget that switched runtimes would have), and the rounds are
interleaved: each round encodes one image and decodes one click (cached embedding, multimask,
1 point) with every runtime in turn, so drifting load hits them alike. Medians are printed.

``onnxruntime-spinning`` is ONNX Runtime as it was set up before its threads stopped spin-waiting
(threads = torch's, spin-waits on): the effect of the thread settings, measured in the same run.
The cost of checking a cached graph's SHA-256 on load is printed too.

    python benchmarks/bench_runtime_click.py [--weights PATH] [--rounds 15] [--threads N]

Quote the CPU (``lscpu``) and the load (``uptime``) with the numbers; on a shared machine
say so.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from napari_mobilesam import SamPredictor, build_mobile_sam
from napari_mobilesam.engine import runtimes

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "synthetic_mobile_sam.pt"


def _cpu() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(
            line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line
        )
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def _spinning_onnxruntime(model, cache_folder: str):
    """ONNX Runtime with the previous thread setup (torch's thread count, spin-waits on)."""
    ort = runtimes.require("onnxruntime")
    real = ort.SessionOptions.add_session_config_entry
    threads = runtimes._threads

    def keep_spinning(self, key, value):
        if "allow_spinning" not in key:
            real(self, key, value)

    ort.SessionOptions.add_session_config_entry = keep_spinning
    runtimes._threads = lambda: max(1, torch.get_num_threads())
    try:
        return runtimes.use_runtime(
            model, "onnxruntime", cache_folder=cache_folder, progress=lambda m: None
        )
    finally:
        ort.SessionOptions.add_session_config_entry = real
        runtimes._threads = threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(GOLDEN))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bench-graphs"))
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (and so the engines'); default torch's. On a loaded machine two "
        "threads on two cores wait on each other: 1 gives numbers that compare",
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    installed = [n for n in runtimes.AUTO_ORDER if runtimes.available_runtimes()[n].available]
    predictors: dict[str, SamPredictor] = {}
    for name in ["torch", *installed]:
        model = build_mobile_sam(args.weights, device="cpu")
        runtimes.use_runtime(model, name, cache_folder=args.cache, progress=print)
        predictors[name] = SamPredictor(model)
    if "onnxruntime" in installed:
        model = build_mobile_sam(args.weights, device="cpu")
        predictors["onnxruntime-spinning"] = SamPredictor(_spinning_onnxruntime(model, args.cache))

    image = np.random.default_rng(0).integers(0, 255, (768, 1024, 3), dtype=np.uint8)
    point = {"point_coords": np.array([[512.0, 384.0]]), "point_labels": np.array([1])}
    encode: dict[str, list[float]] = {name: [] for name in predictors}
    click: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor in predictors.values():  # warm-up: first runs allocate and tune
        predictor.set_image(image)
        predictor.predict(**point)
    for _ in range(args.rounds):
        for name, predictor in predictors.items():
            t0 = time.perf_counter()
            predictor.set_image(image)
            encode[name].append(time.perf_counter() - t0)
            for _ in range(3):  # clicks right after the engine ran, as in the plugin
                t0 = time.perf_counter()
                predictor.predict(**point)
                click[name].append(time.perf_counter() - t0)

    digests = []
    for name in installed:
        cache = runtimes._GraphCache(
            predictors["torch"].model, Path(args.cache), runtimes.DEFAULT_OPSET, print
        )
        version = runtimes._version(runtimes._PACKAGES[name][0]) or "unknown"
        files = cache.graph_files(name, version)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            runtimes.file_digest(files)
            times.append(time.perf_counter() - t0)
        size = sum(f.stat().st_size for f in files) / 2**20
        digests.append(f"{name}: {statistics.median(times) * 1e3:.1f} ms for {size:.1f} MiB")

    print(
        f"\nCPU: {_cpu()}; torch threads {torch.get_num_threads()}; engine threads "
        f"{runtimes._threads()}; load {os.getloadavg()}; {args.rounds} rounds, interleaved"
    )
    print(f"{'runtime':<22}{'encoder ms (median)':>22}{'click ms (median)':>20}{'click p90':>12}")
    for name in predictors:
        clicks = sorted(click[name])
        p90 = clicks[int(0.9 * (len(clicks) - 1))]
        print(
            f"{name:<22}{statistics.median(encode[name]) * 1e3:>22.1f}"
            f"{statistics.median(clicks) * 1e3:>20.1f}{p90 * 1e3:>12.1f}"
        )
    print("SHA-256 check of a cached graph on load: " + "; ".join(digests))


if __name__ == "__main__":
    main()
