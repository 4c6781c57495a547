"""Headless segmentation from layers: caching, refinement, commit; real model on one plane."""

from __future__ import annotations

import numpy as np
import pytest
from napari.components import ViewerModel
from napari.layers import Image, Labels, Points, Shapes

from fakes import FakePredictor
from napari_mobilesam.engine.embedding_cache import EmbeddingCache
from napari_mobilesam.engine.image_conversion import to_uint8_rgb
from napari_mobilesam.layers.labels_writer import LabelsError, create_aligned_labels
from napari_mobilesam.layers.segment import (
    capture_request,
    commit_objects,
    model_input,
    run_request,
    segment_from_layers,
)


@pytest.fixture
def scene() -> tuple[ViewerModel, Image, Points, Shapes]:
    viewer = ViewerModel()
    data = np.random.default_rng(1).integers(0, 1000, (3, 20, 30)).astype(np.uint16)
    image = viewer.add_layer(Image(data, contrast_limits=(100, 900)))
    points = viewer.add_layer(Points(np.zeros((0, 3)), ndim=3, features={"positive": []}))
    shapes = viewer.add_layer(Shapes(ndim=3))
    viewer.dims.set_point(0, 1)
    return viewer, image, points, shapes


def _add_point(points: Points, position: list[float], positive: bool = True) -> None:
    points.feature_defaults = {"positive": positive}
    points.add([position])


def test_model_input_uses_the_layers_contrast_limits(scene) -> None:
    viewer, image, points, _ = scene
    _add_point(points, [1, 5, 5])
    request = capture_request(viewer, image, points)
    expected = to_uint8_rgb(image.data[1], contrast_limits=(100, 900))
    np.testing.assert_array_equal(model_input(request), expected)


def test_no_prompts_means_no_model_work(scene) -> None:
    viewer, image, points, shapes = scene
    predictor = FakePredictor()
    assert segment_from_layers(viewer, image, points, shapes, predictor=predictor) == []
    assert predictor.encoded == [] and predictor.calls == []


def test_one_object_per_group_and_cache_reuse(scene) -> None:
    viewer, image, points, shapes = scene
    predictor, cache = FakePredictor(), EmbeddingCache()
    shapes.add_rectangles(np.array([[1, 2, 3], [1, 2, 9], [1, 6, 9], [1, 6, 3]]))
    _add_point(points, [1, 4, 4])  # inside the box: refines it
    _add_point(points, [1, 15, 20])  # outside: its own object

    objects = segment_from_layers(viewer, image, points, shapes, predictor=predictor, cache=cache)

    assert len(objects) == 2
    assert len(predictor.encoded) == 1
    np.testing.assert_allclose(predictor.calls[0]["box"], [3, 2, 9, 6])
    np.testing.assert_allclose(predictor.calls[0]["point_coords"], [[4, 4]])
    assert predictor.calls[1]["box"] is None
    assert objects[0].chosen == 1 and objects[0].score == pytest.approx(0.9)
    assert objects[0].mask.sum() == 7 * 5

    # Same plane again, new prompts: the embedding comes from the cache.
    _add_point(points, [1, 16, 21])
    segment_from_layers(viewer, image, points, shapes, predictor=predictor, cache=cache)
    assert len(predictor.encoded) == 1
    assert predictor.restored == 1
    assert (cache.hits, cache.misses) == (1, 1)


def test_unchanged_groups_are_reused_and_extended_groups_refined(scene) -> None:
    viewer, image, points, shapes = scene
    predictor, cache = FakePredictor(), EmbeddingCache()
    shapes.add_rectangles(np.array([[1, 2, 3], [1, 2, 9], [1, 6, 9], [1, 6, 3]]))
    _add_point(points, [1, 15, 20])
    first = segment_from_layers(viewer, image, points, shapes, predictor=predictor, cache=cache)
    first[0].cycle()  # the user picked another candidate of the box object
    calls = len(predictor.calls)

    _add_point(points, [1, 10, 25], positive=False)  # extends the free-points object only
    second = segment_from_layers(
        viewer, image, points, shapes, predictor=predictor, cache=cache, previous=first
    )

    assert len(predictor.calls) == calls + 1  # only the changed object was decoded
    assert second[0].masks is first[0].masks
    assert second[0].chosen == first[0].chosen
    refine = predictor.calls[-1]
    np.testing.assert_array_equal(refine["mask_input"], first[1].low_res[None])
    np.testing.assert_array_equal(refine["point_labels"], [1, 0])

    # Moving the first point is not an extension: decoded afresh, without mask input.
    points.data = np.array([[1, 14, 20], [1, 10, 25]])
    segment_from_layers(
        viewer, image, points, shapes, predictor=predictor, cache=cache, previous=second
    )
    assert predictor.calls[-1]["mask_input"] is None


def test_run_request_yields_between_encode_and_decodes(scene) -> None:
    viewer, image, points, _ = scene
    _add_point(points, [1, 4, 4])
    request = capture_request(viewer, image, points)
    steps = run_request(request, FakePredictor(), EmbeddingCache())
    assert next(steps).stage == "encoded"
    assert next(steps).stage == "decoded"
    with pytest.raises(StopIteration) as stop:
        next(steps)
    result = stop.value.value
    assert len(result.objects) == 1
    assert result.encode_seconds is not None


def test_commit_objects_writes_the_plane_as_one_undo_step(scene) -> None:
    viewer, image, points, shapes = scene
    shapes.add_rectangles(np.array([[1, 2, 3], [1, 2, 9], [1, 6, 9], [1, 6, 3]]))
    objects = segment_from_layers(viewer, image, points, shapes, predictor=FakePredictor())
    labels = create_aligned_labels(image)

    ids = commit_objects(labels, objects, image_layer=image)

    assert ids == [1]
    assert (labels.data[1, 2:7, 3:10] == 1).all()
    assert np.count_nonzero(labels.data) == 35
    labels.undo()
    assert np.count_nonzero(labels.data) == 0
    with pytest.raises(LabelsError):
        commit_objects(Labels(np.zeros((20, 30), np.uint8)), objects, image_layer=image)


def test_real_model_matches_predictor_on_the_same_plane(golden_model) -> None:
    from napari_mobilesam import SamPredictor

    viewer = ViewerModel()
    data = np.random.default_rng(7).normal(500, 120, (2, 48, 64)).astype(np.float32)
    image = viewer.add_layer(
        Image(data, contrast_limits=(200, 800), scale=(1, 2, 2), translate=(0, 5, 5))
    )
    points = viewer.add_layer(Points(np.zeros((0, 3)), ndim=3, features={"positive": []}))
    viewer.dims.set_point(0, 1)
    # World (1, 25, 45) is image pixel (row 10, col 20) on plane 1.
    _add_point(points, [1, 25, 45])

    objects = segment_from_layers(
        viewer, image, points, predictor=SamPredictor(golden_model), multimask_output=True
    )

    reference = SamPredictor(golden_model)
    reference.set_image(to_uint8_rgb(data[1], contrast_limits=(200, 800)))
    masks, scores, low_res = reference.predict(
        point_coords=np.array([[20.0, 10.0]]), point_labels=np.array([1]), multimask_output=True
    )
    assert len(objects) == 1
    np.testing.assert_array_equal(objects[0].masks, masks)
    np.testing.assert_allclose(objects[0].scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(objects[0].low_res_logits, low_res, rtol=1e-4, atol=1e-4)
    assert objects[0].chosen == int(np.argmax(scores))


def test_rgb_plane_reaches_the_model_as_rgb() -> None:
    viewer = ViewerModel()
    data = np.random.default_rng(2).integers(0, 255, (2, 12, 16, 3), dtype=np.uint8)
    image = viewer.add_layer(Image(data, rgb=True))
    points = viewer.add_layer(Points([[1, 4, 5]]))
    viewer.dims.set_point(0, 1)
    predictor = FakePredictor()

    objects = segment_from_layers(viewer, image, points, predictor=predictor)

    np.testing.assert_array_equal(predictor.encoded[0], data[1])
    assert objects[0].mask.shape == (12, 16)


def test_an_unwritable_disk_cache_warns_once_and_clicks_go_on(scene, tmp_path) -> None:
    """ "Keep embeddings on disk" with a folder that is a file: every click still segments."""
    import torch

    from napari_mobilesam.engine.disk_cache import DiskCacheWarning

    class TorchPredictor(FakePredictor):
        model = torch.nn.Linear(2, 2)  # what the disk cache fingerprints

        def get_image_embedding(self) -> torch.Tensor:
            return torch.zeros(1, 256, 64, 64)

    viewer, image, points, _ = scene
    predictor, cache = TorchPredictor(), EmbeddingCache(max_bytes=0)  # nothing kept in memory
    cache.disk_folder = tmp_path / "not-a-folder"
    cache.disk_folder.write_text("a file")
    _add_point(points, [1, 5, 5])
    with pytest.warns(DiskCacheWarning, match="cannot be stored") as caught:
        for _ in range(3):
            objects = segment_from_layers(viewer, image, points, predictor=predictor, cache=cache)
            assert len(objects) == 1
    assert len([w for w in caught if w.category is DiskCacheWarning]) == 1
    assert len(predictor.encoded) == 3
    cache.disk_folder = tmp_path / "a-folder"  # a new setting: the disk cache works again
    segment_from_layers(viewer, image, points, predictor=predictor, cache=cache)
    assert len(list((tmp_path / "a-folder").rglob("*.npy"))) == 1
