"""Benchmark of many objects at once: one object per point, refine from labels, seeds vs grids.

Run from the repository root::

    python benchmarks/bench_many_objects.py                 # 2 rounds of everything
    python benchmarks/bench_many_objects.py --repeats 3 --json many.json

Every figure is a median over ``--repeats`` rounds; within a round the compared paths run one
after the other in alternating order (forward in even rounds, backward in odd ones), so a change
of machine load hits them alike. The image embedding is computed once per image before timing:
only prompt work (decoding, upscaling, and for seeds the detector) is timed.

1. **300 points, 1024 x 1024**: 300 single clicks (``SamPredictor.predict`` per point, 3
   candidates, the best kept, as the widget does) against the same 300 points as one object per
   point (:func:`~napari_mobilesam.engine.point_objects.decode_objects`, batched). Goal: the
   batch in at most 0.5 of the clicks' time.
2. **Refine 300 labels, 1024 x 1024**: the refinement of a 20 x 15 grid of discs, box only and
   box + mask prompt (``refine_plane_steps`` on the set image).
3. **Seeds vs grids on the nuclei sample**: plane 2 of ``make_nuclei_stack((5, 1024, 1024),
   n_nuclei=100)``: seeds (LoG detector + one object per seed) against
   ``SamAutomaticMaskGenerator`` with 16 x 16 and 32 x 32 grids, on the same embedding. Seed
   recall counts the sample's nuclei that are visible on that plane (at least half of their
   cross-section is theirs, not covered by a brighter neighbour) with a seed inside. Goal:
   recall >= 0.95 and seeds in <= 1/2.5 of the 16 x 16 grid's time.

The synthetic checkpoint has the official layout, so the timings are those of the real weights
(decoder work does not depend on the values); the grid's predicted-IoU filter keeps other masks
with random weights, which changes only the (small) post-processing share.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import _load_average, cpu_model  # noqa: E402

from napari_mobilesam.engine.automatic_mask_generator import (  # noqa: E402
    SamAutomaticMaskGenerator,
)
from napari_mobilesam.engine.image_conversion import robust_limits, to_uint8_rgb  # noqa: E402
from napari_mobilesam.engine.point_objects import (  # noqa: E402
    decode_objects,
    each_point_prompts,
)
from napari_mobilesam.engine.predictor import SamPredictor  # noqa: E402
from napari_mobilesam.engine.refine import refine_plane_steps  # noqa: E402
from napari_mobilesam.engine.seeds import SeedMaskGenerator  # noqa: E402
from napari_mobilesam.engine.steps import drive  # noqa: E402
from napari_mobilesam.layers.sample_data import make_nuclei_stack  # noqa: E402
from napari_mobilesam.model.build import build_mobile_sam  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT.parent / "shared" / "golden" / "synthetic_mobile_sam.pt"
SIDE = 1024
NUCLEI_SHAPE, NUCLEI_N, NUCLEI_PLANE = (5, SIDE, SIDE), 100, 2
SEED_DIAMETER = 20  # px: the sample's nuclei are 20 to 40 px across


def _timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _rounds(paths: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in paths}
    names = list(paths)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            times[name].append(_timed(paths[name]))
    return {name: statistics.median(v) for name, v in times.items()}


def nuclei_truth(shape, n, seed, plane):
    """(owner (H, W) int, inside (H, W) bool, visible ids) of the sample's nuclei on ``plane``,
    replaying the sample's random draws (centre, radii, brightness per nucleus)."""
    rng = np.random.default_rng(seed)
    depth, height, width = shape
    rows, cols = np.mgrid[:height, :width]
    signal = np.zeros((n, height, width), dtype=np.float32)
    for i in range(n):
        centre = rng.uniform(
            (depth * 0.3, height * 0.2, width * 0.2), (depth * 0.7, height * 0.8, width * 0.8)
        )
        radii = rng.uniform((depth * 0.2, 10.0, 10.0), (depth * 0.35, 20.0, 20.0))
        brightness = rng.uniform(1500.0, 3000.0)
        q = ((plane - centre[0]) / radii[0]) ** 2 + ((rows - centre[1]) / radii[1]) ** 2
        q = q + ((cols - centre[2]) / radii[2]) ** 2
        signal[i] = np.where(q <= 1, brightness / (1 + np.exp(np.minimum((q - 1) * 8, 50))), 0)
    owner, inside = signal.argmax(0), signal.max(0) > 0
    visible = [
        i
        for i in range(n)
        if (signal[i] > 0).any() and ((owner == i) & inside).sum() >= 0.5 * (signal[i] > 0).sum()
    ]
    return owner, inside, visible


def disc_labels(rows: int = 15, cols: int = 20) -> np.ndarray:
    """(1024, 1024) labels: a rows x cols grid of discs, ids 1..rows*cols."""
    labels = np.zeros((SIDE, SIDE), dtype=np.int32)
    yy, xx = np.mgrid[:SIDE, :SIDE]
    step_r, step_c = SIDE / rows, SIDE / cols
    for i in range(rows):
        for j in range(cols):
            r, c = (i + 0.5) * step_r, (j + 0.5) * step_c
            labels[(yy - r) ** 2 + (xx - c) ** 2 <= 18**2] = i * cols + j + 1
    return labels


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(DEFAULT_CHECKPOINT))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch threads (default torch's); 1 wastes no time in spin-waits on a loaded machine",
    )  # fmt: skip
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument(
        "--only", choices=("points", "refine", "seeds"), action="append",
        help="run only these parts (repeatable; default all)",
    )  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "load_before": _load_average(),
    }
    print(f"{info['cpu']}, {info['torch_threads']} torch threads, load {info['load_before']}")
    model = build_mobile_sam(args.checkpoint, device="cpu")
    predictor = SamPredictor(model)
    rng = np.random.default_rng(0)
    results: dict[str, object] = {"info": info}

    parts = set(args.only or ("points", "refine", "seeds"))
    image = rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
    if parts & {"points", "refine"}:
        predictor.set_image(image)
    if "points" in parts:
        _points(predictor, rng, args.repeats, results)
    if "refine" in parts:
        _refine(predictor, args.repeats, results)
    if "seeds" in parts:
        _seeds(predictor, args.repeats, results)
    info["load_after"] = _load_average()
    print(f"load after: {info['load_after']}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=float))


def _points(predictor: SamPredictor, rng: np.random.Generator, repeats: int, results: dict):
    """300 points: clicks vs one object per point."""
    points = rng.uniform(0, SIDE, (300, 2))
    prompts = each_point_prompts(points)

    def clicks() -> None:
        for p in points:
            masks, scores, _ = predictor.predict(p[None], np.array([1]), multimask_output=True)
            _ = masks[int(np.argmax(scores))]

    t = _rounds(
        {"300 clicks": clicks, "one object per point": lambda: decode_objects(predictor, prompts)},
        repeats,
    )
    t["ratio"] = t["one object per point"] / t["300 clicks"]
    results["points"] = t
    print(
        f"300 points: clicks {t['300 clicks']:.1f} s, batch {t['one object per point']:.1f} s, "
        f"ratio {t['ratio']:.2f}"
    )


def _refine(predictor: SamPredictor, repeats: int, results: dict) -> None:
    """Refine 300 labels on the predictor's image."""
    labels = disc_labels()
    t = _rounds(
        {
            "box": lambda: drive(refine_plane_steps(predictor, labels, mask_prompt=False)),
            "box + mask": lambda: drive(refine_plane_steps(predictor, labels, mask_prompt=True)),
        },
        repeats,
    )
    results["refine"] = t
    print(f"refine 300 labels: box {t['box']:.1f} s, box + mask {t['box + mask']:.1f} s ")


def _seeds(predictor: SamPredictor, repeats: int, results: dict) -> None:
    """Seeds vs grids on the nuclei sample."""
    plane = make_nuclei_stack(NUCLEI_SHAPE, NUCLEI_N, 0)[NUCLEI_PLANE]
    nuclei = to_uint8_rgb(plane, robust_limits(plane))
    predictor.set_image(nuclei)
    embedding = predictor.get_image_embedding()
    seeds = SeedMaskGenerator(predictor, SEED_DIAMETER)
    found: dict[str, list] = {}

    def run(name: str, generator) -> Callable[[], None]:
        def go() -> None:
            steps = generator.generate_steps(nuclei, embedding)
            while True:
                try:
                    next(steps)
                except StopIteration as stop:
                    found[name] = stop.value
                    return

        return go

    t = _rounds(
        {
            "seeds": run("seeds", seeds),
            "grid 16x16": run("16", SamAutomaticMaskGenerator(predictor, points_per_side=16)),
            "grid 32x32": run("32", SamAutomaticMaskGenerator(predictor, points_per_side=32)),
            # The synthetic weights' candidates all fail the grid's predicted-IoU filter, so
            # the grids above stop every prompt after the IoU head; with the filter off every
            # prompt is decoded and upscaled, as the seeds' objects always are.
            "grid 16x16, IoU filter off": run(
                "16 off",
                SamAutomaticMaskGenerator(predictor, points_per_side=16, pred_iou_thresh=0.0),
            ),
        },
        repeats,
    )
    owner, inside, visible = nuclei_truth(NUCLEI_SHAPE, NUCLEI_N, 0, NUCLEI_PLANE)
    xy = np.array([c.point for c in found["seeds"]], dtype=int).reshape(-1, 2)
    from napari_mobilesam.engine.seeds import find_seeds

    all_seeds = find_seeds(nuclei, SEED_DIAMETER).astype(int)
    hit = {int(owner[y, x]) for x, y in all_seeds if inside[y, x]}
    t["seeds found"] = len(all_seeds)
    t["objects from seeds"] = len(xy)
    t["visible nuclei"] = len(visible)
    t["seed recall"] = float(np.mean([i in hit for i in visible]))
    t["16x16 / seeds"] = t["grid 16x16"] / t["seeds"]
    t["32x32 / seeds"] = t["grid 32x32"] / t["seeds"]
    t["16x16 filter off / seeds"] = t["grid 16x16, IoU filter off"] / t["seeds"]
    results["seeds"] = t
    print(
        f"nuclei ({len(visible)} visible): seeds {t['seeds']:.1f} s ({len(all_seeds)} seeds, "
        f"recall {t['seed recall']:.3f}), 16x16 {t['grid 16x16']:.1f} s "
        f"({t['16x16 / seeds']:.1f}x), 32x32 {t['grid 32x32']:.1f} s ({t['32x32 / seeds']:.1f}x), "
        f"16x16 with the IoU filter off {t['grid 16x16, IoU filter off']:.1f} s "
        f"({t['16x16 filter off / seeds']:.1f}x)"
    )


if __name__ == "__main__":
    main()
