"""ONNX export: the exported encoder + decoder, run by ONNX Runtime, reproduce the golden cases.

The export runs once per test session (it takes about 10 s); the round trips then feed the files
exactly as a third-party tool would (numpy preprocessing, SAM's ONNX decoder interface).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_cases import (
    ATOL_EMBEDDING,
    ATOL_IOU,
    ATOL_LOW_RES_END_TO_END,
    ATOL_LOW_RES_STORED_EMBEDDING,
    assert_masks_match,
    case_files,
    prompt_set,
    prompt_set_ids,
)

ort = pytest.importorskip(
    "onnxruntime", reason='ONNX Runtime is not installed (pip install "napari-mobilesam[onnx]")'
)

CASES = [p.name for p in case_files()] or ["<no golden cases>"]
PROMPT_SETS = prompt_set_ids() or [("<no golden cases>", 0)]
MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


@pytest.fixture(scope="session")
def exported(synthetic_checkpoint):
    """The default export folder, plus a token-0-only ("first") decoder beside it."""
    from onnx_export_helpers import export_once

    return export_once()


@pytest.fixture(scope="session")
def sessions(exported):
    from onnx_export_helpers import session

    result, first = exported
    return {
        "encoder": session(result.encoder),
        "all": session(result.decoder),
        "single": session(result.single_decoder),
        "first": session(first),
    }


@pytest.fixture(scope="session")
def onnx_embedding(sessions, case_data):
    """The ONNX encoder's embedding of each case, from the raw image as a tool would make it."""
    from napari_mobilesam.engine.transforms import ResizeLongestSide

    cache: dict[str, np.ndarray] = {}

    def get(name: str) -> np.ndarray:
        if name not in cache:
            resized = ResizeLongestSide(1024).apply_image(case_data(name)["image"])
            normalised = (resized.astype(np.float32) - MEAN) / STD
            h, w = normalised.shape[:2]
            image = np.zeros((1, 3, 1024, 1024), dtype=np.float32)
            image[0, :, :h, :w] = normalised.transpose(2, 0, 1)
            cache[name] = sessions["encoder"].run(None, {"image": image})[0]
        return cache[name]

    return get


def decoder_inputs(
    embedding: np.ndarray,
    original_size: tuple[int, int],
    coords: np.ndarray | None,
    labels: np.ndarray | None,
    box: np.ndarray | None,
    mask_input: np.ndarray | None,
) -> dict[str, np.ndarray]:
    """SAM's ONNX decoder inputs for one prompt given in the 1024 frame (``*_model`` arrays)."""
    points = [np.zeros((0, 2), np.float32)]
    point_labels = [np.zeros(0, np.float32)]
    if coords is not None:
        points.append(np.asarray(coords, np.float32).reshape(-1, 2))
        point_labels.append(np.asarray(labels, np.float32).reshape(-1))
    if box is not None:
        points.append(np.asarray(box, np.float32).reshape(2, 2))
        point_labels.append(np.array([2, 3], np.float32))
    elif coords is not None:  # SAM's padding point stands in for the missing box
        points.append(np.zeros((1, 2), np.float32))
        point_labels.append(np.array([-1], np.float32))
    has_mask = mask_input is not None
    return {
        "image_embeddings": embedding,
        "point_coords": np.concatenate(points)[None],
        "point_labels": np.concatenate(point_labels)[None],
        "mask_input": (
            np.asarray(mask_input, np.float32).reshape(1, 1, 256, 256)
            if has_mask
            else np.zeros((1, 1, 256, 256), np.float32)
        ),
        "has_mask_input": np.array([1.0 if has_mask else 0.0], np.float32),
        "orig_im_size": np.array(original_size, np.float32),
    }


def run_prompt_set(sessions, embedding: np.ndarray, z, k: int) -> dict[str, np.ndarray]:
    """The golden prompt set ``k`` through the ONNX decoder; batched sets one prompt at a time."""
    p = prompt_set(z, k)
    size = tuple(int(s) for s in z["original_size"])
    # The default decoder returns SAM's 4 masks: token 0 is multimask_output=False's mask,
    # tokens 1..3 are multimask_output=True's candidates.
    chosen = slice(1, None) if p["multimask"] else slice(0, 1)
    if p["batched"]:
        n = len(p["boxes_model"] if p["boxes_model"] is not None else p["point_coords_model"])
        prompts = [
            (
                None if p["point_coords_model"] is None else p["point_coords_model"][i],
                None if p["point_labels"] is None else p["point_labels"][i],
                None if p["boxes_model"] is None else p["boxes_model"][i],
                None,
            )
            for i in range(n)
        ]
    else:
        prompts = [(p["point_coords_model"], p["point_labels"], p["box_model"], p["mask_input"])]
    outputs = []
    for coords, labels, box, mask in prompts:
        if coords is None and box is None:
            pytest.skip("SAM's ONNX interface always carries a point; a mask-only prompt has none")
        inputs = decoder_inputs(embedding, size, coords, labels, box, mask)
        masks, iou, low_res = sessions["all"].run(None, inputs)
        assert masks.shape == (1, 4, *size) and iou.shape == (1, 4)
        outputs.append((masks[:, chosen], iou[:, chosen], low_res[:, chosen]))
    masks, iou, low_res = (np.concatenate(parts) for parts in zip(*outputs, strict=True))
    if not p["batched"]:
        masks, iou, low_res = masks[0], iou[0], low_res[0]
    return {"masks": masks > 0.0, "iou": iou, "low_res": low_res, "ref": p}


def test_export_folder_contents(exported, synthetic_checkpoint):
    from napari_mobilesam.engine.weights import file_sha256

    result, _ = exported
    folder = result.encoder.parent
    assert sorted(p.name for p in folder.iterdir()) == [
        "mobile_sam.anylabeling.yaml",
        "mobile_sam.decoder.onnx",
        "mobile_sam.decoder.single.onnx",
        "mobile_sam.encoder.onnx",
        "mobile_sam.encoder.preprocess.onnx",
        "mobile_sam.export.json",
    ]  # and no temporary left behind
    assert result.files == [
        folder / name
        for name in (
            "mobile_sam.encoder.onnx",
            "mobile_sam.encoder.preprocess.onnx",
            "mobile_sam.decoder.onnx",
            "mobile_sam.decoder.single.onnx",
            "mobile_sam.anylabeling.yaml",
            "mobile_sam.export.json",
        )
    ]
    meta = json.loads(result.metadata.read_text())
    assert meta["source_weights"]["sha256"] == file_sha256(synthetic_checkpoint)
    assert meta["opset"] == 17
    assert meta["encoder"]["preprocessing"]["normalize"]["mean"] == [123.675, 116.28, 103.53]
    assert meta["encoder_preprocess"]["input"]["shape"] == ["H", "W", 3]
    # Which semantics each decoder file has.
    decoders = {d["file"]: d for d in meta["decoders"]}
    assert decoders["mobile_sam.decoder.onnx"]["masks"] == "all"
    assert decoders["mobile_sam.decoder.onnx"]["outputs"]["iou_predictions"] == [1, 4]
    assert decoders["mobile_sam.decoder.single.onnx"]["masks"] == "single"
    assert "select_masks" in decoders["mobile_sam.decoder.single.onnx"]["semantics"]
    assert meta["anylabeling_config"] == "mobile_sam.anylabeling.yaml"
    assert "-1" in meta["decoder"]["point_labels"]
    # Files get the permissions a plain write gives (not mkstemp's 0600).
    from napari_mobilesam.engine.atomic_files import process_umask

    assert (result.decoder.stat().st_mode & 0o777) == 0o666 & ~process_umask()


def test_interface_names_and_shapes(sessions):
    encoder = sessions["encoder"]
    assert [i.name for i in encoder.get_inputs()] == ["image"]
    assert encoder.get_inputs()[0].shape == [1, 3, 1024, 1024]
    assert [o.name for o in encoder.get_outputs()] == ["image_embeddings"]
    decoder = sessions["all"]
    names = [i.name for i in decoder.get_inputs()]
    assert names == [
        "image_embeddings",
        "point_coords",
        "point_labels",
        "mask_input",
        "has_mask_input",
        "orig_im_size",
    ]
    assert isinstance(decoder.get_inputs()[1].shape[1], str)  # N is dynamic
    assert [o.name for o in decoder.get_outputs()] == ["masks", "iou_predictions", "low_res_masks"]


@pytest.mark.golden
@pytest.mark.parametrize("name", CASES)
def test_onnx_encoder_matches_golden(name, case_data, onnx_embedding):
    np.testing.assert_allclose(
        onnx_embedding(name), case_data(name)["image_embedding"], rtol=0, atol=ATOL_EMBEDDING
    )


@pytest.mark.golden
@pytest.mark.parametrize(("name", "k"), PROMPT_SETS)
def test_onnx_round_trip_end_to_end(name, k, sessions, case_data, onnx_embedding):
    """Encoder and decoder files together, as a tool runs them."""
    out = run_prompt_set(sessions, onnx_embedding(name), case_data(name), k)
    p = out["ref"]
    assert out["masks"].shape == p["masks"].shape
    np.testing.assert_allclose(out["iou"], p["iou"], rtol=0, atol=ATOL_IOU)
    np.testing.assert_allclose(out["low_res"], p["low_res"], rtol=0, atol=ATOL_LOW_RES_END_TO_END)
    assert_masks_match(out["masks"], p["masks"], p["borderline"])


@pytest.mark.golden
@pytest.mark.parametrize(("name", "k"), PROMPT_SETS)
def test_onnx_decoder_from_stored_embedding(name, k, sessions, case_data):
    """The decoder file alone, fed the reference embedding: the tighter low-res tolerance."""
    z = case_data(name)
    out = run_prompt_set(sessions, z["image_embedding"], z, k)
    p = out["ref"]
    np.testing.assert_allclose(out["iou"], p["iou"], rtol=0, atol=ATOL_IOU)
    np.testing.assert_allclose(
        out["low_res"], p["low_res"], rtol=0, atol=ATOL_LOW_RES_STORED_EMBEDDING
    )
    assert_masks_match(out["masks"], p["masks"], p["borderline"])


# Sizes far from the tracing example (1500 x 2250): portrait, landscape, square, thin strips
# (a 1-pixel row resizes to 1 row, not 0), and sizes whose resized side rounds half up.
ASPECT_SIZES = [(480, 640), (640, 480), (1024, 1024), (7, 3000), (3000, 7), (1, 5000), (2000, 37)]


@pytest.mark.golden
@pytest.mark.parametrize("size", ASPECT_SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize("multimask", [False, True], ids=["single", "multimask"])
def test_onnx_decoder_any_aspect_ratio(size, multimask, sessions, case_data, golden_model):
    """Masks at the original size match the torch predictor's for every aspect ratio."""
    from napari_mobilesam.engine.predictor import SamPredictor

    embedding = case_data(CASES[0])["image_embedding"]
    predictor = SamPredictor(golden_model)
    predictor.set_image_embedding(torch.as_tensor(embedding), size)
    h, w = size
    point = np.array([[w * 0.4, h * 0.6]])
    box = np.array([w * 0.1, h * 0.2, w * 0.9, h * 0.7])
    logits, iou, low_res = predictor.predict(
        point_coords=point,
        point_labels=np.array([1]),
        box=box,
        multimask_output=multimask,
        return_logits=True,
    )
    t = predictor.transform
    inputs = decoder_inputs(
        embedding,
        size,
        t.apply_coords(point, size),
        np.array([1]),
        t.apply_boxes(box, size),
        None,
    )
    masks_onnx, iou_onnx, low_onnx = sessions["all"].run(None, inputs)
    assert masks_onnx.shape == (1, 4, h, w)
    chosen = slice(1, None) if multimask else slice(0, 1)
    masks_onnx, iou_onnx, low_onnx = masks_onnx[:, chosen], iou_onnx[:, chosen], low_onnx[:, chosen]
    np.testing.assert_allclose(iou_onnx[0], iou, rtol=0, atol=ATOL_IOU)
    np.testing.assert_allclose(low_onnx[0], low_res, rtol=0, atol=ATOL_LOW_RES_STORED_EMBEDDING)
    # Pixels may flip only where the logit sits next to the threshold.
    differ = (masks_onnx[0] > 0) != (logits > 0)
    assert not (differ & (np.abs(logits) >= 1e-3)).any()
    assert np.abs(masks_onnx[0] - logits).max() < 1e-3
    if not multimask:  # the documented token-0-only decoder gives exactly token 0
        first = sessions["first"].run(None, inputs)
        assert first[0].shape == (1, 1, h, w)
        for a, b in zip(first, (masks_onnx, iou_onnx, low_onnx), strict=True):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)


def test_has_mask_input_zero_ignores_mask(sessions, case_data):
    z = case_data(CASES[0])
    inputs = decoder_inputs(
        z["image_embedding"], (480, 640), np.array([[100.0, 200.0]]), np.array([1]), None, None
    )
    plain = sessions["all"].run(None, inputs)
    inputs["mask_input"] = np.full((1, 1, 256, 256), 7.0, np.float32)
    ignored = sessions["all"].run(None, inputs)
    for a, b in zip(plain, ignored, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------------- bad input


def test_refuses_a_folder_with_other_files(tmp_path, synthetic_checkpoint):
    from napari_mobilesam.engine.export import export_onnx

    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty.*overwrite"):
        export_onnx(synthetic_checkpoint, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_refuses_a_file_as_folder(tmp_path):
    from napari_mobilesam.engine.export import prepare_folder

    target = tmp_path / "file.onnx"
    target.write_bytes(b"x")
    with pytest.raises(FileExistsError, match="is a file"):
        prepare_folder(target, overwrite=True)


def test_overwrite_accepts_a_non_empty_folder(tmp_path):
    from napari_mobilesam.engine.export import prepare_folder

    (tmp_path / "old.onnx").write_bytes(b"x")
    assert prepare_folder(tmp_path, overwrite=True) == tmp_path


def test_read_only_folder_message(tmp_path, monkeypatch):
    from napari_mobilesam.engine import export

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    # Root ignores file modes, so the refusal is simulated where the folder is probed.
    monkeypatch.setattr(export.os, "open", denied)
    with pytest.raises(PermissionError, match="read-only"):
        export.prepare_folder(tmp_path / "out", overwrite=False)


def test_not_mobilesam_checkpoint(tmp_path):
    from napari_mobilesam.engine.export import export_onnx
    from napari_mobilesam.model.checkpoint import CheckpointError

    sam_b = {"image_encoder.blocks.0.attn.qkv.weight": torch.zeros(2304, 768)}
    path = tmp_path / "sam_vit_b.pth"
    torch.save(sam_b, path)
    with pytest.raises(CheckpointError, match="SAM ViT-B"):
        export_onnx(path, tmp_path / "out")


def test_missing_extra_names_it(tmp_path, monkeypatch, synthetic_checkpoint):
    import sys

    from napari_mobilesam.engine.export import MissingExtraError, export_onnx

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes "import openvino" fail
    with pytest.raises(MissingExtraError, match=r'pip install "napari-mobilesam\[openvino\]"'):
        export_onnx(synthetic_checkpoint, tmp_path / "out", format="openvino")
    assert not (tmp_path / "out").exists()


def test_quantize_only_for_onnx(tmp_path, synthetic_checkpoint):
    from napari_mobilesam.engine.export import export_onnx

    with pytest.raises(ValueError, match="ONNX format only"):
        export_onnx(synthetic_checkpoint, tmp_path, format="openvino", quantize=True)


def test_cli_arguments_round_trip(tmp_path, capsys):
    import argparse

    from napari_mobilesam.cli.export_command import add_export_arguments, run_export

    parser = add_export_arguments(argparse.ArgumentParser(prog="export"))
    (tmp_path / "x").write_text("x")
    args = parser.parse_args(["--out", str(tmp_path), "--weights", str(tmp_path / "none.pt")])
    assert args.opset == 17 and args.format == "onnx" and not args.quantize
    assert args.masks is None and not args.multimask  # export_onnx's default: "all"
    assert run_export(args) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and len(err.strip().splitlines()) == 1


@pytest.mark.golden
def test_openvino_format_decoder_matches_onnx(exported, sessions, case_data, tmp_path):
    """The decoder as OpenVINO IR (what --format openvino writes) keeps the dynamic sizes."""
    pytest.importorskip("openvino", reason='pip install "napari-mobilesam[openvino]"')
    import openvino as ov

    from napari_mobilesam.engine.export import onnx_to_openvino

    result, _ = exported
    xml = onnx_to_openvino(result.decoder, tmp_path / "mobile_sam.decoder.xml")
    compiled = ov.Core().compile_model(str(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    embedding = case_data(CASES[0])["image_embedding"]
    for size in [(480, 640), (3000, 7), (1, 5000)]:
        inputs = decoder_inputs(
            embedding, size, np.array([[100.0, 200.0]]), np.array([1]), None, None
        )
        masks, iou, low_res = sessions["all"].run(None, inputs)
        out = compiled(inputs)
        ov_masks, ov_iou, ov_low_res = (out[compiled.output(i)] for i in range(3))
        assert ov_masks.shape == masks.shape == (1, 4, *size)
        np.testing.assert_allclose(ov_iou, iou, rtol=0, atol=ATOL_IOU)
        np.testing.assert_allclose(ov_low_res, low_res, rtol=0, atol=ATOL_LOW_RES_STORED_EMBEDDING)
        assert not (((ov_masks > 0) != (masks > 0)) & (np.abs(masks) >= 1e-3)).any()


@pytest.mark.parametrize("opset", [5, 13, 21, 99, -1, 17.0, "17", True])
def test_opset_out_of_range_is_refused_before_any_work(opset, tmp_path):
    from napari_mobilesam.engine.export import export_onnx

    with pytest.raises(ValueError, match=r"opset must be"):
        export_onnx(tmp_path / "weights.pt", tmp_path / "out", opset=opset)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text", ["5", "99", "abc", "17.5", ""])
def test_cli_opset_out_of_range_exits_2_with_one_line(text, tmp_path, capsys):
    from napari_mobilesam.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--out", str(tmp_path / "out"), "--opset", text])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "--opset" in err and "from 14 to 20" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_masks_and_multimask_exclude_each_other(tmp_path, capsys):
    from napari_mobilesam.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--out", str(tmp_path), "--masks", "all", "--multimask"])
    assert exit_info.value.code == 2
    assert "not allowed with" in capsys.readouterr().err


def test_api_masks_checked(tmp_path):
    from napari_mobilesam.engine.export import export_onnx

    with pytest.raises(ValueError, match="masks must be one of"):
        export_onnx(tmp_path / "w.pt", tmp_path / "out", masks="best")
    with pytest.raises(ValueError, match="multimask=True"):
        export_onnx(tmp_path / "w.pt", tmp_path / "out", masks="all", multimask=True)


def _dead_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftover_of_a_killed_export_is_swept(tmp_path):
    """A temporary (file or work folder) that a killed export left behind is removed by the next
    export into the folder; the user's own hidden files stay."""
    import os

    from napari_mobilesam.engine.atomic_files import IMPORTED_AT, temporary_name
    from napari_mobilesam.engine.export import prepare_folder

    out = tmp_path / "out"
    out.mkdir()
    leftovers = []
    for name, folder in (("mobile_sam.encoder.onnx", False), ("export", True)):
        fresh = temporary_name(out / name)
        host, pid, rest = fresh.name.rsplit(".", 2)[0].split(".")[-1].split("-")
        dead = fresh.with_name(fresh.name.replace(f"{host}-{pid}-", f"{host}-{_dead_pid()}-"))
        if folder:
            dead.mkdir()
            (dead / "mobile_sam.decoder.onnx").write_bytes(b"partial")
        else:
            dead.write_bytes(b"partial graph")
        os.utime(dead, (IMPORTED_AT - 60, IMPORTED_AT - 60))
        leftovers.append(dead)
    (out / ".user_notes").write_text("mine")

    with pytest.raises(FileExistsError, match=r"\.user_notes"):
        prepare_folder(out, overwrite=False)  # the user's file still counts
    assert not any(p.exists() for p in leftovers)
    assert (out / ".user_notes").read_text() == "mine"


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch, synthetic_checkpoint):
    """Ctrl+C (and SIGTERM in the command, see below) in the middle: no file of ours is left."""
    from napari_mobilesam.engine import export

    calls = []

    def encoder_made(model, path, opset=17, preprocess=False):  # a finished graph, quickly
        calls.append(path)
        Path(path).write_bytes(b"graph")

    def interrupted(model, path, opset=17, masks="all"):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "export_encoder", encoder_made)
    monkeypatch.setattr(export, "export_decoder", interrupted)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        export.export_onnx(synthetic_checkpoint, out)
    assert calls  # the encoders were made before the decoder was interrupted
    assert list(out.iterdir()) == []  # neither the finished encoders nor a temporary


def test_sigterm_in_the_export_command_raises_keyboard_interrupt():
    """The command turns SIGTERM into KeyboardInterrupt so the clean-up above runs; the signal
    is sent to this very thread, so it is delivered before the next statement (no timing)."""
    import os
    import signal

    from napari_mobilesam.cli.export_command import _sigterm_as_interrupt

    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), _sigterm_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert signal.getsignal(signal.SIGTERM) is before
