"""What saving a commit into a project folder costs on a deep volume.

A Labels layer of PLANES x SIZE x SIZE uint32 is saved into a project folder; each commit writes
one object on one plane (as a click does) and is saved before the writer returns. Measured: the
writer's wall time with and without a recorder (interleaved, medians), the bytes the step adds to
the folder, and, for scale, writing the whole volume once (what saving "the layer" would cost).

    python benchmarks/bench_project_save.py [--planes 2000] [--size 256] [--repeats 15]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from napari.layers import Labels

from napari_mobilesam.engine.project_store import ProjectStore
from napari_mobilesam.layers.labels_writer import write_masks
from napari_mobilesam.layers.plane import PlaneRef
from napari_mobilesam.layers.project_recorder import ProjectRecorder


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--planes", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    shape = (args.planes, args.size, args.size)
    rng = np.random.default_rng(0)
    plain = Labels(np.zeros(shape, np.uint32))
    saved = Labels(np.zeros(shape, np.uint32))
    work = Path(tempfile.mkdtemp())
    recorder = ProjectRecorder.start(saved, work / "p.mobilesam", notify=print)
    times: dict[str, list[float]] = {"without project": [], "with project": []}
    added: list[int] = []
    for repeat in range(args.repeats):
        z = int(rng.integers(0, args.planes))
        mask = np.zeros(shape[1:], bool)
        r, c = rng.integers(0, args.size - 40, 2)
        mask[r : r + 30, c : c + 30] = True
        plane = PlaneRef("x", (z, None, None), (1, 2), shape[1:])
        order = [("without project", plain), ("with project", saved)]
        for name, layer in order if repeat % 2 == 0 else order[::-1]:
            before = _folder_bytes(work) if layer is saved else 0
            start = time.perf_counter()
            write_masks(layer, [(plane, mask)])
            times[name].append(time.perf_counter() - start)
            if layer is saved:
                added.append(_folder_bytes(work) - before)
    records = recorder.store.records
    assert all(len(r["planes"]) == 1 for r in records)
    recorder.close()
    start = time.perf_counter()
    with ProjectStore.create(work / "whole.mobilesam", shape) as store:
        for chunk in store.chunks():
            store._array[chunk] = saved.data[chunk]
    whole = time.perf_counter() - start
    print(f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"volume {shape} uint32 ({saved.data.nbytes / 2**20:.0f} MiB), {args.repeats} commits")
    for name, values in times.items():
        print(f"  commit {name}: median {statistics.median(values) * 1e3:.1f} ms")
    print(f"  folder growth per commit: median {statistics.median(added) / 1024:.1f} KiB "
          f"(one plane chunk + record + journal churn)")  # fmt: skip
    print(f"  writing every plane once instead: {whole:.1f} s")


if __name__ == "__main__":
    main()
