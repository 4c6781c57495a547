"""Shared fixtures: where the golden vectors live and a model built from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from golden_cases import GOLDEN_DIR, SYNTHETIC_CHECKPOINT


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    """The golden-vector folder; skips the test where it is absent (outside this repo's CI)."""
    if not SYNTHETIC_CHECKPOINT.is_file():
        pytest.skip(
            f"golden vectors not found at {GOLDEN_DIR} (they sit beside the checkout in CI)"
        )
    return GOLDEN_DIR


@pytest.fixture(scope="session")
def synthetic_checkpoint(golden_dir: Path) -> Path:
    """Path of the synthetic checkpoint that has the official ``mobile_sam.pt`` key layout."""
    return golden_dir / "synthetic_mobile_sam.pt"


@pytest.fixture(scope="session")
def golden_model(synthetic_checkpoint: Path):
    """A float32 CPU model loaded strictly from the synthetic checkpoint (shared, read-only use)."""
    from napari_mobilesam import build_mobile_sam

    return build_mobile_sam(synthetic_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def case_data(golden_dir: Path):
    """``load(name)``: the arrays of one golden predictor case file, read once per session."""
    cache: dict[str, dict[str, np.ndarray]] = {}

    def load(name: str) -> dict[str, np.ndarray]:
        if name not in cache:
            with np.load(golden_dir / "cases" / name) as z:
                cache[name] = {key: z[key] for key in z.files}
        return cache[name]

    return load
