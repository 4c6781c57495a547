"""The widget's many-objects tools: one object per point (checkbox and key), refine from a
Labels layer (one undo step, source untouched, source as target refused), find seeds."""

from __future__ import annotations

import numpy as np
import pytest
from napari.layers import Labels

pytestmark = pytest.mark.qt

SHAPE = (48, 72)
CENTRES = [(12, 14), (30, 40), (14, 58)]


def discs() -> np.ndarray:
    rows, cols = np.mgrid[: SHAPE[0], : SHAPE[1]]
    image = np.full(SHAPE, 20, np.uint8)
    for r, c in CENTRES:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= 36] = 220
    return image


@pytest.fixture
def dock(make_napari_viewer, golden_model, synthetic_checkpoint):
    from napari_mobilesam import SamPredictor

    viewer = make_napari_viewer()
    image = viewer.add_image(discs(), contrast_limits=(0, 255))
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    widget.use_predictor(SamPredictor(golden_model), synthetic_checkpoint, "cpu")
    widget.live = False
    widget.interactive.synchronous = True
    return viewer, image, widget


def test_one_object_per_point_previews_and_commits_in_one_undo_step(dock):
    viewer, image, widget = dock
    points, _ = widget.create_prompt_layers()
    points.add([[r, c] for r, c in CENTRES])
    assert len(widget.segment()) == 1  # the usual rule: all free points are one object
    assert widget.toggle_each_point() is True and widget.each_point
    objects = widget.segment()
    assert len(objects) == 3
    preview = widget.preview_layer.data
    assert set(np.unique(preview)) - {0} <= {1, 2, 3}
    ids = widget.commit()
    labels = widget.labels_layer
    assert 1 <= len(ids) <= 3 and set(np.unique(labels.data)) - {0} == set(ids)
    labels.undo()
    assert not labels.data.any()


def test_refine_from_labels_writes_one_undo_step_and_keeps_the_source(dock):
    viewer, image, widget = dock
    source_data = np.zeros(SHAPE, np.int32)
    source_data[6:19, 8:21] = 4
    source_data[24:37, 34:47] = 9
    source = viewer.add_layer(Labels(source_data.copy(), name="rough"))
    runner = widget.many
    runner.panel._source_combo.value = source
    widget.set_labels_layer(source)
    with pytest.raises(ValueError, match="never modified"):
        runner.refine()
    widget.set_labels_layer(None)
    ids = runner.refine()
    target = widget.labels_layer
    assert target is not source and set(ids) <= {4, 9}
    np.testing.assert_array_equal(source.data, source_data)
    target.undo()
    assert not target.data.any()


def test_find_seeds_fills_an_editable_points_layer_in_each_point_mode(dock):
    viewer, image, widget = dock
    widget.many.panel._diameter_spin.value = 12
    layer = widget.many.find_seeds()
    assert len(layer.data) == 3 and layer.features["positive"].all()
    assert widget.points_layer is layer and widget.each_point
    for r, c in CENTRES:
        assert np.min(np.hypot(layer.data[:, 0] - r, layer.data[:, 1] - c)) <= 1.5
    assert len(widget.segment()) == 3


def _rough_source(viewer):
    data = np.zeros(SHAPE, np.int32)
    data[6:19, 8:21] = 4
    return viewer.add_layer(Labels(data, name="rough"))


def test_refine_in_a_worker_writes_when_it_returns(dock, qtbot):
    viewer, image, widget = dock
    runner = widget.many
    runner.panel._source_combo.value = _rough_source(viewer)
    runner.start_refine()
    assert runner.worker is not None and not runner.panel._refine_button.enabled
    qtbot.waitUntil(lambda: runner.worker is None, timeout=120_000)
    assert runner.panel._refine_button.enabled
    assert "refine:" in widget._status_label.value
    assert widget.labels_layer is not None and set(np.unique(widget.labels_layer.data)) <= {0, 4}


def test_refine_cancelled_writes_nothing(dock, qtbot):
    viewer, image, widget = dock
    runner = widget.many
    runner.panel._source_combo.value = _rough_source(viewer)
    runner.start_refine()
    assert runner.stop()  # Cancel before the result arrives: whenever the worker stops
    qtbot.waitUntil(lambda: runner.worker is None, timeout=120_000)
    assert "cancelled" in widget._status_label.value
    assert widget.labels_layer is None or not widget.labels_layer.data.any()
