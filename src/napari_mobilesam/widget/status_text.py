"""The short texts the widget shows after a run or a commit (no Qt, so they are easy to test)."""

from __future__ import annotations

from collections.abc import Sequence

from napari_mobilesam.layers.labels_writer import WriteReport
from napari_mobilesam.layers.layer_prompts import PlanePrompts
from napari_mobilesam.layers.segment import SegmentedObject, SegmentResult
from napari_mobilesam.layers.stack_layers import PlaneMasks


def run_summary(objects: int, prompts: PlanePrompts) -> str:
    """How many objects a run gave, and which prompts it ignored and why."""
    parts = [f"{objects} object(s) on this plane"]
    if prompts.skipped_shapes:
        parts.append(f"{prompts.skipped_shapes} non-rectangle shape(s) ignored")
    if prompts.skipped_negative_points:
        parts.append(f"{prompts.skipped_negative_points} negative point(s) with no object ignored")
    if prompts.skipped_outside_points:
        parts.append(f"{prompts.skipped_outside_points} point(s) outside the image ignored")
    if prompts.skipped_outside_shapes:
        parts.append(f"{prompts.skipped_outside_shapes} box(es) outside the image ignored")
    return "; ".join(parts)


def has_skipped(prompts: PlanePrompts) -> bool:
    """Whether some prompts on the plane were ignored (:func:`run_summary` says why)."""
    return bool(
        prompts.skipped_shapes
        or prompts.skipped_negative_points
        or prompts.skipped_outside_points
        or prompts.skipped_outside_shapes
    )


def timing(result: SegmentResult) -> str | None:
    """``encode 2.41 s, decode 35 ms`` (or ``cached``); ``None`` when the run did no work."""
    if result.encode_seconds is None and not result.objects:
        return None
    if result.encode_seconds is None:
        encode = "not needed"
    elif result.cache_hit:
        encode = "cached"
    else:
        encode = f"{result.encode_seconds:.2f} s"
    return f"encode {encode}, decode {result.decode_seconds * 1000:.0f} ms"


def candidate_scores(objects: Sequence[SegmentedObject], active: int) -> str:
    """The active object's candidate scores, the chosen one in brackets: ``0.81  [0.92]  0.40``."""
    if not objects:
        return "-"
    active = min(active, len(objects) - 1)
    obj = objects[active]
    scores = "  ".join(
        f"[{score:.2f}]" if i == obj.chosen else f"{score:.2f}"
        for i, score in enumerate(obj.scores)
    )
    return f"object {active + 1}/{len(objects)}: {scores}"


def _write_details(report: WriteReport) -> str:
    """Protected and overlapping pixels, and objects that wrote nothing (or "")."""
    details = ""
    if report.protected_total:
        details += f"; {report.protected_total} pixel(s) of existing labels kept"
    if report.overlapped:
        details += f"; {report.overlapped} overlapping pixel(s) went to the earlier object"
    if report.skipped:
        details += f"; {report.skipped} object(s) wrote nothing (empty, or only existing labels)"
    return details


def commit_summary(report: WriteReport, labels_name: str) -> str:
    """The new ids, where they went, and how many pixels of existing labels were kept.

    Pixels where two objects of the same commit overlap are not existing labels: they are
    reported apart.
    """
    return f"committed id(s) {report.ids} to '{labels_name}'" + _write_details(report)


def propagation_summary(
    report: WriteReport, labels_name: str, objects: Sequence[PlaneMasks]
) -> str:
    """What a propagation wrote and, per object, the planes it reached and why each way stopped.

    ``propagated 1 object(s) into 'cells' as id(s) [3] (one undo step)``, then per object
    ``object 1: planes 4-16 (6 up, 6 down); up: IoU 0.12 < 0.3 on plane 17; down: end of
    volume``.
    """
    lines = [
        f"propagated {len(report.ids)} object(s) into '{labels_name}' as id(s) {report.ids} "
        "(one undo step)" + _write_details(report)
    ]
    for number, obj in enumerate(objects, start=1):
        indices = sorted({plane.slice_index[obj.axis] for plane in obj}) or [obj.start]
        reach = obj.reach
        text = (
            f"object {number}: planes {indices[0]}-{indices[-1]} "
            f"({reach['up']} up, {reach['down']} down)"
        )
        for direction in ("up", "down"):
            reason = obj.stop_reasons.get(direction)
            if reason:
                text += f"; {direction}: {reason}"
        lines.append(text)
    return "\n".join(lines)
