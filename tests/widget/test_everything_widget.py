"""The widget's "Segment everything" section: labels written as one undo step with protection,
stacks linked into 3D ids, the shared model and cache, clicks on top of the result, Cancel,
and the bad-input messages (nothing written)."""

from __future__ import annotations

import copy
import threading

import numpy as np
import pytest
from napari.layers import Labels

from fakes import ThresholdMaskGenerator, ThresholdPredictor
from napari_mobilesam.layers.everything_layers import CPU_DEFAULTS, SAM_DEFAULTS
from napari_mobilesam.widget.everything_panel import WHOLE_STACK

pytestmark = pytest.mark.qt

SHAPE = (64, 80)
# (row, col, radius) of bright discs; the last one is small (29 pixels).
DISCS = [(16, 16, 9), (40, 50, 11), (50, 14, 7), (12, 66, 3)]


def disc(row, col, radius, shape=SHAPE):
    rr, cc = np.ogrid[: shape[0], : shape[1]]
    return (rr - row) ** 2 + (cc - col) ** 2 <= radius**2


def discs_image(discs=DISCS) -> np.ndarray:
    image = np.zeros(SHAPE, np.uint8)
    for d in discs:
        image[disc(*d)] = 255
    return image


@pytest.fixture
def dock(make_napari_viewer):
    """A viewer with ``data``, the docked widget and the threshold stand-ins for the model."""

    def make(data, **image_kwargs):
        viewer = make_napari_viewer()
        image = viewer.add_image(data, contrast_limits=(0, 255), **image_kwargs)
        _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
        widget.use_predictor(ThresholdPredictor(), None, "cpu")
        widget.live = False
        widget.multimask = False
        runner = widget.everything
        made = []

        def stand_in(predictor, settings):
            # The widget's predictor is shared the way the real generator shares it: a copy
            # around the same "model".
            generator = ThresholdMaskGenerator(
                settings.points_per_side, predictor=copy.copy(predictor)
            )
            made.append((generator, settings))
            return generator

        runner.make_generator = stand_in
        return viewer, image, widget, runner, made

    return make


def run_worker(qtbot, runner, on_yield=None):
    """Start a run from the button's slot and wait until its worker has finished."""
    if on_yield is not None:
        original = runner.on_step

        def hooked(item):
            original(item)
            on_yield(item)

        runner.on_step = hooked  # called for each step of the run's own work
    runner.start()
    assert runner.worker is not None
    qtbot.waitUntil(lambda: runner.worker is None, timeout=30_000)
    runner.__dict__.pop("on_step", None)


def status_of(widget) -> str:
    return widget._status_label.value.replace("\u200b", "")


def test_segment_everything_writes_each_object_once_in_one_undo_step(dock, qtbot):
    viewer, image, widget, runner, made = dock(discs_image())
    runner.panel._min_size_spin.value = 0
    assert widget._device_label.value == "not loaded yet"
    run_worker(qtbot, runner)
    assert widget._device_label.value.startswith("cpu (")  # the run says where it ran
    labels = widget.labels_layer
    assert labels is not None
    data = labels.data
    assert sorted(np.unique(data).tolist()) == [0, 1, 2, 3, 4]
    for d in DISCS:  # each disc is exactly one object
        values = np.unique(data[disc(*d)])
        assert len(values) == 1 and values[0] > 0
        assert np.array_equal(data == values[0], disc(*d))
    assert "4 object(s) written" in status_of(widget)
    assert not runner.panel._cancel_button.enabled and runner.panel._run_button.enabled
    labels.undo()
    assert not labels.data.any()
    labels.redo()
    assert np.array_equal(labels.data, data)


def test_settings_reach_the_generator_and_min_size_drops_small_objects(dock, qtbot):
    viewer, image, widget, runner, made = dock(discs_image())
    runner.panel.apply_defaults(SAM_DEFAULTS)
    runner.panel._min_size_spin.value = 100
    run_worker(qtbot, runner)
    settings = made[-1][1]
    assert (settings.points_per_side, settings.pred_iou_thresh) == (32, 0.88)
    assert settings.stability_score_thresh == 0.95 and settings.min_size == 100
    assert not widget.labels_layer.data[disc(*DISCS[3])].any()  # 29 pixels < 100
    assert widget.labels_layer.data.max() == 3
    runner.panel._cpu_button.changed.emit(True)
    assert runner.panel.settings().points_per_side == CPU_DEFAULTS.points_per_side
    runner.panel._sam_button.changed.emit(True)
    assert runner.panel.settings().stability_score_thresh == SAM_DEFAULTS.stability_score_thresh


def test_the_bf16_decoder_choice_follows_the_cpu_and_reaches_the_generator(
    dock, qtbot, monkeypatch
):
    """bf16 is offered only where the CPU has native bf16, and the choice reaches the
    generator's parameters (fp32 adds nothing, so stand-ins without the option keep working)."""
    from napari_mobilesam.widget import everything_panel

    monkeypatch.setattr(everything_panel, "_bf16_support", lambda: (False, "no avx512_bf16"))
    panel = everything_panel.EverythingPanel()
    assert not panel._bf16_check.enabled and "no avx512_bf16" in panel._bf16_check.tooltip
    assert "decoder_precision" not in panel.settings().generator_params()

    monkeypatch.setattr(everything_panel, "_bf16_support", lambda: (True, "amx_bf16"))
    viewer, image, widget, runner, made = dock(discs_image())
    runner.panel = everything_panel.EverythingPanel()
    runner.panel._bf16_check.value = True
    run_worker(qtbot, runner)
    settings = made[-1][1]
    assert settings.decoder_precision == "bf16"
    assert settings.generator_params()["decoder_precision"] == "bf16"


def test_existing_labels_are_protected_and_ids_come_above_them(dock, qtbot):
    viewer, image, widget, runner, _ = dock(discs_image())
    existing = Labels(np.zeros(SHAPE, np.uint16), name="existing")
    existing.data[disc(*DISCS[0])] = 7  # an object committed earlier
    existing.data[40:45, 40:60] = 3  # part of another one
    before = existing.data.copy()
    viewer.add_layer(existing)
    widget.set_labels_layer(existing)
    runner.panel._min_size_spin.value = 0
    run_worker(qtbot, runner)
    data = existing.data
    assert np.array_equal(data[before > 0], before[before > 0])
    assert sorted(np.unique(data[before == 0]).tolist()) == [0, 8, 9, 10]
    assert "protected" in status_of(widget)
    existing.undo()
    assert np.array_equal(existing.data, before)


def test_clicks_on_top_of_the_result_share_the_embedding_and_get_new_ids(dock, qtbot):
    viewer, image, widget, runner, made = dock(discs_image())
    runner.panel._min_size_spin.value = 100  # the small disc is left out
    run_worker(qtbot, runner)
    labels = widget.labels_layer
    assert labels.data.max() == 3
    encoded = made[-1][0].predictor.encoded
    assert encoded == 1  # the plane was encoded once, for the automatic run
    points, _ = widget.create_prompt_layers()
    row, col, _ = DISCS[3]
    points.add([[row, col]])
    ids = widget.commit()
    assert ids == [4]
    assert np.array_equal(labels.data == 4, disc(*DISCS[3]))
    # The click found the plane's embedding in the widget's cache: the widget's predictor
    # restored it instead of encoding again.
    assert widget.loader.get(None, "cpu").encoded == 0


def test_a_stack_is_linked_into_3d_ids_and_cancel_mid_stack_writes_nothing(dock, qtbot):
    stack = np.zeros((5, *SHAPE), np.uint8)
    for z in range(5):
        stack[z][disc(20, 20, 6 + z)] = 255  # one object through every plane
    stack[3:5][:, disc(50, 60, 6)] = 255  # another on the top two planes
    viewer, image, widget, runner, _ = dock(stack)
    runner.panel._scope_combo.value = WHOLE_STACK
    runner.panel._min_size_spin.value = 0

    # The worker may not run ahead of the main thread: planes after plane 2 wait until the test
    # has pressed Cancel on plane 2's step (no race with a fast machine or a slow event loop).
    gate = threading.Event()
    make = runner.make_generator

    def gated(predictor, settings):
        generator = make(predictor, settings)
        original = generator.generate_steps
        calls = []

        def generate_steps(image, embedding=None):
            calls.append(image)
            if len(calls) > 3:
                assert gate.wait(60), "Cancel was never pressed"
            return (yield from original(image, embedding))

        generator.generate_steps = generate_steps
        return generator

    runner.make_generator = gated
    seen = []

    def cancel_on_plane_two(item):
        if getattr(item, "plane", None) == 2:
            seen.append(item.plane)
            runner.stop()
            gate.set()

    try:
        run_worker(qtbot, runner, cancel_on_plane_two)
    finally:
        gate.set()
    assert seen and widget.labels_layer is None  # nothing written, no layer created
    assert "cancelled" in status_of(widget) and "nothing was written" in status_of(widget)

    run_worker(qtbot, runner)
    data = widget.labels_layer.data
    first = data[:, 20, 20]
    assert np.all(first == first[0]) and first[0] > 0  # one 3D id through the stack
    second = data[3:5, 50, 60]
    assert np.all(second == second[0]) and second[0] not in (0, first[0])
    assert not data[:3, 50, 60].any()
    assert "over 5 planes" in status_of(widget)
    widget.labels_layer.undo()
    assert not widget.labels_layer.data.any()


@pytest.mark.parametrize(
    "data, min_size, expected",
    [
        (np.full(SHAPE, 128, np.uint8), 0, "constant"),
        (discs_image(), 10_000, "filtered out"),
    ],
)
def test_nothing_found_says_why_and_writes_nothing(dock, qtbot, data, min_size, expected):
    viewer, image, widget, runner, made = dock(data)
    runner.panel._min_size_spin.value = min_size
    run_worker(qtbot, runner)
    assert expected in status_of(widget) and "Nothing was written" in status_of(widget)
    assert widget.labels_layer is None
    if expected == "constant":
        assert not made or made[-1][0].runs == 0  # a blank plane is not even encoded


def test_a_labels_layer_too_small_for_the_ids_writes_nothing(dock, qtbot):
    viewer, image, widget, runner, _ = dock(discs_image())
    small = Labels(np.zeros(SHAPE, np.uint8), name="small")
    small.data[0, :3] = 254
    viewer.add_layer(small)
    widget.set_labels_layer(small)
    runner.panel._min_size_spin.value = 0
    run_worker(qtbot, runner)
    assert "uint8" in status_of(widget) and "not written" in status_of(widget)
    assert small.data.max() == 254 and np.count_nonzero(small.data) == 3


def test_errors_in_the_worker_are_reported_once_and_write_nothing(dock, qtbot, monkeypatch):
    viewer, image, widget, runner, _ = dock(discs_image())
    shown = []
    monkeypatch.setattr(
        "napari_mobilesam.widget.status_line.show_error", lambda text: shown.append(text)
    )

    def broken(predictor, settings):
        raise ValueError("points_per_side must be a whole number >= 1")

    runner.make_generator = broken
    run_worker(qtbot, runner)
    assert len(shown) == 1 and "points_per_side" in shown[0]
    assert "error" in status_of(widget)
    assert widget.labels_layer is None


def test_the_real_generator_on_the_synthetic_checkpoint(
    make_napari_viewer, golden_model, synthetic_checkpoint
):
    from napari_mobilesam import SamPredictor

    viewer = make_napari_viewer()
    viewer.add_image(discs_image(), contrast_limits=(0, 255))
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    widget.use_predictor(SamPredictor(golden_model), synthetic_checkpoint, "cpu")
    panel = widget.everything.panel
    panel._points_spin.value = 4  # 16 prompts: the real generator end to end, kept short
    panel._iou_spin.value = 0.0  # random weights: keep whatever the model proposes
    panel._stability_spin.value = 0.0
    panel._min_size_spin.value = 0
    report = widget.everything.run()
    data = widget.labels_layer.data
    assert report.ids and report.ids == list(range(1, len(report.ids) + 1))
    assert sorted(np.unique(data[data > 0]).tolist()) == report.ids
    widget.labels_layer.undo()
    assert not widget.labels_layer.data.any()


def test_a_click_during_a_run_is_answered_and_the_run_still_writes_its_result(dock, qtbot):
    viewer, image, widget, runner, _ = dock(discs_image())
    runner.panel._min_size_spin.value = 0
    points, _ = widget.create_prompt_layers()
    clicked = []

    def click_once(item):
        if not clicked:  # between two steps of the run, on the main thread
            points.add([[DISCS[1][0], DISCS[1][1]]])
            clicked.extend(widget.segment())

    run_worker(qtbot, runner, click_once)
    assert len(clicked) == 1 and np.array_equal(clicked[0].mask, disc(*DISCS[1]))
    data = widget.labels_layer.data
    assert sorted(np.unique(data).tolist()) == [0, 1, 2, 3, 4]
    for d in DISCS:
        assert len(np.unique(data[disc(*d)])) == 1
