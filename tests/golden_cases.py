"""Reading the golden case files (format: ../shared/golden/README.md, section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

# The repository's CI lays ``shared/`` beside the checkout: <parent>/main and <parent>/shared.
# Defined here, not in conftest.py: a conftest.py in a test subfolder would shadow the name.
GOLDEN_DIR = Path(__file__).resolve().parents[2] / "shared" / "golden"
SYNTHETIC_CHECKPOINT = GOLDEN_DIR / "synthetic_mobile_sam.pt"

# Tolerances from the golden README, section 5. Never loosen them.
ATOL_EMBEDDING = 1e-4
ATOL_SPARSE = 1e-5
ATOL_IOU = 1e-4
ATOL_LOW_RES_END_TO_END = 5e-4
ATOL_LOW_RES_STORED_EMBEDDING = 1e-4


def case_files() -> list[Path]:
    """Every case file present, public and held-out alike (nothing is special-cased)."""
    return sorted((GOLDEN_DIR / "cases").glob("case_*.npz"))


def prompt_set_ids() -> list[tuple[str, int]]:
    """(case file name, prompt set index) for every prompt set of every case."""
    ids = []
    for path in case_files():
        with np.load(path) as z:
            ids += [(path.name, k) for k in range(int(z["num_prompt_sets"]))]
    return ids


def prompt_set(z: Mapping[str, np.ndarray], k: int) -> dict[str, np.ndarray | None]:
    """The arrays of prompt set ``k``; a missing input array means that prompt was not given."""
    names = [
        "batched", "multimask", "desc", "point_coords", "point_labels", "box", "boxes",
        "mask_input", "point_coords_model", "box_model", "boxes_model", "sparse_embeddings",
        "masks", "iou", "low_res", "borderline",
    ]  # fmt: skip
    return {n: z.get(f"p{k}_{n}") for n in names}


def assert_masks_match(masks: np.ndarray, ref: np.ndarray, borderline: np.ndarray) -> None:
    """Pixels may differ only where the reference logit is within 1e-3 of the threshold."""
    assert masks.shape == ref.shape and masks.dtype == np.bool_
    outside = (masks != ref) & ~borderline
    assert not outside.any(), f"{int(outside.sum())} mask pixels differ outside the borderline"
