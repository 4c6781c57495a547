"""Prompt files: napari's own Points/Shapes CSV, JSON, inline text, grouping, bad files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from napari_mobilesam.cli.prompts import (
    PromptError,
    Prompts,
    check_inside,
    group_objects,
    read_boxes,
    read_points,
)


def _napari_points_csv(path: Path, data: np.ndarray, positive: list[bool] | None = None) -> Path:
    """Save a Points layer with napari's own writer (what File > Save Selected Layers does)."""
    from napari.layers import Points
    from napari_builtins.io import napari_write_points

    features = None if positive is None else pd.DataFrame({"positive": positive})
    layer = Points(data, features=features)
    data, meta, _ = layer.as_layer_data_tuple()
    assert napari_write_points(str(path), data, meta)
    return path


def _napari_shapes_csv(path: Path, rectangles: list[np.ndarray]) -> Path:
    from napari.layers import Shapes
    from napari_builtins.io import napari_write_shapes

    layer = Shapes(rectangles, shape_type="rectangle")
    data, meta, _ = layer.as_layer_data_tuple()
    assert napari_write_shapes(str(path), data, meta)
    return path


def test_napari_points_csv_reads_back_as_xy_with_the_positive_feature(tmp_path: Path) -> None:
    # napari's rows are (row, column); SAM's points are (x, y) = (column, row).
    path = _napari_points_csv(tmp_path / "p.csv", np.array([[10.0, 20.0], [30, 40]]), [True, False])
    prompts = Prompts()
    read_points(str(path), prompts, ndim=2)
    assert prompts.points[()] == [((20.0, 10.0), 1), ((40.0, 30.0), 0)]


def test_napari_points_csv_without_the_feature_is_all_positive(tmp_path: Path) -> None:
    path = _napari_points_csv(tmp_path / "p.csv", np.array([[3.0, 4.0]]))
    prompts = Prompts()
    read_points(str(path), prompts, ndim=2)
    assert prompts.points[()] == [((4.0, 3.0), 1)]


def test_napari_points_csv_of_a_stack_keeps_the_plane(tmp_path: Path) -> None:
    path = _napari_points_csv(tmp_path / "p.csv", np.array([[2.0, 10, 20], [0, 5, 6]]))
    prompts = Prompts()
    read_points(str(path), prompts, ndim=3)
    assert prompts.points[(2,)] == [((20.0, 10.0), 1)]
    assert prompts.points[(0,)] == [((6.0, 5.0), 1)]


def test_napari_shapes_csv_gives_the_rectangles_bounding_boxes(tmp_path: Path) -> None:
    rect = np.array([[5.0, 6], [5, 30], [25, 30], [25, 6]])
    path = _napari_shapes_csv(tmp_path / "s.csv", [rect, rect + 1])
    prompts = Prompts()
    read_boxes(str(path), prompts, ndim=2)
    assert prompts.boxes[()] == [(6.0, 5.0, 30.0, 25.0), (7.0, 6.0, 31.0, 26.0)]


def test_shapes_other_than_rectangles_are_refused(tmp_path: Path) -> None:
    from napari.layers import Shapes
    from napari_builtins.io import napari_write_shapes

    layer = Shapes([np.array([[1.0, 1], [10, 2], [5, 9]])], shape_type="polygon")
    data, meta, _ = layer.as_layer_data_tuple()
    napari_write_shapes(str(tmp_path / "s.csv"), data, meta)
    with pytest.raises(PromptError, match="only rectangles"):
        read_boxes(str(tmp_path / "s.csv"), Prompts(), ndim=2)


def test_grouping_follows_the_plugin() -> None:
    prompts = Prompts()
    read_boxes("0,0,20,20;10,10,15,15", prompts, 2)
    read_points("12,12;5,5,0;40,40;50,50", prompts, 2)
    objects = group_objects(prompts, ())
    # (12, 12) refines the smallest box holding it; (5, 5) the big one; the rest are one object.
    assert objects[0] == {"points": [[5.0, 5.0]], "labels": [0], "box": [0.0, 0.0, 20.0, 20.0]}
    assert objects[1] == {"points": [[12.0, 12.0]], "labels": [1], "box": [10.0, 10.0, 15.0, 15.0]}
    assert objects[2] == {"points": [[40.0, 40.0], [50.0, 50.0]], "labels": [1, 1], "box": None}


def test_background_points_alone_make_no_object() -> None:
    prompts = Prompts()
    read_points("5,5,0", prompts, 2)
    assert group_objects(prompts, ()) == []


def test_json_objects_and_flat_forms(tmp_path: Path) -> None:
    flat = tmp_path / "flat.json"
    flat.write_text(
        json.dumps({"points": [[1, 2], [3, 4]], "labels": [1, 0], "boxes": [[0, 0, 9, 9]]})
    )
    prompts = Prompts()
    read_points(str(flat), prompts, 2)
    assert prompts.points[()] == [((1.0, 2.0), 1), ((3.0, 4.0), 0)]
    assert prompts.boxes[()] == [(0.0, 0.0, 9.0, 9.0)]
    objects = tmp_path / "objects.json"
    objects.write_text(
        json.dumps({"plane": 1, "objects": [{"points": [[5, 6]]}, {"box": [1, 1, 4, 4]}]})
    )
    prompts = Prompts()
    read_points(str(objects), prompts, 3)
    assert group_objects(prompts, (1,)) == [
        {"points": [[5.0, 6.0]], "labels": [1], "box": None},
        {"points": [], "labels": [], "box": [1.0, 1.0, 4.0, 4.0]},
    ]


@pytest.mark.parametrize(
    "content",
    [
        "x,y\n1,2\n",  # not napari's layout
        "index,shape-type,axis-0\n0,rectangle,1\n",  # shapes without vertex-index
        "",  # empty
    ],
)
def test_unknown_csv_layouts_are_refused_with_the_expected_layout(tmp_path: Path, content) -> None:
    path = tmp_path / "p.csv"
    path.write_text(content)
    with pytest.raises(PromptError, match="unknown column layout|no rows"):
        read_points(str(path), Prompts(), ndim=2)


def test_unknown_json_layout_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"coords": [[1, 2]]}))
    with pytest.raises(PromptError, match="unknown JSON layout"):
        read_points(str(path), Prompts(), ndim=2)


def test_coordinates_of_another_dimensionality_are_refused(tmp_path: Path) -> None:
    path = _napari_points_csv(tmp_path / "p.csv", np.array([[2.0, 10, 20]]))
    with pytest.raises(PromptError, match="3 coordinates"):
        read_points(str(path), Prompts(), ndim=2)


@pytest.mark.parametrize(
    ("points", "boxes", "match"),
    [("70,10", None, "outside the image"), ("10,-3", None, "outside"), (None, "65,0,80,9", "box")],
)
def test_prompts_outside_the_image_are_refused(points, boxes, match) -> None:
    prompts = Prompts()
    if points:
        read_points(points, prompts, 2)
    if boxes:
        read_boxes(boxes, prompts, 2)
    with pytest.raises(PromptError, match=match):
        check_inside(prompts, (64, 64), (64, 64))


@pytest.mark.parametrize("text", ["1,2,3,4", "a,b", "1,2,5"])
def test_bad_inline_points_say_what_is_expected(text: str) -> None:
    with pytest.raises(PromptError, match="point"):
        read_points(text, Prompts(), 2)
