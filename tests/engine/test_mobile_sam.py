"""The one-call ``MobileSAM(...).predict(...)`` interface, checked against the golden vectors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from golden_cases import assert_masks_match, prompt_set

pytestmark = pytest.mark.golden


@pytest.fixture(scope="module")
def case(golden_dir):
    with np.load(golden_dir / "cases" / "case_pub1_480x640.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def sam(synthetic_checkpoint):
    from napari_mobilesam import MobileSAM

    return MobileSAM(synthetic_checkpoint, device="cpu")


def test_several_points_one_object_matches_golden(sam, case):
    p = prompt_set(case, 1)  # two positive + one negative point, single mask
    res = sam.predict(
        case["image"], points=[p["point_coords"].tolist()], labels=[p["point_labels"]]
    )
    assert res.masks.shape == (1, 480, 640) and res.masks.dtype == np.bool_
    assert res.scores.shape == (1,) and res.orig_shape == (480, 640)
    np.testing.assert_allclose(res.scores, p["iou"], atol=1e-4)
    assert_masks_match(res.masks, p["masks"], p["borderline"])


def test_box_matches_golden(sam, case):
    p = prompt_set(case, 2)  # box only, single mask
    res = sam.predict(case["image"], bboxes=p["box"].tolist())
    assert len(res) == 1
    assert_masks_match(res.masks, p["masks"], p["borderline"])


def test_box_with_point_group_is_one_object(sam, case):
    p = prompt_set(case, 3)  # box + one positive + one negative point
    res = sam.predict(
        case["image"], points=[p["point_coords"]], labels=[p["point_labels"]], bboxes=[p["box"]]
    )
    assert_masks_match(res.masks, p["masks"], p["borderline"])


def test_list_of_boxes_gives_one_object_per_box(sam, case):
    p = prompt_set(case, 5)  # a batch of 3 boxes
    res = sam.predict(case["image"], bboxes=p["boxes"])
    assert res.masks.shape == p["masks"][:, 0].shape
    for i in range(len(p["boxes"])):
        assert_masks_match(res.masks[i : i + 1], p["masks"][i], p["borderline"][i])


def test_multimask_picks_the_best_candidate(sam, case):
    p = prompt_set(case, 0)  # single positive point, multimask
    x, y = p["point_coords"][0]
    res = sam.predict(case["image"], points=[x, y], multimask_output=True)
    best = int(np.argmax(p["iou"]))
    np.testing.assert_allclose(res.scores[0], p["iou"][best], atol=1e-4)
    assert_masks_match(res.masks, p["masks"][best : best + 1], p["borderline"][best : best + 1])


def test_one_object_per_point(sam, case):
    pts = [[217.0, 185.0], [400.0, 300.0]]
    res = sam.predict(case["image"], points=pts, labels=[1, 1])
    assert res.masks.shape == (2, 480, 640)
    for i, pt in enumerate(pts):
        single = sam.predict(case["image"], points=pt, labels=[1])
        assert np.array_equal(res.masks[i], single.masks[0])
        assert res.scores[i] == pytest.approx(single.scores[0])
    assert not np.array_equal(res.masks[0], res.masks[1])


def test_image_path_and_encoding_reuse(sam, case, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(case["image"]).save(path)
    from_path = sam.predict(path, points=[100, 100])
    key = sam._image_key
    from_array = sam.predict(case["image"].copy(), points=[100, 100])
    assert sam._image_key == key  # same content: the embedding was reused
    assert np.array_equal(from_path.masks, from_array.masks)


def test_grayscale_16bit_is_normalised(sam, case):
    gray16 = case["image"][..., 1].astype(np.uint16) * 257
    res = sam.predict(gray16, points=[50, 60])
    assert res.masks.shape == (1, 480, 640)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": []}, "at least one prompt"),
        ({"labels": [1]}, "without points"),
        ({"points": [[1, 2], [3, 4]], "labels": [1]}, "one entry per point"),
        ({"points": [1, 2], "labels": [2]}, "1 \\(foreground\\) or 0"),
        ({"points": [1, 2, 3]}, "points must be"),
        ({"bboxes": [1, 2, 3]}, "bboxes must be"),
        ({"points": [[1, 2], [3, 4]], "bboxes": [[0, 0, 5, 5]] * 3}, "counts must match"),
    ],
)
def test_bad_prompts_are_explained(sam, case, kwargs, message):
    with pytest.raises(ValueError, match=message):
        sam.predict(case["image"], **kwargs)


def test_bad_sources_are_explained(sam, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        sam.predict(tmp_path / "missing.png", points=[1, 1])
    with pytest.raises(TypeError, match="image path or a numpy array"):
        sam.predict([[1, 2], [3, 4]], points=[1, 1])


def test_weights_default_to_the_documented_order(monkeypatch, synthetic_checkpoint):
    """MobileSAM() with no path takes $NAPARI_MOBILESAM_WEIGHTS (before cache and download)."""
    from napari_mobilesam import MobileSAM

    monkeypatch.setenv("NAPARI_MOBILESAM_WEIGHTS", str(synthetic_checkpoint))
    sam = MobileSAM(device="cpu")
    assert sam.model.optimized and sam.device.type == "cpu"
