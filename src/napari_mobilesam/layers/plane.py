"""The 2D plane of an image layer that the viewer currently shows.

SAM works on one 2D image, so every prompt and mask refers to one plane of the layer's data:
the two axes the viewer displays, at the layer's current slice on every other axis. This module
names that plane (:class:`PlaneRef`), reads its pixels and maps a plane mask back to indices into
the layer's data. It needs no Qt and reads the viewer only through its ``Dims``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from napari.components import Dims
from napari.layers import Image, Layer


class PlaneError(ValueError):
    """The viewer's state does not define a 2D plane of the layer (3D view, slice out of range)."""


def dims_of(viewer_or_dims: Any) -> Dims:
    """Return the ``Dims`` of a viewer, or the argument itself when it already is one."""
    return viewer_or_dims.dims if hasattr(viewer_or_dims, "dims") else viewer_or_dims


def spatial_shape(layer: Layer) -> tuple[int, ...]:
    """Shape of the layer's full-resolution data without the colour axis of RGB images."""
    data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
    shape = tuple(int(s) for s in data.shape)
    return shape[:-1] if getattr(layer, "rgb", False) else shape


def full_resolution_data(layer: Layer) -> Any:
    """The array holding the layer's full-resolution pixels (``data[0]`` for multiscale)."""
    return layer.data[0] if getattr(layer, "multiscale", False) else layer.data


@dataclass(frozen=True)
class PlaneRef:
    """One 2D plane of a layer's data, without its pixels.

    Attributes:
        layer_id: the layer's ``unique_id``.
        slice_index: one entry per data axis of the layer (colour axis excluded): the integer
            index on axes that are not displayed, ``None`` on the two displayed axes.
        displayed: the data axes shown as (rows, columns) on screen. They may be in decreasing
            order when the viewer's axes are transposed.
        shape: (H, W) of the plane as shown on screen.
    """

    layer_id: str
    slice_index: tuple[int | None, ...]
    displayed: tuple[int, int]
    shape: tuple[int, int]

    @property
    def key(self) -> tuple[Any, ...]:
        """Hashable identity of the plane: (layer id, slice index tuple, displayed axes)."""
        return (self.layer_id, self.slice_index, self.displayed)

    @property
    def data_index(self) -> tuple[int | slice, ...]:
        """Index into the layer's (spatial) data that selects this plane."""
        return tuple(slice(None) if i is None else i for i in self.slice_index)

    def orient(self, plane_in_data_order: np.ndarray) -> np.ndarray:
        """Put a plane read with :attr:`data_index` in screen order (rows, cols[, colour])."""
        if self.displayed[0] > self.displayed[1]:
            return np.swapaxes(plane_in_data_order, 0, 1)
        return plane_in_data_order

    def mask_indices(self, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """Fancy indices into the layer's spatial data of the true pixels of a plane mask.

        Args:
            mask: (H, W) boolean mask in screen order (the order of :meth:`orient`).
        """
        if mask.shape != self.shape:
            raise ValueError(f"mask has shape {mask.shape}, the plane is {self.shape}")
        rows, cols = np.nonzero(mask)
        indices: list[np.ndarray] = []
        for axis, index in enumerate(self.slice_index):
            if axis == self.displayed[0]:
                indices.append(rows)
            elif axis == self.displayed[1]:
                indices.append(cols)
            else:
                indices.append(np.full(rows.shape, index, dtype=np.intp))
        return tuple(indices)


def current_plane(viewer_or_dims: Any, layer: Layer) -> PlaneRef:
    """The plane of ``layer`` that the viewer shows now.

    The slice comes from ``layer.world_to_data(dims.point)`` rounded on the axes that are not
    displayed, which is how napari slices a layer; ``dims.current_step`` counts world grid
    steps and differs from the layer's index whenever the layer is scaled or translated.

    Raises:
        PlaneError: in a 3D view, when a displayed axis is not an axis of the layer, or when
            the current slice lies outside the layer's data.
    """
    dims = dims_of(viewer_or_dims)
    if dims.ndisplay != 2:
        raise PlaneError("MobileSAM segments 2D planes: switch the viewer to the 2D view.")
    # Layers share the trailing world axes, so a layer's axis i is world axis i + offset.
    offset = dims.ndim - layer.ndim
    displayed = tuple(int(axis) - offset for axis in dims.displayed)
    if min(displayed) < 0:
        raise PlaneError(
            f"layer '{layer.name}' has no data on the displayed axes {tuple(dims.displayed)}."
        )
    shape = spatial_shape(layer)
    position = layer.world_to_data(dims.point)
    slice_index: list[int | None] = []
    for axis in range(layer.ndim):
        if axis in displayed:
            slice_index.append(None)
            continue
        index = int(np.round(position[axis]))
        if not 0 <= index < shape[axis]:
            raise PlaneError(
                f"the current slice is outside layer '{layer.name}' on axis {axis} "
                f"(index {index}, size {shape[axis]})."
            )
        slice_index.append(index)
    plane_shape = (shape[displayed[0]], shape[displayed[1]])
    return PlaneRef(str(layer.unique_id), tuple(slice_index), displayed, plane_shape)  # type: ignore[arg-type]


def read_plane(layer: Image, plane: PlaneRef) -> np.ndarray:
    """Read one plane of pixels, (H, W) or (H, W, C) for RGB, in screen order.

    Only this plane is loaded from lazy arrays (dask, zarr): the index is applied before the
    conversion to numpy.
    """
    data = full_resolution_data(layer)
    # The colour axis of RGB data is last and is always kept whole.
    index = plane.data_index + ((slice(None),) if layer.rgb else ())
    return plane.orient(np.asarray(data[index]))
