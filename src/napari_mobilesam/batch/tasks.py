"""Batch work as small tasks, run in this process or on a dask.distributed cluster.

A :class:`Task` is one image, one plane of a stack or one tile: a few hundred bytes of
description (where to read, where to write, what to do), never pixels or masks. The function
that runs it, :func:`run_task`, reads its own input, gets the model from a per-process cache
(built once per process, so once per dask worker), writes its own output atomically (see
:mod:`~napari_mobilesam.batch.files`) and returns a :class:`TaskReport` of a few numbers.
So masks never travel through the scheduler or the client.

Schedulers (:func:`run_tasks`):

- ``"threads"``: in this process, ``workers`` threads sharing one model;
- ``"local:N"``: a dask.distributed ``LocalCluster`` of N single-threaded worker processes,
  bound to 127.0.0.1 and stopped at the end;
- ``"tcp://host:port"``: an existing dask.distributed scheduler (e.g. dask-jobqueue's
  ``SLURMCluster``); its workers need this package and the weights file at the same path.

Every task runs torch with one intra-op thread and parallelism comes from running tasks side by
side: float32 results then do not depend on how many threads torch would have chosen, so every
scheduler writes byte-identical outputs. A task that raises is retried once, then reported; the
other tasks finish.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_mobilesam.batch.files import (
    DONE_SAME,
    ImageSource,
    InputError,
    LabelVolume,
    napari_contrast_limits,
    output_state,
    recipe_digest,
    write_labels,
)

# Statuses of a TaskReport.
DONE, SKIPPED, FAILED = "done", "skipped", "failed"
TASK_RETRIES = 1
DEFAULT_CONNECT_TIMEOUT_S = 5.0
# The dask setting that gives worker processes glibc's MALLOC_TRIM_THRESHOLD_ (see _cluster).
PRE_SPAWN_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"


class SchedulerError(Exception):
    """The scheduler could not be started or reached; the message says what to do."""


@dataclass(frozen=True)
class ModelSpec:
    """What each process needs to build the model: a weights file (resolved, at the same path
    on every worker), a device and torch's intra-op threads per task."""

    weights: str
    device: str = "cpu"
    torch_threads: int = 1


@dataclass(frozen=True)
class Task:
    """One unit of work (one image, one plane or one tile).

    Attributes:
      kind: ``"embed"``, ``"segment"``, ``"everything"``, or ``"finish"`` (write a label
        volume's result once its planes are done; ``options["link"]`` links objects across
        planes).
      source: the input.
      plane: index of the plane in the stack's leading axes; ``()`` for a 2D image.
      output: the label file (``.tif``/``.npy``/``.zarr``) of a 2D image, or None.
      volume: the label volume a plane of a stack is written to, or None.
      options: what the kind needs (contrast limits, cache folder, prompts, generator options).
      overwrite: redo work whose output is already there.
    """

    kind: str
    source: ImageSource
    plane: tuple[int, ...] = ()
    output: str | None = None
    volume: LabelVolume | None = None
    options: dict[str, Any] = field(default_factory=dict)
    overwrite: bool = False

    @property
    def name(self) -> str:
        if self.kind == "finish":
            return f"{self.source.name} (writing {self.volume.path if self.volume else '?'})"
        if not self.source.is_stack:
            return self.source.name
        return f"{self.source.name}[{', '.join(str(i) for i in self.plane)}]"


@dataclass
class TaskReport:
    """What a task sends back: its status and timings (no pixels).

    Attributes:
      name: the task's name (input, plus the plane).
      status: ``"done"``, ``"skipped"`` (the output was already there) or ``"failed"``.
      reason: why it failed, for the summary.
      seconds: the task's wall time inside the worker.
      model_seconds: the part of it spent in the model (encoder and decoder).
      kind: the task's kind (summaries count images and planes, not "finish" steps).
      pid: the process that ran it (a dask worker, or this process).
    """

    name: str
    status: str
    reason: str = ""
    seconds: float = 0.0
    model_seconds: float = 0.0
    kind: str = ""
    pid: int = field(default_factory=os.getpid)


# --- The model, once per process -----------------------------------------------------------------

_MODEL_LOCK = threading.Lock()
_MODELS: dict[ModelSpec, Any] = {}
_LOCAL = threading.local()  # one predictor per thread: a predictor holds one image's embedding


def get_model(spec: ModelSpec) -> Any:
    """The model for ``spec``, built on first use in this process and kept."""
    with _MODEL_LOCK:
        model = _MODELS.get(spec)
        if model is None:
            from napari_mobilesam.engine.disk_cache import model_fingerprint
            from napari_mobilesam.model.build import build_mobile_sam

            device = None if spec.device == "auto" else spec.device
            model = build_mobile_sam(spec.weights, device=device)
            model_fingerprint(model)  # memoised now, not inside the first task's timing
            _MODELS[spec] = model
    return model


def get_predictor(spec: ModelSpec) -> Any:
    """This thread's ``SamPredictor`` around the process' model for ``spec``."""
    from napari_mobilesam.engine.predictor import SamPredictor

    cache = getattr(_LOCAL, "predictors", None)
    if cache is None:
        cache = _LOCAL.predictors = {}
    if spec not in cache:
        cache[spec] = SamPredictor(get_model(spec))
    return cache[spec]


def warm_up(spec: ModelSpec) -> int:
    """On a dask worker, before its first task: set torch's threads and build the model.

    Returns the worker's process id. (Setting the thread count is process-wide, which is fine
    in a worker process this run owns; in this process :func:`run_tasks` restores it.)
    """
    import torch

    torch.set_num_threads(spec.torch_threads)
    get_model(spec)
    return os.getpid()


# --- Task kinds ----------------------------------------------------------------------------------


def model_input(task: Task, pixels: np.ndarray) -> np.ndarray:
    """The (h, w, 3) uint8 plane the encoder sees: the plugin's own conversion, with the
    contrast limits of the task (those of the napari layer), so disk-cache keys match."""
    from napari_mobilesam.engine.image_conversion import shrink_for_encoder, to_uint8_rgb

    limits = task.options.get("contrast_limits")
    if limits is None:  # a 2D image: napari's default limits come from its own pixels
        limits = napari_contrast_limits(task.source, pixels)
    return to_uint8_rgb(shrink_for_encoder(pixels), contrast_limits=limits, rgb=task.source.rgb)


def _set_image(predictor: Any, image: np.ndarray, size: tuple[int, int]) -> None:
    if image.shape[:2] == size:
        predictor.set_image(image)
    else:  # reduced from a huge plane: prompts and masks keep the plane's pixels
        predictor.set_image(image, original_size=size)


def _embed(task: Task, spec: ModelSpec, report: TaskReport) -> None:
    from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache, model_fingerprint

    image = model_input(task, task.source.read(task.plane))
    cache = DiskEmbeddingCache(task.options["cache"], model_fingerprint(get_model(spec)))
    key = cache.key(image)
    if not task.overwrite and cache.get(key) is not None:
        report.status = SKIPPED
        return
    predictor = get_predictor(spec)
    start = time.perf_counter()
    _set_image(predictor, image, task.source.plane_shape)
    embedding = predictor.get_image_embedding().float().cpu().numpy()
    predictor.reset_image()
    report.model_seconds = time.perf_counter() - start
    if not cache.put(key, embedding):  # disk full, read-only: not done, whatever the encoder did
        raise OSError(f"the embedding could not be stored in {cache.folder}: {cache.write_error}")


def paint_objects(shape: tuple[int, int], masks: Sequence[np.ndarray]) -> np.ndarray:
    """Label image of objects in order: object i gets label i + 1 and keeps its pixels where a
    later object overlaps it (the first prompt wins, as when objects are committed one by one
    onto protected labels)."""
    labels = np.zeros(shape, dtype=np.uint32)
    for i, mask in enumerate(masks, start=1):
        labels[(mask > 0) & (labels == 0)] = i
    return labels


def _segment(task: Task, spec: ModelSpec, report: TaskReport) -> np.ndarray:
    pixels = task.source.read(task.plane)
    image = model_input(task, pixels)
    size = task.source.plane_shape
    predictor = get_predictor(spec)
    start = time.perf_counter()
    _set_image(predictor, image, size)
    if task.options.get("each_point"):  # batched; overlaps go to the higher predicted IoU
        from napari_mobilesam.engine.point_objects import decode_objects, prompts_from_objects

        prompts = prompts_from_objects(task.options["objects"], each_point=True)
        multimask = bool(task.options.get("multimask", True))
        labels = decode_objects(predictor, prompts, multimask).labels().astype(np.uint32)
        predictor.reset_image()
        report.model_seconds = time.perf_counter() - start
        return labels
    masks = []
    for group in task.options["objects"]:
        kwargs: dict[str, Any] = {"point_coords": None, "point_labels": None, "box": None}
        if group.get("points"):
            kwargs["point_coords"] = np.asarray(group["points"], dtype=np.float64)
            kwargs["point_labels"] = np.asarray(group["labels"], dtype=np.int64)
        if group.get("box") is not None:
            kwargs["box"] = np.asarray(group["box"], dtype=np.float64)
        multimask = bool(task.options.get("multimask", True))
        candidates, scores, _ = predictor.predict(**kwargs, multimask_output=multimask)
        masks.append(candidates[int(np.argmax(scores))])
    predictor.reset_image()
    report.model_seconds = time.perf_counter() - start
    return paint_objects(size, masks)


def _everything(task: Task, spec: ModelSpec, report: TaskReport) -> np.ndarray:
    try:
        from napari_mobilesam.engine.everything import segment_everything
    except ImportError as exc:  # pragma: no cover - only before automatic segmentation exists
        raise RuntimeError("automatic segmentation is not available in this version") from exc

    pixels = task.source.read(task.plane)
    limits = task.options.get("contrast_limits") or napari_contrast_limits(task.source, pixels)
    start = time.perf_counter()
    labels = segment_everything(
        pixels,
        get_predictor(spec),
        contrast_limits=limits,
        rgb=task.source.rgb,
        **task.options.get("generator", {}),
    )
    report.model_seconds = time.perf_counter() - start
    return np.asarray(labels).astype(np.uint32, copy=False)


def linked_planes(planes: Iterator[np.ndarray], link_iou: float = 0.5) -> Iterator[np.ndarray]:
    """Give objects of consecutive planes one id where they overlap (the rule of
    :func:`~napari_mobilesam.engine.everything.segment_everything` for stacks), so a volume
    segmented plane by plane on many workers gets the same 3D ids as in one process."""
    from napari_mobilesam.engine.everything import link_to_previous

    previous: np.ndarray | None = None
    next_id = 1
    for labels in planes:
        if previous is None:
            linked = np.where(labels > 0, labels, 0)
            next_id = int(labels.max()) + 1
        else:
            linked, next_id = link_to_previous(previous, labels, next_id, link_iou)
        previous = linked
        yield linked.astype(labels.dtype, copy=False)


def _refine(task: Task, spec: ModelSpec, report: TaskReport) -> np.ndarray:
    """Every label of the plane prompts one object (its box and mask); source ids kept."""
    from napari_mobilesam.engine.refine import refine_plane

    image = model_input(task, task.source.read(task.plane))
    labels = np.asarray(task.options["labels"].read(task.plane))
    if labels.dtype == np.bool_:
        labels = labels.astype(np.uint8)
    predictor = get_predictor(spec)
    start = time.perf_counter()
    _set_image(predictor, image, task.source.plane_shape)
    refined = refine_plane(predictor, labels, mask_prompt=task.options.get("mask_prompt", True))
    predictor.reset_image()
    report.model_seconds = time.perf_counter() - start
    return refined.astype(np.uint32)


_LABEL_KINDS: dict[str, Callable[[Task, ModelSpec, TaskReport], np.ndarray]] = {
    "segment": _segment,
    "everything": _everything,
    "refine": _refine,
}


def run_task(task: Task, spec: ModelSpec) -> TaskReport:
    """Run one task where it is (this process or a worker) and write its output.

    Raises whatever went wrong (the scheduler retries once and then reports it); an input that
    cannot be read raises :class:`~.files.InputError` with a message for the user.
    """
    start = time.perf_counter()
    report = TaskReport(task.name, DONE, kind=task.kind)
    if task.kind == "finish":
        missing = [p for p in task.options.get("planes", ()) if not task.volume.plane_done(p)]
        if missing:
            raise RuntimeError(f"{len(missing)} plane(s) of the volume are not done")
        relabel = linked_planes if task.options.get("link") else None
        task.volume.finish(relabel)
    elif task.kind == "embed":
        _embed(task, spec, report)
    elif task.kind in _LABEL_KINDS:
        if not task.overwrite and _output_exists(task):
            report.status = SKIPPED
        else:
            labels = _LABEL_KINDS[task.kind](task, spec, report)
            if task.volume is not None:
                task.volume.write_plane(task.plane, labels)
            else:
                write_labels(task.output, labels, task.options.get("recipe"))
    else:
        raise ValueError(f"unknown task kind {task.kind!r}")
    report.seconds = time.perf_counter() - start
    return report


def _output_exists(task: Task) -> bool:
    """Whether the task's work is there: its plane marked, or its output written by this
    program from the same recipe."""
    if task.volume is not None:
        return task.volume.plane_done(task.plane)
    if task.output is None:
        return False
    digest = recipe_digest(task.options.get("recipe") or {})
    return output_state(task.output, digest) == DONE_SAME


def failure_reason(exc: BaseException) -> str:
    """One line for the summary: the message of an input error, else type and message."""
    if isinstance(exc, InputError):
        return str(exc)
    name = type(exc).__name__
    if name == "KilledWorker":
        return "the worker running it died repeatedly (out of memory or killed)"
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{name}: {text}" if text else name


# --- Schedulers ----------------------------------------------------------------------------------


def parse_scheduler(text: str) -> tuple[str, Any]:
    """``("threads", None)``, ``("local", N)`` or ``("address", "tcp://...")``.

    Raises:
      ValueError: with the accepted forms.
    """
    text = text.strip()
    if text == "threads":
        return "threads", None
    if text.startswith("local:"):
        count = text.split(":", 1)[1]
        if count.isdigit() and int(count) > 0:
            return "local", int(count)
    elif "://" in text:
        return "address", text
    raise ValueError(
        f"--scheduler {text!r} is not understood: use threads, local:N (N worker processes on "
        "this machine) or the address of a dask scheduler such as tcp://host:8786"
    )


def _require_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise SchedulerError(
            "dask.distributed is not installed: pip install 'napari-mobilesam[distributed]' "
            "(or use --scheduler threads)"
        ) from exc
    return distributed


def _finals_ready(
    finals: Sequence[Task], tasks: Sequence[Task], reports: Sequence[TaskReport]
) -> list[Task]:
    """The "finish" tasks whose volume has no failed plane."""
    failed = {r.name for r in reports if r.status == FAILED}
    broken = {t.volume for t in tasks if t.name in failed and t.volume is not None}
    return [t for t in finals if t.volume not in broken]


def _run_threads(
    tasks: Sequence[Task],
    finals: Sequence[Task],
    spec: ModelSpec,
    workers: int,
    on_report: Callable[[TaskReport], None],
) -> list[TaskReport]:
    reports: list[TaskReport] = []

    def attempt(task: Task) -> TaskReport:
        for attempt_number in range(TASK_RETRIES + 1):
            try:
                return run_task(task, spec)
            except Exception as exc:
                if attempt_number == TASK_RETRIES:
                    return TaskReport(task.name, FAILED, failure_reason(exc), kind=task.kind)
        raise AssertionError("unreachable")

    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mobilesam-task")
    try:
        for phase in (tasks, None):
            phase = phase if phase is not None else _finals_ready(finals, tasks, reports)
            pending = {pool.submit(attempt, task) for task in phase}
            while pending:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    reports.append(future.result())
                    on_report(reports[-1])
    except BaseException:
        # Ctrl+C: drop what has not started; the tasks in flight finish (their writes are
        # atomic, so each leaves a whole output or none).
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return reports


def connect(scheduler: str, timeout_s: float) -> tuple[Any, Any]:
    """(client, cluster or None) for a ``--scheduler`` value other than ``threads``: a fresh
    ``LocalCluster`` for ``local:N``, the running scheduler at an address. Close both after use.

    Raises:
      ValueError: ``threads`` or a value :func:`parse_scheduler` does not accept.
      SchedulerError: distributed is not installed, or no scheduler answered.
    """
    kind, value = parse_scheduler(scheduler)
    if kind == "threads":
        raise ValueError("connect() is for local:N or a scheduler address, not threads")
    return _cluster(kind, value, timeout_s)


def _cluster(kind: str, value: Any, timeout_s: float) -> tuple[Any, Any]:
    """(client, cluster or None) for ``local:N`` or a scheduler address."""
    import logging

    distributed = _require_distributed()
    if kind == "local":
        import dask

        # One thread per worker (see the module docstring); only the loopback interface, no
        # dashboard: nothing is exposed to the network. dask's nannies start workers with
        # MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand the encoder's large buffers back
        # to the system after every call: measured 1.6x slower per plane (2.6 s against 1.6 s
        # on one CPU thread), so our workers keep glibc's default.
        with dask.config.set({PRE_SPAWN_MALLOC_TRIM: None}):
            cluster = distributed.LocalCluster(
                n_workers=value,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            )
        return distributed.Client(cluster), cluster
    try:
        client = distributed.Client(value, timeout=f"{timeout_s}s")
    except (OSError, TimeoutError) as exc:
        raise SchedulerError(
            f"no dask scheduler answered at {value} within {timeout_s:g} s; check the address "
            "and that the scheduler is running (and reachable from here)"
        ) from exc
    return client, None


def run_tasks(
    tasks: Sequence[Task],
    spec: ModelSpec,
    scheduler: str = "threads",
    *,
    finals: Sequence[Task] = (),
    workers: int | None = None,
    on_report: Callable[[TaskReport], None] | None = None,
    on_start: Callable[[Any], None] | None = None,
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> list[TaskReport]:
    """Run ``tasks`` on ``scheduler`` and return one report per task (in completion order).

    Arguments:
      tasks: from the command line's planning (or built by hand).
      finals: "finish" tasks, run after ``tasks`` for volumes none of whose planes failed.
      spec: the model every process builds once.
      scheduler: ``"threads"``, ``"local:N"`` or ``"tcp://host:port"``.
      workers: threads for ``"threads"`` (default: the CPU count).
      on_report: called in this process after each task (progress bars, summaries).
      on_start: called with the dask ``Client`` once it is up (``None`` for threads).
      connect_timeout_s: how long to wait for a remote scheduler.

    Raises:
      SchedulerError: the scheduler is unknown, unreachable or dask.distributed is missing.
      KeyboardInterrupt: after cancelling what had not started.
    """
    on_report = on_report or (lambda report: None)
    try:
        kind, value = parse_scheduler(scheduler)
    except ValueError as exc:
        raise SchedulerError(str(exc)) from exc
    if kind == "threads":
        import torch

        get_model(spec)  # a bad weights file fails once, here, not in every task
        if on_start is not None:
            on_start(None)
        previous = torch.get_num_threads()
        torch.set_num_threads(spec.torch_threads)
        try:
            return _run_threads(tasks, finals, spec, workers or os.cpu_count() or 1, on_report)
        finally:
            torch.set_num_threads(previous)

    distributed = _require_distributed()
    client, cluster = _cluster(kind, value, connect_timeout_s)
    reports: list[TaskReport] = []
    futures: list[Any] = []
    try:
        from napari_mobilesam.batch.dask_worker import ModelSetup

        # Every worker builds the model before its first task, also one that replaces a dead
        # worker; a model that cannot be built fails here, once.
        client.register_plugin(ModelSetup(warm_up, spec, ignore_interrupt=kind == "local"))
        if on_start is not None:
            on_start(client)
        for phase in (tasks, None):
            phase = phase if phase is not None else _finals_ready(finals, tasks, reports)
            futures = client.map(
                run_task,
                list(phase),
                spec=spec,
                retries=TASK_RETRIES,
                pure=False,
                key=[f"mobilesam-{uuid.uuid4().hex}" for _ in phase],
            )
            by_key = {f.key: t for f, t in zip(futures, phase, strict=True)}
            for future in distributed.as_completed(futures):
                task = by_key[future.key]
                if future.status == "finished":
                    report = future.result()
                else:
                    reason = failure_reason(future.exception())
                    report = TaskReport(task.name, FAILED, reason, kind=task.kind)
                future.release()
                reports.append(report)
                on_report(report)
    except BaseException:
        if futures:
            client.cancel(futures)
        raise
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return reports
