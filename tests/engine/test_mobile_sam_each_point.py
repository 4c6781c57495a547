"""``MobileSAM.predict(..., each_point=True)``: one object per point, decoded in batches."""

from __future__ import annotations

import numpy as np
import pytest
from many_objects_helpers import assert_same_as_single, blob_image


@pytest.fixture(scope="module")
def sam(synthetic_checkpoint):
    from napari_mobilesam import MobileSAM

    return MobileSAM(synthetic_checkpoint, device="cpu")


def test_each_point_objects_equal_single_calls(sam):
    image = blob_image(64, 90)
    points = [[20, 15], [70, 40], [45, 30], [5, 60]]
    res = sam.predict(image, points=points, labels=[1, 1, 0, 1], each_point=True)
    assert res.masks.shape == (3, 64, 90) and res.scores.shape == (3,)
    negative = np.array([[45.0, 30.0]])
    for i, point in enumerate([[20, 15], [70, 40], [5, 60]]):
        kwargs = {
            "point_coords": np.vstack([[point], negative]),
            "point_labels": np.array([1, 0]),
        }
        assert_same_as_single(sam.predictor, res.masks[i], res.scores[i], kwargs, False)


def test_each_point_bad_input(sam):
    image = blob_image(64, 90)
    with pytest.raises(ValueError, match="foreground"):
        sam.predict(image, points=[[3, 4]], labels=[0], each_point=True)
    with pytest.raises(ValueError, match="bboxes"):
        sam.predict(image, points=[[3, 4]], bboxes=[0, 0, 5, 5], each_point=True)
