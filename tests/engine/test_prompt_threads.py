"""Groups of prompts decoded side by side give the same results as one after another."""

from __future__ import annotations

import pytest
import torch

from napari_mobilesam.engine.prompt_threads import map_groups, workers_for


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_map_groups_keeps_order_and_restores_threads(two_threads):
    seen = []

    def decode(i: int) -> tuple[int, int]:
        seen.append(torch.get_num_threads())
        return i, i * i

    assert map_groups(decode, range(7)) == [(i, i * i) for i in range(7)]
    assert set(seen) == {1}  # one torch thread per group
    assert torch.get_num_threads() == 2
    assert workers_for("cpu", 7) == 2
    assert workers_for("cpu", 1) == 1
    assert workers_for("meta", 7) == 1


def test_map_groups_raises_the_groups_error_and_restores_threads(two_threads):
    def decode(i: int) -> int:
        if i == 3:
            raise ValueError("group 3 is bad")
        return i

    with pytest.raises(ValueError, match="group 3 is bad"):
        map_groups(decode, range(6))
    assert torch.get_num_threads() == 2


def test_nested_map_groups_runs_inside_the_worker(two_threads):
    def inner(i: int) -> int:
        return i + 1

    def outer(i: int) -> list[int]:
        return map_groups(inner, [i, i])

    assert map_groups(outer, range(4)) == [[i + 1, i + 1] for i in range(4)]


def test_side_by_side_predictions_equal_sequential_ones(golden_model, two_threads):
    """predict_torch over 7 prompts (groups of 2 on 2 threads) gives bit for bit what it gives
    with one torch thread (groups one after another)."""
    from napari_mobilesam.engine.predictor import SamPredictor

    predictor = SamPredictor(golden_model)
    gen = torch.Generator().manual_seed(3)
    predictor.set_image_embedding(torch.randn(1, 256, 64, 64, generator=gen), (300, 500))
    coords = torch.rand(7, 2, 2, generator=gen) * 1000
    labels = torch.tensor([[1, 0]] * 7)
    side_by_side = predictor.predict_torch(coords, labels, return_logits=True)
    torch.set_num_threads(1)
    one_by_one = predictor.predict_torch(coords, labels, return_logits=True)
    for a, b in zip(side_by_side, one_by_one, strict=True):
        assert torch.equal(a, b)
