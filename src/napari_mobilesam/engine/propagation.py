"""Follow objects through a stack: each plane is prompted from the previous plane's result.

Pure numpy + a predictor; no napari. The walk goes outwards from the start plane in both
directions along one axis. For every object it prompts the next plane with what
:class:`PropagationSettings.prompt` says (by default the previous mask's box plus its low-res
logits) and decodes a single mask. An object stops, per direction, on the first of:

- the IoU between the new mask and the last accepted one drops below ``min_iou``;
- its area changes by more than ``max_area_ratio`` (either way);
- ``max_empty`` empty planes in a row;
- the end of the volume, the user's plane range, or a stop plane (e.g. a lone negative point).

Rejected planes are not written: a mask that fails a test is where the object ended or drifted.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
from scipy import ndimage

from .parameter_checks import checked_number, checked_whole

PromptMode = Literal["box+mask", "box", "point", "box+point", "mask+point"]
PROMPT_MODES: tuple[str, ...] = ("box+mask", "box", "point", "box+point", "mask+point")


class DecoderLike(Protocol):
    """The part of ``SamPredictor`` propagation uses."""

    def set_image_embedding(self, embedding: Any, original_size: tuple[int, int]) -> None: ...

    def predict(self, **kwargs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@dataclass
class PropagationSettings:
    """How far and how objects are followed.

    Attributes:
      prompt: what prompts the next plane: the previous mask's "box", its low-res logits
        ("mask"), a "point" at its most interior pixel, or a combination.
      min_iou: stop when IoU(new mask, last accepted mask) is below this.
      max_area_ratio: stop when the area grows or shrinks by more than this factor.
      max_empty: stop after this many empty planes in a row.
      min_area: masks with fewer pixels count as empty.
      plane_range: (first, last) planes to visit, inclusive; None for the whole axis.
      stop_planes: planes the walk must not enter (user stop markers).
      box_margin: pixels added around the previous mask's box, so a growing object still fits.
    """

    prompt: PromptMode = "box+mask"
    # 0.3 rather than 0.5: near an object's tip its section shrinks fast between planes (IoU
    # 0.38-0.41 on the test ellipsoids), while a jump to a neighbour scores about 0.2 or less.
    min_iou: float = 0.3
    max_area_ratio: float = 3.0
    max_empty: int = 2
    min_area: int = 4
    plane_range: tuple[int, int] | None = None
    stop_planes: frozenset[int] = frozenset()
    box_margin: int = 2

    def __post_init__(self) -> None:
        if self.prompt not in PROMPT_MODES:
            raise ValueError(f"prompt must be one of {PROMPT_MODES}, not {self.prompt!r}.")
        # NaN would pass a plain comparison and switch its stop rule off: every number is
        # checked to be finite and in range.
        self.min_iou = checked_number("min_iou", self.min_iou, 0.0, 1.0)
        self.max_area_ratio = checked_number("max_area_ratio", self.max_area_ratio, 1.0, 1e9)
        self.max_empty = checked_whole("max_empty", self.max_empty, 1, 2**31)
        self.min_area = checked_whole("min_area", self.min_area, 0, 2**62)
        self.box_margin = checked_whole("box_margin", self.box_margin, 0, 2**31)
        self.stop_planes = frozenset(int(p) for p in self.stop_planes)


@dataclass
class Seed:
    """An object on the start plane: (H, W) bool mask and, if known, its (256, 256) logits."""

    mask: np.ndarray
    low_res: np.ndarray | None = None


@dataclass
class PropagatedObject:
    """One object's masks by plane index, and why each direction stopped."""

    masks: dict[int, np.ndarray] = field(default_factory=dict)
    stop_reasons: dict[str, str] = field(default_factory=dict)

    @property
    def planes(self) -> list[int]:
        return sorted(self.masks)


@dataclass
class PropagationProgress:
    """Yielded after each plane: how many planes are done out of the most there can be."""

    plane: int
    done: int
    total: int
    active_objects: int
    seconds: float


def mask_to_box(mask: np.ndarray, margin: int = 0) -> np.ndarray:
    """(H, W) bool mask -> (4,) XYXY box in SAM's (x, y) order, grown by ``margin`` pixels."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return np.array(
        [
            max(cols[0] - margin, 0),
            max(rows[0] - margin, 0),
            min(cols[-1] + margin, w - 1),
            min(rows[-1] + margin, h - 1),
        ],
        dtype=np.float64,
    )


def interior_point(mask: np.ndarray) -> np.ndarray:
    """(1, 2) (x, y) of the mask pixel farthest from the background (its most interior point)."""
    distance = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    row, col = np.unravel_index(int(np.argmax(distance)), distance.shape)
    return np.array([[col, row]], dtype=np.float64)


def prompt_from_previous(
    mask: np.ndarray, low_res: np.ndarray | None, mode: str, margin: int
) -> dict[str, np.ndarray]:
    """``SamPredictor.predict`` keyword arguments that prompt the next plane from ``mask``."""
    kwargs: dict[str, np.ndarray] = {}
    if "box" in mode:
        kwargs["box"] = mask_to_box(mask, margin)
    if "point" in mode:
        kwargs["point_coords"] = interior_point(mask)
        kwargs["point_labels"] = np.array([1])
    if "mask" in mode and low_res is not None:
        kwargs["mask_input"] = np.asarray(low_res, dtype=np.float32)[None]
    if not kwargs:  # "mask" without logits (e.g. a painted seed): fall back to the box
        kwargs["box"] = mask_to_box(mask, margin)
    return kwargs


def nearest_first_planes(current: int, n_planes: int) -> list[int]:
    """0..n_planes-1 ordered by distance from ``current`` (the upper neighbour first on ties)."""
    return sorted(range(n_planes), key=lambda i: (abs(i - current), i < current))


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


@dataclass
class _Track:
    """The running state of one object in one direction."""

    mask: np.ndarray
    low_res: np.ndarray | None
    empty_run: int = 0
    active: bool = True


def planes_in_direction(
    start: int, step: int, n_planes: int, settings: PropagationSettings
) -> Iterable[int]:
    """Planes visited from ``start`` (exclusive) in direction ``step``, within the range."""
    first, last = settings.plane_range if settings.plane_range else (0, n_planes - 1)
    first, last = max(first, 0), min(last, n_planes - 1)
    plane = start + step
    while first <= plane <= last:
        yield plane
        plane += step


def propagate(
    predictor: DecoderLike,
    embed: Callable[[int], tuple[Any, tuple[int, int]]],
    n_planes: int,
    start: int,
    seeds: Sequence[Seed],
    settings: PropagationSettings | None = None,
) -> Generator[PropagationProgress, None, list[PropagatedObject]]:
    """Follow ``seeds`` from plane ``start`` through planes ``0 .. n_planes - 1``.

    Arguments:
      predictor: a ``SamPredictor`` (only ``set_image_embedding`` and ``predict`` are used).
      embed: plane index -> (embedding, (H, W)); typically a cache in front of the encoder.
        Each plane is embedded once for all objects.
      n_planes: length of the axis being walked.
      start: the plane the seeds are on; their masks are kept as they are.
      seeds: one per object.
      settings: stop rules and prompt choice.

    Yields:
      :class:`PropagationProgress` after every plane, so a worker can cancel between planes.

    Returns:
      One :class:`PropagatedObject` per seed, its start-plane mask included.
    """
    settings = settings or PropagationSettings()
    if not 0 <= start < n_planes:
        raise ValueError(f"start plane {start} is outside 0..{n_planes - 1}.")
    results = [PropagatedObject(masks={start: np.asarray(s.mask, bool)}) for s in seeds]
    for seed in seeds:
        if np.count_nonzero(seed.mask) < settings.min_area:
            raise ValueError("A seed mask is empty; segment the object on this plane first.")
    first, last = settings.plane_range or (0, n_planes - 1)
    total = max(0, min(last, n_planes - 1) - max(first, 0))
    done = 0
    for direction, step in (("up", 1), ("down", -1)):
        tracks = [_Track(np.asarray(s.mask, bool), s.low_res) for s in seeds]
        reason = "end of volume" if settings.plane_range is None else "end of plane range"
        for plane in planes_in_direction(start, step, n_planes, settings):
            if not any(t.active for t in tracks):
                break
            if plane in settings.stop_planes:
                reason = f"stop marker on plane {plane}"
                break
            t0 = time.perf_counter()
            embedding, size = embed(plane)
            wrong = [t.mask.shape for t in tracks if t.mask.shape != tuple(size)]
            if wrong:  # else numpy fails later with a broadcasting error that names nothing
                raise ValueError(
                    f"Seed masks of shape {wrong[0]} do not match the planes, which are "
                    f"{tuple(size)}; seeds must be masks of the start plane."
                )
            predictor.set_image_embedding(embedding, size)
            for track, result in zip(tracks, results, strict=True):
                if track.active:
                    _step(predictor, plane, track, result, settings, direction)
            done += 1
            yield PropagationProgress(
                plane=plane,
                done=done,
                total=total,
                active_objects=sum(t.active for t in tracks),
                seconds=time.perf_counter() - t0,
            )
        for track, result in zip(tracks, results, strict=True):
            if track.active:
                result.stop_reasons[direction] = reason
    return results


def _step(
    predictor: DecoderLike,
    plane: int,
    track: _Track,
    result: PropagatedObject,
    settings: PropagationSettings,
    direction: str,
) -> None:
    kwargs = prompt_from_previous(track.mask, track.low_res, settings.prompt, settings.box_margin)
    masks, _, low_res = predictor.predict(**kwargs, multimask_output=False)
    mask = np.asarray(masks[0], bool)
    area = np.count_nonzero(mask)
    if area < settings.min_area:
        track.empty_run += 1
        if track.empty_run >= settings.max_empty:
            track.active = False
            result.stop_reasons[direction] = f"{track.empty_run} empty planes (last {plane})"
        return
    iou = mask_iou(mask, track.mask)
    ratio = area / max(np.count_nonzero(track.mask), 1)
    # Area first: a merge into a neighbour also lowers the IoU, but "area" says what happened.
    if not 1.0 / settings.max_area_ratio <= ratio <= settings.max_area_ratio:
        track.active = False
        result.stop_reasons[direction] = f"area changed x{ratio:.2f} on plane {plane}"
        return
    if iou < settings.min_iou:
        track.active = False
        result.stop_reasons[direction] = f"IoU {iou:.2f} < {settings.min_iou} on plane {plane}"
        return
    result.masks[plane] = mask
    track.mask, track.low_res, track.empty_run = mask, np.asarray(low_res[0]), 0
