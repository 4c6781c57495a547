"""Benchmark of the core MobileSAM model: encoder, set_image, clicks and batched prompts.

Run from the repository root (``PYTHONPATH=src`` if the package is not installed)::

    python benchmarks/bench_core.py                  # CPU, plus CUDA when available
    python benchmarks/bench_core.py --device cpu --repeats 5 --json bench.json

Every time is the median of ``--repeats`` timed runs that follow ``--warmup`` untimed ones, all
measured in this one process, together with the machine's own fp32 GEMM rate so that the
model's throughput can be read as a fraction of what the hardware does on a plain matmul. The
paths are timed call by call in alternating order, with one reference GEMM per round, so that
a change of machine load during the run hits every path and the GEMM figure alike.

The table has one column per *path* (a way of running the model, see :func:`default_paths`):
``eager fp32`` (``build_mobile_sam(..., optimize=False)``, the baseline), ``default``
(``build_mobile_sam(...)`` as the plugin uses it) and, on CUDA only, ``fp16 autocast`` (the
default model run under ``torch.autocast``). Each path after the first gets a ratio column.

Memory is measured per path in a fresh Python process (``--rss-child PATH``, started by the
main run): imports, model build, ``set_image`` of one image and 10 clicks, then the process's
peak resident set size and the heavy modules that got imported on the way.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch

from napari_mobilesam import SamPredictor, build_mobile_sam
from napari_mobilesam.engine.decoder_precision import bf16_decoder_supported

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CHECKPOINT = REPO_ROOT.parent / "shared" / "golden" / "synthetic_mobile_sam.pt"

# Work per call, for effective-throughput figures. The encoder figure is the TinyViT encoder's
# multiply-adds at 1024x1024 (about 38.7 G) counted as 2 FLOPs each; the click figure is the
# same count for the prompt encoder + two-way mask decoder on one prompt (about 1.8 G MACs).
ENCODER_GFLOP = 77.5
CLICK_GFLOP = 3.55  # replaced at run time by decoder_gflop_per_prompt() (flop_counter)

IMAGE_HW = (480, 640)  # the set_image / click benchmarks use an image of this (H, W)
N_BATCH_PROMPTS = 64
BATCH_MULTIMASK = True  # like an automatic "segment everything" pass
N_RSS_CLICKS = 10  # clicks made by the fresh process that measures peak memory

# Targets of the project's "Speed" issue, checked below each table.
TARGET_ENCODER_VS_GEMM = 0.80  # encoder effective GFLOP/s / fp32 GEMM GFLOP/s, at least
TARGET_CLICK_MS = 60.0  # one click on a cached embedding -> boolean mask, at most
TARGET_PEAK_RSS_MIB = 1e9 / 2**20  # 1.0 GB = 953.7 MiB: model + one image + 10 clicks

# Modules the headless path (model, predictor, clicks) must not import: each costs import time
# and memory, and none of them is needed to run the model.
HEAVY_MODULES = (
    "timm",
    "torchvision",
    "triton",
    "napari",
    "vispy",
    "qtpy",
    "PyQt5",
    "PyQt6",
    "PySide2",
    "PySide6",
    "skimage",
    "scipy",
    "pandas",
    "matplotlib",
    "dask",
    "pooch",
)
FORBIDDEN_MODULES = ("timm", "torchvision", "triton", "napari")  # the target's list

RSS_CHILD_PREFIX = "RSS_CHILD_JSON "
RSS_CHILD_TIMEOUT_S = 600

PredictorFactory = Callable[[torch.device], SamPredictor]
ContextFactory = Callable[[torch.device], contextlib.AbstractContextManager]


def _no_context(device: torch.device) -> contextlib.AbstractContextManager:
    return contextlib.nullcontext()


@dataclass(frozen=True)
class BenchPath:
    """One way of running the model: how to build the predictor and what to run it under.

    ``context`` wraps every model call that is timed (not the reference GEMM, which stays plain
    fp32); ``device_types`` lists the devices the path is measured on.
    """

    name: str
    factory: PredictorFactory
    context: ContextFactory = _no_context
    device_types: tuple[str, ...] = ("cpu", "cuda")
    description: str = ""

    def runs_on(self, device: torch.device) -> bool:
        return device.type in self.device_types and (
            device.type != "cuda" or torch.cuda.is_available()
        )


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
    """Peak resident set size of this process so far.

    On Linux this is ``VmHWM`` from ``/proc/self/status``, the high-water mark of this process's
    own memory. ``ru_maxrss`` is not used there: a process started by ``subprocess`` (vfork +
    exec) inherits its parent's peak in ``ru_maxrss``, so a fresh child would report the
    parent's memory. Elsewhere ``ru_maxrss`` (bytes on macOS, KiB on the other systems).
    """
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
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


class _Interleaved:
    """Times several paths call by call, in alternating order, with a GEMM in every round.

    On a shared machine the load changes from one second to the next. Timing all of one path
    and then all of the next would give each path a different machine; here every round runs
    one reference GEMM and then each path once (forward order in even rounds, backward in odd
    ones), so the GEMM figure and every path see the same stretch of time. (One GEMM per round
    rather than one per call: a GEMM right after a model call runs slower or faster depending
    on which thread pool that call left spinning, which would tilt a per-path figure.)
    """

    def __init__(
        self,
        paths: list[BenchPath],
        device: torch.device,
        gemm_size: int,
        repeats: int,
        warmup: int,
    ) -> None:
        self.paths = paths
        self.device = device
        self.repeats = repeats
        self.warmup = warmup
        gen = torch.Generator().manual_seed(0)
        a = torch.randn(gemm_size, gemm_size, generator=gen).to(device)
        b = torch.randn(gemm_size, gemm_size, generator=gen).to(device)
        out = torch.empty(gemm_size, gemm_size, device=device)
        self._gemm = lambda: torch.mm(a, b, out=out)
        self.gemm_flop = 2 * gemm_size**3
        self.gemm_samples: list[float] = []
        for _ in range(warmup):
            self._gemm()

    def _once(self, fn: Callable[[], object], context: contextlib.AbstractContextManager) -> float:
        with context:
            _sync(self.device)
            start = time.perf_counter()
            fn()
            _sync(self.device)
            return time.perf_counter() - start

    def median_ms(self, calls: list[Callable[[], object]]) -> list[float]:
        """Median ms of ``calls[i]`` (path i's call, run under path i's context), per path."""
        for _ in range(self.warmup):
            for path, fn in zip(self.paths, calls, strict=True):
                self._once(fn, path.context(self.device))
        samples: list[list[float]] = [[] for _ in self.paths]
        for round_index in range(self.repeats):
            order = list(range(len(self.paths)))
            if round_index % 2:
                order.reverse()
            self.gemm_samples.append(self._once(self._gemm, contextlib.nullcontext()))
            for i in order:
                samples[i].append(self._once(calls[i], self.paths[i].context(self.device)))
        return [_median_ms(s) for s in samples]

    def gemm(self) -> dict[str, float]:
        """The reference GEMM of the whole run: median ms and GFLOP/s."""
        ms = _median_ms(self.gemm_samples)
        return {"gemm_ms": ms, "gemm_gflops": self.gemm_flop / (ms * 1e-3) / 1e9}


def bench_paths(
    paths: list[BenchPath],
    device: torch.device,
    *,
    repeats: int,
    warmup: int,
    gemm_size: int,
) -> list[dict[str, float | str]]:
    """Time every path on ``device`` in this process, interleaved; one dict per path."""
    predictors = [path.factory(device) for path in paths]
    _sync(device)
    timer = _Interleaved(paths, device, gemm_size, repeats, warmup)
    results: list[dict[str, float | str]] = [{"path": path.name} for path in paths]

    def record(key: str, calls: list[Callable[[], object]]) -> None:
        for result, ms in zip(results, timer.median_ms(calls), strict=True):
            result[key] = ms

    # Encoder alone on a preprocessed 1024x1024 input.
    gen = torch.Generator().manual_seed(1)
    raw = (torch.rand(1, 3, 1024, 1024, generator=gen) * 255).to(device)
    with torch.inference_mode():
        encoder_input = predictors[0].model.preprocess(raw)

    def encoder_call(predictor: SamPredictor) -> Callable[[], object]:
        def encode() -> torch.Tensor:
            with torch.inference_mode():
                return predictor.model.image_encoder(encoder_input)

        return encode

    record("encoder_ms", [encoder_call(p) for p in predictors])

    # set_image end to end: resize + normalise + encode of an RGB uint8 image. It leaves each
    # predictor holding this image for the prompts below.
    rng = np.random.default_rng(2)
    h, w = IMAGE_HW
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    record("set_image_ms", [partial(p.set_image, image) for p in predictors])

    # One positive click, as the napari widget sends it (numpy in, numpy masks out).
    point = np.array([[w / 2, h / 2]], dtype=np.float64)
    label = np.array([1])
    for multimask, key in ((True, "click_multi_ms"), (False, "click_single_ms")):
        calls = [
            partial(p.predict, point_coords=point, point_labels=label, multimask_output=multimask)
            for p in predictors
        ]
        record(key, calls)

    # A batch of single-point prompts on an even grid, through predict_torch.
    side = int(np.ceil(np.sqrt(N_BATCH_PROMPTS)))
    xs, ys = np.meshgrid((np.arange(side) + 0.5) * w / side, (np.arange(side) + 0.5) * h / side)
    grid = np.stack([xs.ravel(), ys.ravel()], axis=1)[:N_BATCH_PROMPTS]
    coords = (
        predictors[0]
        .transform.apply_coords_torch(
            torch.as_tensor(grid, dtype=torch.float32)[:, None, :], (h, w)
        )
        .to(device)
    )
    labels = torch.ones(N_BATCH_PROMPTS, 1, dtype=torch.int, device=device)
    record(
        "batch_ms",
        [
            partial(p.predict_torch, coords, labels, multimask_output=BATCH_MULTIMASK)
            for p in predictors
        ],
    )

    reference = timer.gemm()
    for result in results:
        result.update(reference)
        gemm = float(result["gemm_gflops"])
        result["encoder_gflops"] = ENCODER_GFLOP / (float(result["encoder_ms"]) * 1e-3)
        result["encoder_vs_gemm"] = result["encoder_gflops"] / gemm
        for key in ("click_multi", "click_single"):
            result[f"{key}_gflops"] = CLICK_GFLOP / (float(result[f"{key}_ms"]) * 1e-3)
            result[f"{key}_vs_gemm"] = result[f"{key}_gflops"] / gemm
        batch_ms = float(result["batch_ms"])
        result["batch_per_prompt_ms"] = batch_ms / N_BATCH_PROMPTS
        result["batch_gflops"] = N_BATCH_PROMPTS * CLICK_GFLOP / (batch_ms * 1e-3)
        result["batch_vs_gemm"] = result["batch_gflops"] / gemm
    return results


def default_paths(checkpoint: Path | None) -> list[BenchPath]:
    """The paths to compare; the first one is the baseline of the ratio columns."""

    def eager_fp32(device: torch.device) -> SamPredictor:
        return SamPredictor(build_mobile_sam(checkpoint, device=device, optimize=False))

    def default(device: torch.device) -> SamPredictor:
        return SamPredictor(build_mobile_sam(checkpoint, device=device))

    def fp16_autocast(device: torch.device) -> contextlib.AbstractContextManager:
        return torch.autocast(device_type=device.type, dtype=torch.float16)

    def bf16_decoder(device: torch.device) -> SamPredictor:
        model = build_mobile_sam(checkpoint, device=device)
        return SamPredictor(model, decoder_precision="bf16")

    paths = []
    if importlib.util.find_spec("segment_anything") is not None:
        paths.append(
            BenchPath(
                "segment-anything",
                partial(segment_anything_predictor, checkpoint),
                description="segment-anything's SamPredictor on build_mobile_sam(optimize="
                "False), with segment-anything's own mask upscaling: the reference",
            )
        )
    paths += [
        BenchPath("eager fp32", eager_fp32, description="build_mobile_sam(optimize=False)"),
        BenchPath("default", default, description="build_mobile_sam() as the plugin uses it"),
    ]
    for runtime in installed_runtimes():
        paths.append(
            BenchPath(
                runtime,
                partial(runtime_predictor, checkpoint, runtime),
                device_types=("cpu",),
                description=f"default model, use_runtime(model, {runtime!r}) (encoder only)",
            )
        )
    if bf16_decoder_supported("cpu")[0]:
        paths.append(
            BenchPath(
                "bf16 decoder",
                bf16_decoder,
                device_types=("cpu",),
                description="default model, SamPredictor(decoder_precision='bf16')",
            )
        )
    paths.append(
        BenchPath(
            "fp16 autocast",
            default,
            context=fp16_autocast,
            device_types=("cuda",),
            description="default model under torch.autocast(float16), CUDA only",
        )
    )
    return paths


def segment_anything_predictor(checkpoint: Path | None, device: torch.device) -> object:
    """segment-anything's SamPredictor on our plain eager model: the original algorithm.

    The eager model's modules equal the original's; its mask upscaling is replaced by
    segment-anything's own (full 1024x1024 upsampling, then crop and resize).
    """
    from segment_anything import SamPredictor as MetaPredictor
    from segment_anything.modeling import Sam as MetaSam

    model = build_mobile_sam(checkpoint, device=device, optimize=False)
    model.postprocess_masks = types.MethodType(MetaSam.postprocess_masks, model)
    return MetaPredictor(model)


def installed_runtimes() -> list[str]:
    """The encoder runtimes other than torch that are installed here."""
    from napari_mobilesam import available_runtimes

    return [name for name, s in available_runtimes().items() if name != "torch" and s.available]


def runtime_predictor(checkpoint: Path | None, runtime: str, device: torch.device) -> SamPredictor:
    from napari_mobilesam import use_runtime

    return SamPredictor(use_runtime(build_mobile_sam(checkpoint, device=device), runtime))


def decoder_gflop_per_prompt(checkpoint: Path | None = None) -> dict[str, float]:
    """GFLOP of one 1-point multimask prompt (torch.utils.flop_counter, multiply-add = 2).

    ``reference``: the plain module-by-module decoder (the original algorithm); ``executed``:
    what the default model's decoder runs with the predictor's per-image constants.
    """
    from torch.utils.flop_counter import FlopCounterMode

    from napari_mobilesam.model import inference

    # flop_counter does not know oneDNN's fused linear + GELU op: count the unfused modules.
    fusion, inference._FUSION_OK = inference._FUSION_OK, False
    out = {}
    for name, optimize in (("reference", False), ("executed", True)):
        predictor = SamPredictor(build_mobile_sam(checkpoint, device="cpu", optimize=optimize))
        predictor.set_image_embedding(torch.zeros(1, 256, 64, 64), (1024, 1024))
        coords = torch.full((1, 1, 2), 500.0)
        labels = torch.ones(1, 1, dtype=torch.int)
        model = predictor.model
        with torch.inference_mode():
            sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=None, masks=None)
            image_pe, constants = predictor._decoder_constants()
            if name == "reference":
                image_pe, constants = model.prompt_encoder.get_dense_pe(), None
            with FlopCounterMode(display=False) as counter:
                model.mask_decoder(predictor.features, image_pe, sparse, dense, True, constants)
        out[name] = counter.get_total_flops() / 1e9
    inference._FUSION_OK = fusion
    return out


def paths_for(paths: list[BenchPath], device: torch.device) -> list[BenchPath]:
    return [path for path in paths if path.runs_on(device)]


# ------------------------------------------------------------------ fresh-process memory
def heavy_modules_loaded() -> list[str]:
    """The modules of :data:`HEAVY_MODULES` present in ``sys.modules`` now."""
    return [name for name in HEAVY_MODULES if name in sys.modules]


def rss_child(path: BenchPath, device: torch.device) -> dict[str, object]:
    """What a fresh process costs for one path: runs in the ``--rss-child`` process.

    This module's imports (numpy, torch, the package's model and predictor) are already done
    when this runs, so the first figure is the resident memory of the imports alone.
    """
    result: dict[str, object] = {"rss_import_mib": current_rss_mib()}
    start = time.perf_counter()
    predictor = path.factory(device)
    _sync(device)
    result["cold_build_ms"] = 1e3 * (time.perf_counter() - start)
    result["rss_build_mib"] = current_rss_mib()

    rng = np.random.default_rng(3)
    h, w = IMAGE_HW
    image = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    clicks = np.stack(
        [rng.uniform(0.1 * w, 0.9 * w, N_RSS_CLICKS), rng.uniform(0.1 * h, 0.9 * h, N_RSS_CLICKS)],
        axis=1,
    )
    with path.context(device):
        start = time.perf_counter()
        predictor.set_image(image)
        _sync(device)
        result["cold_set_image_ms"] = 1e3 * (time.perf_counter() - start)
        for i, point in enumerate(clicks):
            start = time.perf_counter()
            masks, _, _ = predictor.predict(
                point_coords=point[None], point_labels=np.array([1]), multimask_output=True
            )
            _sync(device)
            if i == 0:
                result["cold_click_ms"] = 1e3 * (time.perf_counter() - start)
            assert masks.dtype == np.bool_ and masks.shape[-2:] == (h, w)
    result["child_peak_rss_mib"] = peak_rss_mib()
    if device.type == "cuda":
        result["child_cuda_max_alloc_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    result["heavy_modules"] = heavy_modules_loaded()
    return result


def measure_in_fresh_process(
    path: BenchPath, device: torch.device, checkpoint: Path | None
) -> dict[str, object]:
    """Run :func:`rss_child` for ``path`` in a new interpreter; its numbers, or an error."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--rss-child",
        path.name,
        "--device",
        device.type,
    ]
    if checkpoint is not None:
        command += ["--checkpoint", str(checkpoint)]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=RSS_CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return {"child_error": f"timed out after {RSS_CHILD_TIMEOUT_S} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(RSS_CHILD_PREFIX):
            return json.loads(line[len(RSS_CHILD_PREFIX) :])
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return {"child_error": f"exit code {done.returncode}: {tail[0]}"}


# ----------------------------------------------------------------------------- output
# (key, label, unit, format); rows that no path has are left out (e.g. CUDA memory on the CPU).
ROWS: list[tuple[str, str, str, str]] = [
    ("gemm_gflops", "GEMM fp32 {gemm}x{gemm} (torch.mm)", "GFLOP/s", "{:.1f}"),
    ("encoder_ms", "encoder 1024x1024", "ms", "{:.1f}"),
    ("encoder_gflops", "  effective (77.5 GFLOP/encode)", "GFLOP/s", "{:.1f}"),
    ("encoder_vs_gemm", "  / GEMM rate", "x", "{:.3f}"),
    ("set_image_ms", "set_image {h}x{w} (resize+norm+encode)", "ms", "{:.1f}"),
    ("click_multi_ms", "click, 1 point, multimask on", "ms", "{:.2f}"),
    ("click_multi_gflops", "  effective ({dec} GFLOP/click)", "GFLOP/s", "{:.1f}"),
    ("click_multi_vs_gemm", "  / GEMM rate", "x", "{:.3f}"),
    ("click_single_ms", "click, 1 point, multimask off", "ms", "{:.2f}"),
    ("click_single_gflops", "  effective ({dec} GFLOP/click)", "GFLOP/s", "{:.1f}"),
    ("click_single_vs_gemm", "  / GEMM rate", "x", "{:.3f}"),
    ("batch_ms", "{n} prompts, predict_torch, multimask {mm}", "ms", "{:.1f}"),
    ("batch_per_prompt_ms", "  per prompt", "ms", "{:.2f}"),
    ("batch_gflops", "  effective ({dec} GFLOP/prompt)", "GFLOP/s", "{:.1f}"),
    ("batch_vs_gemm", "  decoder efficiency: / GEMM rate", "x", "{:.3f}"),
    ("rss_import_mib", "fresh process: RSS after imports", "MiB", "{:.0f}"),
    ("rss_build_mib", "  RSS after model build", "MiB", "{:.0f}"),
    ("child_peak_rss_mib", "  peak RSS (+set_image, {clicks} clicks)", "MiB", "{:.0f}"),
    ("child_cuda_max_alloc_mib", "  torch.cuda.max_memory_allocated", "MiB", "{:.0f}"),
    ("cold_build_ms", "  model build (cold)", "ms", "{:.0f}"),
    ("cold_set_image_ms", "  first set_image (cold)", "ms", "{:.0f}"),
    ("cold_click_ms", "  first click (cold)", "ms", "{:.1f}"),
    ("heavy_modules", "  heavy modules imported", "", "{}"),
]


def _cell(value: object, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
        return ",".join(value) if value else "none"
    return fmt.format(value)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def format_grid(lines: list[list[str]]) -> str:
    """Align a header row and body rows: first two columns left, the others right."""
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    out = []
    for i, row in enumerate(lines):
        text = "  ".join(
            cell.ljust(widths[j]) if j < 2 else cell.rjust(widths[j]) for j, cell in enumerate(row)
        )
        out.append(text.rstrip())
        if i == 0:
            out.append("-" * len(out[0]))
    return "\n".join(out)


def ratio_cell(value: object, base: object) -> str:
    """``value / base`` with two decimals, or ``-`` when either is missing or not a number."""
    if _is_number(value) and _is_number(base) and base:
        return f"{value / base:.2f}"
    return "-"


def format_table(results: list[dict], gemm_size: int) -> str:
    names = [str(r["path"]) for r in results]
    header = ["metric", "unit", *names, *(f"{name} / {names[0]}" for name in names[1:])]
    subs = {
        "gemm": gemm_size,
        "h": IMAGE_HW[0],
        "w": IMAGE_HW[1],
        "n": N_BATCH_PROMPTS,
        "mm": "on" if BATCH_MULTIMASK else "off",
        "clicks": N_RSS_CLICKS,
        "dec": f"{CLICK_GFLOP:.2f}",
    }
    lines = [header]
    for key, label, unit, fmt in ROWS:
        if not any(key in r for r in results):
            continue
        cells = [label.format(**subs), unit]
        cells += [_cell(r.get(key), fmt) for r in results]
        cells += [ratio_cell(r.get(key), results[0].get(key)) for r in results[1:]]
        lines.append(cells)
    return format_grid(lines)


# (label, key, "min" or "max", threshold): a number that must be at least / at most the threshold.
TARGETS: list[tuple[str, str, str, float]] = [
    (
        f"encoder effective / GEMM >= {TARGET_ENCODER_VS_GEMM:.2f}",
        "encoder_vs_gemm",
        "min",
        TARGET_ENCODER_VS_GEMM,
    ),
    (f"click, multimask on <= {TARGET_CLICK_MS:.0f} ms", "click_multi_ms", "max", TARGET_CLICK_MS),
    (
        f"click, multimask off <= {TARGET_CLICK_MS:.0f} ms",
        "click_single_ms",
        "max",
        TARGET_CLICK_MS,
    ),
    (
        "peak RSS, fresh process <= 1.0 GB (953.7 MiB)",
        "child_peak_rss_mib",
        "max",
        TARGET_PEAK_RSS_MIB,
    ),
]


def check_value(value: object, kind: str, threshold: float) -> str:
    if not _is_number(value):
        return "-"
    ok = value >= threshold if kind == "min" else value <= threshold
    return "ok" if ok else "MISSED"


def format_targets(results: list[dict]) -> str:
    """One line per target, a verdict per path (``ok`` / ``MISSED``) next to the value."""
    names = [str(r["path"]) for r in results]
    lines = [["target", "", *names]]
    for label, key, kind, threshold in TARGETS:
        if not any(key in r for r in results):
            continue
        cells = [label, ""]
        for r in results:
            value = r.get(key)
            if not _is_number(value):
                cells.append("-")
                continue
            shown = _cell(value, "{:.3f}" if key.endswith("_vs_gemm") else "{:.1f}")
            cells.append(f"{shown} {check_value(value, kind, threshold)}")
        lines.append(cells)
    if any("heavy_modules" in r for r in results):
        cells = ["headless: none of " + "/".join(FORBIDDEN_MODULES) + " imported", ""]
        for r in results:
            heavy = r.get("heavy_modules")
            if not isinstance(heavy, list):
                cells.append("-")
                continue
            bad = [name for name in heavy if name in FORBIDDEN_MODULES]
            cells.append("ok" if not bad else "MISSED: " + ",".join(bad))
        lines.append(cells)
    return format_grid(lines)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"cpu: {cpu_model()} ({os.cpu_count()} logical CPUs, torch threads {threads})"


def load_average_line(start: float | None, end: float | None) -> str | None:
    if start is None or end is None:
        return None
    return (
        f"load average (1 min) at start / end: {start:.2f} / {end:.2f} ({os.cpu_count()} logical "
        f"CPUs, {torch.get_num_threads()} torch threads; more load = shared CPUs, slower times)"
    )


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
    parser.add_argument(
        "--no-rss",
        action="store_true",
        help="skip the fresh-process memory rows (one subprocess per path and device)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    parser.add_argument(
        "--rss-child",
        metavar="PATH",
        default=None,
        help="internal: measure memory of the path named PATH in this (fresh) process, print "
        "one JSON line and exit",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="3 timed runs after 1 warm-up, no fresh-process rows (a few minutes)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.warmup, args.no_rss = 3, 1, True
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    return args


def child_main(args: argparse.Namespace) -> int:
    paths = {path.name: path for path in default_paths(args.checkpoint)}
    if args.rss_child not in paths:
        raise SystemExit(f"unknown path {args.rss_child!r}; known: {', '.join(paths)}")
    device = resolve_devices(args.device)[-1]
    result = rss_child(paths[args.rss_child], device)
    print(RSS_CHILD_PREFIX + json.dumps(result), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rss_child is not None:
        return child_main(args)
    devices = resolve_devices(args.device)
    started = time.perf_counter()
    global CLICK_GFLOP
    flops = decoder_gflop_per_prompt(args.checkpoint)
    CLICK_GFLOP = flops["reference"]
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
        "decoder_gflop_executed_by_default": flops["executed"],
    }
    print(f"napari-mobilesam core benchmark, {meta['date']}")
    print(f"python {meta['python']}, torch {meta['torch']}, {meta['platform']}")
    print(f"checkpoint: {meta['checkpoint']}")
    print(
        f"decoder per 1-point multimask prompt (torch.utils.flop_counter): {CLICK_GFLOP:.2f} "
        f"GFLOP as the original algorithm computes it (the rates below use this figure), "
        f"{flops['executed']:.2f} GFLOP executed by the default model's decoder"
    )
    print(f"medians of {args.repeats} runs after {args.warmup} warm-up runs")

    all_paths = default_paths(args.checkpoint)
    report: dict[str, object] = {"meta": meta, "results": {}}
    for device in devices:
        gemm_size = args.gemm_size or (8192 if device.type == "cuda" else 2048)
        paths = paths_for(all_paths, device)
        try:
            results = bench_paths(
                paths, device, repeats=args.repeats, warmup=args.warmup, gemm_size=gemm_size
            )
        except Exception as exc:  # keep going: the other device and the memory rows still run
            results = [
                {"path": path.name, "error": f"{type(exc).__name__}: {exc}"} for path in paths
            ]
        gc.collect()  # the models are freed once bench_paths returns
        if device.type == "cuda":
            torch.cuda.empty_cache()
        if not args.no_rss:
            for path, result in zip(paths, results, strict=True):
                result.update(measure_in_fresh_process(path, device, args.checkpoint))
        print()
        print(f"device {describe_device(device)}")
        for path in paths:
            print(f"  {path.name}: {path.description}")
        print(format_table(results, gemm_size))
        print()
        print(format_targets(results))
        for result in results:
            if "error" in result:
                print(f"{result['path']} failed: {result['error']}")
            if "child_error" in result:
                print(f"fresh process for {result['path']} failed: {result['child_error']}")
        report["results"][device.type] = {
            "device": describe_device(device),
            "gemm_size": gemm_size,
            "paths": results,
        }
    elapsed = time.perf_counter() - started
    meta["elapsed_s"] = round(elapsed, 1)
    meta["load_average_at_end"] = _load_average()
    print(f"\ntotal {elapsed:.0f} s")
    load_line = load_average_line(meta["load_average_at_start"], meta["load_average_at_end"])
    if load_line is not None:
        print(load_line)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
