"""``MobileSAM(...).predict(image)`` without prompts: automatic segmentation, lists, conf,
and the ``Results`` helpers (boxes, to_labels, plot)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.golden

# Filters off: the synthetic weights' masks all survive; 2x2 points keep it quick.
LOOSE = dict(points_per_side=2, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)


@pytest.fixture(scope="module")
def sam(synthetic_checkpoint):
    from napari_mobilesam import MobileSAM

    return MobileSAM(synthetic_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(5)
    img = rng.integers(0, 60, (72, 96, 3), dtype=np.uint8)
    img[20:50, 30:70] = 220
    return img


def test_no_prompt_runs_automatic_segmentation(sam, image):
    from napari_mobilesam import SamAutomaticMaskGenerator

    res = sam.predict(image, **LOOSE)
    assert res.masks.shape == (12, 72, 96) and res.masks.dtype == np.bool_
    assert res.low_res_logits is None and res.orig_shape == (72, 96)
    # The same masks and scores as the generator's records.
    records = SamAutomaticMaskGenerator(sam.model, **LOOSE).generate(image)
    expected = sorted(r["predicted_iou"] for r in records)
    np.testing.assert_allclose(np.sort(res.scores), expected, atol=1e-5)
    assert sorted(int(m.sum()) for m in res.masks) == sorted(r["area"] for r in records)


def test_prompts_still_work_after_an_automatic_run(sam, image):
    sam.predict(image, **LOOSE)
    res = sam.predict(image, points=[40, 30])
    assert res.masks.shape == (1, 72, 96) and res.low_res_logits.shape == (1, 256, 256)


def test_sources_and_lists(sam, image, tmp_path):
    path = tmp_path / "img.png"
    Image.fromarray(image).save(path)
    results = sam.predict([image, path, Image.fromarray(image)], **LOOSE)
    assert isinstance(results, list) and len(results) == 3
    for res in results[1:]:
        np.testing.assert_array_equal(res.masks, results[0].masks)
    prompted = sam.predict([image, image], points=[40, 30])
    assert [len(r) for r in prompted] == [1, 1]


def test_conf_drops_low_scores_and_verbose_prints(sam, image, capsys):
    everything = sam.predict(image, **LOOSE)
    cut = float(np.median(everything.scores))
    kept = sam.predict(image, conf=cut, verbose=True, **LOOSE)
    assert len(kept) == int((everything.scores >= cut).sum()) and (kept.scores >= cut).all()
    assert "96x72: " in capsys.readouterr().out
    with pytest.raises(TypeError, match="only without points"):
        sam.predict(image, points=[4, 4], points_per_side=8)


def test_results_boxes_labels_and_plot(sam, image):
    res = sam.predict(image, **LOOSE)
    boxes = res.boxes
    assert boxes.shape == (len(res), 4) and boxes.dtype == np.float32
    for mask, (x0, y0, x1, y1) in zip(res.masks, boxes.astype(int), strict=True):
        ys, xs = np.nonzero(mask)
        assert (x0, y0, x1, y1) == (xs.min(), ys.min(), xs.max(), ys.max())
    labels = res.to_labels()
    assert labels.shape == (72, 96) and labels.max() == len(np.unique(labels)) - 1
    picture = res.plot()
    assert picture.shape == (72, 96, 3) and picture.dtype == np.uint8
    assert not np.array_equal(picture, image)  # the masks tint the image
    Image.fromarray(picture)  # a valid RGB picture
    assert np.array_equal(res.plot(alpha=0.0, boxes=False), image)


def test_constant_image_is_explained(sam):
    with pytest.raises(ValueError, match="constant"):
        sam.predict(np.full((40, 40, 3), 9, np.uint8), **LOOSE)
