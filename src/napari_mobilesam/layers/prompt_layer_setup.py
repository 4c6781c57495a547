"""Create prompt layers that line up with an image, and switch points between object/background."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd
from napari.layers import Layer, Points, Shapes

from napari_mobilesam.layers.labels_writer import placement_kwargs
from napari_mobilesam.layers.layer_prompts import POSITIVE_FEATURE
from napari_mobilesam.layers.plane import spatial_shape

POSITIVE_COLOUR = "lime"
NEGATIVE_COLOUR = "magenta"
BOX_COLOUR = "cyan"


def _marker_size(image: Layer) -> float:
    """A point size (in image pixels) that stays visible on small and large images alike."""
    height, width = spatial_shape(image)[-2:]
    return float(np.clip(min(height, width) / 25.0, 4.0, 30.0))


def make_points_layer(image: Layer, name: str = "MobileSAM points") -> Points:
    """An empty Points layer on the image's grid; new points are positive until toggled.

    Colours follow the boolean ``positive`` feature: lime marks the object, magenta background.
    """
    features = pd.DataFrame({POSITIVE_FEATURE: pd.Series([], dtype=bool)})
    points = Points(
        np.zeros((0, image.ndim)),
        ndim=image.ndim,
        name=name,
        features=features,
        feature_defaults={POSITIVE_FEATURE: True},
        face_color=POSITIVE_FEATURE,
        face_color_cycle={True: POSITIVE_COLOUR, False: NEGATIVE_COLOUR},
        border_color="white",
        size=_marker_size(image),
        **placement_kwargs(image),
    )
    return points


def make_shapes_layer(image: Layer, name: str = "MobileSAM boxes") -> Shapes:
    """An empty Shapes layer on the image's grid for rectangle (box) prompts."""
    return Shapes(
        ndim=image.ndim,
        name=name,
        face_color=[0.0, 0.0, 0.0, 0.0],
        edge_color=BOX_COLOUR,
        edge_width=max(1.0, _marker_size(image) / 4.0),
        **placement_kwargs(image),
    )


def new_points_positive(points: Points) -> bool:
    """Whether the next point added to ``points`` will be positive."""
    defaults = points.feature_defaults
    if POSITIVE_FEATURE not in defaults.columns:
        return True
    return bool(defaults[POSITIVE_FEATURE].iloc[0])


def set_new_points_positive(points: Points, positive: bool) -> None:
    """Make the next points added to ``points`` positive (object) or negative (background)."""
    # Only the feature default changes: setting ``current_face_color`` would also recolour the
    # selected points and switch the layer from feature-driven to direct colours.
    points.feature_defaults = {POSITIVE_FEATURE: bool(positive)}
    if points.face_color_mode == "cycle":
        # The layer controls' face-colour swatch shows ``current_face_color``, which napari
        # stops deriving from the defaults once the layer has points; set it so the swatch
        # shows the colour the next point gets, without touching the selected points.
        with points.block_update_properties():
            points.current_face_color = POSITIVE_COLOUR if positive else NEGATIVE_COLOUR


def flip_points(points: Points, indices: Iterable[int]) -> None:
    """Swap positive and negative on the given points (e.g. the selected ones)."""
    indices = sorted(int(i) for i in indices)
    if not indices:
        return
    features = points.features.copy()
    if POSITIVE_FEATURE not in features.columns:
        features[POSITIVE_FEATURE] = True
    column = features.columns.get_loc(POSITIVE_FEATURE)
    features.iloc[indices, column] = ~features.iloc[indices, column].astype(bool)
    points.features = features
    points.refresh_colors()
