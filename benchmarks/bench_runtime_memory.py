"""Peak memory per encoder runtime: a fresh process per runtime, stage by stage.

Each runtime ("torch", every installed engine and "auto") runs in its own new interpreter,
which imports the package, builds the default model, calls ``use_runtime`` (graphs already
cached: the one-time export is measured apart with ``--cold``), encodes one image and makes 10
clicks (the figure ``bench_core.py`` reports as peak RSS), then encodes 3 more images with 10
clicks each (a session: the peak of later encodes can exceed the first one's). After every stage
it reads ``/proc/self/status``: the resident set (``VmRSS``, split into anonymous memory and
mapped files) and the high-water mark ``VmHWM``. ``ru_maxrss`` is not used: a child started by
``subprocess`` would report its parent's peak there.

    python benchmarks/bench_runtime_memory.py [--weights PATH] [--cold]

Memory does not depend on the machine's load; the figures still vary by a few MiB from run to
run (thread timing decides when buffers are freed). Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOLDEN = Path(__file__).resolve().parents[2] / "shared" / "golden" / "synthetic_mobile_sam.pt"
PREFIX = "MEMORY_JSON "
IMAGE_HW = (480, 640)  # as bench_core.py's peak-RSS child
N_CLICKS = 10
N_MORE_IMAGES = 3
STAGES = ("import", "build", "use_runtime", "encode + 10 clicks", "3 more images")


def status_mib() -> dict[str, float]:
    """VmRSS, RssAnon, RssFile and VmHWM of this process, in MiB."""
    fields = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields


def child(runtime: str, weights: str, cache: str) -> dict[str, dict[str, float]]:
    """One runtime's stages, in this (fresh) process."""
    stages = {}
    import numpy as np

    from napari_mobilesam import SamPredictor, build_mobile_sam
    from napari_mobilesam.engine.runtimes import runtime_of, use_runtime

    stages["import"] = status_mib()
    model = build_mobile_sam(weights, device="cpu")
    stages["build"] = status_mib()
    use_runtime(model, runtime, cache_folder=cache, progress=lambda message: None)
    stages["use_runtime"] = status_mib()
    stages["use_runtime"]["runs_on"] = runtime_of(model)

    rng = np.random.default_rng(3)
    h, w = IMAGE_HW
    predictor = SamPredictor(model)

    def image_and_clicks() -> None:
        predictor.set_image(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        for x, y in zip(
            rng.uniform(0.1 * w, 0.9 * w, N_CLICKS),
            rng.uniform(0.1 * h, 0.9 * h, N_CLICKS),
            strict=True,
        ):
            predictor.predict(
                point_coords=np.array([[x, y]]), point_labels=np.array([1]), multimask_output=True
            )

    image_and_clicks()
    stages["encode + 10 clicks"] = status_mib()
    for _ in range(N_MORE_IMAGES):
        image_and_clicks()
    stages["3 more images"] = status_mib()
    return stages


def run_child(runtime: str, weights: str, cache: str) -> dict:
    command = [sys.executable, __file__, "--child", runtime, "--weights", weights, "--cache", cache]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    raise RuntimeError(f"{runtime}: exit code {done.returncode}: {tail[0]}")


def _cpu() -> str:
    with open("/proc/cpuinfo") as fh:
        return next((ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=str(GOLDEN))
    parser.add_argument("--cache", default=os.path.join(tempfile.gettempdir(), "bench-graphs"))
    parser.add_argument(
        "--cold", action="store_true", help="also measure use_runtime with an empty graph cache"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(PREFIX + json.dumps(child(args.child, args.weights, args.cache)), flush=True)
        return

    from napari_mobilesam.engine.runtimes import AUTO_ORDER, available_runtimes

    installed = [name for name in AUTO_ORDER if available_runtimes()[name].available]
    runs = {"torch": (args.cache, "torch")}
    for name in [*installed, "auto"] if installed else []:
        runs[name] = (args.cache, name)
    if args.cold:
        for name in installed:
            runs[f"{name} (cold cache)"] = (tempfile.mkdtemp(prefix="bench-cold-"), name)
    for name in installed:  # the graphs are exported and checked once, outside the timings
        run_child(name, args.weights, args.cache)

    results = {}
    for label, (cache, runtime) in runs.items():
        start = time.perf_counter()
        results[label] = run_child(runtime, args.weights, cache)
        results[label]["seconds"] = time.perf_counter() - start

    print(f"\nCPU: {_cpu()}; load {os.getloadavg()}; image {IMAGE_HW[1]}x{IMAGE_HW[0]}; MiB")
    print("VmHWM (peak) after each stage; in brackets VmRSS = anonymous + file-mapped")
    print(f"{'runtime':<26}" + "".join(f"{stage:>28}" for stage in STAGES))
    for label, stages in results.items():
        cells = []
        for stage in STAGES:
            s = stages[stage]
            cells.append(f"{s['VmHWM']:.0f} ({s['RssAnon']:.0f}+{s['RssFile']:.0f})")
        runs_on = stages["use_runtime"].get("runs_on", "")
        name = label if runs_on in label else f"{label} -> {runs_on}"
        print(f"{name:<26}" + "".join(f"{cell:>28}" for cell in cells))


if __name__ == "__main__":
    main()
