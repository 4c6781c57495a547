"""Stack embeddings (memory, disk, encoder), precompute order and resume, the headless 3D API."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache, model_fingerprint
from napari_mobilesam.engine.embedding_cache import EMBEDDING_BYTES, EmbeddingCache
from napari_mobilesam.engine.propagation import drive
from napari_mobilesam.engine.propagation import nearest_first_planes as nearest_first
from napari_mobilesam.engine.stack import StackEmbeddings, stack_contrast_limits


class FakeEncoder:
    """Stands in for the private SamPredictor: an 'embedding' that encodes the image's mean."""

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


@pytest.fixture(scope="module")
def random_predictor():
    from napari_mobilesam import SamPredictor, build_mobile_sam

    torch.manual_seed(0)
    return SamPredictor(build_mobile_sam(None, device="cpu"))


def fake_stack(predictor, volume, **kwargs):
    stack = StackEmbeddings(predictor, volume, contrast_limits=(0, 4000), **kwargs)
    stack._encoder = FakeEncoder()
    return stack


def test_nearest_first():
    assert nearest_first(3, 7) == [3, 4, 2, 5, 1, 6, 0]
    assert nearest_first(0, 3) == [0, 1, 2]


def test_contrast_limits_are_shared_by_the_stack():
    vol = np.zeros((5, 10, 10), np.uint16)
    vol[:, :5] = 1000
    vol[4, 0, 0] = 60000  # one hot pixel
    lo, hi = stack_contrast_limits(vol)
    assert lo == 0 and 1000 <= hi < 60000


def test_memory_hits_and_misses(random_predictor):
    vol = np.random.default_rng(0).integers(0, 4000, (6, 20, 30)).astype(np.uint16)
    stack = fake_stack(random_predictor, vol)
    for plane in (2, 3, 2, 2, 3):
        embedding, size = stack.get(plane)
        assert size == (20, 30) and embedding.shape == (1, 256, 64, 64)
    assert stack.encoded == 2 and len(stack._encoder.images) == 2
    assert (stack.memory.hits, stack.memory.misses) == (3, 2)


def test_precompute_nearest_first_cancel_and_resume(random_predictor):
    vol = np.zeros((7, 16, 16), np.uint16)
    stack = fake_stack(random_predictor, vol)
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


def test_lazy_stack_larger_than_the_memory_cap(random_predictor):
    """40 planes through a 2-embedding budget: read one plane at a time, memory stays capped."""
    vol = CountingVolume((40, 64, 48))
    memory = EmbeddingCache(max_bytes=2 * EMBEDDING_BYTES)
    stack = fake_stack(random_predictor, vol, memory=memory)
    assert drive(stack.precompute(around=20)) == 40
    assert len(memory) == 2 and memory.nbytes <= memory.max_bytes
    assert len(vol.reads) == 40 and all(len(r) == 1 for r in vol.reads)


def test_dask_stack(random_predictor):
    da = pytest.importorskip("dask.array")
    vol = da.random.randint(0, 4000, size=(12, 32, 32), chunks=(1, 32, 32))
    memory = EmbeddingCache(max_bytes=3 * EMBEDDING_BYTES)
    stack = fake_stack(random_predictor, vol, memory=memory)
    assert drive(stack.precompute(around=0)) == 12 and len(memory) == 3
    # A plane evicted from memory is encoded again; one still there is not.
    before = stack.encoded
    stack.get(11)
    stack.get(0)
    assert stack.encoded == before + 1


def test_four_d_position_and_axis(random_predictor):
    vol = CountingVolume((3, 5, 16, 16))  # (T, Z, Y, X)
    stack = fake_stack(random_predictor, vol, axis=1, position=(2, 0))
    assert stack.n_planes == 5
    stack.get(4)
    assert vol.reads[-1] == (2, 4)
    with pytest.raises(ValueError, match="position needs 2"):
        fake_stack(random_predictor, vol, axis=0, position=(1,))
    with pytest.raises(ValueError, match="axis must be"):
        fake_stack(random_predictor, vol, axis=2)
    with pytest.raises(IndexError, match="outside"):
        stack.get(5)


def test_disk_cache_roundtrip_and_atomic_files(tmp_path, random_predictor):
    vol = np.random.default_rng(1).integers(0, 4000, (3, 16, 16)).astype(np.uint16)
    disk = DiskEmbeddingCache(tmp_path, model_id="m1")
    stack = fake_stack(random_predictor, vol, disk=disk)
    first = [stack.get(i)[0].clone() for i in range(3)]
    assert len(disk) == 3 and not list(tmp_path.rglob("*.tmp"))
    again = fake_stack(random_predictor, vol, disk=disk)
    for i in range(3):
        embedding, source = again.get_with_source(i)
        assert source == "disk" and torch.equal(embedding, first[i])
    assert again.encoded == 0
    # Another model or other contrast limits never reuse these files.
    other = fake_stack(random_predictor, vol, disk=DiskEmbeddingCache(tmp_path, "m2"))
    assert other.get_with_source(0)[1] == "encoder"


def test_disk_cache_ignores_corrupt_files(tmp_path):
    disk = DiskEmbeddingCache(tmp_path, "m")
    key = disk.key(np.zeros((4, 4, 3), np.uint8))
    disk.put(key, np.ones((1, 256, 64, 64), np.float32))
    next(tmp_path.rglob("*.npy")).write_bytes(b"not an array")
    assert disk.get(key) is None and disk.misses == 1
    with pytest.raises(ValueError, match="embedding must be"):
        disk.put(key, np.ones((1, 256, 32, 32), np.float32))


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
