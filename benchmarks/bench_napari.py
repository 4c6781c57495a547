"""Benchmark of click-to-labels in a real napari viewer, through the MobileSAM dock widget.

Run from the repository root, on a display or under a virtual X server::

    xvfb-run -a -s "-screen 0 1280x1024x24" python benchmarks/bench_napari.py
    python benchmarks/bench_napari.py --repeats 7 --json napari.json  # starts Xvfb if needed

A user click is ``points.add(...)`` on the main thread, exactly what napari's add mode does.
The widget then runs its real live path: a zero-delay timer, a thread worker that decodes the
prompt on the cached embedding, and the preview Labels layer written back on the main thread.
The script waits in a Qt event loop (no busy polling, no pytest-qt) and time-stamps, for every
click: when the widget's run starts, when the ``MobileSAM preview`` layer's data
is updated (its ``set_data`` event) and when the canvas has drawn it (the next vispy draw).

The same is done for the paths of ``bench_core.py`` (``eager fp32`` and ``default``), one model
each, with its own embedding cache; clicks alternate between the paths so that both see the same
machine load. Every click is at a new position on a cleared plane, so nothing is reused but the
plane's embedding. The synchronous scripting calls (``segment``, ``commit``,
``segment_and_commit``) are timed in the same rounds, and the machine's fp32 GEMM rate is
measured at the start and the end of the run.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import datetime as _dt
import io
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import (  # noqa: E402 (this folder is not a package)
    DEFAULT_CHECKPOINT,
    IMAGE_HW,
    _load_average,
    bench_gemm,
    cpu_model,
    format_grid,
    load_average_line,
    peak_rss_mib,
    ratio_cell,
)

from napari_mobilesam import SamPredictor, build_mobile_sam  # noqa: E402

TARGET_CLICK_TO_LABELS_MS = 100.0
CLICK_TIMEOUT_S = 60.0  # a click whose labels have not arrived by then is an error
DRAW_TIMEOUT_S = 2.0  # how long to wait for the canvas to draw the updated preview
XVFB_SCREEN = "1280x1024x24"

PATHS: list[tuple[str, bool]] = [("eager fp32", False), ("default", True)]  # (name, optimize)


# ------------------------------------------------------------------------------ display
def ensure_display() -> str:
    """Make sure Qt has a display; start a private Xvfb when there is none (Linux).

    Returns how the display was found, for the report.
    """
    if not sys.platform.startswith("linux"):
        return "native"
    if os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        return "QT_QPA_PLATFORM=offscreen"
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"):
        return f"DISPLAY={os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')}"
    xvfb = shutil.which("Xvfb")
    if xvfb is None:
        raise SystemExit(
            "No display. Run under `xvfb-run -a python benchmarks/bench_napari.py`, or install "
            "Xvfb (Debian: apt-get install xvfb) so that this script can start one itself."
        )
    read_fd, write_fd = os.pipe()
    server = subprocess.Popen(
        [xvfb, "-displayfd", str(write_fd), "-screen", "0", XVFB_SCREEN, "-nolisten", "tcp"],
        pass_fds=(write_fd,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write_fd)
    with os.fdopen(read_fd) as fh:
        number = fh.readline().strip()  # Xvfb writes its display number once it is ready
    if not number:
        server.kill()
        raise SystemExit("Xvfb did not start; run under `xvfb-run -a` instead.")
    atexit.register(server.terminate)
    os.environ["DISPLAY"] = f":{number}"
    return f"Xvfb started by this script on :{number} ({XVFB_SCREEN})"


# ------------------------------------------------------------------------------ Qt waits
class Waiter:
    """Runs the Qt event loop until a condition holds, without spinning the CPU.

    A 5 ms timer re-checks the condition; the measured times come from the events themselves
    (their callbacks record ``time.perf_counter()``), so the check interval does not enter
    them.
    """

    def __init__(self) -> None:
        from qtpy.QtCore import QEventLoop, QTimer

        self._loop = QEventLoop()
        self._timer = QTimer()
        self._timer.setInterval(5)
        self._condition: Callable[[], bool] = lambda: True
        self._deadline = 0.0
        self._timer.timeout.connect(self._check)

    def _check(self) -> None:
        if self._condition() or time.perf_counter() > self._deadline:
            self._loop.quit()

    def until(self, condition: Callable[[], bool], timeout_s: float) -> bool:
        """Process events until ``condition()`` is true; False if ``timeout_s`` passed first."""
        if condition():
            return True
        self._condition = condition
        self._deadline = time.perf_counter() + timeout_s
        self._timer.start()
        self._loop.exec_()
        self._timer.stop()
        return condition()

    def sleep(self, seconds: float) -> None:
        """Process events for ``seconds``."""
        end = time.perf_counter() + seconds
        self.until(lambda: time.perf_counter() >= end, seconds + 1.0)


# ------------------------------------------------------------------------------ the bench
class ClickBench:
    """A viewer with one image, the docked widget and one predictor per path."""

    def __init__(self, checkpoint: Path | None) -> None:
        import napari

        from napari_mobilesam.engine.embedding_cache import EmbeddingCache
        from napari_mobilesam.layers.sample_data import make_nuclei_stack

        self.checkpoint = checkpoint
        self.viewer = napari.Viewer(show=True, title="napari-mobilesam benchmark")
        self.waiter = Waiter()  # needs the QApplication that the viewer has made
        h, w = IMAGE_HW
        self.image = self.viewer.add_image(
            make_nuclei_stack((1, h, w), n_nuclei=12)[0], name="nuclei"
        )
        _, self.widget = self.viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
        widget = self.widget
        widget.set_image_layer(self.image)
        self.points, _ = widget.create_prompt_layers()
        self.predictors: dict[str, SamPredictor] = {}
        self.caches: dict[str, Any] = {}
        for name, optimize in PATHS:
            model = build_mobile_sam(checkpoint, device="cpu", optimize=optimize)
            self.predictors[name] = SamPredictor(model)
            self.caches[name] = EmbeddingCache()
        first = PATHS[0][0]
        widget.use_predictor(self.predictors[first], checkpoint, "cpu")
        widget.cache = self.caches[first]
        self.active = first
        self.settle()

        # Observers: the widget's debounce timer firing, the canvas drawing.
        self._marks: dict[str, float] = {}
        widget.interactive.timer.timeout.connect(lambda: self._mark("run_started"))
        self.draw_events_available = False
        try:
            scene_canvas = self.viewer.window._qt_viewer.canvas._scene_canvas
            scene_canvas.events.draw.connect(lambda event: self._mark("drawn"))
            self.draw_events_available = True
        except AttributeError:
            pass
        # The preview layer is made by the first run that draws, before it writes the masks.
        self._preview_hooked: Any = None
        self.viewer.layers.events.inserted.connect(lambda event: self._hook_preview())

    # -------------------------------------------------------------- helpers
    def _mark(self, name: str) -> None:
        now = time.perf_counter()
        if name == "drawn" and "labels" not in self._marks:
            return  # only the first draw after the preview was updated counts
        self._marks.setdefault(name, now)

    def _hook_preview(self) -> None:
        layer = self.widget.preview_layer
        if layer is not None and layer is not self._preview_hooked:
            layer.events.set_data.connect(lambda event: self._mark("labels"))
            self._preview_hooked = layer

    def use(self, name: str) -> None:
        """Switch the widget to the predictor and the embedding cache of path ``name``."""
        self.widget.loader.set_predictor(self.predictors[name], self.checkpoint, "cpu")
        self.widget.cache = self.caches[name]
        self.active = name

    def idle(self) -> bool:
        return self.widget.worker is None and not self.widget.interactive.timer.isActive()

    def settle(self) -> None:
        """Let pending runs (debounce, workers) finish and the UI go idle."""
        if not self.waiter.until(self.idle, CLICK_TIMEOUT_S):
            raise RuntimeError("the widget did not go idle")
        self.waiter.sleep(0.05)

    def clear(self) -> None:
        """Remove this plane's prompts and preview, as Shift+R does, and wait for quiet."""
        self.widget.reset()
        self.settle()

    def preview_pixels(self) -> int:
        layer = self.widget.preview_layer
        return 0 if layer is None else int(np.count_nonzero(layer.data))

    # -------------------------------------------------------------- measurements
    def live_click(self, position: tuple[float, float]) -> dict[str, float]:
        """One user click through the live path; times in ms from the click."""
        self.clear()
        self._hook_preview()
        misses = self.widget.cache.misses
        self._marks = {}
        start = time.perf_counter()
        self.points.add([list(position)])
        added = time.perf_counter()
        ok = self.waiter.until(
            lambda: "labels" in self._marks and self.widget.worker is None, CLICK_TIMEOUT_S
        )
        if not ok:
            raise RuntimeError(f"no preview {CLICK_TIMEOUT_S:.0f} s after a click ({self.active})")
        if self.draw_events_available:
            self.waiter.until(lambda: "drawn" in self._marks, DRAW_TIMEOUT_S)
        marks = {k: 1e3 * (v - start) for k, v in self._marks.items()}
        result = {
            "add_ms": 1e3 * (added - start),
            "run_started_ms": marks.get("run_started", float("nan")),
            "labels_ms": marks["labels"],
            "worker_ms": marks["labels"] - marks.get("run_started", float("nan")),
            "pixels": float(self.preview_pixels()),
            "objects": float(len(self.widget.objects)),
            "cache_misses": float(self.widget.cache.misses - misses),
        }
        if "drawn" in marks:
            result["drawn_ms"] = marks["drawn"]
        match = re.search(r"decode (\d+) ms", str(self.widget._timing_label.value))
        if match:
            result["decode_ms"] = float(match.group(1))
        match = re.search(r"encode ([\d.]+) s", str(self.widget._timing_label.value))
        if match:
            result["encode_ms"] = 1e3 * float(match.group(1))
        return result

    def scripted(self, first: tuple[float, float], second: tuple[float, float]) -> dict:
        """The synchronous calls: ``segment()`` then ``commit()``, and ``segment_and_commit()``."""
        widget = self.widget
        self.clear()
        widget.live = False
        try:
            self.points.add([list(first)])
            start = time.perf_counter()
            objects = widget.segment()
            segment_done = time.perf_counter()
            widget.commit()
            commit_done = time.perf_counter()
            self.points.add([list(second)])
            start_both = time.perf_counter()
            widget.segment_and_commit()
            both_done = time.perf_counter()
        finally:
            widget.live = True
            self.settle()
        return {
            "segment_ms": 1e3 * (segment_done - start),
            "commit_ms": 1e3 * (commit_done - segment_done),
            "segment_and_commit_ms": 1e3 * (both_done - start_both),
            "segment_objects": float(len(objects)),
        }

    def close(self) -> None:
        self.viewer.close()


def click_positions(count: int, seed: int = 4) -> list[tuple[float, float]]:
    """``count`` distinct (row, col) positions well inside the image."""
    rng = np.random.default_rng(seed)
    h, w = IMAGE_HW
    rows = rng.uniform(0.1 * h, 0.9 * h, count)
    cols = rng.uniform(0.1 * w, 0.9 * w, count)
    return [(float(r), float(c)) for r, c in zip(rows, cols, strict=True)]


def run_rounds(bench: ClickBench, repeats: int, warmup: int) -> dict[str, dict[str, Any]]:
    """Warm every path up, then ``repeats`` rounds with one click per path, order alternating."""
    names = [name for name, _ in PATHS]
    # A new position for every click; click k of a round is at the same place for every path.
    positions = iter(click_positions(1 + 3 * (warmup + repeats)))
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    first_click: dict[str, dict[str, float]] = {}
    first = next(positions)
    warm = [(next(positions), next(positions), next(positions)) for _ in range(warmup)]
    for name in names:
        bench.use(name)
        # The first click encodes the plane (cached afterwards); later ones warm the decoder.
        first_click[name] = bench.live_click(first)
        for live, segment, both in warm:
            bench.live_click(live)
            bench.scripted(segment, both)
    for round_index in range(repeats):
        live, segment, both = next(positions), next(positions), next(positions)
        for name in names if round_index % 2 == 0 else names[::-1]:
            bench.use(name)
            record = bench.live_click(live)
            record.update(bench.scripted(segment, both))
            for key, value in record.items():
                samples[name].setdefault(key, []).append(value)
    return {name: {"samples": samples[name], "first_click": first_click[name]} for name in names}


# ----------------------------------------------------------------------------- output
ROWS: list[tuple[str, str, str, str]] = [
    ("labels_ms", "click -> preview labels updated (live)", "ms", "{:.1f}"),
    ("labels_ms:max", "  slowest of the clicks", "ms", "{:.1f}"),
    ("run_started_ms", "  click -> run started", "ms", "{:.1f}"),
    ("worker_ms", "  run started -> labels updated (worker)", "ms", "{:.1f}"),
    ("decode_ms", "    decode, as the widget reports it", "ms", "{:.0f}"),
    ("add_ms", "  points.add() itself (main thread)", "ms", "{:.2f}"),
    ("drawn_ms", "click -> preview drawn on the canvas", "ms", "{:.1f}"),
    ("segment_ms", "widget.segment() (sync: decode + preview)", "ms", "{:.1f}"),
    ("commit_ms", "widget.commit() (write labels, undo step)", "ms", "{:.1f}"),
    ("segment_and_commit_ms", "widget.segment_and_commit()", "ms", "{:.1f}"),
    ("first:labels_ms", "first click on the plane (encodes), once", "ms", "{:.0f}"),
    ("first:encode_ms", "  encode, as the widget reports it", "ms", "{:.0f}"),
    ("pixels", "preview labelled pixels (median)", "px", "{:.0f}"),
    ("cache_misses:sum", "embedding cache misses in timed clicks", "", "{:.0f}"),
]


def summarise(run: dict[str, Any]) -> dict[str, float]:
    """Medians of every sample (``key``), plus ``key:max``, ``key:sum`` and ``first:key``."""
    out: dict[str, float] = {}
    for key, values in run["samples"].items():
        finite = [v for v in values if np.isfinite(v)]
        if not finite:
            continue
        out[key] = statistics.median(finite)
        out[f"{key}:max"] = max(finite)
        out[f"{key}:sum"] = sum(finite)
    for key, value in run["first_click"].items():
        out[f"first:{key}"] = value
    return out


def format_table(summaries: dict[str, dict[str, float]], debounce_ms: int) -> str:
    names = list(summaries)
    header = ["metric", "unit", *names, *(f"{n} / {names[0]}" for n in names[1:])]
    lines = [header]
    for key, label, unit, fmt in ROWS:
        if not any(key in s for s in summaries.values()):
            continue
        cells = [label.format(debounce=debounce_ms), unit]
        cells += [fmt.format(s[key]) if key in s else "-" for s in summaries.values()]
        base = summaries[names[0]].get(key)
        cells += [ratio_cell(summaries[n].get(key), base) for n in names[1:]]
        lines.append(cells)
    return format_grid(lines)


def format_targets(summaries: dict[str, dict[str, float]], debounce_ms: int) -> str:
    lines = [["target", "", *summaries]]
    cells = [f"click -> labels updated <= {TARGET_CLICK_TO_LABELS_MS:.0f} ms (median)", ""]
    for summary in summaries.values():
        value = summary.get("labels_ms")
        verdict = "ok" if value is not None and value <= TARGET_CLICK_TO_LABELS_MS else "MISSED"
        cells.append("-" if value is None else f"{value:.1f} {verdict}")
    lines.append(cells)
    # A finished prompt edit starts a run at once; the debounce only applies to slider moves.
    return format_grid(lines)


# ------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--repeats", type=int, default=9, help="timed clicks per path (median; default 9)"
    )
    parser.add_argument(
        "--warmup", type=int, default=2, help="untimed clicks per path after the encoding one"
    )
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=DEFAULT_CHECKPOINT if DEFAULT_CHECKPOINT.is_file() else None,
        help="weights to load (default: the synthetic golden checkpoint if present, otherwise "
        "random weights; timing does not depend on the weight values)",
    )
    parser.add_argument(
        "--gemm-size", type=int, default=2048, help="matrix side of the reference GEMM"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    display = ensure_display()
    load_start = _load_average()
    device = torch.device("cpu")
    gemm_start = bench_gemm(device, args.gemm_size, 5, 2)

    import napari
    from qtpy import API_NAME, QT_VERSION

    from napari_mobilesam.widget.dock_widget import DEBOUNCE_MS

    meta: dict[str, Any] = {
        "date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "napari": napari.__version__,
        "qt": f"{API_NAME} {QT_VERSION}",
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "display": display,
        "checkpoint": str(args.checkpoint) if args.checkpoint else "random weights",
        "image_hw": IMAGE_HW,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "debounce_ms": DEBOUNCE_MS,
        "load_average_at_start": load_start,
        "gemm_size": args.gemm_size,
        "gemm_gflops_at_start": gemm_start["gemm_gflops"],
    }
    print(f"napari-mobilesam click-to-labels benchmark, {meta['date']}")
    print(
        f"python {meta['python']}, torch {meta['torch']}, napari {meta['napari']}, "
        f"{meta['qt']}, {meta['platform']}"
    )
    print(f"display: {display}")
    print(f"checkpoint: {meta['checkpoint']}")

    bench = ClickBench(args.checkpoint)
    meta["multimask"] = bench.widget.multimask
    # napari echoes every notification (one per commit) on stdout; keep them out of the tables.
    echoed = io.StringIO()
    try:
        with contextlib.redirect_stdout(echoed):
            runs = run_rounds(bench, args.repeats, args.warmup)
    finally:
        bench.close()
    gemm_end = bench_gemm(device, args.gemm_size, 5, 2)
    meta["gemm_gflops_at_end"] = gemm_end["gemm_gflops"]
    meta["peak_rss_mib"] = peak_rss_mib()
    summaries = {name: summarise(run) for name, run in runs.items()}

    h, w = IMAGE_HW
    print(
        f"image {h}x{w} uint16 (one plane), device cpu: {meta['cpu']} "
        f"({meta['logical_cpus']} logical CPUs, torch threads {meta['torch_threads']})"
    )
    print(
        f"medians of {args.repeats} clicks per path (after 1 encoding click and {args.warmup} "
        f"warm-up clicks), clicks alternating between the paths; multimask "
        f"{'on' if meta['multimask'] else 'off'} (the widget's default)"
    )
    print(
        f"GEMM fp32 {args.gemm_size}x{args.gemm_size} (torch.mm): "
        f"{gemm_start['gemm_gflops']:.1f} GFLOP/s at start, {gemm_end['gemm_gflops']:.1f} at end"
    )
    print()
    print(format_table(summaries, DEBOUNCE_MS))
    print()
    print(format_targets(summaries, DEBOUNCE_MS))
    if not bench.draw_events_available:
        print("(the canvas draw time is missing: no draw event found on this napari version)")
    elapsed = time.perf_counter() - started
    meta["elapsed_s"] = round(elapsed, 1)
    meta["load_average_at_end"] = _load_average()
    print(f"\npeak RSS of this process (napari, Qt, both models): {meta['peak_rss_mib']:.0f} MiB")
    print(f"total {elapsed:.0f} s")
    load_line = load_average_line(load_start, meta["load_average_at_end"])
    if load_line is not None:
        print(load_line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"meta": meta, "summary": summaries, "samples": runs}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
