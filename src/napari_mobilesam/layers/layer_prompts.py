"""Read SAM prompts for the current plane from a Points layer and a Shapes layer.

Prompt layers may have their own scale, translate, rotation, shear or affine, and fewer or more
axes than the image. Every vertex therefore goes data -> world (prompt layer) -> data (image);
only then are positions in the image's pixels, which is what SAM expects.

Grouping rule, one group = one object:

* each rectangle of the Shapes layer is one object (its axis-aligned bounding box is the box
  prompt; rotated rectangles use the box around them);
* points inside a rectangle refine that object (the smallest rectangle containing the point);
* all points outside every rectangle form one more object together.

Positive and negative points are told apart by the boolean ``positive`` feature of the Points
layer (points without that column are positive). A group of negative points only, outside every
rectangle, describes no object and is skipped (and counted).

Prompts must touch the image: points outside the plane's pixels are skipped (and counted),
rectangles are clipped to the plane, and rectangles wholly outside it are skipped (and counted).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from napari.layers import Layer, Points, Shapes

from napari_mobilesam.layers.plane import PlaneRef, dims_of

POSITIVE_FEATURE = "positive"


@dataclass(frozen=True, eq=False)
class PromptGroup:
    """The prompts of one object, in SAM's convention (x = column, y = row, plane pixels).

    Attributes:
        point_coords: (N, 2) float XY coordinates (N may be 0).
        point_labels: (N,) int, 1 for positive and 0 for negative points.
        box: (4,) float XYXY box, or ``None``.
        point_indices: indices of the points in the Points layer, in layer order.
        shape_index: index of the rectangle in the Shapes layer, or ``None``.
    """

    point_coords: np.ndarray
    point_labels: np.ndarray
    box: np.ndarray | None = None
    point_indices: tuple[int, ...] = ()
    shape_index: int | None = None

    def predict_kwargs(self) -> dict[str, np.ndarray | None]:
        """Keyword arguments for ``SamPredictor.predict`` describing this group."""
        has_points = len(self.point_coords) > 0
        return {
            "point_coords": self.point_coords if has_points else None,
            "point_labels": self.point_labels if has_points else None,
            "box": self.box,
        }

    def same_prompts(self, other: PromptGroup) -> bool:
        """Whether both groups hold exactly the same box and points."""
        return _same_box(self.box, other.box) and _same_points(self, other, len(self.point_coords))

    def extends(self, earlier: PromptGroup) -> bool:
        """Whether this group is ``earlier`` plus points added after it (same box, same start).

        That is when the earlier mask is a meaningful starting point for this prediction.
        """
        n = len(earlier.point_coords)
        return (
            len(self.point_coords) > n
            and _same_box(self.box, earlier.box)
            and _same_points(self, earlier, n)
        )


def _same_box(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return bool(np.allclose(a, b))


def _same_points(a: PromptGroup, b: PromptGroup, n: int) -> bool:
    if len(a.point_coords) < n or len(b.point_coords) != n:
        return False
    return bool(
        np.allclose(a.point_coords[:n], b.point_coords)
        and np.array_equal(a.point_labels[:n], b.point_labels)
    )


@dataclass(frozen=True, eq=False)
class PlanePrompts:
    """All prompt groups found on one plane, plus what was left out and why.

    Attributes:
        groups: one entry per object (rectangles in layer order, then the free points).
        skipped_shapes: shapes on this plane that are not rectangles (or have no area).
        skipped_negative_points: negative points outside every rectangle with no positive point
            beside them, which describe no object.
        point_indices: every point of the Points layer that lies on this plane.
        shape_indices: every shape of the Shapes layer that lies on this plane.
        skipped_outside_points: points on this plane's slice but outside its pixels.
        skipped_outside_shapes: rectangles on this plane's slice but wholly outside its pixels.
    """

    groups: tuple[PromptGroup, ...] = ()
    skipped_shapes: int = 0
    skipped_negative_points: int = 0
    point_indices: tuple[int, ...] = field(default=())
    shape_indices: tuple[int, ...] = field(default=())
    skipped_outside_points: int = 0
    skipped_outside_shapes: int = 0


def rowcol_to_xy(rowcol: np.ndarray) -> np.ndarray:
    """Convert (N, 2) napari (row, col) positions to SAM's (x, y) = (col, row).

    This is the one place where the axis order changes.
    """
    rowcol = np.asarray(rowcol, dtype=np.float64).reshape(-1, 2)
    return rowcol[:, ::-1].copy()


def prompt_to_image_data(
    positions: np.ndarray, prompt_layer: Layer, image_layer: Layer, viewer_or_dims: Any
) -> np.ndarray:
    """Map (N, prompt ndim) data positions of ``prompt_layer`` to (N, image ndim) image data.

    World positions that are shorter than the viewer's are padded at the front with the viewer's
    current point, so a 2D prompt layer over a 3D image lands on the current slice.
    """
    dims = dims_of(viewer_or_dims)
    point = np.asarray(dims.point, dtype=np.float64)
    out = np.empty((len(positions), image_layer.ndim), dtype=np.float64)
    for i, position in enumerate(np.asarray(positions, dtype=np.float64)):
        world = np.asarray(prompt_layer.data_to_world(position), dtype=np.float64)
        full = point.copy()
        full[len(full) - len(world) :] = world
        out[i] = image_layer.world_to_data(full)
    return out


def _on_layer_slice(
    positions: np.ndarray, prompt_layer: Layer, image_layer: Layer, viewer_or_dims: Any
) -> np.ndarray:
    """Per position: whether it lies on the current slice of world axes the image lacks.

    A 4D prompt layer over a 3D image must still be on the viewer's current step of the extra
    axis; this checks it in the prompt layer's own data coordinates, as napari slices it.
    """
    dims = dims_of(viewer_or_dims)
    keep = np.ones(len(positions), dtype=bool)
    extra = prompt_layer.ndim - image_layer.ndim
    if extra <= 0:
        return keep
    current = np.round(prompt_layer.world_to_data(dims.point))
    for axis in range(extra):
        keep &= np.round(positions[:, axis]) == current[axis]
    return keep


def _on_plane(image_positions: np.ndarray, plane: PlaneRef) -> np.ndarray:
    """Per position: whether its non-displayed image coordinates round to the plane's slice."""
    keep = np.ones(len(image_positions), dtype=bool)
    for axis, index in enumerate(plane.slice_index):
        if index is not None:
            keep &= np.round(image_positions[:, axis]) == index
    return keep


def _plane_rowcol(image_positions: np.ndarray, plane: PlaneRef) -> np.ndarray:
    """(N, 2) positions on the plane as (row, col) in screen order."""
    return image_positions[:, list(plane.displayed)]


def _plane_extent(plane: PlaneRef) -> np.ndarray:
    """(x_max, y_max) of the plane's pixels: pixel i covers i - 0.5 .. i + 0.5 (napari)."""
    height, width = plane.shape
    return np.array([width - 0.5, height - 0.5])


def _inside_plane(xy: np.ndarray, plane: PlaneRef) -> np.ndarray:
    """Per (x, y): whether it lies on one of the plane's pixels."""
    return np.all((xy >= -0.5) & (xy <= _plane_extent(plane)), axis=1)


def _positive_flags(points: Points) -> np.ndarray:
    if POSITIVE_FEATURE in points.features.columns:
        return np.asarray(points.features[POSITIVE_FEATURE], dtype=bool)
    return np.ones(len(points.data), dtype=bool)


def _read_points(
    points: Points | None, image: Layer, plane: PlaneRef, viewer_or_dims: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Points on the plane's slice: (indices, XY coordinates, labels, inside the pixels)."""
    if points is None or len(points.data) == 0:
        none = np.zeros(0, dtype=int)
        return none, np.zeros((0, 2)), none, np.zeros(0, dtype=bool)
    data = np.asarray(points.data, dtype=np.float64)
    image_positions = prompt_to_image_data(data, points, image, viewer_or_dims)
    keep = _on_plane(image_positions, plane) & _on_layer_slice(data, points, image, viewer_or_dims)
    indices = np.flatnonzero(keep)
    xy = rowcol_to_xy(_plane_rowcol(image_positions[keep], plane))
    labels = _positive_flags(points)[keep].astype(np.int64)
    return indices, xy, labels, _inside_plane(xy, plane)


def _read_rectangles(
    shapes: Shapes | None, image: Layer, plane: PlaneRef, viewer_or_dims: Any
) -> tuple[list[tuple[int, np.ndarray]], list[int], int, int]:
    """Rectangles on the plane as (shape index, XYXY box clipped to the plane); all shape
    indices on it; skipped (not rectangles, no area); skipped (wholly outside the plane)."""
    boxes: list[tuple[int, np.ndarray]] = []
    on_plane: list[int] = []
    skipped = outside = 0
    if shapes is None:
        return boxes, on_plane, skipped, outside
    for index, shape_type in enumerate(shapes.shape_type):
        vertices = np.asarray(shapes.data[index], dtype=np.float64)
        image_positions = prompt_to_image_data(vertices, shapes, image, viewer_or_dims)
        # A shape drawn in a 2D view has all vertices on one slice; it belongs to the plane
        # only if all of them do.
        inside = _on_plane(image_positions, plane) & _on_layer_slice(
            vertices, shapes, image, viewer_or_dims
        )
        if not inside.all():
            continue
        on_plane.append(index)
        xy = rowcol_to_xy(_plane_rowcol(image_positions, plane))
        # The corner order is not fixed and rotation is allowed: use the enclosing box.
        box = np.concatenate([xy.min(axis=0), xy.max(axis=0)])
        if shape_type != "rectangle" or box[2] <= box[0] or box[3] <= box[1]:
            skipped += 1
            continue
        # Clipped, so a rectangle dragged past the edge means the part on the image.
        low, high = np.full(2, -0.5), _plane_extent(plane)
        box = np.concatenate([np.maximum(box[:2], low), np.minimum(box[2:], high)])
        if box[2] <= box[0] or box[3] <= box[1]:
            outside += 1
            continue
        boxes.append((index, box))
    return boxes, on_plane, skipped, outside


def _containing_box(xy: np.ndarray, boxes: Sequence[tuple[int, np.ndarray]]) -> int | None:
    """Position in ``boxes`` of the smallest box containing the point, or ``None``."""
    best: int | None = None
    best_area = np.inf
    for position, (_, box) in enumerate(boxes):
        if box[0] <= xy[0] <= box[2] and box[1] <= xy[1] <= box[3]:
            area = (box[2] - box[0]) * (box[3] - box[1])
            if area < best_area:
                best, best_area = position, area
    return best


def read_plane_prompts(
    viewer_or_dims: Any,
    image_layer: Layer,
    plane: PlaneRef,
    points_layer: Points | None = None,
    shapes_layer: Shapes | None = None,
) -> PlanePrompts:
    """Collect the prompt groups that lie on ``plane`` of ``image_layer``.

    Args:
        viewer_or_dims: the viewer (or its ``Dims``) that defines the current point.
        image_layer: the layer being segmented; prompts are returned in its plane's pixels.
        plane: the plane, from :func:`napari_mobilesam.layers.plane.current_plane`.
        points_layer: point prompts (``features['positive']`` tells positive from negative).
        shapes_layer: box prompts (rectangles; other shapes are skipped and counted).
    """
    point_idx, point_xy, point_labels, inside = _read_points(
        points_layer, image_layer, plane, viewer_or_dims
    )
    boxes, shape_indices, skipped_shapes, outside_shapes = _read_rectangles(
        shapes_layer, image_layer, plane, viewer_or_dims
    )

    members: list[list[int]] = [[] for _ in boxes]
    free: list[int] = []
    for k in np.flatnonzero(inside):
        owner = _containing_box(point_xy[k], boxes)
        (free if owner is None else members[owner]).append(k)

    groups = [
        PromptGroup(
            point_coords=point_xy[ks].reshape(-1, 2),
            point_labels=point_labels[ks],
            box=box,
            point_indices=tuple(int(point_idx[k]) for k in ks),
            shape_index=shape_index,
        )
        for (shape_index, box), ks in zip(boxes, members, strict=True)
    ]
    skipped_negative = 0
    if free and point_labels[free].any():
        groups.append(
            PromptGroup(
                point_coords=point_xy[free].reshape(-1, 2),
                point_labels=point_labels[free],
                point_indices=tuple(int(point_idx[k]) for k in free),
            )
        )
    else:
        skipped_negative = len(free)
    return PlanePrompts(
        groups=tuple(groups),
        skipped_shapes=skipped_shapes,
        skipped_negative_points=skipped_negative,
        point_indices=tuple(int(i) for i in point_idx),
        shape_indices=tuple(shape_indices),
        skipped_outside_points=int(np.count_nonzero(~inside)),
        skipped_outside_shapes=outside_shapes,
    )
