"""Benchmark of many objects in a real napari viewer: click-and-commit rounds against one
object per point with one commit.

Run from the repository root, on a display or under a virtual X server::

    python benchmarks/bench_napari_objects.py                # 300 points, 1 round each
    python benchmarks/bench_napari_objects.py --points 100 --rounds 2

The user's two ways of making N objects with the dock widget, on one 1024 x 1024 plane of the
nuclei sample whose embedding is already cached:

- **clicks**: for each point, a click (``points.add``, as napari's add mode does), the live
  preview (the widget's timer, thread worker and preview layer), then the commit into the
  Labels layer (``widget.commit()``, what the commit key does);
- **one object per point**: the same N points added at once with "one object per point" on,
  one preview of N objects, one commit (the overlap rule of docs/many_objects.md).

The clock runs from the first click to the last commit, Qt events included. Each round starts
from an empty Labels layer; the ways alternate round by round. This is the user's time, not
the decoder's: ``bench_many_objects.py`` compares decoding alone. Quote the CPU (printed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import DEFAULT_CHECKPOINT, _load_average, cpu_model  # noqa: E402
from bench_napari import Waiter, ensure_display  # noqa: E402

from napari_mobilesam import SamPredictor, build_mobile_sam  # noqa: E402

SIDE = 1024
TIMEOUT_S = 600.0


class ObjectsBench:
    """A viewer with the nuclei plane, the docked widget and the default model."""

    def __init__(self, checkpoint: Path | None) -> None:
        import napari

        from napari_mobilesam.layers.sample_data import make_nuclei_stack

        self.viewer = napari.Viewer(show=True, title="napari-mobilesam objects benchmark")
        self.waiter = Waiter()
        plane = make_nuclei_stack((1, SIDE, SIDE), n_nuclei=100)[0]
        self.image = self.viewer.add_image(plane, name="nuclei")
        _, self.widget = self.viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
        self.widget.set_image_layer(self.image)
        self.points, _ = self.widget.create_prompt_layers()
        model = build_mobile_sam(checkpoint, device="cpu")
        self.widget.use_predictor(SamPredictor(model), checkpoint, "cpu")
        # One click encodes the plane; its result is committed so that the Labels layer exists.
        self.points.add([[SIDE / 2, SIDE / 2]])
        self.wait(lambda: len(self.widget.objects) == 1)
        self.widget.commit()
        self.settle()
        self.labels = self.widget.target_labels(self.image)

    def idle(self) -> bool:
        return self.widget.worker is None and not self.widget.interactive.timer.isActive()

    def wait(self, condition) -> None:
        if not self.waiter.until(lambda: self.idle() and condition(), TIMEOUT_S):
            raise RuntimeError("the widget did not finish")

    def settle(self) -> None:
        self.wait(lambda: True)

    def empty_labels(self) -> None:
        self.labels.data = np.zeros_like(self.labels.data)
        self.settle()

    def clicks(self, positions: np.ndarray) -> float:
        self.widget.each_point = False
        start = time.perf_counter()
        for position in positions:
            self.points.add([list(position)])
            self.wait(lambda: len(self.widget.objects) == 1)
            self.widget.commit()
        self.settle()
        return time.perf_counter() - start

    def each_point(self, positions: np.ndarray) -> float:
        self.widget.each_point = True
        start = time.perf_counter()
        self.points.add(positions)
        self.wait(lambda: len(self.widget.objects) == len(positions))
        self.widget.commit()
        self.settle()
        elapsed = time.perf_counter() - start
        self.widget.each_point = False
        return elapsed

    def close(self) -> None:
        self.viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    args = parser.parse_args()
    display = ensure_display()
    print(f"CPU: {cpu_model()}; display: {display}; load average before: {_load_average()}")
    rng = np.random.default_rng(5)
    positions = rng.uniform(0.05 * SIDE, 0.95 * SIDE, (args.points, 2))  # (row, col)
    bench = ObjectsBench(args.checkpoint if args.checkpoint.is_file() else None)
    ways = {"clicks": bench.clicks, "one object per point": bench.each_point}
    times: dict[str, list[float]] = {name: [] for name in ways}
    echoed = io.StringIO()  # napari echoes each commit's notification on stdout
    try:
        with contextlib.redirect_stdout(echoed):
            for r in range(args.rounds):
                for name in ways if r % 2 == 0 else list(ways)[::-1]:
                    bench.empty_labels()
                    times[name].append(ways[name](positions))
                    ids = np.unique(bench.labels.data)
                    times.setdefault(f"{name} ids", []).append(float(ids.size - 1))
    finally:
        bench.close()
    clicks, batch = (statistics.median(times[n]) for n in ways)
    print(f"{args.points} points on {SIDE} x {SIDE}, medians of {args.rounds} round(s):")
    print("| way | time (s) | ratio |")
    print("|---|---|---|")
    print(f"| {args.points} clicks, each previewed and committed | {clicks:.1f} | 1 |")
    print(f"| one object per point, one preview, one commit | {batch:.1f} | {batch / clicks:.2f} |")
    print(
        f"objects in the Labels layer: {times['clicks ids']} / {times['one object per point ids']}"
    )
    print(f"load average after: {_load_average()}")


if __name__ == "__main__":
    main()
