"""Stack embeddings (memory, disk, encoder), precompute order and resume, the headless 3D API."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
import torch

from fakes import ThresholdPredictor
from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache, model_fingerprint
from napari_mobilesam.engine.embedding_cache import EMBEDDING_BYTES, EmbeddingCache
from napari_mobilesam.engine.propagation import nearest_first_planes as nearest_first
from napari_mobilesam.engine.stack import (
    Cancelled,
    StackEmbeddings,
    precompute_stack,
    segment_stack,
    stack_contrast_limits,
)
from napari_mobilesam.engine.steps import drive


class FakeEncoder:
    """Stands in for the stack's predictor: an 'embedding' that encodes the image's mean."""

    device = torch.device("cpu")

    def __init__(self):
        self.images = []

    def set_image(self, image):
        self.images.append(image)
        self._value = torch.full((1, 256, 64, 64), float(image.mean()))

    def get_image_embedding(self):
        return self._value

    def reset_image(self):
        pass


class CountingVolume:
    """A lazy array that counts plane reads and refuses to be read whole."""

    def __init__(self, shape, dtype=np.uint16):
        self.shape, self.dtype, self.ndim = shape, np.dtype(dtype), len(shape)
        self.reads = []

    def __getitem__(self, index):
        if not all(isinstance(i, (int, np.integer)) for i in index):
            raise AssertionError(f"only single planes may be read, got {index}")
        self.reads.append(tuple(int(i) for i in index))
        rng = np.random.default_rng(abs(hash(index)) % 2**32)
        return rng.integers(0, 4000, self.shape[len(index) :]).astype(self.dtype)

    def __array__(self, *args, **kwargs):
        raise AssertionError("the whole volume must never be loaded")


def fake_stack(volume, **kwargs):
    return StackEmbeddings(FakeEncoder(), volume, contrast_limits=(0, 4000), **kwargs)


def test_nearest_first():
    assert nearest_first(3, 7) == [3, 4, 2, 5, 1, 6, 0]
    assert nearest_first(0, 3) == [0, 1, 2]


def test_contrast_limits_are_shared_by_the_stack():
    vol = np.zeros((5, 10, 10), np.uint16)
    vol[:, :5] = 1000
    vol[4, 0, 0] = 60000  # one hot pixel
    lo, hi = stack_contrast_limits(vol)
    assert lo == 0 and 1000 <= hi < 60000


def test_memory_hits_and_misses():
    vol = np.random.default_rng(0).integers(0, 4000, (6, 20, 30)).astype(np.uint16)
    stack = fake_stack(vol)
    for plane in (2, 3, 2, 2, 3):
        embedding, size = stack.get(plane)
        assert size == (20, 30) and embedding.shape == (1, 256, 64, 64)
    assert stack.encoded == 2 and len(stack.predictor.images) == 2
    assert (stack.memory.hits, stack.memory.misses) == (3, 2)


def test_precompute_nearest_first_cancel_and_resume():
    vol = np.zeros((7, 16, 16), np.uint16)
    stack = fake_stack(vol)
    gen = stack.precompute(around=3)
    seen = [next(gen).plane for _ in range(3)]
    gen.close()  # cancelled after three planes
    assert seen == [3, 4, 2] and stack.encoded == 3
    progress = []
    encoded = drive(stack.precompute(around=3), progress.append)
    assert encoded == 4 and stack.encoded == 7
    assert [p.source for p in progress[:3]] == ["memory"] * 3
    assert {p.source for p in progress[3:]} == {"encoder"}
    assert progress[-1].done == progress[-1].total == 7


def test_lazy_stack_larger_than_the_memory_cap():
    """40 planes through a 2-embedding budget: read one plane at a time, memory stays capped."""
    vol = CountingVolume((40, 64, 48))
    memory = EmbeddingCache(max_bytes=2 * EMBEDDING_BYTES)
    stack = fake_stack(vol, memory=memory)
    assert drive(stack.precompute(around=20)) == 40
    assert len(memory) == 2 and memory.nbytes <= memory.max_bytes
    assert len(vol.reads) == 40 and all(len(r) == 1 for r in vol.reads)


def test_dask_stack():
    da = pytest.importorskip("dask.array")
    vol = da.random.randint(0, 4000, size=(12, 32, 32), chunks=(1, 32, 32))
    memory = EmbeddingCache(max_bytes=3 * EMBEDDING_BYTES)
    stack = fake_stack(vol, memory=memory)
    assert drive(stack.precompute(around=0)) == 12 and len(memory) == 3
    # A plane evicted from memory is encoded again; one still there is not.
    before = stack.encoded
    stack.get(11)
    stack.get(0)
    assert stack.encoded == before + 1


def test_four_d_position_and_axis():
    vol = CountingVolume((3, 5, 16, 16))  # (T, Z, Y, X)
    stack = fake_stack(vol, axis=1, position=(2, 0))
    assert stack.n_planes == 5
    stack.get(4)
    assert vol.reads[-1] == (2, 4)
    with pytest.raises(ValueError, match="position needs 2"):
        fake_stack(vol, axis=0, position=(1,))
    with pytest.raises(ValueError, match="axis must be"):
        fake_stack(vol, axis=2)
    with pytest.raises(IndexError, match="outside"):
        stack.get(5)


def test_disk_cache_roundtrip_and_atomic_files(tmp_path):
    vol = np.random.default_rng(1).integers(0, 4000, (3, 16, 16)).astype(np.uint16)
    disk = DiskEmbeddingCache(tmp_path, model_id="m1")
    stack = fake_stack(vol, disk=disk)
    first = [stack.get(i)[0].clone() for i in range(3)]
    assert len(disk) == 3 and not list(tmp_path.rglob("*.tmp"))
    again = fake_stack(vol, disk=disk)
    for i in range(3):
        embedding, source = again.get_with_source(i)
        assert source == "disk" and torch.equal(embedding, first[i])
    assert again.encoded == 0
    # Another model or other contrast limits never reuse these files.
    other = fake_stack(vol, disk=DiskEmbeddingCache(tmp_path, "m2"))
    assert other.get_with_source(0)[1] == "encoder"


def test_disk_cache_ignores_corrupt_files(tmp_path):
    disk = DiskEmbeddingCache(tmp_path, "m")
    key = disk.key(np.zeros((4, 4, 3), np.uint8))
    disk.put(key, np.ones((1, 256, 64, 64), np.float32))
    next(tmp_path.rglob("*.npy")).write_bytes(b"not an array")
    assert disk.get(key) is None and disk.misses == 1
    with pytest.raises(ValueError, match="embedding must be"):
        disk.put(key, np.ones((1, 256, 32, 32), np.float32))


def _folder_is_a_file(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    folder.write_text("a file where the cache folder should be")
    return folder


def _read_only_folder(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    # Root ignores chmod, so refuse the write as the OS would refuse it to a user.
    monkeypatch.setattr("napari_mobilesam.engine.disk_cache.write_atomically", refuse)
    return tmp_path


def _full_disk(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("numpy.save", full)
    return tmp_path


@pytest.mark.parametrize("broken", [_folder_is_a_file, _read_only_folder, _full_disk])
def test_a_disk_cache_that_cannot_be_written_warns_once(tmp_path, monkeypatch, broken):
    """The disk cache is optional: a stack run goes on from memory, with one warning."""
    from napari_mobilesam.engine.disk_cache import DiskCacheWarning

    disk = DiskEmbeddingCache(broken(tmp_path, monkeypatch), model_id="m")
    vol = np.random.default_rng(4).integers(0, 4000, (3, 16, 16)).astype(np.uint16)
    stack = fake_stack(vol, disk=disk)
    with pytest.warns(DiskCacheWarning, match="going on without it") as caught:
        assert drive(stack.precompute(around=0)) == 3
    assert len([w for w in caught if w.category is DiskCacheWarning]) == 1
    assert stack.encoded == 3 and disk.write_error is not None
    assert stack.get_with_source(2)[1] == "memory"
    assert not list(tmp_path.rglob("*.tmp"))


@pytest.mark.golden
def test_disk_cache_is_reused_by_another_process(tmp_path, synthetic_checkpoint, golden_model):
    """Reopening the same data in a new session loads embeddings instead of encoding."""
    from napari_mobilesam import SamPredictor

    vol = np.random.default_rng(2).integers(0, 4000, (2, 40, 50)).astype(np.uint16)
    np.save(tmp_path / "vol.npy", vol)
    disk = DiskEmbeddingCache(tmp_path / "cache", model_fingerprint(golden_model))
    stack = StackEmbeddings(SamPredictor(golden_model), vol, contrast_limits=(0, 4000), disk=disk)
    assert drive(stack.precompute(0)) == 2
    reference = stack.get(1)[0].numpy()
    np.save(tmp_path / "ref.npy", reference)
    script = textwrap.dedent(
        f"""
        import numpy as np
        from napari_mobilesam import SamPredictor, build_mobile_sam
        from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache, model_fingerprint
        from napari_mobilesam.engine.stack import StackEmbeddings
        model = build_mobile_sam({str(synthetic_checkpoint)!r}, device="cpu")
        disk = DiskEmbeddingCache({str(tmp_path / "cache")!r}, model_fingerprint(model))
        vol = np.load({str(tmp_path / "vol.npy")!r})
        stack = StackEmbeddings(SamPredictor(model), vol, contrast_limits=(0, 4000), disk=disk)
        sources = [stack.get_with_source(i)[1] for i in range(2)]
        assert sources == ["disk", "disk"], sources
        assert stack.encoded == 0
        assert np.array_equal(stack.get(1)[0].numpy(), np.load({str(tmp_path / "ref.npy")!r}))
        print("reused", disk.hits)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "reused 2" in out.stdout


@pytest.mark.golden
def test_segment_stack_end_to_end(golden_model):
    from napari_mobilesam import SamPredictor
    from napari_mobilesam.engine.propagation import PropagationSettings
    from napari_mobilesam.engine.stack import segment_stack

    vol = np.random.default_rng(3).integers(0, 255, (3, 40, 32)).astype(np.uint8)
    predictor = SamPredictor(golden_model)
    settings = PropagationSettings(min_iou=0.0, max_area_ratio=1e9, max_empty=3)
    (obj,) = segment_stack(
        predictor, vol, plane=1, box=[4, 4, 28, 36], settings=settings, progress=False
    )
    assert 1 in obj.masks and obj.masks[1].shape == (40, 32)
    assert set(obj.masks) <= {0, 1, 2}
    with pytest.raises(ValueError, match="points and/or a box"):
        segment_stack(predictor, vol, plane=1, progress=False)


def _zarr_volume(zarr_format, data):
    zarr = pytest.importorskip("zarr")
    z = zarr.create_array(
        store={}, shape=data.shape, chunks=(1, *data.shape[1:]), dtype=data.dtype,
        zarr_format=zarr_format,
    )  # fmt: skip
    z[:] = data
    return z


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_zarr_stacks_are_read_one_plane_at_a_time(monkeypatch, zarr_format):
    """Contrast limits and embeddings read single planes (np.take read the whole array)."""
    data = np.random.default_rng(5).integers(0, 4000, (6, 24, 20)).astype(np.uint16)
    vol = _zarr_volume(zarr_format, data)

    def whole(self, *args, **kwargs):
        raise AssertionError("the whole zarr array was read")

    monkeypatch.setattr(type(vol), "__array__", whole)
    assert stack_contrast_limits(vol) == stack_contrast_limits(data)
    stack = StackEmbeddings(FakeEncoder(), vol)
    assert stack.contrast_limits == stack_contrast_limits(data)
    assert drive(stack.precompute(around=2)) == 6
    np.testing.assert_array_equal(stack.predictor.images[0], stack.model_input(2))


def test_contrast_limits_read_planes_of_any_lazy_array():
    vol = CountingVolume((5, 3, 16, 16))  # refuses to be read whole, or more than a plane
    stack_contrast_limits(vol, axis=1, position=(2, 0))
    assert vol.reads and all(r[0] == 2 and len(r) == 2 for r in vol.reads)
    del vol.ndim  # only shape and __getitem__: still a volume
    stack = StackEmbeddings(FakeEncoder(), vol, axis=1, position=(2, 0))
    assert stack.n_planes == 3 and stack.get_with_source(1)[1] == "encoder"


def test_rgba_stack_limits_leave_out_alpha():
    vol = np.zeros((3, 8, 8, 4), np.uint16)
    vol[..., :3] = np.arange(8, dtype=np.uint16)[:, None] * 585  # colours 0..4095
    vol[..., 3] = 65535  # opaque alpha
    lo, hi = stack_contrast_limits(vol, rgb=True)
    assert lo == 0 and hi <= 4095


def _blob_planes(n=5, shape=(24, 32)):
    planes = []
    for _ in range(n):
        plane = np.zeros(shape, np.float32)
        plane[6:16, 8:20] = 1.0
        planes.append(plane)
    return planes


def test_segment_stack_takes_a_list_of_planes():
    planes = _blob_planes()
    (obj,) = segment_stack(ThresholdPredictor(), planes, 2, box=[8, 6, 19, 15], progress=False)
    assert obj.planes == [0, 1, 2, 3, 4] and obj.masks[0].sum() == 120


@pytest.mark.parametrize(
    ("volume", "error", "message"),
    [
        ([np.zeros((8, 8)), np.zeros((8, 9))], ValueError, "plane 1 is \\(8, 9\\)"),
        ([], ValueError, "empty sequence"),
        ((np.zeros((8, 8)) for _ in range(3)), TypeError, "or a list of 2D planes, not generator"),
    ],
)
def test_unusable_sequences_are_refused(volume, error, message):
    with pytest.raises(error, match=message):
        segment_stack(ThresholdPredictor(), volume, 0, box=[1, 1, 5, 5], progress=False)


def test_a_stack_of_another_volume_is_refused():
    planes = _blob_planes()
    stack = StackEmbeddings(ThresholdPredictor(), planes)
    other = np.stack(planes)  # the same pixels, but not the volume the stack reads
    with pytest.raises(ValueError, match="stack= was built from another volume"):
        segment_stack(ThresholdPredictor(), other, 1, box=[8, 6, 19, 15], stack=stack)
    with pytest.raises(ValueError, match="axis cannot be used with stack="):
        segment_stack(ThresholdPredictor(), planes, 1, box=[8, 6, 19, 15], stack=stack, axis=0)
    predictor = ThresholdPredictor()
    (obj,) = segment_stack(predictor, None, 1, box=[8, 6, 19, 15], stack=stack, progress=False)
    assert len(obj.planes) == 5


def test_a_stack_encoded_by_another_model_is_refused():
    a, b = ThresholdPredictor(), ThresholdPredictor()
    a.model, b.model = object(), object()
    vol = np.stack(_blob_planes())
    with pytest.raises(ValueError, match="another model than predictor's"):
        segment_stack(b, vol, 1, box=[8, 6, 19, 15], stack=StackEmbeddings(a, vol))


def test_the_stack_encodes_with_the_predictor_it_was_given():
    """A wrapper (no .model, another runtime) is used as it is, never bypassed."""

    class Wrapper:
        def __init__(self):
            self.inner, self.encodes = ThresholdPredictor(), 0

        def set_image(self, image, **kwargs):
            self.encodes += 1
            self.inner.set_image(image)

        def get_image_embedding(self):
            return self.inner.get_image_embedding()

    wrapper = Wrapper()
    stack = StackEmbeddings(wrapper, np.stack(_blob_planes()))
    assert stack.get_with_source(3)[1] == "encoder" and wrapper.encodes == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"points": [[1, 2], [3]]}, "points is ragged"),
        ({"points": [[1, 2, 3]]}, "points must be"),
        ({"points": [[1, 2]], "labels": [0.5]}, "labels must be 1 \\(foreground\\)"),
        ({"points": [[1, 2]], "labels": [1, 1]}, "labels must be \\(1,\\), one per point"),
        ({"box": [1, 2, 3]}, "box must be \\(4,\\) XYXY"),
        ({"box": [1, np.nan, 3, 4]}, "box contains NaN"),
    ],
)
def test_bad_start_prompts_name_the_argument(kwargs, message):
    with pytest.raises(ValueError, match=message):
        segment_stack(ThresholdPredictor(), np.stack(_blob_planes()), 1, progress=False, **kwargs)


class GatedEncoder(FakeEncoder):
    """Holds every encode after the first ``free`` ones until the test releases it."""

    def __init__(self, free):
        super().__init__()
        self.free, self.waiting, self.release = free, threading.Event(), threading.Event()

    def set_image(self, image):
        if len(self.images) >= self.free:
            self.waiting.set()
            assert self.release.wait(30), "never released"
        super().set_image(image)


def test_precompute_stack_cancelled_from_another_thread():
    memory = EmbeddingCache()
    encoder, cancel, outcome = GatedEncoder(free=2), threading.Event(), []
    vol = np.random.default_rng(6).integers(0, 4000, (6, 16, 16)).astype(np.uint16)

    def run():
        try:
            outcome.append(
                precompute_stack(encoder, vol, 0, progress=False, cancel=cancel, memory=memory)
            )
        except Cancelled as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert encoder.waiting.wait(30)  # inside the third plane's encode
    cancel.set()
    encoder.release.set()
    thread.join(30)
    (result,) = outcome
    assert isinstance(result, Cancelled) and "precompute_stack was cancelled" in str(result)
    assert len(encoder.images) == 3 and len(memory) == 3  # kept for a later run to resume


def test_segment_stack_cancelled_between_planes():
    cancel = threading.Event()

    class Stopping(ThresholdPredictor):
        def set_image_embedding(self, embedding, original_size):
            super().set_image_embedding(embedding, original_size)
            if self.calls >= 2:
                cancel.set()  # as another thread would, while the walk is on

    with pytest.raises(Cancelled, match="segment_stack was cancelled; nothing is returned"):
        segment_stack(
            Stopping(), _blob_planes(), 2, box=[8, 6, 19, 15], progress=False, cancel=cancel
        )


def test_precompute_stack_around_is_a_start_and_planes_limit_it():
    encoder = FakeEncoder()
    vol = np.random.default_rng(7).integers(0, 4000, (7, 8, 8)).astype(np.uint16)
    stack = precompute_stack(encoder, vol, 5, planes=[4, 5, 6], progress=False)
    assert stack.encoded == 3 and [image.mean() for image in encoder.images] == [
        stack.model_input(p).mean() for p in (5, 6, 4)
    ]
    with pytest.raises(IndexError, match="around must hold plane indices within 0..6"):
        precompute_stack(encoder, vol, 9, progress=False)
    with pytest.raises(IndexError, match="planes must hold plane indices within 0..6"):
        precompute_stack(encoder, vol, 0, planes=[7], progress=False)
