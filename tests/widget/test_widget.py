"""The MobileSAM dock widget in a real viewer (Qt; pytest-xvfb provides the display).

Masks are compared with ``SamPredictor`` run directly on the same plane with the synthetic
checkpoint: random weights give textured masks, so "looks right" cannot be tested, "is exactly
what the model says for these prompts" can.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from napari.layers import Labels, Points, Shapes
from napari.utils.key_bindings import coerce_keybinding
from qtpy.QtCore import QTimer

from fakes import FakePredictor
from napari_mobilesam.engine.image_conversion import to_uint8_rgb
from napari_mobilesam.layers.labels_writer import create_aligned_labels
from napari_mobilesam.layers.prompt_layer_setup import new_points_positive
from napari_mobilesam.widget.dock_widget import (
    KEY_COMMIT,
    KEY_NEXT_CANDIDATE,
    KEY_RESET,
    KEY_TOGGLE_POLARITY,
    MobileSAMWidget,
)

pytestmark = pytest.mark.qt

WORKER_TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def shared_predictor(golden_model):
    from napari_mobilesam import SamPredictor

    return SamPredictor(golden_model)


@pytest.fixture(scope="module")
def reference(golden_model) -> Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``reference(plane_uint8_rgb, **prompt)``: SamPredictor's answer, one encode per plane."""
    from napari_mobilesam import SamPredictor

    predictor = SamPredictor(golden_model)
    embeddings: dict[str, Any] = {}

    def predict(plane: np.ndarray, **prompt: Any):
        key = hashlib.sha1(plane.tobytes()).hexdigest() + str(plane.shape)
        if key in embeddings:
            predictor.set_image_embedding(embeddings[key], plane.shape[:2])
        else:
            start = time.perf_counter()
            predictor.set_image(plane)
            predict.encode_seconds = time.perf_counter() - start
            embeddings[key] = predictor.get_image_embedding()
        return predictor.predict(**prompt)

    predict.encode_seconds = None
    return predict


@pytest.fixture
def dock(make_napari_viewer, shared_predictor, synthetic_checkpoint: Path):
    """``dock(image_data, **image_kwargs) -> (viewer, image, widget)``, docked like the menu."""

    def make(data: np.ndarray, **image_kwargs: Any):
        viewer = make_napari_viewer()
        image = viewer.add_image(data, **image_kwargs)
        _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
        widget.use_predictor(shared_predictor, synthetic_checkpoint, "cpu")
        return viewer, image, widget

    return make


def press(viewer, key: str) -> None:
    """Run what ``key`` is bound to on the viewer, as a key press would."""
    viewer.keymap[coerce_keybinding(key)](viewer)


def wait_idle(qtbot, widget: MobileSAMWidget) -> None:
    """Wait for the debounce timer and every worker (including reruns) to finish."""
    qtbot.waitUntil(
        lambda: widget.worker is None and not widget.interactive.timer.isActive(),
        timeout=WORKER_TIMEOUT_MS,
    )


def first_nonempty_candidate(widget: MobileSAMWidget) -> None:
    """Random weights can make the best-scored candidate empty; commits need pixels."""
    for _ in range(3):
        if widget.objects[widget.interactive.shown.active].mask.any():
            return
        widget.next_candidate()
    pytest.fail("no candidate has pixels")


def test_docking_keys_prompt_layers_and_undocking(
    make_napari_viewer, monkeypatch, tmp_path
) -> None:
    monkeypatch.delenv("NAPARI_MOBILESAM_WEIGHTS", raising=False)
    monkeypatch.setenv("NAPARI_MOBILESAM_CACHE", str(tmp_path))  # an empty cache
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((2, 30, 40), np.uint8), scale=(3, 2, 2), translate=(0, 5, 5))
    dock_widget, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")

    assert isinstance(widget, MobileSAMWidget)
    assert widget.image_layer is image
    for key in (KEY_TOGGLE_POLARITY, KEY_NEXT_CANDIDATE, KEY_COMMIT, KEY_RESET):
        assert coerce_keybinding(key) in viewer.keymap
    assert widget.weights is None  # no weights file chosen: automatic, and the widget says so
    assert "first use downloads" in widget._weights_warning.value
    widget.set_weights("mobile_sam.pt")
    assert widget.weights.name == "mobile_sam.pt"
    assert "not found" in widget._weights_warning.value

    points, shapes = widget.create_prompt_layers()
    assert isinstance(points, Points) and isinstance(shapes, Shapes)
    assert (widget.points_layer, widget.shapes_layer) == (points, shapes)
    assert viewer.layers.selection.active is points and points.mode == "add"
    np.testing.assert_allclose(points.scale, image.scale)
    np.testing.assert_allclose(shapes.translate, image.translate)

    press(viewer, KEY_TOGGLE_POLARITY)
    points.add([[0, 3, 4]])
    press(viewer, KEY_TOGGLE_POLARITY)
    points.add([[0, 5, 6]])
    assert points.features["positive"].tolist() == [False, True]
    assert new_points_positive(points)

    viewer.window.remove_dock_widget(dock_widget)
    for key in (KEY_TOGGLE_POLARITY, KEY_NEXT_CANDIDATE, KEY_COMMIT, KEY_RESET):
        assert coerce_keybinding(key) not in viewer.keymap


def test_sample_data_opens_from_the_manifest(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.open_sample("napari-mobilesam", "nuclei_3d")
    viewer.open_sample("napari-mobilesam", "cell")
    assert viewer.layers[0].data.shape == (24, 128, 128)
    assert viewer.layers[1].data.ndim == 2


def test_point_prompt_matches_predictor_refines_cycles_and_commits(dock, reference) -> None:
    data = np.random.default_rng(3).normal(1000, 200, (48, 64)).astype(np.float32)
    viewer, image, widget = dock(data, contrast_limits=(500, 1500), scale=(0.5, 0.5))
    widget.live = False
    points, _ = widget.create_prompt_layers()
    plane = to_uint8_rgb(data, contrast_limits=(500, 1500))

    points.add([[10, 20]])
    objects = widget.segment()

    masks, scores, low_res = reference(
        plane, point_coords=np.array([[20.0, 10.0]]), point_labels=np.array([1])
    )
    assert len(objects) == 1
    np.testing.assert_array_equal(objects[0].masks, masks)
    np.testing.assert_allclose(objects[0].scores, scores, rtol=1e-5, atol=1e-6)
    preview = widget.preview_layer
    assert preview is not None and preview.name == "MobileSAM preview"
    np.testing.assert_array_equal(preview.data > 0, masks[np.argmax(scores)])
    assert viewer.layers.selection.active is points  # the preview did not steal the selection

    press(viewer, KEY_NEXT_CANDIDATE)
    chosen = widget.objects[0].chosen
    assert chosen == (int(np.argmax(scores)) + 1) % 3
    np.testing.assert_array_equal(preview.data > 0, masks[chosen])
    assert f"[{scores[chosen]:.2f}]" in widget._scores_label.value

    # A second click refines: the chosen candidate's logits are SAM's mask input.
    points.feature_defaults = {"positive": False}
    points.add([[30, 50]])
    refined = widget.segment()
    expected, _, _ = reference(
        plane,
        point_coords=np.array([[20.0, 10.0], [50.0, 30.0]]),
        point_labels=np.array([1, 0]),
        mask_input=low_res[chosen][None],
    )
    np.testing.assert_array_equal(refined[0].masks, expected)

    first_nonempty_candidate(widget)
    committed_mask = widget.objects[0].mask.copy()
    ids = widget.commit()

    labels = widget.labels_layer
    assert ids == [1]
    assert isinstance(labels, Labels) and labels.data.shape == (48, 64)
    np.testing.assert_allclose(labels.scale, image.scale)
    np.testing.assert_array_equal(labels.data == 1, committed_mask)
    assert len(points.data) == 0  # prompts are cleared after a commit
    assert not (preview.data > 0).any()
    labels.undo()
    assert not labels.data.any()


def test_box_on_3d_stack_writes_one_slice_and_protects_labels(dock, reference) -> None:
    data = np.random.default_rng(4).integers(0, 4000, (4, 40, 56)).astype(np.uint16)
    viewer, image, widget = dock(data, contrast_limits=(0, 4000), scale=(2, 1, 1))
    widget.live = False
    # The boxes layer has its own grid: half-pixel steps, shifted by (10, 10).
    shapes = viewer.add_shapes(ndim=3, scale=(1, 0.5, 0.5), translate=(0, 10, 10))
    labels = create_aligned_labels(image)
    labels.data[2, 12:16, 20:26] = 99
    labels.data[1, 0:5, 0:5] = 7
    viewer.add_layer(labels)
    widget.set_prompt_layers(None, shapes)
    widget.set_labels_layer(labels)
    before = labels.data.copy()
    viewer.dims.set_point(0, 4)  # world z=4 is slice 2 of the image (scale 2)
    # Shapes data rows 0..40 -> world 10..30 -> image rows 10..30; cols 10..70 -> 15..45.
    shapes.add_rectangles(np.array([[4, 0, 10], [4, 0, 70], [4, 40, 70], [4, 40, 10]]))

    objects = widget.segment()
    masks, _, _ = reference(
        to_uint8_rgb(data[2], contrast_limits=(0, 4000)),
        box=np.array([15.0, 10.0, 45.0, 30.0]),
    )
    np.testing.assert_array_equal(objects[0].masks, masks)
    first_nonempty_candidate(widget)
    mask = widget.objects[0].mask.copy()

    ids = widget.commit()

    assert ids == [100]
    expected = before.copy()
    expected[2][mask & (before[2] == 0)] = 100
    np.testing.assert_array_equal(labels.data, expected)
    protected = int((mask & (before[2] != 0)).sum())
    if protected:
        assert f"{protected} pixel(s) of existing labels kept" in widget._status_label.value
    labels.undo()
    np.testing.assert_array_equal(labels.data, before)


def test_live_worker_newest_prompts_win_and_ui_keeps_running(
    dock, reference, shared_predictor, qtbot, monkeypatch
) -> None:
    data = np.random.default_rng(5).integers(0, 255, (40, 50), dtype=np.uint8)
    viewer, image, widget = dock(data)
    points, _ = widget.create_prompt_layers()
    applied: list[tuple[bool, int]] = []
    apply = widget.interactive.apply_result

    def spy(generation, request, result):
        landed = apply(generation, request, result)
        groups = request.prompts.groups
        applied.append((landed, len(groups[0].point_coords) if groups else 0))
        return landed

    widget.interactive.apply_result = spy
    # The encode waits in the worker until the test opens the gate: while it waits, the event
    # loop must keep running (a timer ticks, edits and keys are handled).
    started, release = threading.Event(), threading.Event()
    set_image = shared_predictor.set_image

    def gated_set_image(image, **kwargs):
        started.set()
        assert release.wait(WORKER_TIMEOUT_MS / 1000), "the test never opened the gate"
        return set_image(image, **kwargs)

    monkeypatch.setattr(shared_predictor, "set_image", gated_set_image)
    ticks: list[int] = []
    timer = QTimer()
    timer.setInterval(1)
    timer.timeout.connect(lambda: ticks.append(len(ticks)))

    points.add([[10, 10]])
    qtbot.waitUntil(started.is_set, timeout=WORKER_TIMEOUT_MS)  # a worker is in the encode
    first_worker = widget.worker
    assert first_worker is not None
    timer.start()
    qtbot.waitUntil(lambda: len(ticks) >= 3, timeout=WORKER_TIMEOUT_MS)
    points.add([[20, 30]])  # while the first worker is still encoding
    press(viewer, KEY_COMMIT)  # asks for a commit of whatever the newest prompts give
    assert not release.is_set() and widget.labels_layer is None  # all of it during the encode
    timer.stop()
    release.set()
    qtbot.waitUntil(lambda: widget.labels_layer is not None, timeout=WORKER_TIMEOUT_MS)
    wait_idle(qtbot, widget)

    assert first_worker is not widget.worker
    # Only results of the newest prompts land (the run after the commit has no prompts).
    assert all(count in (0, 2) for landed, count in applied if landed)
    assert (True, 2) in applied
    masks, scores, _ = reference(
        to_uint8_rgb(data, contrast_limits=image.contrast_limits),
        point_coords=np.array([[10.0, 10.0], [30.0, 20.0]]),
        point_labels=np.array([1, 1]),
    )
    best = masks[int(np.argmax(scores))]
    np.testing.assert_array_equal(widget.labels_layer.data > 0, best)
    assert len(points.data) == 0


def test_segment_button_cancel_and_stale_results(dock, reference, qtbot) -> None:
    data = np.random.default_rng(6).integers(0, 255, (36, 44), dtype=np.uint8)
    viewer, image, widget = dock(data)
    widget.live = False
    points, _ = widget.create_prompt_layers()
    points.add([[8, 9]])

    # Cancel while the plane is being encoded: nothing lands, the embedding is still kept.
    widget._segment_button.native.click()
    worker = widget.worker
    assert worker is not None
    qtbot.waitUntil(widget.model_lock.locked, timeout=5000)  # the worker is encoding
    with qtbot.waitSignals([worker.aborted, worker.finished], timeout=WORKER_TIMEOUT_MS):
        widget._cancel_button.native.click()
    assert widget.objects == []
    assert widget._status_label.value == "cancelled"
    assert len(widget.cache) == 1

    # Prompts edited while a run is in flight (live preview off): its result is dropped.
    widget._segment_button.native.click()
    worker = widget.worker
    points.add([[20, 30]])
    with qtbot.waitSignal(worker.finished, timeout=WORKER_TIMEOUT_MS):
        pass
    assert widget.objects == []

    widget._segment_button.native.click()
    wait_idle(qtbot, widget)
    masks, _, _ = reference(
        to_uint8_rgb(data, contrast_limits=image.contrast_limits),
        point_coords=np.array([[9.0, 8.0], [30.0, 20.0]]),
        point_labels=np.array([1, 1]),
    )
    np.testing.assert_array_equal(widget.objects[0].masks, masks)
    assert "cached" in widget._timing_label.value

    # Commit asked for while a run is in flight whose prompts are already outdated: the stale
    # result is dropped, a new run starts by itself and its result is committed.
    earlier = widget.objects[0]
    widget._segment_button.native.click()
    points.add([[30, 5]])
    press(viewer, KEY_COMMIT)
    qtbot.waitUntil(lambda: widget.labels_layer is not None, timeout=WORKER_TIMEOUT_MS)
    wait_idle(qtbot, widget)
    masks, scores, _ = reference(
        to_uint8_rgb(data, contrast_limits=image.contrast_limits),
        point_coords=np.array([[9.0, 8.0], [30.0, 20.0], [5.0, 30.0]]),
        point_labels=np.array([1, 1, 1]),
        mask_input=earlier.low_res[None],  # the new point refines the earlier object
    )
    np.testing.assert_array_equal(widget.labels_layer.data == 1, masks[int(np.argmax(scores))])
    assert len(points.data) == 0

    points.add([[3, 3]])
    press(viewer, KEY_RESET)
    assert len(points.data) == 0
    assert widget.objects == []


def test_live_preview_follows_the_plane_and_contrast(make_napari_viewer) -> None:
    """Widget logic with an instant stand-in model, run in the UI thread (``synchronous``)."""
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((3, 20, 30), np.uint16), contrast_limits=(0, 100))
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    predictor = FakePredictor()
    widget.use_predictor(predictor, None, "cpu")
    widget.interactive.synchronous = True
    points, shapes = widget.create_prompt_layers()

    viewer.dims.set_point(0, 1)
    shapes.add_rectangles(np.array([[1, 2, 3], [1, 2, 9], [1, 6, 9], [1, 6, 3]]))
    widget.interactive.timer.timeout.emit()  # what the debounce timer does once edits pause
    preview = widget.preview_layer
    assert np.count_nonzero(preview.data[1]) == 35
    assert np.count_nonzero(preview.data[[0, 2]]) == 0
    assert len(predictor.encoded) == 1

    viewer.dims.set_point(0, 2)  # no prompts on this plane: the preview is cleared
    widget.interactive.timer.timeout.emit()
    assert widget.objects == [] and np.count_nonzero(preview.data) == 0

    viewer.dims.set_point(0, 1)  # back again: the embedding comes from the cache
    widget.interactive.timer.timeout.emit()
    assert np.count_nonzero(preview.data[1]) == 35
    assert len(predictor.encoded) == 1

    image.contrast_limits = (0, 50)  # the model now sees other pixels: encode again
    widget.interactive.timer.timeout.emit()
    assert len(predictor.encoded) == 2
    assert len(widget.cache) == 1  # the embedding made with the old limits was dropped

    press(viewer, KEY_RESET)
    widget.interactive.timer.timeout.emit()
    assert len(shapes.data) == 0 and np.count_nonzero(preview.data) == 0
    assert widget.worker is None  # nothing ever ran in a thread

    viewer.layers.remove(image)  # the preview of a removed image goes with it
    assert preview not in viewer.layers


def fake_dock(make_napari_viewer, data: np.ndarray):
    """A docked widget with an instant stand-in model, run in the UI thread."""
    viewer = make_napari_viewer()
    image = viewer.add_image(data, contrast_limits=(0, 100))
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    widget.use_predictor(FakePredictor(), None, "cpu")
    widget.interactive.synchronous = True
    return viewer, image, widget


def test_the_last_outcome_stays_until_the_next_action(make_napari_viewer) -> None:
    viewer, image, widget = fake_dock(make_napari_viewer, np.zeros((30, 40), np.uint16))
    points, shapes = widget.create_prompt_layers()
    # Two overlapping boxes committed into a new layer: the overlap is not "existing labels".
    shapes.add_rectangles(np.array([[[2, 2], [2, 12], [12, 12], [12, 2]]]))
    shapes.add_rectangles(np.array([[[8, 8], [8, 20], [20, 20], [20, 8]]]))
    widget.interactive.timer.timeout.emit()
    assert len(widget.objects) == 2

    press(viewer, KEY_COMMIT)
    widget.interactive.timer.timeout.emit()  # the run after the prompts were used up finds nothing

    status = widget._status_label.value
    assert status.startswith("committed id(s) [1, 2]")
    assert "existing labels" not in status
    assert "25 overlapping pixel(s) went to the earlier object" in status
    viewer.dims.ndisplay = 2  # other viewer events re-run too: the outcome stays
    widget.interactive.timer.timeout.emit()
    assert widget._status_label.value == status

    points.add([[5, 5]])  # the next action replaces it
    widget.interactive.timer.timeout.emit()
    assert widget._status_label.value == "1 object(s) on this plane"


def test_changing_the_image_retargets_the_labels_choice(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    stack = viewer.add_image(np.zeros((4, 20, 30), np.uint8), name="stack")
    stack_labels = viewer.add_layer(create_aligned_labels(stack))
    cell = viewer.add_image(np.zeros((25, 35), np.uint8), name="cell")
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")

    widget.set_image_layer(stack)
    assert widget.labels_layer is stack_labels
    widget.set_image_layer(cell)  # the stack's labels do not fit: "create new"
    assert widget.labels_layer is None
    other = viewer.add_labels(np.zeros((25, 35), np.uint32), name="other")
    cell_labels = viewer.add_layer(create_aligned_labels(cell))  # "cell labels"
    widget.set_image_layer(stack)
    assert widget.labels_layer is stack_labels
    widget.set_image_layer(cell)  # both fit; the one named after the image wins
    assert widget.labels_layer is cell_labels
    widget.set_labels_layer(other)
    widget.set_image_layer(cell)  # a choice that fits is kept
    assert widget.labels_layer is other


def test_point_colours_follow_the_widget_state(make_napari_viewer) -> None:
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((30, 40), np.uint8))
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    points, _ = widget.create_prompt_layers()
    points.add([[3, 4]])
    press(viewer, KEY_TOGGLE_POLARITY)
    assert not widget.new_points_positive
    assert points.current_face_color == "magenta"  # the layer controls' swatch
    points.add([[6, 7]])
    press(viewer, KEY_TOGGLE_POLARITY)
    assert widget.new_points_positive and points.current_face_color == "lime"

    points.selected_data = {1}  # napari: new points now copy the selected (negative) one
    assert not widget.new_points_positive
    assert widget._polarity_combo.value == "negative (background)"
    points.selected_data = set()
    press(viewer, KEY_TOGGLE_POLARITY)
    points.add([[9, 9]])
    assert points.features["positive"].tolist() == [True, False, True]
    assert points.current_face_color == "lime"


def test_runtime_choice_reaches_the_loader_and_names_missing_extras(
    make_napari_viewer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    from napari_mobilesam.widget import controls

    viewer, image, widget = fake_dock(make_napari_viewer, np.zeros((30, 40), np.uint16))
    installed = [c for c in ("onnxruntime", "openvino") if importlib.util.find_spec(c)]
    assert list(widget._runtime_combo.choices) == ["torch", "auto", *installed]
    assert widget.runtime == "torch" and widget.loader.runtime_choice == "torch"
    assert widget.loader.is_loaded(None, "cpu")  # the shared stand-in, run by torch

    widget.runtime = "auto"  # the next run builds the model again, its encoder chosen by auto
    assert widget.loader.runtime_choice == "auto"
    assert not widget.loader.is_loaded(None, "cpu")

    # Without the runtimes' packages only torch and auto are offered; the tooltip says what
    # to install.
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("onnxruntime", "openvino") else real_find_spec(name, *a),
    )
    choices, tooltip = controls._runtime_choices()
    assert choices == ["torch", "auto"]
    assert 'pip install "napari-mobilesam[onnx]"' in tooltip
    assert 'pip install "napari-mobilesam[openvino]"' in tooltip
