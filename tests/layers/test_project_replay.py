"""Replay of a recorded project with the synthetic checkpoint: the same weights give the same
labels, pixel for pixel; other weights give a per-object table of what changed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Points, Shapes

from golden_cases import SYNTHETIC_CHECKPOINT
from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.project_store import ProjectStore
from napari_mobilesam.engine.replay import replay_project
from napari_mobilesam.layers.labels_writer import create_aligned_labels, write_objects
from napari_mobilesam.layers.project_recorder import ModelInfo, ProjectRecorder
from napari_mobilesam.layers.segment import commit_objects, segment_from_layers
from napari_mobilesam.layers.stack_layers import propagate_from_layers

pytestmark = pytest.mark.skipif(
    not SYNTHETIC_CHECKPOINT.is_file(), reason="the golden folder (synthetic checkpoint) is absent"
)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A project with a refined click, a propagated box, an undone commit and a paint edit."""
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.model.build import build_mobile_sam

    predictor = SamPredictor(build_mobile_sam(str(SYNTHETIC_CHECKPOINT)))
    cache = EmbeddingCache()
    data = np.random.default_rng(0).integers(0, 1000, (3, 40, 56)).astype(np.uint16)
    viewer = ViewerModel()
    image = viewer.add_layer(Image(data, contrast_limits=(50, 950)))
    points = viewer.add_layer(Points(np.zeros((0, 3)), ndim=3, features={"positive": []}))
    shapes = viewer.add_layer(Shapes(ndim=3))
    labels = viewer.add_layer(create_aligned_labels(image))
    viewer.dims.set_point(0, 1)
    folder = tmp_path_factory.mktemp("replay") / "cells.mobilesam"
    model = ModelInfo(SYNTHETIC_CHECKPOINT, "torch", "cpu")
    recorder = ProjectRecorder.start(labels, folder, image=image, model=model)

    def segment(previous=()):
        return segment_from_layers(viewer, image, points, shapes, predictor=predictor,
                                   cache=cache, previous=previous)  # fmt: skip

    points.feature_defaults = {"positive": True}
    points.add([[1, 10, 12]])
    first = segment()
    points.feature_defaults = {"positive": False}
    points.add([[1, 20, 30]])
    refined = segment(previous=first)
    assert refined[0].refined_from is first[0]  # decoded with the first click's logits
    commit_objects(labels, refined)
    points.data = np.zeros((0, 3))
    shapes.add_rectangles(np.array([[1, 5, 30], [1, 5, 50], [1, 30, 50], [1, 30, 30]]))
    seeds = segment()
    write_objects(labels, propagate_from_layers(viewer, image, seeds, predictor=predictor,
                                                cache=cache))  # fmt: skip
    shapes.data = []
    points.feature_defaults = {"positive": True}
    points.add([[1, 35, 5]])
    commit_objects(labels, segment(), protect=False)
    labels.undo()
    recorder.close()
    return folder, data


def test_replay_with_the_same_weights_gives_the_same_labels(recording, tmp_path: Path) -> None:
    folder, data = recording
    out = tmp_path / "again"
    result = replay_project(folder, lambda plane: data[plane], weights=SYNTHETIC_CHECKPOINT,
                            out=out)  # fmt: skip
    assert result.identical
    with ProjectStore.open(folder, writable=False) as store:
        stored = store.read_labels()
        kinds = [r["kind"] for r in store.records]
    assert kinds == ["write", "write", "write", "undo"]
    assert stored.any() and np.array_equal(result.labels, stored)
    assert {(o.id, o.mode) for o in result.objects} == {(1, "click"), (2, "propagation")}
    assert all(o.iou == 1.0 and o.area_change == 0.0 for o in result.objects)
    # The out folder holds a project with the replayed steps, and the table.
    with ProjectStore.open(out / "project", writable=False) as store:
        assert np.array_equal(store.read_labels(), stored)
        replayed = store.records
    assert [r["replay_of"] for r in replayed] == [1, 2, 3, 4]
    assert replayed[0]["replayed_with"]["weights_sha256"]
    rows = list(csv.DictReader(io.StringIO((out / "replay.csv").read_text())))
    assert [row["iou"] for row in rows] == ["1.0000", "1.0000"]


def test_replay_with_other_weights_reports_what_changed(recording, tmp_path: Path) -> None:
    import torch

    folder, data = recording
    state = torch.load(SYNTHETIC_CHECKPOINT, map_location="cpu", weights_only=True)
    generator = torch.Generator().manual_seed(3)
    for key, value in state.items():
        if key.startswith("mask_decoder.output_hypernetworks_mlps") and value.is_floating_point():
            state[key] = value + 0.5 * torch.randn(value.shape, generator=generator)
    other = tmp_path / "other.pt"
    torch.save(state, other)
    result = replay_project(folder, lambda plane: data[plane], weights=other)
    assert not result.identical
    changed = [o for o in result.objects if o.iou < 1.0]
    assert changed, result.table()
    table = result.table().splitlines()
    assert table[0] == "id,step,mode,stored_area,replayed_area,iou,area_change,note"
    assert len(table) == 1 + len(result.objects)


def test_replay_lists_what_it_cannot_redo(recording, tmp_path: Path) -> None:
    folder, data = recording
    copy = tmp_path / "copy"
    import shutil

    shutil.copytree(folder, copy)
    path = copy / "records" / "000001.json"
    record = json.loads(path.read_text())
    record["objects"][0]["prompts"] = None  # as if written by a tool that kept no prompts
    record["objects"][0]["runtime"] = "onnxruntime"
    path.write_text(json.dumps(record))
    result = replay_project(copy, lambda plane: data[plane], weights=SYNTHETIC_CHECKPOINT)
    (first,) = [o for o in result.objects if o.id == 1]
    assert first.replayed_area == 0 and first.note == "its prompts were not recorded"
    assert any("onnxruntime encoder runtime" in note for note in result.skipped_steps)
    with pytest.raises(ValueError, match="weights: none given"):
        for path in (copy / "records").glob("*.json"):
            record = json.loads(path.read_text())
            for obj in record.get("objects", []):
                obj["weights"] = str(tmp_path / "gone.pt")
            path.write_text(json.dumps(record))
        replay_project(copy, lambda plane: data[plane])


def test_segment_everything_replays_to_the_same_labels(tmp_path: Path) -> None:
    from napari_mobilesam.engine.automatic_mask_generator import SamAutomaticMaskGenerator
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.engine.steps import drive
    from napari_mobilesam.layers.everything_layers import (
        EverythingSettings,
        everything_steps,
        plan_job,
    )
    from napari_mobilesam.layers.label_image_writer import write_label_image
    from napari_mobilesam.layers.segment import capture_request
    from napari_mobilesam.model.build import build_mobile_sam

    model = build_mobile_sam(str(SYNTHETIC_CHECKPOINT))
    data = np.random.default_rng(4).integers(0, 1000, (2, 32, 40)).astype(np.uint16)
    viewer = ViewerModel()
    image = viewer.add_layer(Image(data, contrast_limits=(0, 1000)))
    labels = viewer.add_layer(create_aligned_labels(image))
    recorder = ProjectRecorder.start(labels, tmp_path / "p", image=image)
    settings = EverythingSettings(
        points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, min_size=0,
        whole_stack=True,
    )  # fmt: skip
    job = plan_job(capture_request(viewer, image), settings)
    generator = SamAutomaticMaskGenerator(SamPredictor(model), **settings.generator_params())
    result = drive(everything_steps(job, generator, None))
    report = write_label_image(labels, result.labels)
    recorder.close()
    assert report.ids, "the synthetic weights found nothing to compare"
    replayed = replay_project(tmp_path / "p", lambda plane: data[plane],
                              predictor=SamPredictor(model))  # fmt: skip
    assert replayed.identical
    assert {o.mode for o in replayed.objects} == {"everything"}
    assert len(replayed.objects) == len(report.ids)
