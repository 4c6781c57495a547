"""3D in the widget: propagation through a stack, stop markers, protection, undo, the worker
path with cancel, and background precompute that gives way to clicks."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from napari.layers import Labels

from fakes import ThresholdPredictor
from napari_mobilesam.widget.dock_widget import MobileSAMWidget

pytestmark = pytest.mark.qt

SHAPE = (30, 64, 64)


def ellipsoid(centre, radii):
    z, y, x = np.ogrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    grid = (z, y, x)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1


@pytest.fixture
def blobs():
    a = ellipsoid((10, 20, 20), (6.6, 9, 9))  # planes 4..16
    b = ellipsoid((20, 44, 44), (5.6, 8, 8))  # planes 15..25
    return a, b, ((a | b) * 255).astype(np.uint8)


@pytest.fixture
def dock(make_napari_viewer):
    def make(stack, predictor=None, scale=(4.0, 1.0, 1.0)):
        viewer = make_napari_viewer()
        image = viewer.add_image(stack, scale=scale, contrast_limits=(0, 255))
        _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
        predictor = predictor or ThresholdPredictor()
        widget.use_predictor(predictor, None, "cpu")
        widget.live = False
        widget.multimask = False
        points, shapes = widget.create_prompt_layers()
        return viewer, image, widget, points, shapes, predictor

    return make


def rect(z, r0, c0, r1, c1):
    return [[z, r0, c0], [z, r0, c1], [z, r1, c1], [z, r1, c0]]


def go_to_plane(viewer, image, z):
    viewer.dims.set_point(0, image.data_to_world((z, 0, 0))[0])


def labels_of(widget: MobileSAMWidget) -> Labels:
    assert widget.labels_layer is not None
    return widget.labels_layer


def test_propagation_follows_the_object_through_an_anisotropic_stack(dock, blobs):
    a, _, stack = blobs
    viewer, image, widget, points, _, _ = dock(stack)
    go_to_plane(viewer, image, 10)
    points.add([[10, 20, 20]])
    widget.segment()
    ids = widget.propagate()
    labels = labels_of(widget).data
    assert len(ids) == 1
    assert sorted(set(np.nonzero(labels == ids[0])[0])) == list(range(4, 17))
    assert np.array_equal(labels == ids[0], a)
    assert len(points.data) == 0  # the prompts that made the object are used up


def test_several_objects_one_undo_step_and_protection(dock, blobs):
    a, b, stack = blobs
    viewer, image, widget, points, _, _ = dock(stack)
    labels = Labels(np.zeros(SHAPE, np.uint16), scale=image.scale, name="existing")
    labels.data[12, 15:25, 15:25] = 7  # someone's earlier work inside object a
    viewer.add_layer(labels)
    widget.set_labels_layer(labels)
    before = labels.data.copy()
    go_to_plane(viewer, image, 15)
    points.add([[15, 20, 20], [15, 44, 44]])  # both points outside boxes: one object...
    widget.segment()
    assert len(widget.objects) == 1
    # ...so use two boxes, one object each.
    widget.reset()
    _, shapes = widget.points_layer, widget.shapes_layer
    shapes.add_rectangles([rect(15, 10, 10, 30, 30), rect(15, 35, 35, 53, 53)])
    widget.segment()
    assert len(widget.objects) == 2
    ids = widget.propagate()
    assert len(ids) == 2 and ids[0] == 8
    assert np.array_equal(labels.data == ids[0], a & (before != 7))
    assert np.array_equal(labels.data == ids[1], b)
    assert (labels.data[before == 7] == 7).all()
    labels.undo()
    assert np.array_equal(labels.data, before)


def test_stop_marker_and_plane_range(dock, blobs):
    a, _, stack = blobs
    viewer, image, widget, points, _, _ = dock(stack)
    go_to_plane(viewer, image, 10)
    points.add([[10, 20, 20]])
    widget.toggle_point_polarity()
    points.add([[13, 20, 20]])  # a lone negative point on plane 13: stop there
    widget.toggle_point_polarity()
    widget.stack.panel._range_spin.value = 4  # and at most 4 planes downwards
    widget.segment()
    ids = widget.propagate()
    planes = sorted(set(np.nonzero(labels_of(widget).data == ids[0])[0]))
    assert planes == list(range(6, 13))
    # The status line says how far each way went and why it stopped, until the next action.
    status = widget._status_label.value
    assert "object 1: planes 6-12 (2 up, 4 down)" in status
    assert "up: stop marker on plane 13" in status
    assert "down: end of plane range" in status


class GatedThreshold(ThresholdPredictor):
    """Waits in ``predict`` once ``armed``, until the test opens the gate: a run can be
    cancelled at a known step, whatever the machine's load."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.waiting = threading.Event()
        self.gate = threading.Event()

    def predict(self, *args, **kwargs):
        if self.armed:
            self.waiting.set()
            assert self.gate.wait(30), "the test never opened the gate"
        return super().predict(*args, **kwargs)


def test_propagation_worker_and_cancel(dock, blobs, qtbot):
    a, _, stack = blobs
    gated = GatedThreshold()
    viewer, image, widget, points, _, _ = dock(stack, gated)
    go_to_plane(viewer, image, 10)
    points.add([[10, 20, 20]])
    widget.segment()
    gated.armed = True  # the walk's first decode waits
    widget.stack.start_propagation()
    worker = widget.stack.worker
    assert worker is not None
    qtbot.waitUntil(gated.waiting.is_set, timeout=10000)
    with qtbot.waitSignal(worker.finished, timeout=10000):
        widget.cancel()  # while the worker is inside a step
        gated.armed = False
        gated.gate.set()
    assert widget.labels_layer is None or not widget.labels_layer.data.any()
    assert "cancelled" in widget._status_label.value
    # Run again and let it finish: Shift+P goes through the same worker path.
    widget.segment()
    widget.stack.start_propagation()
    with qtbot.waitSignal(widget.stack.worker.finished, timeout=10000):
        pass
    assert np.array_equal(labels_of(widget).data > 0, a)


def test_precompute_gives_way_to_clicks_and_resumes(dock, blobs, qtbot):
    _, _, stack = blobs
    slow = ThresholdPredictor(delay_s=0.02)
    viewer, image, widget, points, _, _ = dock(stack[:12], slow)
    go_to_plane(viewer, image, 5)
    widget.stack.start_precompute()
    qtbot.waitUntil(lambda: slow.encoded >= 2, timeout=5000)
    widget.live = True
    points.add([[5, 20, 20]])  # a click: precompute stops, the click runs, precompute resumes
    qtbot.waitUntil(lambda: bool(widget.objects), timeout=5000)
    qtbot.waitUntil(lambda: widget.stack.worker is None and slow.encoded >= 12, timeout=10000)
    assert slow.encoded == 12  # every plane encoded exactly once
    assert len(widget.cache) == 12


def test_propagate_without_an_object_says_what_to_do(dock, blobs):
    _, _, stack = blobs
    viewer, image, widget, points, _, _ = dock(stack)
    with pytest.raises(ValueError, match="Segment the object on this plane first"):
        widget.propagate()
    widget.stack.start_propagation()  # from the UI: a message, no exception, no worker
    assert widget.stack.worker is None
    assert "Segment the object" in widget._status_label.value


def test_axis_choices_follow_the_image(dock):
    stack4d = np.zeros((3, 5, 16, 16), np.uint8)
    viewer, image, widget, *_ = dock(stack4d, scale=(1, 1, 1, 1))
    choices = widget.stack.panel._axis_combo.choices
    assert None in choices and 0 in choices and 1 in choices


def counting(function, calls: list[int]):
    def wrapper(*args, **kwargs):
        calls.append(1)
        return function(*args, **kwargs)

    return wrapper


@pytest.mark.golden
def test_disk_cache_makes_reopening_instant(
    make_napari_viewer, golden_model, monkeypatch, tmp_path
):
    """With "keep embeddings on disk", a new session loads the plane instead of encoding it."""
    from napari_mobilesam import SamPredictor

    monkeypatch.setenv("NAPARI_MOBILESAM_CACHE", str(tmp_path))
    data = np.random.default_rng(7).integers(0, 255, (40, 50), dtype=np.uint8)
    results = []
    for _session in range(2):
        viewer = make_napari_viewer()
        viewer.add_image(data, contrast_limits=(0, 255))
        _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
        predictor = SamPredictor(golden_model)
        encodes: list[int] = []
        predictor.set_image = counting(predictor.set_image, encodes)
        widget.use_predictor(predictor, None, "cpu")
        widget.live = False
        widget.stack.panel._disk_check.value = True
        points, _ = widget.create_prompt_layers()
        points.add([[20, 25]])
        objects = widget.segment()
        results.append((len(encodes), objects[0].masks.copy()))
    assert results[0][0] == 1 and results[1][0] == 0  # encoded once, then read from disk
    assert np.array_equal(results[0][1], results[1][1])
    assert len(list((tmp_path / "embeddings").rglob("*.npy"))) == 1


class FailsAfterFirstEncode(ThresholdPredictor):
    """Encodes the start plane, then fails as a GPU out of memory does."""

    def set_image(self, image):
        if self.encoded >= 1:
            raise RuntimeError("CUDA error: out of memory")
        super().set_image(image)


def test_propagation_falls_back_to_cpu_after_a_gpu_failure(dock, blobs, monkeypatch):
    import torch

    import napari_mobilesam.engine.predictor
    import napari_mobilesam.engine.weights
    import napari_mobilesam.model.build
    from napari_mobilesam.widget.worker_steps import DeviceFallbackWarning

    a, _, stack = blobs
    cpu = ThresholdPredictor()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        napari_mobilesam.model.build, "build_mobile_sam", lambda path, device: device
    )
    monkeypatch.setattr(napari_mobilesam.engine.predictor, "SamPredictor", lambda model: cpu)
    monkeypatch.setattr(napari_mobilesam.engine.weights, "resolve_weights", lambda p, **k: p)
    viewer, image, widget, points, _, gpu = dock(stack, FailsAfterFirstEncode())
    widget.use_predictor(gpu, None, "cuda")
    go_to_plane(viewer, image, 10)
    points.add([[10, 20, 20]])
    widget.segment()
    with pytest.warns(DeviceFallbackWarning, match="failed on cuda .*using the CPU"):
        ids = widget.propagate()
    assert widget.loader.device == "cpu" and cpu.encoded > 0
    assert np.array_equal(labels_of(widget).data == ids[0], a)
