"""The exported files in SAM's ONNX clients, fed exactly what those clients feed.

Facts from the clients' sources that these tests follow, shape for shape:

* samexporter 0.5 (``samexporter.sam_onnx.SegmentAnythingONNX``): resizes the RGB image with PIL
  bilinear to SAM's longest-side-1024 size; a rank-3 encoder input gets that (h, w, 3) image as
  float32 0-255, a rank-4 one the normalised, padded (1, 3, 1024, 1024) image. The decoder gets
  the prompt's points and box corners (labels 2, 3) plus one (0, 0) padding point labelled -1
  (always, also with a box), coordinates scaled by neww / W and newh / H, an empty mask input
  and ``orig_im_size`` = (H, W); it returns every mask the decoder gives (from
  ``low_res_masks``, resized itself).
* X-AnyLabeling 4.2 and AnyLabeling 0.4 (``services/auto_labeling/sam_onnx.py`` and
  ``segment_anything.py``): read the model YAML (``encoder_model_path`` and
  ``decoder_model_path`` tried relative to the YAML's folder; ``input_size``, ``max_width``,
  ``max_height`` required), scale the RGB image into a 684 x 1024 canvas (scale =
  min(1024 / W, 684 / H), zeros around it), feed the canvas as (684, 1024, 3) float32 to the
  encoder, add the padding point to every prompt, map the points by the same scale, pass
  ``orig_im_size`` = (684, 1024) and keep ``masks[0][0]``: the decoder's first mask, which
  segment-anything's ``--return-single-mask`` export makes the ``select_masks`` choice.

The reference for each decoder's semantics is segment-anything's own ``SamOnnxModel`` (what its
``export_onnx_model.py`` exports) around the golden float32 model, fed the same arrays; where
the prompt is what the original predictor gets (no box, so the padding point is SAM's own),
the masks are also compared with the golden vectors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from golden_cases import (
    ATOL_EMBEDDING,
    ATOL_IOU,
    ATOL_LOW_RES_STORED_EMBEDDING,
    assert_masks_match,
    case_files,
    prompt_set,
)

ort = pytest.importorskip(
    "onnxruntime", reason='ONNX Runtime is not installed (pip install "napari-mobilesam[onnx]")'
)

CASES = [p.name for p in case_files()] or ["<no golden cases>"]
APP_CANVAS = (684, 1024)  # X-AnyLabeling's and AnyLabeling's SegmentAnythingONNX.input_size


def _prompt_sets() -> list[tuple[str, int]]:
    """Golden prompt sets a click-and-box client can express: one prompt, no mask input."""
    ids = []
    for path in case_files():
        with np.load(path) as z:
            for k in range(int(z["num_prompt_sets"])):
                p = prompt_set(z, k)
                if not p["batched"] and p["mask_input"] is None:
                    ids.append((path.name, k))
    return ids or [("<no golden cases>", 0)]


PROMPT_SETS = _prompt_sets()


@pytest.fixture(scope="session")
def files(synthetic_checkpoint):
    from onnx_export_helpers import export_once

    return export_once()[0]


@pytest.fixture(scope="session")
def graphs(files):
    from onnx_export_helpers import session

    return {
        "preprocess": session(files.preprocess_encoder),
        "all": session(files.decoder),
        "single": session(files.single_decoder),
    }


@pytest.fixture(scope="session")
def samexporter_embedding(graphs, case_data):
    """``get(name)``: the preprocessing encoder's embedding of a case, fed as samexporter does."""
    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            z = case_data(name)
            encoder_input = samexporter_encoder_input(z["image"])
            np.testing.assert_array_equal(encoder_input, z["input_image"])  # the same resize
            cache[name] = graphs["preprocess"].run(None, {"input_image": encoder_input})[0]
        return cache[name]

    return get


@pytest.fixture(scope="session")
def torch_model(synthetic_checkpoint):
    """The plain float32 model segment-anything's wrapper runs on (the reference)."""
    from onnx_export_helpers import sam_reference

    return sam_reference(False).model


def torch_embedding(model, image_hwc: np.ndarray) -> np.ndarray:
    """The original pipeline's embedding of an image already resized (longest side <= 1024)."""
    x = torch.as_tensor(np.ascontiguousarray(image_hwc), dtype=torch.float32).permute(2, 0, 1)
    with torch.no_grad():
        return model.image_encoder(model.preprocess(x[None])).numpy()


def marks_of(p) -> list[dict]:
    """A golden prompt set as the clients' marks (original pixels, (x, y))."""
    marks = []
    if p["point_coords"] is not None:
        for (x, y), label in zip(p["point_coords"], p["point_labels"], strict=True):
            marks.append({"type": "point", "data": [float(x), float(y)], "label": int(label)})
    if p["box"] is not None:
        marks.append({"type": "rectangle", "data": [float(v) for v in p["box"]]})
    return marks


def points_of(marks: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Marks -> (N, 2) points and (N,) labels, box corners labelled 2 and 3, as the clients do."""
    points, labels = [], []
    for mark in marks:
        if mark["type"] == "point":
            points.append(mark["data"])
            labels.append(mark["label"])
        else:
            x0, y0, x1, y1 = mark["data"]
            points += [[x0, y0], [x1, y1]]
            labels += [2, 3]
    return np.array(points, np.float64), np.array(labels, np.float64)


def resized_shape(h: int, w: int) -> tuple[int, int]:
    scale = 1024 / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def client_decoder_feed(
    embedding: np.ndarray,
    marks: list[dict],
    frame: tuple[int, int],
    size_for_coords: tuple[int, int],
    extra_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """The decoder inputs samexporter and the apps build: points + box corners + one padding
    point, mapped with SAM's apply_coords for ``size_for_coords`` (then ``extra_scale``, the
    apps' canvas scale), an empty mask input, ``orig_im_size`` = ``frame``."""
    points, labels = points_of(marks)
    coords = np.concatenate([points, [[0.0, 0.0]]])[None]
    labels = np.concatenate([labels, [-1]])[None].astype(np.float32)
    new_h, new_w = resized_shape(*size_for_coords)
    coords[..., 0] *= new_w / size_for_coords[1]
    coords[..., 1] *= new_h / size_for_coords[0]
    coords = (coords * extra_scale).astype(np.float32)
    return {
        "image_embeddings": embedding,
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array(frame, np.float32),
    }


# ------------------------------------------------------------------ the preprocessing encoder


def test_preprocess_encoder_interface(graphs):
    encoder = graphs["preprocess"]
    (image,) = encoder.get_inputs()
    assert image.name == "input_image" and image.type == "tensor(float)"
    assert len(image.shape) == 3 and image.shape[2] == 3
    assert all(isinstance(side, str) for side in image.shape[:2])  # H and W dynamic
    (output,) = encoder.get_outputs()
    assert output.name == "image_embeddings" and output.shape == [1, 256, 64, 64]


@pytest.mark.golden
@pytest.mark.parametrize("name", CASES)
def test_preprocess_encoder_matches_golden(name, graphs, case_data):
    """The resized image the original fed to normalisation gives the original embedding."""
    z = case_data(name)
    embedding = graphs["preprocess"].run(None, {"input_image": z["input_image"].astype(np.float32)})
    np.testing.assert_allclose(embedding[0], z["image_embedding"], rtol=0, atol=ATOL_EMBEDDING)


@pytest.mark.golden
@pytest.mark.parametrize("shape", [(1024, 37), (300, 500)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_preprocess_encoder_any_size(shape, graphs, torch_model):
    """Any (H, W) with the longest side at most 1024: a strip and an image smaller than 1024
    (the golden cases cover landscape and portrait, the app flow below its 684 x 1024 canvas)."""
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, (*shape, 3)).astype(np.uint8)
    ours = graphs["preprocess"].run(None, {"input_image": image.astype(np.float32)})[0]
    assert ours.shape == (1, 256, 64, 64)
    np.testing.assert_allclose(
        ours, torch_embedding(torch_model, image), rtol=0, atol=ATOL_EMBEDDING
    )


# --------------------------------------------------------------------------- SAM's semantics


@pytest.mark.golden
@pytest.mark.parametrize(("name", "k"), PROMPT_SETS)
@pytest.mark.parametrize("decoder", ["all", "single"])
def test_decoders_have_sams_semantics(name, k, decoder, graphs, case_data):
    """Each decoder file gives what segment-anything's export gives for the same inputs (the
    clients' inputs: padding point also with a box), and the golden masks where SAM's rule
    points at a mask the golden set holds."""
    from onnx_export_helpers import assert_outputs_match, run_sam_reference

    z = case_data(name)
    p = prompt_set(z, k)
    size = tuple(int(s) for s in z["original_size"])
    feed = client_decoder_feed(z["image_embedding"], marks_of(p), size, size)
    outputs = graphs[decoder].run(None, feed)
    reference = run_sam_reference(decoder == "single", feed)
    assert outputs[0].shape == (1, 4 if decoder == "all" else 1, *size)
    assert_outputs_match(outputs, reference, ATOL_IOU, ATOL_LOW_RES_STORED_EMBEDDING)

    if p["box"] is not None:
        return  # the clients' extra padding point makes it another prompt than the golden one
    masks = outputs[0][0] > 0
    n_points = feed["point_labels"].shape[1]
    if decoder == "all":
        chosen = slice(1, None) if p["multimask"] else slice(0, 1)
        assert_masks_match(masks[chosen], p["masks"], p["borderline"])
        np.testing.assert_allclose(outputs[1][0, chosen], p["iou"], rtol=0, atol=ATOL_IOU)
    elif n_points >= 3 and not p["multimask"]:
        # 2 or more points + padding: select_masks picks token 0, the golden single mask.
        assert_masks_match(masks, p["masks"], p["borderline"])
    elif n_points == 2 and p["multimask"]:
        # One click + padding: the best-scored of the 3 candidates.
        best = int(np.argmax(p["iou"]))
        assert_masks_match(masks, p["masks"][best : best + 1], p["borderline"][best : best + 1])


@pytest.mark.golden
@pytest.mark.parametrize("n_points", [1, 2, 3, 6])
def test_single_mask_rule_follows_the_point_count(n_points, graphs, case_data):
    """select_masks reads N from the input, not from the 3-point tracing example: with N = 2
    (one click + padding) the winner is the best of tokens 1..3, from N = 3 on it is token 0."""
    z = case_data(CASES[0])
    rng = np.random.default_rng(n_points)
    coords = rng.uniform(0, 600, (1, n_points, 2)).astype(np.float32)
    labels = rng.integers(0, 2, (1, n_points)).astype(np.float32)
    labels[0, -1] = -1 if n_points > 1 else 1
    feed = {
        "image_embeddings": z["image_embedding"],
        "point_coords": coords,
        "point_labels": labels,
        "mask_input": np.zeros((1, 1, 256, 256), np.float32),
        "has_mask_input": np.zeros(1, np.float32),
        "orig_im_size": np.array([480, 640], np.float32),
    }
    _, all_iou, all_low = graphs["all"].run(None, feed)
    _, iou, low = graphs["single"].run(None, feed)
    score = all_iou[0] + (n_points - 2.5) * np.array([1000, 0, 0, 0])
    expected = int(np.argmax(score))
    assert expected == (0 if n_points >= 3 else int(np.argmax(all_iou[0, 1:])) + 1)
    np.testing.assert_allclose(iou[0, 0], all_iou[0, expected], rtol=0, atol=1e-6)
    np.testing.assert_allclose(low[0, 0], all_low[0, expected], rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------ the clients


def samexporter_encoder_input(image_rgb: np.ndarray) -> np.ndarray:
    """What samexporter feeds a rank-3 encoder: the PIL-resized RGB image as float32."""
    h, w = resized_shape(*image_rgb.shape[:2])
    return np.asarray(Image.fromarray(image_rgb).resize((w, h), Image.BILINEAR), np.float32)


@pytest.mark.golden
@pytest.mark.parametrize(("name", "k"), PROMPT_SETS)
def test_samexporter_flow(name, k, graphs, case_data, samexporter_embedding):
    """samexporter's inputs and outputs, shape for shape, on the preprocessing encoder and the
    default decoder: SAM's default output (4 masks), the original embedding and masks."""
    from onnx_export_helpers import assert_outputs_match, run_sam_reference

    z = case_data(name)
    p = prompt_set(z, k)
    size = tuple(int(s) for s in z["original_size"])
    embedding = samexporter_embedding(name)
    np.testing.assert_allclose(embedding, z["image_embedding"], rtol=0, atol=ATOL_EMBEDDING)
    feed = client_decoder_feed(embedding, marks_of(p), size, size)
    outputs = graphs["all"].run(None, feed)
    assert [o.shape for o in outputs] == [(1, 4, *size), (1, 4), (1, 4, 256, 256)]
    reference = run_sam_reference(False, feed)
    assert_outputs_match(outputs, reference, ATOL_IOU, ATOL_LOW_RES_STORED_EMBEDDING)


def test_anylabeling_config(files):
    """The YAML names the preprocessing encoder and the single-mask decoder, relative to its
    folder, with every key the apps require."""
    import yaml

    config = yaml.safe_load(files.anylabeling_config.read_text(encoding="utf-8"))
    assert config["type"] == "segment_anything"
    for key in ("name", "display_name", "encoder_model_path", "decoder_model_path"):
        assert isinstance(config[key], str) and config[key]
    assert (config["input_size"], config["max_width"], config["max_height"]) == (1024, 1024, 682)
    folder = files.anylabeling_config.parent
    assert folder / config["encoder_model_path"] == files.preprocess_encoder
    assert folder / config["decoder_model_path"] == files.single_decoder
    assert not Path(config["encoder_model_path"]).is_absolute()


@pytest.mark.golden
@pytest.mark.parametrize("name", CASES)
def test_anylabeling_flow(name, files, case_data, torch_model):
    """X-AnyLabeling's / AnyLabeling's inputs, shape for shape, on the files the YAML names:
    the 684 x 1024 canvas, the canvas scale on the points, the first mask kept."""
    import yaml
    from onnx_export_helpers import assert_outputs_match, run_sam_reference, session

    config = yaml.safe_load(files.anylabeling_config.read_text(encoding="utf-8"))
    folder = files.anylabeling_config.parent
    encoder = session(folder / config["encoder_model_path"])
    decoder = session(folder / config["decoder_model_path"])

    z = case_data(name)
    image = z["image"]
    h, w = image.shape[:2]
    scale = min(APP_CANVAS[1] / w, APP_CANVAS[0] / h)
    canvas = np.zeros((*APP_CANVAS, 3), np.uint8)
    scaled = Image.fromarray(image).resize((round(w * scale), round(h * scale)), Image.BILINEAR)
    canvas[: scaled.height, : scaled.width] = np.asarray(scaled)

    embedding = encoder.run(None, {encoder.get_inputs()[0].name: canvas.astype(np.float32)})[0]
    np.testing.assert_allclose(
        embedding, torch_embedding(torch_model, canvas), rtol=0, atol=ATOL_EMBEDDING
    )
    for k in range(int(z["num_prompt_sets"])):
        p = prompt_set(z, k)
        if p["batched"] or p["mask_input"] is not None:
            continue
        feed = client_decoder_feed(embedding, marks_of(p), APP_CANVAS, APP_CANVAS, scale)
        outputs = decoder.run(None, feed)
        assert outputs[0].shape == (1, 1, *APP_CANVAS)  # masks[0][0] is the chosen mask
        reference = run_sam_reference(True, feed)
        assert_outputs_match(outputs, reference, ATOL_IOU, ATOL_LOW_RES_STORED_EMBEDDING)


@pytest.mark.golden
@pytest.mark.parametrize("encoder", ["preprocess", "plain"])
def test_samexporter_own_client(encoder, files, case_data):
    """samexporter's own SegmentAnythingONNX, where it is installed (its pins on torch and onnx
    keep it out of the testing extra; ``pip install --no-deps samexporter opencv-python-headless``
    brings it next to this package): both encoder layouts, the default decoder, golden masks."""
    sam_onnx = pytest.importorskip("samexporter.sam_onnx", reason="samexporter not installed")
    from onnx_export_helpers import assert_outputs_match, run_sam_reference

    path = files.preprocess_encoder if encoder == "preprocess" else files.encoder
    client = sam_onnx.SegmentAnythingONNX(str(path), str(files.decoder), providers=["cpu"])
    recorded = []
    real_run = client.decoder_session.run

    class Recorder:  # the client's own decoder call, kept to compare with SAM's wrapper
        def run(self, names, feed):
            outputs = real_run(names, feed)
            recorded.append((feed, outputs))
            return outputs

    client.decoder_session = Recorder()
    for name in CASES:
        z = case_data(name)
        embedded = client.encode(np.ascontiguousarray(z["image"][..., ::-1]))  # it takes BGR
        np.testing.assert_allclose(
            embedded["image_embedding"], z["image_embedding"], rtol=0, atol=ATOL_EMBEDDING
        )
        for k in range(int(z["num_prompt_sets"])):
            p = prompt_set(z, k)
            if p["batched"] or p["mask_input"] is not None:
                continue
            masks = client.predict_masks(embedded, marks_of(p))
            assert masks.shape == (1, 4, *z["original_size"])  # SAM's default export's shape
            feed, outputs = recorded[-1]
            reference = run_sam_reference(False, feed)
            assert_outputs_match(outputs, reference, ATOL_IOU, ATOL_LOW_RES_STORED_EMBEDDING)
            if p["box"] is None:  # the original predictor's prompt: its golden masks
                chosen = slice(1, None) if p["multimask"] else slice(0, 1)
                assert_masks_match(masks[0, chosen] > 0, p["masks"], p["borderline"])


def test_openvino_format_preprocess_encoder(files, graphs, tmp_path):
    """The preprocessing encoder as OpenVINO IR (what --format openvino writes) keeps H and W
    dynamic and gives the ONNX graph's embedding."""
    pytest.importorskip("openvino", reason='pip install "napari-mobilesam[openvino]"')
    import openvino as ov

    from napari_mobilesam.engine.export import onnx_to_openvino

    xml = onnx_to_openvino(files.preprocess_encoder, tmp_path / "encoder.preprocess.xml")
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    image = np.random.default_rng(3).uniform(0, 255, (1024, 37, 3)).astype(np.float32)
    ours = compiled({0: image})[compiled.output(0)]
    onnx = graphs["preprocess"].run(None, {"input_image": image})[0]
    assert ours.shape == onnx.shape == (1, 256, 64, 64)
    np.testing.assert_allclose(ours, onnx, rtol=0, atol=ATOL_EMBEDDING)
