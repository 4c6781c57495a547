"""SamAutomaticMaskGenerator: the golden cases (README's matching rule), structure, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from napari_mobilesam.engine.automatic_mask_generator import SamAutomaticMaskGenerator, _nms_indices
from napari_mobilesam.engine.mask_records import (
    build_point_grid,
    generate_crop_boxes,
    mask_to_rle,
    masks_to_boxes,
    remove_small_regions,
    rle_area,
    rle_to_mask,
)

RECORD_KEYS = {
    "segmentation",
    "area",
    "bbox",
    "predicted_iou",
    "point_coords",
    "stability_score",
    "crop_box",
}
MATCH_IOU = 0.99
VALUE_TOL = 1e-3
POINT_TOL = 1e-3
BBOX_TOL = 2
SOFT_EXEMPT = "small_region_postprocess_sensitive"


def amg_cases(golden_dir: Path) -> list[Path]:
    cases = sorted((golden_dir / "amg").glob("amg_*.npz"))
    assert cases, f"no amg_*.npz case in {golden_dir / 'amg'}"
    return cases


# ------------------------------------------------------------------------ reading a case
def _unpack(packed: np.ndarray, h: int, w: int) -> np.ndarray:
    n = packed.shape[0]
    return np.unpackbits(packed, axis=1, count=h * w).reshape(n, h, w).astype(bool)


def _soft_sets(ptr: np.ndarray, idx: np.ndarray) -> list[np.ndarray]:
    return [idx[ptr[j] : ptr[j + 1]].astype(np.int64) for j in range(len(ptr) - 1)]


def _reference(z: np.lib.npyio.NpzFile) -> dict:
    """Reference masks followed by the optional extras, as parallel lists."""
    h, w = z["image"].shape[:2]
    n, x = int(z["num_masks"]), int(z["num_extras"])
    ref = {
        "masks": list(_unpack(z["segmentation_packed"], h, w)) if n else [],
        "iou": list(z["predicted_iou"]),
        "stability": list(z["stability_score"]),
        "point": list(z["point_coords"]),
        "crop_box": [list(b) for b in z["crop_box"]],
        "bbox": [list(b) for b in z["bbox"]],
        "soft": _soft_sets(z["soft_ptr"], z["soft_idx"]),
        "required": [not b for b in z["borderline"]],
        "reason": [str(r) for r in z["borderline_reason"]],
    }
    if x:
        ref["masks"] += list(_unpack(z["extra_segmentation_packed"], h, w))
        ref["iou"] += list(z["extra_predicted_iou"])
        ref["stability"] += list(z["extra_stability_score"])
        ref["point"] += list(z["extra_point_coords"])
        ref["crop_box"] += [list(b) for b in z["extra_crop_box"]]
        ref["bbox"] += [list(b) for b in z["extra_bbox"]]
        ref["soft"] += _soft_sets(z["extra_soft_ptr"], z["extra_soft_idx"])
        ref["required"] += [False] * x
        ref["reason"] += [str(r) for r in z["extra_reason"]]
    return ref


def _params(z: np.lib.npyio.NpzFile) -> dict:
    params = json.loads(str(z["params_json"]))
    if int(z["num_point_grids"]):
        params["point_grids"] = [z[f"point_grid_{k}"] for k in range(int(z["num_point_grids"]))]
    return params


# ------------------------------------------------------------------------ the matching rule
def _sam_xywh(mask: np.ndarray) -> list[int]:
    """The record box of a mask computed the segment-anything way (inclusive, 0s if empty)."""
    x0, y0, x1, y1 = masks_to_boxes(torch.as_tensor(mask)[None])[0].tolist()
    return [x0, y0, x1 - x0, y1 - y0]


def _match(out_masks: list[np.ndarray], out_records: list[dict], ref: dict) -> dict[int, int]:
    """One-to-one pairs (returned index -> reference index) with mask IoU >= 0.99: pairs with
    the same point and crop box first, then the highest IoU."""
    if not out_masks or not ref["masks"]:
        return {}
    a = np.stack([m.ravel() for m in out_masks]).astype(np.float32)
    b = np.stack([m.ravel() for m in ref["masks"]]).astype(np.float32)
    inter = a @ b.T
    union = a.sum(1)[:, None] + b.sum(1)[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    same = np.zeros_like(iou, dtype=bool)
    for i, rec in enumerate(out_records):
        for j in range(len(ref["masks"])):
            same[i, j] = np.allclose(
                rec["point_coords"][0], ref["point"][j], atol=POINT_TOL, rtol=0
            ) and list(rec["crop_box"]) == list(ref["crop_box"][j])
    pairs: dict[int, int] = {}
    used: set[int] = set()
    for prefer_same in (True, False):
        order = sorted(
            ((iou[i, j], i, j) for i in range(len(out_masks)) for j in range(len(ref["masks"]))),
            reverse=True,
        )
        for value, i, j in order:
            if value < MATCH_IOU or i in pairs or j in used:
                continue
            if prefer_same and not same[i, j]:
                continue
            pairs[i] = j
            used.add(j)
    return pairs


def _check_case(path: Path, records: list[dict], z: np.lib.npyio.NpzFile) -> list[str]:
    problems: list[str] = []
    h, w = z["image"].shape[:2]
    ref = _reference(z)
    masks = [np.asarray(r["segmentation"]) for r in records]
    pairs = _match(masks, records, ref)
    for i in range(len(records)):
        if i not in pairs:
            problems.append(f"returned mask {i} (point {records[i]['point_coords']}) unmatched")
    matched_refs = set(pairs.values())
    for j, required in enumerate(ref["required"]):
        if required and j not in matched_refs:
            problems.append(f"reference mask {j} (point {ref['point'][j].tolist()}) missing")
    for i, j in pairs.items():
        rec, mask = records[i], masks[i]
        differ = np.flatnonzero((mask != ref["masks"][j]).ravel())
        if SOFT_EXEMPT not in ref["reason"][j]:
            hard = np.setdiff1d(differ, ref["soft"][j])
            if hard.size:
                problems.append(f"mask {i}~ref {j}: {hard.size} pixels differ outside soft ones")
        if abs(rec["predicted_iou"] - ref["iou"][j]) > VALUE_TOL:
            problems.append(f"mask {i}: predicted_iou {rec['predicted_iou']} vs {ref['iou'][j]}")
        if abs(rec["stability_score"] - ref["stability"][j]) > VALUE_TOL:
            problems.append(
                f"mask {i}: stability {rec['stability_score']} vs {ref['stability'][j]}"
            )
        if not np.allclose(rec["point_coords"][0], ref["point"][j], atol=POINT_TOL, rtol=0):
            problems.append(f"mask {i}: point {rec['point_coords']} vs {ref['point'][j]}")
        if list(rec["crop_box"]) != [int(v) for v in ref["crop_box"][j]]:
            problems.append(f"mask {i}: crop_box {rec['crop_box']} vs {ref['crop_box'][j]}")
        if rec["area"] != int(mask.sum()):
            problems.append(f"mask {i}: area {rec['area']} != its segmentation's {mask.sum()}")
        if list(rec["bbox"]) != _sam_xywh(mask):
            problems.append(f"mask {i}: bbox {rec['bbox']} != its segmentation's box")
        if np.abs(np.asarray(rec["bbox"]) - np.asarray(ref["bbox"][j])).max() > BBOX_TOL:
            problems.append(f"mask {i}: bbox {rec['bbox']} vs reference {ref['bbox'][j]}")
    assert (h, w) == tuple(z["image"].shape[:2])
    return [f"{path.name}: {p}" for p in problems]


def _check_structure(records: list[dict], shape: tuple[int, int]) -> None:
    assert isinstance(records, list)
    for rec in records:
        assert isinstance(rec, dict) and set(rec) == RECORD_KEYS
        seg = rec["segmentation"]
        assert isinstance(seg, np.ndarray) and seg.dtype == np.bool_ and seg.shape == shape
        assert isinstance(rec["area"], int)
        assert len(rec["point_coords"]) == 1 and len(rec["point_coords"][0]) == 2
        assert len(rec["bbox"]) == 4 and len(rec["crop_box"]) == 4
        assert all(isinstance(v, int) for v in rec["bbox"] + rec["crop_box"])
        assert isinstance(rec["predicted_iou"], float)
        assert isinstance(rec["stability_score"], float)


# ------------------------------------------------------------------------ golden
@pytest.mark.golden
@pytest.mark.slow
def test_golden_amg_cases(golden_dir, golden_model):
    problems: list[str] = []
    for path in amg_cases(golden_dir):
        with np.load(path, allow_pickle=False) as z:
            generator = SamAutomaticMaskGenerator(golden_model, **_params(z))
            records = generator.generate(z["image"])
            _check_structure(records, z["image"].shape[:2])
            problems += _check_case(path, records, z)
    assert not problems, "\n".join(problems)


@pytest.mark.golden
def test_matching_rule_rejects_a_wrong_answer(golden_dir):
    """The checker itself fails on a shifted mask, a wrong score and a missing mask."""
    path = amg_cases(golden_dir)[0]
    with np.load(path, allow_pickle=False) as z:
        ref = _reference(z)
        n = int(z["num_masks"])
        records = []
        for j in range(n):
            mask = ref["masks"][j]
            records.append(
                {
                    "segmentation": mask,
                    "area": int(mask.sum()),
                    "bbox": _sam_xywh(mask),
                    "predicted_iou": float(ref["iou"][j]),
                    "point_coords": [list(ref["point"][j])],
                    "stability_score": float(ref["stability"][j]),
                    "crop_box": [int(v) for v in ref["crop_box"][j]],
                }
            )
        assert _check_case(path, records, z) == []
        bad = [dict(r) for r in records]
        bad[0]["predicted_iou"] += 0.01
        bad[1]["segmentation"] = np.roll(bad[1]["segmentation"], 1, axis=1)
        bad[1]["area"] = int(bad[1]["segmentation"].sum())
        bad[1]["bbox"] = _sam_xywh(bad[1]["segmentation"])
        required = [j for j in range(n) if ref["required"][j]]
        del bad[required[-1]]
        problems = _check_case(path, bad, z)
        assert any("predicted_iou" in p for p in problems)
        assert any("missing" in p for p in problems)
        assert any("unmatched" in p or "outside soft" in p for p in problems)


# ------------------------------------------------------------------------ structure and modes
@pytest.fixture(scope="module")
def small_image() -> np.ndarray:
    rng = np.random.default_rng(3)
    image = np.zeros((64, 96, 3), np.uint8)
    image[10:40, 20:60] = 200
    return np.clip(image + rng.integers(0, 30, image.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def small_embedding(golden_model, small_image):
    from napari_mobilesam.engine.predictor import SamPredictor

    predictor = SamPredictor(golden_model)
    predictor.set_image(small_image)
    return predictor.get_image_embedding()


@pytest.fixture(scope="module")
def loose(golden_model, small_embedding):
    """A generator whose filters keep the random-weight masks (4 points a side: quick).

    Encoding is the slow part and says nothing about the generator's logic, so every crop
    gets the whole image's embedding (decoding, filters, NMS and crops run for real).
    """

    def make(**kwargs):
        params = dict(
            points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
        )
        params.update(kwargs)
        gen = SamAutomaticMaskGenerator(golden_model, **params)
        predictor = gen.predictor
        predictor.set_image = lambda image: predictor.set_image_embedding(
            small_embedding, image.shape[:2]
        )
        return gen

    return make


def test_output_modes_agree(loose, small_image):
    binary = loose().generate(small_image)
    _check_structure(binary, small_image.shape[:2])
    assert len(binary) == 48  # 16 points x 3 masks, nothing filtered
    rles = loose(output_mode="uncompressed_rle").generate(small_image)
    assert len(rles) == len(binary)
    for b, r in zip(binary, rles, strict=True):
        assert r["segmentation"]["size"] == list(small_image.shape[:2])
        np.testing.assert_array_equal(rle_to_mask(r["segmentation"]), b["segmentation"])
        assert rle_area(r["segmentation"]) == b["area"] == r["area"]
        assert r["bbox"] == b["bbox"]


def test_coco_rle_needs_pycocotools_or_matches(loose, small_image):
    try:
        import pycocotools.mask as mask_utils
    except ImportError:
        with pytest.raises(ImportError, match="pip install pycocotools"):
            loose(output_mode="coco_rle")
        return
    records = loose(output_mode="coco_rle").generate(small_image)
    binary = loose().generate(small_image)
    for c, b in zip(records, binary, strict=True):
        assert isinstance(c["segmentation"]["counts"], str)
        np.testing.assert_array_equal(
            mask_utils.decode(c["segmentation"]).astype(bool), b["segmentation"]
        )


def test_filters_are_applied(loose, small_image):
    everything = loose().generate(small_image)
    ious = np.array([r["predicted_iou"] for r in everything])
    cut = float(np.median(ious))
    kept = loose(pred_iou_thresh=cut).generate(small_image)
    assert len(kept) == int((ious > cut).sum())
    assert all(r["predicted_iou"] > cut for r in kept)
    stab = np.array([r["stability_score"] for r in everything])
    cut = float(np.median(stab))
    kept = loose(stability_score_thresh=cut).generate(small_image)
    assert len(kept) == int((stab >= cut).sum())
    # NMS at 0 keeps only masks whose boxes do not overlap at all.
    nms = loose(box_nms_thresh=0.0).generate(small_image)
    assert 1 <= len(nms) < len(everything)


def test_batch_size_does_not_change_the_result(loose, small_image):
    a = loose(points_per_batch=64).generate(small_image)
    b = loose(points_per_batch=3).generate(small_image)
    assert len(a) == len(b)
    for ra, rb in zip(a, b, strict=True):
        assert ra["point_coords"] == rb["point_coords"]
        assert (ra["segmentation"] != rb["segmentation"]).sum() <= 2
        assert abs(ra["predicted_iou"] - rb["predicted_iou"]) < 1e-4


def test_memory_budget_bounds_the_upscaled_chunk(loose, small_image):
    gen = loose()
    gen.logits_budget_bytes = 2 * 4 * 64 * 96  # two crop-size float masks at a time
    chunks = []
    original = gen._filter_masks

    def spy(logits, *args, **kwargs):
        chunks.append(tuple(logits.shape))
        return original(logits, *args, **kwargs)

    gen._filter_masks = spy
    records = gen.generate(small_image)
    assert chunks == [(2, 64, 96)] * 24
    assert len(records) == 48


def test_iou_filter_comes_before_upscaling(loose, small_image):
    gen = loose(pred_iou_thresh=0.999)
    calls = []
    gen._filter_masks = lambda logits, *a, **k: calls.append(logits.shape) or []
    assert gen.generate(small_image) == []
    assert calls == []  # nothing passed, nothing was upscaled


def test_point_grids_and_crops(loose, small_image):
    grid = np.array([[0.5, 0.5], [0.25, 0.75]])
    records = loose(points_per_side=None, point_grids=[grid]).generate(small_image)
    points = {tuple(r["point_coords"][0]) for r in records}
    assert points == {(48.0, 32.0), (24.0, 48.0)}
    # Crop layers: every record names one of the crops and lies within it.
    gen = loose(points_per_side=2, crop_n_layers=1, crop_overlap_ratio=0.5)
    boxes, _ = generate_crop_boxes(small_image.shape[:2], 1, 0.5)
    xywh = [[x0, y0, x1 - x0, y1 - y0] for x0, y0, x1, y1 in boxes]
    for rec in gen.generate(small_image):
        assert rec["crop_box"] in xywh
        x, y, w, h = rec["crop_box"]
        seg = rec["segmentation"]
        assert not seg[:y].any() and not seg[y + h :].any()
        assert not seg[:, :x].any() and not seg[:, x + w :].any()


def test_progress_steps_and_early_stop(loose, small_image):
    gen = loose(points_per_batch=5)
    steps = gen.generate_steps(small_image)
    first = next(steps)
    assert (first.prompts_done, first.prompts_total, first.n_crops) == (5, 16, 1)
    steps.close()
    assert not gen.predictor.is_image_set  # closing leaves the predictor clean


def test_empty_result_with_crops_returns_empty_list(loose, small_image):
    gen = loose(crop_n_layers=1, pred_iou_thresh=0.9999, points_per_side=2)
    assert gen.generate(small_image) == []


def test_min_mask_region_area_changes_masks(loose, small_image):
    plain = loose(points_per_side=2).generate(small_image)
    cleaned = loose(points_per_side=2, min_mask_region_area=40).generate(small_image)
    assert cleaned
    for rec in cleaned:
        seg = rec["segmentation"]
        assert rec["area"] == int(seg.sum())
        assert rec["bbox"] == _sam_xywh(seg)
    assert {r["area"] for r in cleaned} != {r["area"] for r in plain}


# ------------------------------------------------------------------------ helpers
def test_point_grid_and_crop_boxes():
    grid = build_point_grid(2)
    np.testing.assert_allclose(grid, [[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])
    boxes, layers = generate_crop_boxes((120, 90), 1, 0.9)
    assert boxes[0] == [0, 0, 90, 120] and layers == [0, 1, 1, 1, 1]
    assert all(0 <= x0 < x1 <= 90 and 0 <= y0 < y1 <= 120 for x0, y0, x1, y1 in boxes)


def test_boxes_are_inclusive_and_empty_is_zero():
    masks = torch.zeros((2, 5, 6), dtype=torch.bool)
    masks[0, 1:3, 2:5] = True
    assert masks_to_boxes(masks).tolist() == [[2, 1, 4, 2], [0, 0, 0, 0]]


def test_rle_round_trip_starts_with_zeros():
    mask = np.zeros((3, 4), bool)
    mask[0, 0] = mask[2, 3] = True
    rle = mask_to_rle(mask)
    assert rle["counts"][0] == 0 and rle["size"] == [3, 4]
    np.testing.assert_array_equal(rle_to_mask(rle), mask)
    assert rle_area(rle) == 2


def test_small_regions_are_eight_connected():
    mask = np.zeros((9, 9), bool)
    mask[1:4, 1:4] = True  # a 9-pixel island
    mask[4, 4] = True  # touches it diagonally only: part of it with 8-connectivity
    mask[7, 7] = True  # a 1-pixel island
    out, changed = remove_small_regions(mask, 5, "islands")
    assert changed and out[4, 4] and not out[7, 7]
    ring = np.ones((7, 7), bool)
    ring[3, 3] = False
    filled, changed = remove_small_regions(ring, 2, "holes")
    assert changed and filled.all()
    # Every island small: the largest one stays.
    tiny = np.zeros((6, 6), bool)
    tiny[0, 0] = True
    tiny[3:5, 3:5] = True
    kept, _ = remove_small_regions(tiny, 100, "islands")
    assert kept.sum() == 4 and not kept[0, 0]


# ------------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"points_per_side": 0}, r"points_per_side must be a whole number in \[1, 256\]"),
        ({"points_per_side": -4}, r"points_per_side must be a whole number in \[1, 256\]"),
        ({"points_per_side": 257}, r"points_per_side must be a whole number in \[1, 256\]"),
        ({"points_per_side": 2.5}, "points_per_side"),
        ({"crop_n_layers": 5}, r"crop_n_layers must be a whole number in \[0, 4\]"),
        ({"crop_n_layers": -1}, "crop_n_layers"),
        ({"crop_n_layers": 10**9}, "crop_n_layers"),
        ({"crop_n_points_downscale_factor": 0}, "crop_n_points_downscale_factor"),
        ({"points_per_batch": 1025}, r"points_per_batch must be a whole number in \[1, 1024\]"),
        ({"pred_iou_thresh": float("nan")}, r"pred_iou_thresh must be a finite number in \[0, 1\]"),
        ({"stability_score_thresh": float("nan")}, "stability_score_thresh"),
        ({"stability_score_thresh": 1.5}, "stability_score_thresh"),
        ({"box_nms_thresh": float("nan")}, "box_nms_thresh"),
        ({"crop_nms_thresh": float("-inf")}, "crop_nms_thresh"),
        ({"stability_score_offset": float("inf")}, "stability_score_offset"),
        ({"crop_overlap_ratio": float("nan")}, "crop_overlap_ratio"),
        ({"min_mask_region_area": -1}, "min_mask_region_area"),
        (
            {"points_per_side": None, "point_grids": [np.full((257 * 256, 2), 0.5)]},
            "1 <= N <= 65536",
        ),
        ({"points_per_side": None}, "exactly one of points_per_side"),
        ({"point_grids": [np.array([[0.5, 0.5]])]}, "exactly one of points_per_side"),
        (
            {"points_per_side": None, "point_grids": [np.array([[0.5, 1.5]])]},
            r"outside \[0, 1\]",
        ),
        (
            {"points_per_side": None, "point_grids": [np.array([[0.5, 0.5]])], "crop_n_layers": 1},
            "needs 2",
        ),
        ({"output_mode": "png"}, "output_mode must be one of"),
        ({"points_per_batch": 0}, "points_per_batch"),
        (
            {"points_per_side": 2, "crop_n_layers": 1, "crop_n_points_downscale_factor": 4},
            "no points",
        ),
    ],
)
def test_bad_parameters(golden_model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamAutomaticMaskGenerator(golden_model, **kwargs)


def test_largest_accepted_parameters_build_at_once(golden_model):
    """The bounds are inclusive, and building at them does no work beyond the point grids."""
    generator = SamAutomaticMaskGenerator(
        golden_model, points_per_side=256, crop_n_layers=4, points_per_batch=1024,
        crop_n_points_downscale_factor=2, pred_iou_thresh=1.0, stability_score_offset=100.0,
    )  # fmt: skip
    assert [len(g) for g in generator.point_grids] == [256**2, 128**2, 64**2, 32**2, 16**2]


@pytest.mark.parametrize("size", [(2, 2), (3, 5), (7, 2)])
def test_crops_stay_inside_tiny_images(size):
    """More crops a side than pixels: no crop starts at or past the edge or is 1 pixel thin."""
    boxes, layers = generate_crop_boxes(size, 3, 512 / 1500)
    assert boxes[0] == [0, 0, size[1], size[0]] and layers[0] == 0
    for x0, y0, x1, y1 in boxes:
        assert x0 >= 0 and x1 <= size[1] and y0 >= 0 and y1 <= size[0]
        assert x1 - x0 >= 2 and y1 - y0 >= 2
    assert len(generate_crop_boxes((480, 640), 2, 512 / 1500)[0]) == 1 + 4 + 16


@pytest.mark.golden
def test_crop_layers_on_a_two_pixel_image(golden_model):
    image = np.repeat(np.array([[0, 255], [255, 0]], np.uint8)[..., None], 3, axis=-1)
    generator = SamAutomaticMaskGenerator(
        golden_model, points_per_side=2, crop_n_layers=2, pred_iou_thresh=0.0,
        stability_score_thresh=0.0, box_nms_thresh=1.0,
    )  # fmt: skip
    records = generator.generate(image)
    assert records and all(r["crop_box"] == [0, 0, 2, 2] for r in records)
    assert all(r["segmentation"].shape == (2, 2) for r in records)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((0, 10, 3), np.uint8), "empty"),
        (np.zeros((1, 50, 3), np.uint8), "at least 2 pixels"),
        (np.full((20, 30, 3), 7, np.uint8), "constant"),
    ],
)
def test_bad_images(loose, image, message):
    with pytest.raises(ValueError, match=message):
        loose().generate(image)


# ------------------------------------------------------------------------ segment-anything
def test_segment_anything_generator_runs_on_our_model(golden_model, small_image):
    """Meta's own generator (where installed) works around our model and agrees with ours."""
    sa = pytest.importorskip("segment_anything")
    params = dict(
        points_per_side=3, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0
    )
    theirs = sa.SamAutomaticMaskGenerator(golden_model, **params).generate(small_image)
    ours = SamAutomaticMaskGenerator(golden_model, **params).generate(small_image)
    assert len(theirs) == len(ours) == 27
    key = lambda r: (tuple(r["point_coords"][0]), round(r["predicted_iou"], 4))  # noqa: E731
    for a, b in zip(sorted(theirs, key=key), sorted(ours, key=key), strict=True):
        assert a["point_coords"] == b["point_coords"]
        assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-4
        assert (a["segmentation"] != b["segmentation"]).sum() <= 2
        assert a["crop_box"] == b["crop_box"]


@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.7, 0.999, 1.0])
def test_nms_keeps_what_torchvision_keeps(threshold: float) -> None:
    """The NMS follows torchvision's rule exactly, including IoUs equal to the threshold in
    float32 (0.3 is 0.30000001 there and is dropped, as torchvision compares in float64)."""
    from torchvision.ops import nms

    rng = np.random.default_rng(int(threshold * 1000))
    for _ in range(100):
        n = int(rng.integers(0, 150))
        corner = rng.integers(0, 100, size=(n, 2))
        boxes = torch.as_tensor(np.concatenate([corner, corner + rng.integers(0, 60, (n, 2))], 1))
        scores = torch.as_tensor(rng.random(n), dtype=torch.float32)
        expected = nms(boxes.float(), scores, threshold).tolist()
        assert _nms_indices(boxes, scores, threshold) == expected


def test_segmenting_everything_does_not_import_torchvision_ops() -> None:
    """torchvision.ops loads torch._dynamo and triton, whose LLVM crashes a process that holds
    a Mesa OpenGL context (napari's canvas): the generator must not need it."""
    code = (
        "import sys\n"
        "import numpy as np\n"
        "from napari_mobilesam import SamAutomaticMaskGenerator, build_mobile_sam\n"
        "image = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)\n"
        "gen = SamAutomaticMaskGenerator(build_mobile_sam(None, device='cpu'), points_per_side=2,\n"
        "    pred_iou_thresh=0, stability_score_thresh=0, box_nms_thresh=0.5)\n"
        "gen.generate(image)\n"
        "print(sorted(m for m in ('torchvision.ops', 'triton') if m in sys.modules))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"
