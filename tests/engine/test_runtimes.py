"""Encoder runtimes: availability, selection, the graph cache and its failures.

Golden parity of every installed runtime is in ``tests/model/test_golden.py`` (parametrised over
the runtimes); this module checks the machinery around them.
"""

from __future__ import annotations

import copy
import gc
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from golden_cases import ATOL_EMBEDDING, case_files, prompt_set
from runtime_helpers import (
    cache_root,
    first_installed_engine,
    graph_folder,
    runtime_model,
    skip_unless_installed,
)


def test_available_runtimes_lists_all_three():
    from napari_mobilesam.engine.runtimes import RUNTIMES, available_runtimes

    statuses = available_runtimes()
    assert tuple(statuses) == RUNTIMES
    assert statuses["torch"].available and statuses["torch"].reason == ""
    for status in statuses.values():
        assert status.available == (status.reason == "")


def test_missing_package_reason_names_the_extra(monkeypatch):
    import importlib.util

    from napari_mobilesam.engine import runtimes

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("openvino", "onnxruntime") else real(name, *a),
    )
    statuses = runtimes.available_runtimes()
    assert not statuses["openvino"].available
    assert 'pip install "napari-mobilesam[openvino]"' in statuses["openvino"].reason
    assert 'pip install "napari-mobilesam[onnx]"' in statuses["onnxruntime"].reason


def test_explicit_missing_runtime_raises_naming_the_extra(monkeypatch, golden_model):
    from napari_mobilesam.engine import runtimes

    statuses = dict(runtimes.available_runtimes())
    statuses["openvino"] = runtimes.RuntimeStatus(
        "openvino", False, None, 'openvino not installed: pip install "napari-mobilesam[openvino]"'
    )
    monkeypatch.setattr(runtimes, "available_runtimes", lambda: statuses)
    model = copy.deepcopy(golden_model)
    with pytest.raises(runtimes.MissingExtraError, match=r"napari-mobilesam\[openvino\]"):
        runtimes.use_runtime(model, "openvino")
    assert runtimes.runtime_of(model) == "torch"


def test_bad_choices(golden_model):
    from napari_mobilesam.engine.runtimes import use_runtime

    with pytest.raises(ValueError, match="runtime must be one of"):
        use_runtime(golden_model, "tensorrt")
    with pytest.raises(ValueError, match="precision must be one of"):
        use_runtime(golden_model, "torch", precision="int4")
    with pytest.raises(ValueError, match="OpenVINO"):
        use_runtime(golden_model, "onnxruntime", precision="bf16")


def test_torch_and_auto_without_engines_keep_torch(monkeypatch, golden_model):
    from napari_mobilesam.engine import runtimes

    model = copy.deepcopy(golden_model)
    encoder = model.image_encoder
    assert runtimes.use_runtime(model, "torch") is model
    assert model.image_encoder is encoder
    none = {
        name: runtimes.RuntimeStatus(name, name == "torch", None, "" if name == "torch" else "x")
        for name in runtimes.RUNTIMES
    }
    monkeypatch.setattr(runtimes, "available_runtimes", lambda: none)
    runtimes.use_runtime(model, "auto")
    assert model.image_encoder is encoder


@pytest.mark.golden
def test_auto_picks_the_first_engine_and_back_to_torch(synthetic_checkpoint, tmp_path_factory):
    from napari_mobilesam.engine.runtimes import (
        AUTO_ORDER,
        available_runtimes,
        runtime_of,
        runtime_summary,
        use_runtime,
    )
    from napari_mobilesam.model.build import build_mobile_sam

    installed = [name for name in AUTO_ORDER if available_runtimes()[name].available]
    if not installed:
        pytest.skip('no engine installed (pip install "napari-mobilesam[onnx]")')
    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    torch_encoder = model.image_encoder
    use_runtime(model, "auto", cache_folder=graph_folder(tmp_path_factory), progress=print)
    assert runtime_of(model) == installed[0]
    summary = runtime_summary(model)
    assert summary["precision"] == "fp32"
    assert summary["self_check_error"] <= ATOL_EMBEDDING
    use_runtime(model, "torch")
    assert model.image_encoder is torch_encoder


@pytest.mark.golden
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_cached_graph_is_reused(runtime, synthetic_checkpoint, tmp_path_factory):
    from napari_mobilesam.engine.runtimes import use_runtime
    from napari_mobilesam.model.build import build_mobile_sam

    runtime_model(synthetic_checkpoint, runtime, tmp_path_factory)  # builds the cache if needed
    messages: list[str] = []
    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    use_runtime(
        model, runtime, cache_folder=graph_folder(tmp_path_factory), progress=messages.append
    )
    assert messages == []  # nothing exported, converted or checked again


@pytest.mark.golden
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_broken_cached_graph_is_rebuilt_with_one_warning(
    runtime, synthetic_checkpoint, tmp_path, tmp_path_factory
):
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.model.build import build_mobile_sam

    runtime_model(synthetic_checkpoint, runtime, tmp_path_factory)  # the session's graphs
    shutil.copytree(graph_folder(tmp_path_factory), tmp_path, dirs_exist_ok=True)
    graph = "*.onnx" if runtime == "onnxruntime" else "openvino-*/*.bin"
    (cached,) = tmp_path.glob(f"*/{graph}")
    cached.write_bytes(cached.read_bytes()[:1000])  # truncated, as by a full disk

    runtimes._warned_rebuild.clear()
    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    with pytest.warns(RuntimeWarning, match="could not be loaded") as record:
        runtimes.use_runtime(model, runtime, cache_folder=tmp_path, progress=lambda m: None)
    assert len([w for w in record if "could not be loaded" in str(w.message)]) == 1
    assert runtimes.runtime_of(model) == runtime
    assert cached.stat().st_size > 1000


@pytest.mark.golden
def test_failed_self_check(synthetic_checkpoint, tmp_path_factory, tmp_path):
    """An engine that disagrees with torch is refused when asked for, skipped by auto."""
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.model.build import build_mobile_sam

    first = runtimes.AUTO_ORDER[0]
    runtime_model(synthetic_checkpoint, first, tmp_path_factory)  # the session's graphs
    folder = tmp_path / "graphs"
    shutil.copytree(graph_folder(tmp_path_factory), folder)
    for check in folder.glob(f"*/self_check.{first}-*.fp32.json"):
        check.write_text(json.dumps({"max_abs_error": 0.5}))

    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    with pytest.raises(RuntimeError, match="differs from the torch encoder"):
        runtimes.use_runtime(model, first, cache_folder=folder)
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        runtimes.use_runtime(model, "auto", cache_folder=folder, progress=lambda m: None)
    assert any("differs from the torch encoder" in str(w.message) for w in record)
    assert runtimes.runtime_of(model) != first


@pytest.mark.golden
def test_runtime_encoder_batches_and_copies(synthetic_checkpoint, tmp_path_factory):
    model = runtime_model(synthetic_checkpoint, "onnxruntime", tmp_path_factory)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 1024, 1024, generator=gen) * 0.5
    x[1] = x[1].flip(-1)
    with torch.inference_mode():
        out = model.image_encoder(x)
    assert out.shape == (2, 256, 64, 64) and out.dtype == torch.float32
    clone = copy.deepcopy(model)  # e.g. a widget keeping a second predictor
    with torch.inference_mode():
        assert torch.equal(clone.image_encoder(x[1:]), out[1:])


@pytest.mark.golden
def test_stack_and_mobilesam_run_on_a_runtime(synthetic_checkpoint, tmp_path_factory):
    """The stack functions and predictor need nothing runtime-specific."""
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.engine.stack import precompute_stack
    from napari_mobilesam.model.build import build_mobile_sam

    volume = np.random.default_rng(0).integers(0, 255, (1, 96, 128), dtype=np.uint8)
    fast = precompute_stack(
        SamPredictor(runtime_model(synthetic_checkpoint, "onnxruntime", tmp_path_factory)),
        volume,
        progress=False,
    )
    plain = precompute_stack(
        SamPredictor(build_mobile_sam(synthetic_checkpoint, device="cpu")), volume, progress=False
    )
    (a, _), (b, _) = fast.get(0), plain.get(0)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() <= ATOL_EMBEDDING


def test_bf16_detection_reads_cpu_flags(monkeypatch, tmp_path):
    # The check lives in runtime_status (no torch import: the widget asks it too).
    from napari_mobilesam.engine import runtime_status, runtimes

    fake = tmp_path / "cpuinfo"
    fake.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    real_path = runtime_status.Path
    monkeypatch.setattr(
        runtime_status,
        "Path",
        lambda p: real_path(fake) if p == "/proc/cpuinfo" else real_path(p),
    )
    assert runtimes.bf16_supported()[0] is False
    fake.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\n")
    supported, why = runtimes.bf16_supported()
    assert supported and "avx512_bf16" in why


def test_bf16_refused_where_unsupported(monkeypatch, golden_model):
    from napari_mobilesam.engine import runtimes

    monkeypatch.setattr(runtimes, "bf16_supported", lambda: (False, "no avx512_bf16"))
    with pytest.raises(ValueError, match="not available on this CPU"):
        runtimes.use_runtime(copy.deepcopy(golden_model), "openvino", precision="bf16")


@pytest.mark.golden
def test_mobilesam_runtime_and_export(synthetic_checkpoint, tmp_path_factory, monkeypatch):
    from napari_mobilesam.engine import export
    from napari_mobilesam.engine.mobile_sam import MobileSAM

    skip_unless_installed("onnxruntime")
    runtime_model(synthetic_checkpoint, "onnxruntime", tmp_path_factory)  # the session's graphs
    monkeypatch.setenv("NAPARI_MOBILESAM_CACHE", str(cache_root(tmp_path_factory)))
    sam = MobileSAM(synthetic_checkpoint, device="cpu", runtime="onnxruntime")
    assert sam.runtime == "onnxruntime"
    res = sam.predict(np.full((40, 60, 3), 128, np.uint8), points=[30, 20])
    assert res.masks.shape == (1, 40, 60)

    calls = []
    monkeypatch.setattr(export, "export_onnx", lambda *a, **k: calls.append((a, k)))
    sam.export(out="somewhere", opset=18)
    assert calls == [((sam.weights, "somewhere"), {"format": "onnx", "opset": 18})]


@pytest.mark.golden
def test_predictor_loader_builds_per_runtime(synthetic_checkpoint, tmp_path_factory, monkeypatch):
    from napari_mobilesam.engine.predictor_loader import PredictorLoader

    skip_unless_installed("onnxruntime")
    runtime_model(synthetic_checkpoint, "onnxruntime", tmp_path_factory)  # the session's graphs
    monkeypatch.setenv("NAPARI_MOBILESAM_CACHE", str(cache_root(tmp_path_factory)))
    loader = PredictorLoader()
    assert loader.runtime is None
    predictor = loader.get(synthetic_checkpoint, "cpu", runtime="onnxruntime")
    assert loader.runtime == "onnxruntime"
    assert loader.is_loaded(synthetic_checkpoint, "cpu", "onnxruntime")
    assert not loader.is_loaded(synthetic_checkpoint, "cpu")  # torch is another build
    assert loader.get(synthetic_checkpoint, "cpu", runtime="onnxruntime") is predictor
    assert loader.get(synthetic_checkpoint, "cpu").model.image_encoder is not None
    assert loader.runtime == "torch"


@pytest.mark.golden
def test_openvino_bf16_within_its_documented_bound(synthetic_checkpoint, tmp_path_factory):
    """bf16 is approximate: it is held to its own bound, not to the float32 tolerances."""
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.engine.predictor import SamPredictor
    from napari_mobilesam.model.build import build_mobile_sam

    skip_unless_installed("openvino")
    supported, why = runtimes.bf16_supported()
    if not supported:
        pytest.skip(f"no native bf16 here: {why}")
    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    folder = graph_folder(tmp_path_factory)
    runtimes.use_runtime(model, "openvino", precision="bf16", cache_folder=folder, progress=print)
    assert runtimes.runtime_summary(model)["precision"] == "bf16"
    predictor = SamPredictor(model)
    for path in case_files():
        with np.load(path) as z:
            z = {key: z[key] for key in z.files}
        predictor.set_image(z["image"])
        embedding = predictor.get_image_embedding().numpy()
        assert np.abs(embedding - z["image_embedding"]).max() <= runtimes.BF16_ATOL
        for k in range(int(z["num_prompt_sets"])):
            p = prompt_set(z, k)
            if p["batched"]:
                continue
            masks, iou, _ = predictor.predict(
                point_coords=p["point_coords"],
                point_labels=p["point_labels"],
                box=p["box"],
                mask_input=p["mask_input"],
                multimask_output=bool(p["multimask"]),
            )
            np.testing.assert_allclose(iou, p["iou"], rtol=0, atol=runtimes.BF16_IOU_ATOL)
            for mask, ref in zip(masks, p["masks"], strict=True):
                overlap = (mask & ref).sum() / max(1, (mask | ref).sum())
                assert overlap >= runtimes.BF16_MIN_MASK_IOU, (path.name, k, overlap)


@pytest.mark.golden
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_cached_graph_changed_on_disk_is_rebuilt(
    runtime, synthetic_checkpoint, tmp_path, tmp_path_factory
):
    """Weights that changed on disk but still load are caught by the recorded checksum."""
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.model.build import build_mobile_sam

    runtime_model(synthetic_checkpoint, runtime, tmp_path_factory)  # the session's graphs
    shutil.copytree(graph_folder(tmp_path_factory), tmp_path, dirs_exist_ok=True)
    graph = "*.onnx" if runtime == "onnxruntime" else "openvino-*/*.bin"
    (cached,) = tmp_path.glob(f"*/{graph}")
    original = cached.read_bytes()
    # Flip bytes inside the weights only (the graph still loads and runs, with wrong numbers):
    # OpenVINO's .bin is all weights; in the ONNX file, find the largest initializer's bytes.
    start, length = len(original) - 8192, 8192
    if runtime == "onnxruntime":
        import onnx

        weights = max(onnx.load(str(cached)).graph.initializer, key=lambda t: len(t.raw_data))
        start, length = original.find(weights.raw_data[:256]), len(weights.raw_data)
        assert start > 0
    flipped = bytearray(original)
    for offset in range(start + 1, start + length - 1, 64):
        flipped[offset] ^= 0x40  # an exponent bit of float32 values
    cached.write_bytes(bytes(flipped))

    runtimes._warned_rebuild.clear()
    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    messages: list[str] = []
    with pytest.warns(RuntimeWarning, match="does not match the checksum") as record:
        runtimes.use_runtime(model, runtime, cache_folder=tmp_path, progress=messages.append)
    assert len([w for w in record if "checksum" in str(w.message)]) == 1
    assert runtimes.runtime_of(model) == runtime
    assert runtimes.runtime_summary(model)["self_check_error"] <= ATOL_EMBEDDING
    assert any("Checking" in m for m in messages)  # checked again, not taken from the record
    assert cached.read_bytes() != bytes(flipped)
    (check,) = tmp_path.glob(f"*/self_check.{runtime}-*.fp32.json")
    recorded = json.loads(check.read_text())["graph_sha256"]
    files = [cached] if runtime == "onnxruntime" else [cached.with_suffix(".xml"), cached]
    assert recorded == runtimes.file_digest(files)

    # The next load trusts the rebuilt graph: no warning, nothing checked again.
    messages.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        runtimes.use_runtime(model, runtime, cache_folder=tmp_path, progress=messages.append)
    assert messages == []


def test_engine_threads_stay_within_physical_cores(monkeypatch):
    from napari_mobilesam.engine import runtimes

    monkeypatch.setattr(runtimes, "physical_cores", lambda: 2)
    monkeypatch.setattr(runtimes.torch, "get_num_threads", lambda: 8)
    assert runtimes._threads() == 2
    monkeypatch.setattr(runtimes.torch, "get_num_threads", lambda: 1)
    assert runtimes._threads() == 1


def test_physical_cores_counts_each_core_once(monkeypatch, tmp_path):
    """Two hyper-threads of one core count once; CPUs outside the affinity do not count."""
    from napari_mobilesam.engine import runtimes

    blocks = [
        f"processor\t: {cpu}\nphysical id\t: 0\ncore id\t\t: {cpu // 2}\nflags\t: x\n"
        for cpu in range(8)
    ]
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("\n".join(blocks))
    real_path = runtimes.Path
    monkeypatch.setattr(
        runtimes, "Path", lambda p: real_path(cpuinfo) if p == "/proc/cpuinfo" else real_path(p)
    )
    monkeypatch.setattr(runtimes.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert runtimes.physical_cores() == 4
    monkeypatch.setattr(runtimes.os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert runtimes.physical_cores() == 2


def _mapped_files() -> set[str] | None:
    """Paths of the files this process maps (Linux), else None."""
    maps = Path("/proc/self/maps")
    if not maps.is_file():
        return None
    fields = (line.split(None, 5) for line in maps.read_text().splitlines())
    return {f[5].strip() for f in fields if len(f) == 6}


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in module.state_dict().items()}


@pytest.mark.golden
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_engine_maps_torch_weights_and_torch_gets_them_back(
    runtime, synthetic_checkpoint, tmp_path_factory
):
    """While an engine runs, the torch encoder's weights are read from a file in the graph
    cache (same values and strides); back on torch they are in memory and give the same
    embedding bit for bit."""
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.model.build import build_mobile_sam

    skip_unless_installed(runtime)
    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    torch_encoder = model.image_encoder
    reference = _weights(torch_encoder)
    requires_grad = [p.requires_grad for p in torch_encoder.parameters()]
    x = runtimes._self_check_input()
    with torch.inference_mode():
        before = torch_encoder(x)

    runtimes.use_runtime(
        model, runtime, cache_folder=graph_folder(tmp_path_factory), progress=print
    )
    assert runtimes.runtime_of(model) == runtime
    path = runtimes.mapped_weights_file(torch_encoder)
    assert Path(path).name == runtimes.TORCH_WEIGHTS_FILE and Path(path).is_file()
    assert runtimes._same_tensors(torch_encoder.state_dict(), reference)
    mapped = _mapped_files()
    if mapped is not None:
        assert path in mapped

    # A copy (a widget's second predictor) holds its weights in memory and says so; the next
    # use_runtime maps them as well.
    clone = copy.deepcopy(model)
    assert runtimes.mapped_weights_file(clone.image_encoder.torch_encoder) is None
    assert runtimes._same_tensors(clone.image_encoder.torch_encoder.state_dict(), reference)
    runtimes.use_runtime(clone, runtime, cache_folder=graph_folder(tmp_path_factory))
    assert runtimes.mapped_weights_file(clone.image_encoder.torch_encoder) == path
    del clone
    gc.collect()

    runtimes.use_runtime(model, "torch")
    assert model.image_encoder is torch_encoder
    assert runtimes.mapped_weights_file(torch_encoder) is None
    assert not hasattr(torch_encoder, runtimes._MAPPED_FROM)
    assert runtimes._same_tensors(torch_encoder.state_dict(), reference)
    assert [p.requires_grad for p in torch_encoder.parameters()] == requires_grad
    mapped = _mapped_files()
    if mapped is not None:
        assert path not in mapped
    with torch.inference_mode():
        assert torch.equal(torch_encoder(x), before)


@pytest.mark.golden
def test_torch_weights_file_that_differs_is_rewritten(
    synthetic_checkpoint, tmp_path, tmp_path_factory
):
    """A weights file with other values (or not a weights file at all) is never mapped: it
    is written again from the weights in memory."""
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.model.build import build_mobile_sam

    runtime = first_installed_engine()
    runtime_model(synthetic_checkpoint, runtime, tmp_path_factory)  # the session's graphs
    shutil.copytree(graph_folder(tmp_path_factory), tmp_path, dirs_exist_ok=True)

    for damage in ("values", "bytes"):
        model = build_mobile_sam(synthetic_checkpoint, device="cpu")
        reference = _weights(model.image_encoder)
        cache = runtimes._GraphCache(model, tmp_path, runtimes.DEFAULT_OPSET, print)
        path = cache.torch_weights_path
        if damage == "values":
            changed = dict(reference)
            name = next(iter(changed))
            changed[name] = changed[name] + 1.0
            torch.save(changed, path)
        else:
            path.write_bytes(b"not a weights file")
        runtimes.use_runtime(model, runtime, cache_folder=tmp_path, progress=print)
        encoder = model.image_encoder.torch_encoder
        assert runtimes.mapped_weights_file(encoder) == str(path)
        assert runtimes._same_tensors(encoder.state_dict(), reference)
        saved = torch.load(path, weights_only=True)
        assert runtimes._same_tensors(saved, reference)


@pytest.mark.golden
def test_torch_weights_stay_in_memory_where_the_file_cannot_be_written(
    synthetic_checkpoint, tmp_path, tmp_path_factory
):
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.model.build import build_mobile_sam

    runtime = first_installed_engine()
    runtime_model(synthetic_checkpoint, runtime, tmp_path_factory)
    shutil.copytree(graph_folder(tmp_path_factory), tmp_path, dirs_exist_ok=True)
    model = build_mobile_sam(synthetic_checkpoint, device="cpu")
    reference = _weights(model.image_encoder)
    path = runtimes._GraphCache(model, tmp_path, runtimes.DEFAULT_OPSET, print).torch_weights_path
    path.unlink(missing_ok=True)
    path.mkdir()  # neither readable as weights nor replaceable by a file
    runtimes.use_runtime(model, runtime, cache_folder=tmp_path, progress=print)
    assert runtimes.runtime_of(model) == runtime  # the engine is used all the same
    encoder = model.image_encoder.torch_encoder
    assert runtimes.mapped_weights_file(encoder) is None
    assert runtimes._same_tensors(encoder.state_dict(), reference)


@pytest.mark.golden
@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
@pytest.mark.parametrize("optimize", [True, False])
def test_engine_embedding_has_the_torch_encoders_layout(
    runtime, optimize, synthetic_checkpoint, tmp_path_factory
):
    """The decoder is tuned for the torch encoder's output layout (channels-last, default and
    eager model): an engine's embedding comes back in that layout, in torch's aligned memory."""
    from napari_mobilesam.engine import runtimes
    from napari_mobilesam.model.build import build_mobile_sam

    skip_unless_installed(runtime)
    model = build_mobile_sam(synthetic_checkpoint, device="cpu", optimize=optimize)
    x = runtimes._self_check_input()
    with torch.inference_mode():
        expected = model.image_encoder(x)
    runtimes.use_runtime(
        model, runtime, cache_folder=graph_folder(tmp_path_factory), progress=print
    )
    with torch.inference_mode():
        out = model.image_encoder(x)
    assert out.shape == expected.shape and out.stride() == expected.stride()
    assert out.data_ptr() % 64 == 0
    torch.testing.assert_close(out, expected, rtol=0, atol=ATOL_EMBEDDING)


@pytest.mark.golden
def test_failed_switch_leaves_torch_weights_in_memory(
    monkeypatch, synthetic_checkpoint, tmp_path_factory
):
    """A use_runtime that raises leaves torch running the encoder from weights in memory."""
    from napari_mobilesam.engine import runtimes

    runtime = first_installed_engine()
    model = runtime_model(synthetic_checkpoint, runtime, tmp_path_factory)
    torch_encoder = model.image_encoder.torch_encoder
    assert runtimes.mapped_weights_file(torch_encoder) is not None
    statuses = dict(runtimes.available_runtimes())
    statuses[runtime] = runtimes.RuntimeStatus(runtime, False, None, "not installed")
    monkeypatch.setattr(runtimes, "available_runtimes", lambda: statuses)
    with pytest.raises(runtimes.MissingExtraError):
        runtimes.use_runtime(model, runtime)
    assert model.image_encoder is torch_encoder
    assert runtimes.mapped_weights_file(torch_encoder) is None
