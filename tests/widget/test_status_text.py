"""Status texts shown by the widget."""

from __future__ import annotations

import numpy as np

from napari_mobilesam.layers.labels_writer import WriteReport
from napari_mobilesam.layers.layer_prompts import PlanePrompts, PromptGroup
from napari_mobilesam.layers.plane import PlaneRef
from napari_mobilesam.layers.segment import SegmentedObject, SegmentResult
from napari_mobilesam.layers.stack_layers import PlaneMasks
from napari_mobilesam.widget.status_text import (
    candidate_scores,
    commit_summary,
    propagation_summary,
    run_summary,
    timing,
)


def _object(chosen: int) -> SegmentedObject:
    return SegmentedObject(
        plane=PlaneRef("id", (None, None), (0, 1), (2, 2)),
        prompt=PromptGroup(np.zeros((1, 2)), np.ones(1, dtype=int)),
        masks=np.zeros((3, 2, 2), dtype=bool),
        scores=np.array([0.5, 0.91, 0.1], dtype=np.float32),
        low_res_logits=np.zeros((3, 256, 256), dtype=np.float32),
        chosen=chosen,
    )


def test_run_summary_names_ignored_prompts() -> None:
    prompts = PlanePrompts(skipped_shapes=2, skipped_negative_points=1)
    text = run_summary(0, prompts)
    assert text.startswith("0 object(s)")
    assert "2 non-rectangle shape(s) ignored" in text
    assert "1 negative point(s) with no object ignored" in text


def test_timing_texts() -> None:
    assert timing(SegmentResult()) is None
    fresh = SegmentResult(objects=[_object(1)], encode_seconds=2.4149, decode_seconds=0.035)
    assert timing(fresh) == "encode 2.41 s, decode 35 ms"
    cached = SegmentResult(objects=[_object(1)], encode_seconds=0.001, cache_hit=True)
    assert timing(cached).startswith("encode cached")


def test_candidate_scores_mark_the_chosen_one() -> None:
    assert candidate_scores([], 0) == "-"
    assert candidate_scores([_object(0), _object(1)], 5) == "object 2/2: 0.50  [0.91]  0.10"


def test_commit_summary() -> None:
    report = WriteReport(ids=[4, 5], written=[10, 3], protected=[2, 0], skipped=1)
    text = commit_summary(report, "cells")
    assert text.startswith("committed id(s) [4, 5] to 'cells'")
    assert "2 pixel(s) of existing labels kept" in text
    assert "1 object(s) wrote nothing" in text


def test_commit_summary_keeps_overlaps_apart_from_existing_labels() -> None:
    report = WriteReport(ids=[1, 2], written=[100, 75], protected=[0, 0], overlapped=25)
    text = commit_summary(report, "cells")
    assert "existing labels" not in text
    assert "25 overlapping pixel(s) went to the earlier object" in text


def test_propagation_summary_gives_reach_and_stop_reasons() -> None:
    def plane(z: int) -> PlaneRef:
        return PlaneRef("id", (z, None, None), (1, 2), (2, 2))

    mask = np.ones((2, 2), dtype=bool)
    objects = [
        PlaneMasks(
            {plane(z): mask for z in range(4, 17)},
            start=10,
            axis=0,
            stop_reasons={"up": "IoU 0.12 < 0.3 on plane 17", "down": "end of volume"},
        ),
        PlaneMasks(
            {plane(10): mask}, start=10, axis=0, stop_reasons={"up": "stop marker on plane 11"}
        ),
    ]
    report = WriteReport(ids=[3, 4], written=[52, 4], protected=[6, 0])
    text = propagation_summary(report, "nuclei labels", objects)
    lines = text.split("\n")
    assert lines[0] == (
        "propagated 2 object(s) into 'nuclei labels' as id(s) [3, 4] (one undo step); "
        "6 pixel(s) of existing labels kept"
    )
    assert lines[1] == (
        "object 1: planes 4-16 (6 up, 6 down); up: IoU 0.12 < 0.3 on plane 17; down: end of volume"
    )
    assert lines[2] == "object 2: planes 10-10 (0 up, 0 down); up: stop marker on plane 11"
