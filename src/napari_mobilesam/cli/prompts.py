"""Prompt files for ``segment``: napari's CSV exports, JSON, or inline text.

Coordinates are the image's pixels. napari's CSVs hold data coordinates in napari's axis order
(``axis-0`` = row, ``axis-1`` = column; with a stack, ``axis-0`` is the plane), which is what a
Points or Shapes layer on the image's grid saves; SAM's prompts are (x, y) = (column, row).

Grouping is the plugin's (see ``layers/layer_prompts.py``): each rectangle is one object; points
inside a rectangle refine that object (the smallest rectangle holding the point); all other
points of a plane form one more object together. Positive and negative points are told apart by
napari's boolean ``positive`` feature column (absent: all positive).
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

POSITIVE_COLUMN = "positive"


class PromptError(Exception):
    """A prompt file or text that cannot be used; the message says what is wrong."""


@dataclass
class Prompts:
    """Points and boxes per plane (``()`` for a 2D image), in (x, y) pixels.

    Attributes:
      points: plane -> list of ((x, y), label) with label 1 (object) or 0 (background).
      boxes: plane -> list of (x0, y0, x1, y1).
      objects: plane -> explicit objects from JSON (each {"points", "labels", "box"}).
    """

    points: dict[tuple[int, ...], list[tuple[tuple[float, float], int]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    boxes: dict[tuple[int, ...], list[tuple[float, float, float, float]]] = field(
        default_factory=lambda: defaultdict(list)
    )
    objects: dict[tuple[int, ...], list[dict]] = field(default_factory=lambda: defaultdict(list))

    def planes(self) -> list[tuple[int, ...]]:
        return sorted(set(self.points) | set(self.boxes) | set(self.objects))


POINTS_COLUMNS = ("index", "axis-0, axis-1, ...", POSITIVE_COLUMN)
SHAPES_COLUMNS = ("index", "shape-type", "vertex-index", "axis-0, axis-1, ...")
JSON_OBJECT_KEYS = {"points", "labels", "box"}


def _numbers(text: str, count: int, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise PromptError(f"{what} {text!r}: expected {count} numbers separated by commas") from exc
    if len(values) != count:
        raise PromptError(f"{what} {text!r}: expected {count} numbers, got {len(values)}")
    if not all(math.isfinite(v) for v in values):
        raise PromptError(f"{what} {text!r}: expected {count} finite numbers (no nan or inf)")
    return values


def _is_file(text: str) -> bool:
    return Path(text).suffix.lower() in (".csv", ".json") or Path(text).is_file()


def read_points(text: str, prompts: Prompts, ndim: int) -> None:
    """Add the points of ``--points`` (a file or ``"x,y;x,y"``, ``x,y,0`` for background)."""
    if _is_file(text):
        _read_file(Path(text), prompts, ndim)
        return
    for item in filter(None, (p.strip() for p in text.split(";"))):
        parts = item.split(",")
        if len(parts) == 3:
            x, y, label = _numbers(item, 3, "point")
            if label not in (0, 1):
                raise PromptError(f"point {item!r}: the label (third number) must be 1 or 0")
        else:
            (x, y), label = _numbers(item, 2, "point"), 1
        prompts.points[()].append(((x, y), int(label)))


def read_boxes(text: str, prompts: Prompts, ndim: int) -> None:
    """Add the boxes of ``--boxes`` (a file or ``"x0,y0,x1,y1;..."``)."""
    if _is_file(text):
        _read_file(Path(text), prompts, ndim)
        return
    for item in filter(None, (b.strip() for b in text.split(";"))):
        x0, y0, x1, y1 = _numbers(item, 4, "box")
        prompts.boxes[()].append((min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))


def _read_file(path: Path, prompts: Prompts, ndim: int) -> None:
    """Read a napari Points or Shapes CSV (told apart by their columns) or a JSON file."""
    if not path.is_file():
        raise PromptError(f"prompt file not found: {path}")
    try:
        if path.suffix.lower() == ".json":
            _read_json(path, prompts, ndim)
            return
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
            columns = list(rows[0].keys()) if rows else []
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as exc:
        raise PromptError(f"cannot read the prompt file {path}: {exc}") from exc
    if not rows:
        raise PromptError(f"the prompt file {path} has no rows")
    axes = sorted(
        (c for c in columns if c.startswith("axis-") and c[5:].isdigit()), key=lambda c: int(c[5:])
    )
    if "shape-type" in columns and "vertex-index" in columns:
        _refuse_unknown_columns(path, columns, {"index", "shape-type", "vertex-index"}, axes)
        _read_shapes_rows(path, rows, axes, prompts, ndim)
    elif axes and "shape-type" not in columns:
        _refuse_unknown_columns(path, columns, {"index", POSITIVE_COLUMN}, axes)
        _read_points_rows(path, rows, axes, prompts, ndim)
    else:
        raise PromptError(
            f"{path}: unknown column layout {columns}. Expected napari's Points CSV "
            "(index, axis-0, axis-1[, positive]) or Shapes CSV (index, shape-type, "
            "vertex-index, axis-0, axis-1), as napari's File > Save Selected Layers writes them"
        )


def _refuse_unknown_columns(path: Path, columns: list, known: set[str], axes: list[str]) -> None:
    """A column this reader does not use may carry meaning it would drop (someone's own
    'label' column for background points): refuse it, naming the columns that are read."""
    unknown = [str(c) for c in columns if c not in known and c not in axes]
    if unknown:
        kind = "Shapes" if "shape-type" in known else "Points"
        read = SHAPES_COLUMNS if kind == "Shapes" else POINTS_COLUMNS
        raise PromptError(
            f"{path}: unknown column(s) {', '.join(unknown)}; a napari {kind} CSV is read from "
            f"the columns {', '.join(read)} only (background points: the {POSITIVE_COLUMN} "
            "column, True/False). Remove the other columns or convert the file"
        )


def _split_coords(path: Path, row: dict, axes: list[str], ndim: int) -> tuple[tuple, float, float]:
    """(plane index, x, y) of one CSV row whose axes are (plane axes..., row, column)."""
    if len(axes) != ndim:
        raise PromptError(
            f"{path}: the prompts have {len(axes)} coordinates ({', '.join(axes)}) but the "
            f"image has {ndim} axes; save the layer from a napari view of this image"
        )
    try:
        values = [float(row[a]) for a in axes]
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{path}: row {row} has a coordinate that is not a number") from exc
    if not all(math.isfinite(v) for v in values):
        raise PromptError(f"{path}: row {row} has a coordinate that is not finite (nan or inf)")
    plane = tuple(int(round(v)) for v in values[:-2])
    return plane, values[-1], values[-2]


def _positive(path: Path, value: str | None) -> int:
    if value is None or value == "":
        return 1
    text = value.strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return 1
    if text in ("false", "0", "0.0", "no"):
        return 0
    raise PromptError(f"{path}: the {POSITIVE_COLUMN} column holds {value!r}, not True/False")


def _read_points_rows(
    path: Path, rows: list[dict], axes: list[str], prompts: Prompts, ndim: int
) -> None:
    for row in rows:
        plane, x, y = _split_coords(path, row, axes, ndim)
        prompts.points[plane].append(((x, y), _positive(path, row.get(POSITIVE_COLUMN))))


def _read_shapes_rows(
    path: Path, rows: list[dict], axes: list[str], prompts: Prompts, ndim: int
) -> None:
    shapes: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        shapes[row["index"]].append(row)
    for index, vertices in shapes.items():
        kind = vertices[0]["shape-type"]
        if kind != "rectangle":
            raise PromptError(f"{path}: shape {index} is a {kind}; only rectangles are box prompts")
        coords = [_split_coords(path, v, axes, ndim) for v in vertices]
        plane = coords[0][0]
        xs, ys = [c[1] for c in coords], [c[2] for c in coords]
        prompts.boxes[plane].append((min(xs), min(ys), max(xs), max(ys)))


def _read_json(path: Path, prompts: Prompts, ndim: int) -> None:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    known = {"points", "labels", "boxes", "objects", "plane"}
    if not isinstance(data, dict) or not data.keys() <= known or not data.keys() & known:
        keys = list(data) if isinstance(data, dict) else type(data).__name__
        raise PromptError(
            f"{path}: unknown JSON layout ({keys}). Expected {{'points': [[x, y], ...], "
            "'labels': [1, 0, ...], 'boxes': [[x0, y0, x1, y1], ...]}, or {'objects': "
            "[{'points': ..., 'labels': ..., 'box': ...}, ...]}, with an optional 'plane'"
        )
    plane = _json_plane(path, data.get("plane", []), ndim)
    try:
        points = np.asarray(data.get("points", []), dtype=float).reshape(-1, 2)
        labels = np.asarray(data.get("labels", [1] * len(points)), dtype=int).reshape(-1)
        boxes = np.asarray(data.get("boxes", []), dtype=float).reshape(-1, 4)
        objects = []
        items = data.get("objects", [])
        if not isinstance(items, list):
            raise ValueError("'objects' must be a list of objects")
        for obj in items:
            if not isinstance(obj, dict) or not obj.keys() <= JSON_OBJECT_KEYS:
                raise ValueError(
                    f"each entry of 'objects' must be an object with the keys "
                    f"{sorted(JSON_OBJECT_KEYS)}, got {json.dumps(obj)[:80]}"
                )
            pts = np.asarray(obj.get("points", []), dtype=float).reshape(-1, 2)
            labs = np.asarray(obj.get("labels", [1] * len(pts)), dtype=int).reshape(-1)
            box = obj.get("box")
            box = None if box is None else np.asarray(box, dtype=float).reshape(4)
            if len(labs) != len(pts) or (not len(pts) and box is None):
                raise ValueError("each object needs points with one label each, or a box")
            objects.append({"points": pts.tolist(), "labels": labs.tolist(), "box": box})
    except (TypeError, ValueError) as exc:
        raise PromptError(f"{path}: {exc}") from exc
    if len(labels) != len(points) or not np.isin(labels, (0, 1)).all():
        raise PromptError(f"{path}: 'labels' needs one 1 or 0 per point")
    coords = [points, boxes] + [np.asarray(o["points"], float) for o in objects]
    coords += [o["box"] for o in objects if o["box"] is not None]
    if not all(np.isfinite(c).all() for c in coords):
        raise PromptError(f"{path}: a coordinate is not finite (nan or inf)")
    for (x, y), label in zip(points.tolist(), labels.tolist(), strict=True):
        prompts.points[plane].append(((x, y), label))
    for box in boxes.tolist():
        prompts.boxes[plane].append(tuple(box))
    for obj in objects:
        if obj["box"] is not None:
            obj["box"] = obj["box"].tolist()
        prompts.objects[plane].append(obj)


def _json_plane(path: Path, value: object, ndim: int) -> tuple[int, ...]:
    """The 'plane' of a JSON prompt file: whole numbers, one per leading axis of the image."""
    values = value if isinstance(value, list) else [value]
    ok = all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v == int(v)
        for v in values
    )
    if not ok or len(values) != ndim - 2:
        raise PromptError(
            f"{path}: 'plane' must be {ndim - 2} whole number(s) for this image "
            f"(the index of the plane in the stack), got {json.dumps(value)[:40]}"
        )
    return tuple(int(v) for v in values)


def check_inside(prompts: Prompts, shape: tuple[int, ...], plane_shape: tuple[int, int]) -> None:
    """Refuse prompts outside the image (a point off the plane, a box not touching it)."""
    height, width = plane_shape
    leading = shape[: len(shape) - 2] if len(shape) > 2 else ()
    for plane in prompts.planes():
        if any(not 0 <= i < n for i, n in zip(plane, leading, strict=False)):
            raise PromptError(f"prompts on plane {plane} but the stack has {leading} planes")
        points = [xy for xy, _ in prompts.points.get(plane, [])]
        for obj in prompts.objects.get(plane, []):
            points += [tuple(p) for p in obj["points"]]
        for x, y in points:
            if not (-0.5 <= x <= width - 0.5 and -0.5 <= y <= height - 0.5):
                raise PromptError(
                    f"point (x={x:g}, y={y:g}) is outside the image ({width} x {height} pixels; "
                    "x is the column, y the row)"
                )
        boxes = list(prompts.boxes.get(plane, []))
        boxes += [o["box"] for o in prompts.objects.get(plane, []) if o["box"] is not None]
        for x0, y0, x1, y1 in boxes:
            if x1 < 0 or y1 < 0 or x0 > width - 1 or y0 > height - 1:
                raise PromptError(
                    f"box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the image "
                    f"({width} x {height} pixels)"
                )


def group_objects(prompts: Prompts, plane: tuple[int, ...]) -> list[dict]:
    """The objects of one plane, by the plugin's grouping rule (module docstring)."""
    boxes = [list(b) for b in prompts.boxes.get(plane, [])]
    inside: list[list[tuple[tuple[float, float], int]]] = [[] for _ in boxes]
    loose: list[tuple[tuple[float, float], int]] = []
    for (x, y), label in prompts.points.get(plane, []):
        holders = [i for i, (x0, y0, x1, y1) in enumerate(boxes) if x0 <= x <= x1 and y0 <= y <= y1]
        if holders:
            area = [(boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1]) for i in holders]
            inside[holders[int(np.argmin(area))]].append(((x, y), label))
        else:
            loose.append(((x, y), label))
    objects = []
    for box, points in zip(boxes, inside, strict=True):
        objects.append(
            {
                "points": [list(p) for p, _ in points],
                "labels": [lab for _, lab in points],
                "box": box,
            }
        )
    if any(label == 1 for _, label in loose):
        objects.append(
            {
                "points": [list(p) for p, _ in loose],
                "labels": [lab for _, lab in loose],
                "box": None,
            }
        )
    objects += prompts.objects.get(plane, [])
    return objects
