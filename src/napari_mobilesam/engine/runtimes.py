"""Run the image encoder with ONNX Runtime or OpenVINO instead of torch (CPU).

The encoder is where an inference engine pays off (about a quarter less time on a CPU than our
tuned torch path); the decoder gains nothing from them, so it stays in torch. :func:`use_runtime`
swaps ``model.image_encoder`` for a :class:`RuntimeEncoder`, an ``nn.Module`` that takes and
returns the same tensors, so ``SamPredictor``, ``MobileSAM`` and the stack functions run
unchanged::

    model = build_mobile_sam("mobile_sam.pt")
    use_runtime(model, "auto")      # ONNX Runtime or OpenVINO where installed and checked
    predictor = SamPredictor(model)

The exported graph is built once per weights and cached on disk (``cache_dir()/graphs``, i.e.
under ``$NAPARI_MOBILESAM_CACHE`` when set), keyed by the weights' fingerprint, the torch and
opset that made it and, for OpenVINO's converted graph, the runtime's version. Each runtime is
compared once with the torch encoder on a fixed input (the result is cached beside the graph);
one that disagrees beyond the golden embedding tolerance is not used. Nothing is downloaded.

While an engine runs the encoder, the torch encoder it replaces is kept (for ``use_runtime(model,
"torch")`` and for exporting) with its weights read from a copy in the same cache folder,
mapped from the file instead of held in memory: a process on OpenVINO peaks 25-30 MB lower
(``benchmarks/bench_runtime_memory.py``). Switching back to torch copies them into memory again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from napari_mobilesam.engine.atomic_files import write_atomically
from napari_mobilesam.engine.export import (
    DEFAULT_OPSET,
    MissingExtraError,
    export_encoder,
    exportable_copy,
    require,
)
from napari_mobilesam.engine.runtime_status import (  # noqa: F401  (part of this API)
    _PACKAGES,
    RUNTIME_CHOICES,
    RUNTIMES,
    RuntimeStatus,
    _version,
    available_runtimes,
    bf16_supported,
)

if TYPE_CHECKING:
    from napari_mobilesam.model.sam import Sam

# "auto" tries these in order on a CPU: fastest first. OpenVINO's float32 encoder was faster
# than ONNX Runtime's in every run of benchmarks/bench_runtimes.py (0.69 to 0.82 of ONNX
# Runtime's time on an AVX-512 CPU); ONNX Runtime peaks about 45 MiB lower.
AUTO_ORDER = ("openvino", "onnxruntime")
PRECISIONS = ("fp32", "bf16")

# The self-check: largest embedding difference from torch accepted on the fixed input. The
# golden embedding tolerance; fp32 engines stay near 1e-5 (measured 1.0e-5 to 1.2e-5).
SELF_CHECK_ATOL = 1e-4
# bf16 is "fast, approximate", with its own bound (tests/engine/test_runtimes.py checks it on
# every golden case). Measured on the golden cases: embedding error up to 0.091 (mean 0.012;
# the embedding's values reach about +-5), predicted IoU up to 0.0063, masks' IoU with the
# float32 reference at least 0.988. The self-check uses the embedding bound.
BF16_ATOL = 0.25  # embedding, max abs
BF16_IOU_ATOL = 0.02  # predicted IoU scores
BF16_MIN_MASK_IOU = 0.97  # each mask against the float32 reference mask

# Bump when the exported encoder graph changes for the same weights, torch and opset.
GRAPH_FORMAT = 1

# The torch encoder's weights, saved beside its graphs (see _map_weights).
TORCH_WEIGHTS_FILE = "torch_encoder.pt"
# Set on a torch encoder whose weights are mapped from that file: (the file's path, the address
# of its first weight), so that a copy of the module (deepcopy, .to) does not pass for mapped.
_MAPPED_FROM = "_napari_mobilesam_weights_file"


# --------------------------------------------------------------------------- the encoder


class _SharedRunner:
    """A runtime's encoder call, shared (not copied) when the model is deep-copied."""

    def __init__(self, run: Callable[[np.ndarray], np.ndarray], description: str) -> None:
        self.run = run
        self.description = description

    def __deepcopy__(self, memo: dict) -> _SharedRunner:
        return self


class RuntimeEncoder(nn.Module):
    """Stands in for the TinyViT encoder: (B, 3, 1024, 1024) float32 -> (B, 256, 64, 64),
    channels-last like the torch encoder's output.

    The graph runs on the CPU whatever ``x``'s device; the embedding comes back on ``x``'s
    device. The torch encoder it replaces stays in ``torch_encoder``, for :func:`use_runtime`
    ``(model, "torch")`` and for exporting; :func:`use_runtime` maps its weights (25 MB) from
    the graph cache while the engine runs.

    Attributes:
      runtime: "onnxruntime" or "openvino".
      precision: "fp32" or "bf16".
      self_check_error: largest difference from torch on the fixed self-check input.
    """

    def __init__(
        self,
        torch_encoder: nn.Module,
        runner: _SharedRunner,
        runtime: str,
        precision: str,
        self_check_error: float,
    ) -> None:
        super().__init__()
        self.torch_encoder = torch_encoder
        self.img_size = torch_encoder.img_size
        self._runner = runner
        self.runtime = runtime
        self.precision = precision
        self.self_check_error = self_check_error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 1024, 1024) normalised and padded -> (B, 256, 64, 64) float32."""
        images = x.detach().to("cpu", torch.float32).contiguous().numpy()
        # The graphs take one image: a batch runs image by image.
        outs = [self._runner.run(images[i : i + 1]) for i in range(len(images))]
        out = torch.from_numpy(outs[0] if len(outs) == 1 else np.concatenate(outs))
        # The embedding in the torch encoder's memory layout, channels-last (its last stage
        # works on NHWC tokens; tests/engine/test_runtimes.py compares the strides): the decoder
        # is tuned for it. With the engines' plain NCHW array every click on the embedding took
        # 9-28 % longer on a 2-core Xeon (same masks, bit for bit).
        return out.to(x.device).contiguous(memory_format=torch.channels_last)

    def extra_repr(self) -> str:
        return f"runtime={self.runtime}, precision={self.precision}"


def runtime_of(model: Sam) -> str:
    """The runtime ``model``'s image encoder runs on: "torch", "onnxruntime" or "openvino"."""
    encoder = model.image_encoder
    return encoder.runtime if isinstance(encoder, RuntimeEncoder) else "torch"


# ----------------------------------------------------------------------------- the cache


def graph_cache_folder() -> Path:
    """Where exported encoder graphs are kept: ``<cache folder>/graphs``."""
    from napari_mobilesam.engine.weights import cache_dir

    return cache_dir() / "graphs"


def _graph_key(model: Sam, opset: int) -> str:
    from napari_mobilesam.engine.disk_cache import model_fingerprint

    digest = hashlib.blake2b(digest_size=12)
    for part in (model_fingerprint(model), torch.__version__, str(opset), str(GRAPH_FORMAT)):
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


def _replace_atomic(write: Callable[[Path], object], target: Path) -> Path:
    """Write through ``write(temp_path)`` beside ``target``, then rename into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_atomically(target, write)


def file_digest(paths: list[Path]) -> str:
    """SHA-256 over the contents of ``paths`` (in order), read in 1 MiB blocks.

    Kept with a graph's self-check result: a graph whose bytes changed on disk since it was
    checked (bit rot, a partial copy, an edit) is not trusted. One read of the 22-27 MiB
    graph files per :func:`use_runtime` (benchmarks/bench_runtime_click.py prints its cost).
    """
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _self_check_input() -> torch.Tensor:
    """The fixed self-check input: a normalised random image with a padded band, like real
    inputs (padding is exact zeros)."""
    gen = torch.Generator().manual_seed(20250601)
    image = torch.randn(1, 3, 1024, 1024, generator=gen)
    image[..., 768:, :] = 0.0
    return image


class _GraphCache:
    """One weights' folder of the cache: the ONNX graph, converted graphs, self-check results."""

    def __init__(self, model: Sam, folder: Path, opset: int, say: Callable[[str], None]) -> None:
        self.model = model
        self.folder = folder / _graph_key(model, opset)
        self.opset = opset
        self.say = say
        self._plain: Sam | None = None

    def plain_model(self) -> Sam:
        if self._plain is None:
            self._plain = exportable_copy(self.model)
        return self._plain

    @property
    def onnx_path(self) -> Path:
        return self.folder / "mobile_sam.encoder.onnx"

    def ensure_onnx(self) -> Path:
        if not self.onnx_path.is_file():
            require("onnx")
            self.say(
                "Exporting the MobileSAM encoder to ONNX (once for these weights; about 10 s)..."
            )
            _replace_atomic(
                lambda tmp: export_encoder(self.plain_model(), tmp, self.opset), self.onnx_path
            )
            _return_freed_memory()
        return self.onnx_path

    def openvino_path(self, version: str) -> Path:
        return self.folder / f"openvino-{version}" / "mobile_sam.encoder.xml"

    def ensure_openvino(self, version: str) -> Path:
        xml = self.openvino_path(version)
        if not (xml.is_file() and xml.with_suffix(".bin").is_file()):
            onnx_path = self.ensure_onnx()
            self.say("Converting the encoder to OpenVINO (once for these weights)...")
            ov = require("openvino")
            model = ov.convert_model(str(onnx_path))

            def save(tmp: Path) -> None:
                # The .xml and .bin are written into a temporary folder that replaces the
                # version's folder in one rename: never an .xml beside another .bin.
                tmp.mkdir()
                ov.save_model(model, str(tmp / xml.name), compress_to_fp16=False)

            xml.parent.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(xml.parent, save, replace_folder=True)
            del model  # the converted graph in memory; the compiled one is read from disk
            _return_freed_memory()
        return xml

    def reference(self) -> np.ndarray:
        """The torch encoder's output on the self-check input (computed once, cached)."""
        path = self.folder / "self_check_reference.npy"
        try:
            value = np.load(path, allow_pickle=False)
            if value.shape == (1, 256, 64, 64):
                return value
        except (OSError, ValueError):
            pass
        with torch.inference_mode():
            value = self.plain_model().image_encoder(_self_check_input()).numpy()

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as fh:  # a file object: np.save would append ".npy" to a name
                np.save(fh, value, allow_pickle=False)

        _replace_atomic(write, path)
        return value

    def check_path(self, runtime: str, version: str, precision: str) -> Path:
        return self.folder / f"self_check.{runtime}-{version}.{precision}.json"

    def graph_files(self, runtime: str, version: str) -> list[Path]:
        """The files a runtime's session is built from (what the checksum covers)."""
        if runtime == "openvino":
            xml = self.openvino_path(version)
            return [xml, xml.with_suffix(".bin")]
        return [self.onnx_path]

    @property
    def torch_weights_path(self) -> Path:
        return self.folder / TORCH_WEIGHTS_FILE

    def has(self, runtime: str, version: str) -> bool:
        """Whether ``runtime``'s graph is already in the cache."""
        if runtime == "openvino":
            xml = self.openvino_path(version)
            return xml.is_file() and xml.with_suffix(".bin").is_file()
        return self.onnx_path.is_file()

    def forget(self, runtime: str, version: str) -> None:
        """Remove a runtime's files and its self-check results (a graph that failed to load or
        changed on disk is rebuilt from scratch and checked again)."""
        for path in self.graph_files(runtime, version):
            path.unlink(missing_ok=True)
        for path in self.folder.glob(f"self_check.{runtime}-{version}.*.json"):
            path.unlink(missing_ok=True)


# ------------------------------------------------------------- the torch encoder's weights


def _same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Same names, dtypes, shapes, strides and values."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype
        and a[k].shape == b[k].shape
        and a[k].stride() == b[k].stride()
        and torch.equal(a[k], b[k])
        for k in a
    )


def _load_mapped(path: Path) -> dict[str, torch.Tensor]:
    """A state dict whose tensors are views of a private (copy-on-write) mapping of ``path``:
    pages are read from the file when touched and count as this process' memory only then."""
    return torch.load(path, map_location="cpu", mmap=True, weights_only=True)


def _file_holds(path: Path, state: dict[str, torch.Tensor]) -> bool:
    """Whether ``path`` holds exactly ``state`` (a missing or unreadable file does not)."""
    try:
        saved = _load_mapped(path)
    except Exception:  # missing, truncated, not a zip, not tensors: rewrite it
        return False
    # ``saved`` goes out of scope on return: its mapping, and the pages the comparison read,
    # leave the process with it.
    return _same_tensors(saved, state)


def _first_address(module: nn.Module) -> int | None:
    state = module.state_dict()
    return next(iter(state.values())).data_ptr() if state else None


def mapped_weights_file(module: nn.Module) -> str | None:
    """The file ``module``'s weights are mapped from (see :func:`use_runtime`), or None."""
    mark = getattr(module, _MAPPED_FROM, None)
    if mark is None or mark[1] != _first_address(module):
        return None
    return mark[0]


def _map_weights(module: nn.Module, path: Path) -> bool:
    """Back ``module``'s weights by a read-only mapping of ``path`` instead of memory.

    ``path`` is (re)written atomically from the weights unless it already holds exactly them,
    and the module's parameters and buffers are then swapped for views of the file
    (``load_state_dict(assign=True)``: same values, dtypes and strides; requires_grad kept).
    The module works as before; the weights it does not touch stay on disk. Only CPU weights;
    where the file cannot be written or read the weights stay in memory.

    Returns whether the weights are mapped from ``path`` now.
    """
    if mapped_weights_file(module) == str(path):
        return True
    state = module.state_dict()
    if not state or any(t.device.type != "cpu" for t in state.values()):
        return False
    try:
        if not _file_holds(path, state):
            _replace_atomic(lambda tmp: torch.save(state, tmp), path)
            if not _file_holds(path, state):
                return False
        mapped = _load_mapped(path)
    except Exception:  # an unwritable cache folder, a file replaced meanwhile: keep them
        return False
    module.load_state_dict(mapped, assign=True)
    setattr(module, _MAPPED_FROM, (str(path), _first_address(module)))
    return True


def _weights_in_memory(module: nn.Module) -> None:
    """Undo :func:`_map_weights`: the module's weights are copied back into memory (same
    strides), so torch runs it as before and the file is no longer mapped."""
    if mapped_weights_file(module) is not None:
        copies = {name: tensor.clone() for name, tensor in module.state_dict().items()}
        module.load_state_dict(copies, assign=True)
    if hasattr(module, _MAPPED_FROM):
        delattr(module, _MAPPED_FROM)


def _return_freed_memory() -> None:
    """Hand the C heap's free pages back to the system (glibc only; elsewhere nothing).

    Called after the one-time export, conversion and self-check: torch's ONNX exporter alone
    leaves about 450 MB freed but kept by the heap, which every later step would otherwise
    pile onto and the process would hold for the rest of its life.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (musl has no malloc_trim)
        pass


# ---------------------------------------------------------------------------- the sessions


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once; 1 if unknown).

    Read from ``/proc/cpuinfo`` (distinct physical id / core id pairs among the CPUs in this
    process' affinity) where there is one, else ``os.cpu_count()``.
    """
    try:
        allowed = os.sched_getaffinity(0)
    except (AttributeError, OSError):
        allowed = None
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    cores: set[tuple[str, str]] = set()
    for block in text.split("\n\n"):
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (line.partition(":") for line in block.splitlines())
        )
        if "processor" not in fields or "core id" not in fields:
            continue
        if allowed is not None and int(fields["processor"]) not in allowed:
            continue
        cores.add((fields.get("physical id", "0"), fields["core id"]))
    if cores:
        return len(cores)
    return max(1, len(allowed) if allowed else (os.cpu_count() or 1))


def _threads() -> int:
    """Threads of an engine's encoder: torch's setting (so torch.set_num_threads governs them
    all), at most one per physical core. The engine and torch's decoder take turns: each gets
    the cores while it runs, and neither spins on them while the other works (see the
    sessions' spin-wait settings)."""
    return max(1, min(torch.get_num_threads(), physical_cores()))


def _onnxruntime_runner(cache: _GraphCache, precision: str) -> _SharedRunner:
    ort = require("onnxruntime")
    path = cache.ensure_onnx()
    options = ort.SessionOptions()
    options.intra_op_num_threads = _threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # ONNX Runtime's threads spin after each run waiting for more work; meanwhile torch decodes
    # the click on the same cores and is slowed (up to 616 ms for a 40 ms click under load).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Without the arena and the memory-pattern planner one encode peaks about 150 MB lower
    # (measured 466 vs 619 MB for the session alone), at no measurable cost in speed.
    options.enable_cpu_mem_arena = False
    options.enable_mem_pattern = False
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(image: np.ndarray) -> np.ndarray:
        return session.run(["image_embeddings"], {"image": image})[0]

    return _SharedRunner(run, f"ONNX Runtime {ort.__version__} (CPU)")


def _openvino_runner(cache: _GraphCache, precision: str) -> _SharedRunner:
    ov = require("openvino")
    version = _version("openvino") or "unknown"
    xml = cache.ensure_openvino(version)
    core = ov.Core()
    config = {
        # OpenVINO picks bf16 by itself on CPUs that have it: float32 must be asked for.
        "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        "INFERENCE_NUM_THREADS": _threads(),
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": 1,
        # Pinned threads would hold their cores against torch's decoder threads.
        "ENABLE_CPU_PINNING": False,
        "ENABLE_HYPER_THREADING": False,
    }
    # From the path, so OpenVINO can map the weights file rather than hold a second copy.
    compiled = core.compile_model(str(xml), "CPU", config)
    request = compiled.create_infer_request()
    lock = threading.Lock()  # one infer request: one image at a time

    def run(image: np.ndarray) -> np.ndarray:
        with lock:
            request.infer({"image": image})
            return request.get_output_tensor(0).data.copy()

    return _SharedRunner(run, f"OpenVINO {version} (CPU, {precision})")


_BUILDERS = {"onnxruntime": _onnxruntime_runner, "openvino": _openvino_runner}
_warned_rebuild: set[tuple[str, str]] = set()


def _warn_once(cache: _GraphCache, runtime: str, message: str) -> None:
    key = (runtime, str(cache.folder))
    if key not in _warned_rebuild:
        _warned_rebuild.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def _recorded_check(path: Path) -> dict[str, Any] | None:
    """A self-check result as saved, or None when there is none (or it cannot be read)."""
    try:
        result = json.loads(path.read_text())
        result["max_abs_error"] = float(result["max_abs_error"])
        return result
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _checked_runner(
    cache: _GraphCache, runtime: str, precision: str
) -> tuple[_SharedRunner, float]:
    """Load (building or rebuilding once if needed) and self-check one runtime.

    A cached graph is used only if its self-check passed *and* its files still have the
    SHA-256 recorded with that result; otherwise it is rebuilt and checked again, with one
    warning. A recorded failure is believed without the checksum (refusing is always safe).

    Returns the runner and its self-check error; raises RuntimeError when the check fails.
    """
    version = _version(_PACKAGES[runtime][0]) or "unknown"
    check = cache.check_path(runtime, version, precision)
    atol = BF16_ATOL if precision == "bf16" else SELF_CHECK_ATOL
    cached = cache.has(runtime, version)
    try:
        runner = _BUILDERS[runtime](cache, precision)
    except MissingExtraError:
        raise
    except Exception as exc:
        if not cached:
            raise  # a graph built just now that fails is not a stale cache: report it
        # A cached graph that no longer loads (truncated, written by another version...): one
        # warning, then build it again.
        _warn_once(
            cache,
            runtime,
            f"The cached {runtime} encoder graph in {cache.folder} could not be loaded "
            f"({type(exc).__name__}: {exc}); rebuilding it.",
        )
        cache.forget(runtime, version)
        cached = False
        runner = _BUILDERS[runtime](cache, precision)

    recorded = _recorded_check(check) if cached else None
    passed = recorded is not None and recorded["max_abs_error"] <= atol
    if passed and recorded.get("graph_sha256") != file_digest(cache.graph_files(runtime, version)):
        # A graph that loads but whose bytes are not the ones that passed the check.
        _warn_once(
            cache,
            runtime,
            f"The cached {runtime} encoder graph in {cache.folder} does not match the "
            "checksum recorded when it was checked (changed on disk, or cached by an older "
            "version); rebuilding and checking it again.",
        )
        del runner
        cache.forget(runtime, version)
        runner = _BUILDERS[runtime](cache, precision)
        recorded = None

    if recorded is None:
        cache.say(f"Checking {runner.description} against torch (once)...")
        out = runner.run(_self_check_input().numpy())
        reference = cache.reference()
        error = float(np.abs(out - reference).max()) if out.shape == reference.shape else np.inf
        text = json.dumps(
            {
                "max_abs_error": error,
                "atol": atol,
                "runtime": runner.description,
                "graph_sha256": file_digest(cache.graph_files(runtime, version)),
            }
        )
        _replace_atomic(lambda tmp: tmp.write_text(text), check)
        del out, reference
        cache._plain = None  # the float32 copy the graphs were made from (made again if needed)
        _return_freed_memory()
    else:
        error = recorded["max_abs_error"]
    if not error <= atol:
        raise RuntimeError(
            f"{runner.description} differs from the torch encoder by {error:.3g} on the "
            f"self-check input (allowed {atol:g}); it is not used."
        )
    return runner, error


def use_runtime(
    model: Sam,
    runtime: str = "auto",
    *,
    precision: str = "fp32",
    cache_folder: str | os.PathLike[str] | None = None,
    opset: int = DEFAULT_OPSET,
    progress: Callable[[str], None] | None = None,
) -> Sam:
    """Run ``model``'s image encoder on ``runtime``; the model is changed in place and returned.

    Arguments:
      model: a model from ``build_mobile_sam`` (default or eager; float32 encoder).
      runtime: "torch", "onnxruntime", "openvino", or "auto": on a CPU model the first of
        :data:`AUTO_ORDER` that is installed and passes its self-check, else torch; torch on
        CUDA and MPS (their torch path is faster than a CPU engine).
      precision: "fp32" (default), or "bf16": fast and approximate (embedding error up to
        :data:`BF16_ATOL`, beyond the float32 tolerance), OpenVINO only, and only on CPUs
        with native bf16 (see :func:`bf16_supported`). Never chosen automatically.
      cache_folder: where graphs are cached; default :func:`graph_cache_folder`.
      opset: ONNX opset of the exported graph.
      progress: called with a message before a slow one-time step (export, conversion, check);
        default: printed to stderr.

    Returns:
      ``model``, whose ``image_encoder`` is now a :class:`RuntimeEncoder` (or the torch encoder).

    Raises:
      ValueError: unknown runtime or precision, or bf16 where it is not supported.
      MissingExtraError: an explicitly requested runtime is not installed (names the extra).
      RuntimeError: an explicitly requested runtime failed its self-check.
    """
    if runtime not in RUNTIME_CHOICES:
        raise ValueError(f"runtime must be one of {RUNTIME_CHOICES}, got {runtime!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    encoder = model.image_encoder
    torch_encoder = encoder.torch_encoder if isinstance(encoder, RuntimeEncoder) else encoder
    if precision == "bf16":
        if runtime not in ("openvino", "auto"):
            raise ValueError("precision='bf16' runs on OpenVINO: use runtime='openvino'.")
        supported, why = bf16_supported()
        if not supported:
            raise ValueError(f"bf16 is not available on this CPU ({why}); use precision='fp32'.")
        runtime = "openvino"

    model.image_encoder = torch_encoder  # the torch model is what gets exported and checked
    _weights_in_memory(torch_encoder)  # mapped again below if an engine takes over
    if runtime == "torch" or (runtime == "auto" and model.device.type != "cpu"):
        return model
    if getattr(model, "encoder_dtype", None) is not None:
        # A half-precision torch encoder is not the float32 reference the graphs come from.
        if runtime != "auto":
            raise ValueError(
                f"runtime={runtime!r} needs a float32 model: build it with half=False."
            )
        return model

    say = progress or (lambda message: print(message, file=sys.stderr))
    folder = Path(cache_folder) if cache_folder is not None else graph_cache_folder()
    cache = _GraphCache(model, folder, opset, say)
    statuses = available_runtimes()
    candidates = AUTO_ORDER if runtime == "auto" else (runtime,)
    for name in candidates:
        if not statuses[name].available:
            if runtime == "auto":
                continue
            raise MissingExtraError(
                f"The {name} runtime is not available: {statuses[name].reason}."
            )
        try:
            runner, error = _checked_runner(cache, name, precision)
        except Exception as exc:  # engines raise their own types; "auto" moves on
            if runtime != "auto":
                raise
            warnings.warn(f"{exc} Trying the next runtime.", RuntimeWarning, stacklevel=2)
            continue
        model.image_encoder = RuntimeEncoder(torch_encoder, runner, name, precision, error)
        # The engine runs the encoder from now on: the torch weights can stay on disk.
        _map_weights(torch_encoder, cache.torch_weights_path)
        return model
    return model


def runtime_summary(model: Sam) -> dict[str, Any]:
    """What runs ``model``'s encoder, for status lines and bug reports."""
    encoder = model.image_encoder
    if isinstance(encoder, RuntimeEncoder):
        return {
            "runtime": encoder.runtime,
            "precision": encoder.precision,
            "engine": encoder._runner.description,
            "self_check_error": encoder.self_check_error,
        }
    dtype = getattr(model, "encoder_dtype", None)
    return {
        "runtime": "torch",
        "precision": "fp32" if dtype is None else str(dtype).replace("torch.", ""),
        "engine": f"torch {torch.__version__} ({model.device.type})",
        "self_check_error": 0.0,
    }
