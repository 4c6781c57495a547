"""Decoding next to a busy neighbour: groups of prompts side by side vs every op split over cores.

Run from the repository root::

    python benchmarks/bench_shared_cpu.py                 # 64 prompts, 5 rounds
    python benchmarks/bench_shared_cpu.py --prompts 128 --rounds 7

Times ``SamPredictor.predict_torch`` on 64 one-point prompts (multimask, cached embedding) in
two ways, alternating round by round: ``side by side`` (groups of prompts on their own torch
thread each, what the library does, ``engine/prompt_threads.py``) and ``intra-op`` (groups one
after another, every operation split over torch's threads, as before). Both run three times:
on the machine as it is ("quiet", when nothing else runs), next to a neighbour process that
keeps torch's thread count busy with large float32 matrix products, and next to one that runs
the small operations of a decoder with intra-op threading (a second job of this kind, or a
test run, beside the first). Results are the same bit for bit in every case; only the time
differs. Medians in ms per prompt. Quote the CPU (printed) and say what else ran.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import _load_average, cpu_model  # noqa: E402

from napari_mobilesam.engine import prompt_threads  # noqa: E402
from napari_mobilesam.engine.predictor import SamPredictor  # noqa: E402
from napari_mobilesam.model.build import build_mobile_sam  # noqa: E402

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent.parent / "shared" / "golden"
DEFAULT_CHECKPOINT = DEFAULT_CHECKPOINT / "synthetic_mobile_sam.pt"


def neighbour(stop: mp.Event, threads: int, kind: str) -> None:
    """A busy process on ``threads`` torch threads until ``stop``: large float32 matrix
    products (``gemm``), or the many small operations of a second decoder run with intra-op
    threading (``decoder``: what a second job of this kind, or a test run beside it, does)."""
    torch.set_num_threads(threads)
    if kind == "gemm":
        a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
        while not stop.is_set():
            torch.mm(a, b)
        return
    x, w = torch.randn(2, 4096, 256), torch.randn(256, 256)
    while not stop.is_set():
        y = torch.nn.functional.layer_norm(x @ w + x, (256,))
        torch.softmax(y[..., :56], dim=-1)


def time_ways(predictor: SamPredictor, prompts: int, rounds: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    coords = torch.rand(prompts, 1, 2, generator=gen) * 1024
    labels = torch.ones(prompts, 1, dtype=torch.int)
    original = prompt_threads.workers_for

    def run(way: str) -> float:
        if way == "intra-op":
            prompt_threads.workers_for = lambda device, groups: 1
        try:
            start = time.perf_counter()
            predictor.predict_torch(coords, labels, multimask_output=True)
            return (time.perf_counter() - start) / prompts * 1e3
        finally:
            prompt_threads.workers_for = original

    ways = ["side by side", "intra-op"]
    for way in ways:
        run(way)  # warm-up
    samples: dict[str, list[float]] = {way: [] for way in ways}
    for r in range(rounds):
        for way in ways if r % 2 == 0 else ways[::-1]:
            samples[way].append(run(way))
    return {way: statistics.median(values) for way, values in samples.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=DEFAULT_CHECKPOINT)
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    print(f'cpu: "{cpu_model()}" ({os.cpu_count()} logical CPUs), torch threads {threads}')
    print(f"load average before: {_load_average()}")
    predictor = SamPredictor(build_mobile_sam(args.checkpoint, device="cpu"))
    predictor.set_image_embedding(torch.randn(1, 256, 64, 64) * 0.5, (1024, 1024))
    results = {"quiet": time_ways(predictor, args.prompts, args.rounds)}
    context = mp.get_context("spawn")
    for kind in ("gemm", "decoder"):
        stop = context.Event()
        busy = context.Process(target=neighbour, args=(stop, threads, kind), daemon=True)
        busy.start()
        time.sleep(2.0)  # the neighbour is up and busy
        try:
            results[f"next to a busy {kind} process"] = time_ways(
                predictor, args.prompts, args.rounds
            )
        finally:
            stop.set()
            busy.join(10)
    print(f"load average after: {_load_average()}")
    print()
    print(f"| ms per prompt ({args.prompts} prompts, medians of {args.rounds}) | side by side "
          "| intra-op | intra-op / side by side |")  # fmt: skip
    print("|---|---|---|---|")
    for name, row in results.items():
        ratio = row["intra-op"] / row["side by side"]
        print(f"| {name} | {row['side by side']:.1f} | {row['intra-op']:.1f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
