"""Many objects on layers: one object per point, refine from a Labels layer, seeds layer."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels, Points, Shapes

from fakes import FakePredictor
from napari_mobilesam.engine.steps import drive
from napari_mobilesam.layers.labels_writer import LabelsError, create_aligned_labels
from napari_mobilesam.layers.point_objects_layers import resolved_masks, resolved_objects
from napari_mobilesam.layers.refine_layers import capture_refine, refine_steps, write_refined
from napari_mobilesam.layers.seed_layers import find_plane_seeds, seeds_layer
from napari_mobilesam.layers.segment import commit_objects, segment_from_layers


def _discs(shape=(40, 64), centres=((10, 12), (28, 40), (12, 50))) -> np.ndarray:
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = np.full(shape, 100, dtype=np.uint16)
    for r, c in centres:
        image[(rows - r) ** 2 + (cols - c) ** 2 <= 25] = 900
    return image


@pytest.fixture
def scene():
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.stack([_discs(), _discs()[::-1]]), name="img"))
    points = viewer.add_layer(Points(np.zeros((0, 3)), ndim=3, features={"positive": []}))
    shapes = viewer.add_layer(Shapes(ndim=3))
    viewer.dims.set_point(0, 1)
    return viewer, image, points, shapes


@pytest.fixture(scope="module")
def predictor(golden_model):
    from napari_mobilesam import SamPredictor

    return SamPredictor(golden_model)


def _add(points: Points, position, positive=True):
    points.feature_defaults = {"positive": positive}
    points.add([position])


def test_each_point_makes_one_object_per_positive_point_with_shared_negatives(scene):
    viewer, image, points, shapes = scene
    for pos in ([1, 5, 5], [1, 20, 30], [1, 30, 60]):
        _add(points, pos)
    _add(points, [1, 2, 40], positive=False)
    shapes.add_rectangles(np.array([[1, 10, 10], [1, 10, 20], [1, 18, 20], [1, 18, 10]]))
    fake = FakePredictor()  # no batching: the same groups, one call each
    objects = segment_from_layers(viewer, image, points, shapes, predictor=fake, each_point=True)
    assert len(objects) == 4  # the rectangle, then one per positive point
    assert objects[0].prompt.box is not None
    for obj in objects[1:]:
        assert obj.prompt.point_labels.tolist() == [1, 0]
        np.testing.assert_array_equal(obj.prompt.point_coords[1], [40, 2])  # (x, y)


def test_each_point_batched_equals_one_at_a_time_and_commits_in_one_undo_step(scene, predictor):
    viewer, image, points, shapes = scene
    for pos in ([1, 10, 12], [1, 28, 40], [1, 12, 50], [1, 30, 10]):
        _add(points, pos)
    batched = segment_from_layers(
        viewer, image, points, predictor=predictor, each_point=True, multimask_output=True
    )
    points_one = Points(np.zeros((0, 3)), ndim=3, features={"positive": []})
    singles = []
    for pos in points.data:
        points_one.data = pos[None]
        points_one.features = {"positive": [True]}
        singles += segment_from_layers(viewer, image, points_one, predictor=predictor)
    assert len(batched) == len(singles) == 4
    for b, s in zip(batched, singles, strict=True):
        differ = b.mask != s.mask
        assert differ.sum() <= 2, int(differ.sum())  # only logits at the 0 threshold
        assert abs(b.score - s.score) < 1e-4

    labels = viewer.add_layer(create_aligned_labels(image))
    masks = resolved_masks(batched)
    assert not np.logical_and.reduce([m.astype(int) for m in masks[:2]]).any()
    ids = commit_objects(labels, resolved_objects(batched))
    assert len(ids) == len({int(i) for i in np.unique(labels.data[1])} - {0})
    labels.undo()
    assert not labels.data.any()


def test_refine_from_a_labels_layer_keeps_the_source_and_is_one_undo_step(scene, predictor):
    viewer, image, _, _ = scene
    src = np.zeros(image.data.shape, dtype=np.int32)
    src[1, 5:15, 7:17] = 4
    src[1, 24:33, 35:45] = 9
    src[0, 0:3, 0:3] = 2  # another plane: left out unless the whole stack is refined
    source = viewer.add_layer(Labels(src.copy(), name="cellpose"))
    request = capture_refine(viewer, image, source)
    refined = drive(refine_steps(request, predictor, multimask_output=True))
    assert set(np.unique(next(iter(refined.planes.values())))) <= {0, 4, 9}
    target = viewer.add_layer(create_aligned_labels(image))
    with pytest.raises(LabelsError, match="never modified"):
        write_refined(source, refined, source=source)
    report = write_refined(target, refined, keep_ids=True, source=source, image=image)
    np.testing.assert_array_equal(source.data, src)
    assert set(report.ids) <= {4, 9} and report.ids and not target.data[0].any()
    target.undo()
    assert not target.data.any()
    report = write_refined(target, refined, keep_ids=False)  # new ids above the target's
    assert report.ids == list(range(1, len(report.ids) + 1))

    whole = capture_refine(viewer, image, source, whole_stack=True)
    assert len(whole.planes) == 2


def test_refine_bad_sources_write_nothing(scene):
    viewer, image, _, _ = scene
    empty = viewer.add_layer(Labels(np.zeros(image.data.shape, dtype=np.int32)))
    with pytest.raises(LabelsError, match="no label"):
        capture_refine(viewer, image, empty)
    other = viewer.add_layer(Labels(np.ones((2, 40, 65), dtype=np.int32)))
    with pytest.raises(LabelsError, match="grid"):
        capture_refine(viewer, image, other)


def test_find_seeds_writes_an_editable_points_layer(scene):
    viewer, image, points, _ = scene
    seeds = find_plane_seeds(viewer, image, diameter=10)
    assert seeds.shape == (3, 3) and (seeds[:, 0] == 1).all()
    flipped = {(40 - 1 - r, c) for r, c in ((10, 12), (28, 40), (12, 50))}  # plane 1 is flipped
    for _, r, c in seeds:
        assert min(np.hypot(r - fr, c - fc) for fr, fc in flipped) <= 1.5
    layer = seeds_layer(image, seeds)
    assert layer.features["positive"].all() and len(layer.data) == 3
    layer.add([[1, 3, 3]])  # editable as any prompt layer
    assert len(layer.data) == 4


def test_300_points_on_1024_give_300_objects_in_one_preview_and_one_undo_step():
    viewer = ViewerModel()
    image = viewer.add_layer(Image(np.zeros((1024, 1024), np.uint8)))
    rows, cols = np.meshgrid(np.arange(20, 1024, 55), np.arange(30, 1024, 55), indexing="ij")
    data = np.stack([rows.ravel(), cols.ravel()], axis=1)[:300].astype(float)
    points = viewer.add_layer(Points(data, features={"positive": np.ones(300, bool)}))
    objects = segment_from_layers(
        viewer, image, points, predictor=FakePredictor(), each_point=True, multimask_output=False
    )
    assert len(objects) == 300
    from napari_mobilesam.layers.preview_layer import PreviewManager

    preview = PreviewManager(viewer)
    preview.show(image, objects[0].plane, resolved_masks(objects))
    assert len(np.unique(preview.layer.data)) == 301
    labels = viewer.add_layer(create_aligned_labels(image))
    ids = commit_objects(labels, resolved_objects(objects))
    assert len(ids) == 300
    labels.undo()
    assert not labels.data.any()
