"""Benchmark of batch embedding (``napari-mobilesam embed``): threads vs a dask LocalCluster.

Run from the repository root (``PYTHONPATH=src`` if the package is not installed)::

    python benchmarks/bench_cli.py                       # (32, 512, 512) stack, threads vs local:2
    python benchmarks/bench_cli.py --planes 8 --json cli.json

Each scheduler embeds the same synthetic uint16 stack into a fresh cache, through the same
planning and task code as the command line (one task per plane). The clock starts once the
workers hold the model (``run_tasks``' ``on_start``) and stops at the last task's report, so
process start-up and model loading are left out and reported apart.

Per task, the workers report their wall time (``seconds``) and the part inside the model
(``model_seconds``). From those:

- *in-task overhead* = seconds - model_seconds: reading the plane, conversion, cache write;
- *scheduler overhead* = (wall x workers - sum of task seconds) / tasks: the time a worker slot
  was not running a task (dask's bookkeeping, transfers, waiting for the next task);

both are given per task and as a share of the mean task time.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT.parent / "shared" / "golden" / "synthetic_mobile_sam.pt"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def make_stack(folder: Path, planes: int, size: int) -> Path:
    """A uint16 stack of bright discs on noise, different on every plane."""
    import tifffile

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    stack = rng.integers(0, 300, (planes, size, size)).astype(np.uint16)
    for z in range(planes):
        for _ in range(12):
            cy, cx, r = rng.integers(20, size - 20, 2).tolist() + [int(rng.integers(8, 30))]
            stack[z][(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] += 2500
    path = folder / "stack.tif"
    tifffile.imwrite(path, stack, photometric="minisblack")
    return path


def run_once(scheduler: str, stack: Path, weights: Path, device: str, workers: int) -> dict:
    from napari_mobilesam.batch.files import napari_contrast_limits, open_source
    from napari_mobilesam.batch.tasks import ModelSpec, Task, run_tasks

    source = open_source(stack)
    cache = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    options = {"cache": str(cache), "contrast_limits": napari_contrast_limits(source)}
    tasks = [Task("embed", source, plane, options=options) for plane in source.planes()]
    spec = ModelSpec(str(weights.resolve()), device)
    marks: dict[str, float] = {"called": time.perf_counter()}
    reports = []

    def on_start(client) -> None:
        marks["start"] = time.perf_counter()

    def on_report(report) -> None:
        reports.append(report)
        marks["end"] = time.perf_counter()

    run_tasks(tasks, spec, scheduler, workers=workers, on_start=on_start, on_report=on_report)
    failed = [r for r in reports if r.status != "done"]
    if failed:
        raise SystemExit(f"{scheduler}: {len(failed)} task(s) did not run: {failed[0]}")
    slots = workers if scheduler == "threads" else int(scheduler.split(":")[1])
    wall = marks["end"] - marks["start"]
    task_s = [r.seconds for r in reports]
    model_s = [r.model_seconds for r in reports]
    idle = max(0.0, wall * slots - sum(task_s)) / len(reports)
    mean_task = statistics.mean(task_s)
    return {
        "scheduler": scheduler,
        "slots": slots,
        "planes": len(reports),
        "startup_s": marks["start"] - marks["called"],
        "wall_s": wall,
        "planes_per_s": len(reports) / wall,
        "task_s_mean": mean_task,
        "model_s_mean": statistics.mean(model_s),
        "in_task_overhead_s": mean_task - statistics.mean(model_s),
        "scheduler_overhead_s": idle,
        "scheduler_overhead_pct": 100.0 * idle / mean_task,
        "processes": len({r.pid for r in reports}),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--planes", type=int, default=32)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--schedulers", default="threads,local:2")
    parser.add_argument("--threads", type=int, default=2, help="task threads for 'threads'")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if not args.weights.is_file():
        print(f"weights not found: {args.weights} (give --weights)", file=sys.stderr)
        return 2

    import torch

    machine = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_before": load_average(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    folder = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    stack = make_stack(folder, args.planes, args.size)
    results = []
    for scheduler in args.schedulers.split(","):
        results.append(run_once(scheduler, stack, args.weights, args.device, args.threads))
        print(f"{scheduler}: done ({load_average()})", file=sys.stderr)
    machine["load_after"] = load_average()

    print(f"embed, ({args.planes}, {args.size}, {args.size}) uint16 stack, device {args.device}")
    print(f"CPU: {machine['cpu']}, {machine['cores']} cores, torch {machine['torch']}")
    print(f"load average (1, 5, 15 min): {machine['load_before']} before, "
          f"{machine['load_after']} after")  # fmt: skip
    header = (
        f"{'scheduler':<10} {'slots':>5} {'planes/s':>9} {'task s':>7} {'model s':>8} "
        f"{'in-task':>8} {'sched/task':>10} {'sched %':>8} {'startup s':>9}"
    )
    print(header)
    for r in results:
        print(
            f"{r['scheduler']:<10} {r['slots']:>5} {r['planes_per_s']:>9.3f} "
            f"{r['task_s_mean']:>7.2f} {r['model_s_mean']:>8.2f} {r['in_task_overhead_s']:>8.3f} "
            f"{r['scheduler_overhead_s']:>10.3f} {r['scheduler_overhead_pct']:>7.1f}% "
            f"{r['startup_s']:>9.1f}"
        )
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
