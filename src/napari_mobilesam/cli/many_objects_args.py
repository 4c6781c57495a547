"""Arguments of ``refine``, ``segment --each-point`` and ``everything --seeds`` (argparse only,
so building the parser stays light; the commands are in :mod:`~napari_mobilesam.cli.refine`)."""

from __future__ import annotations

import argparse

REFINE_EXAMPLES = """
        examples:
          napari-mobilesam refine cells.tif --labels cellpose_masks.tif --out refined/
          napari-mobilesam refine stack.tif --labels stardist.tif --out refined/ --box-only
          napari-mobilesam refine stack.zarr --labels seg.zarr --planes 0:10 --out refined/ \\
              --scheduler local:4

        Every label of a plane becomes one object prompted by its bounding box and its own mask
        (SAM's mask_input); overlaps go to the higher predicted IoU; ids stay the source's.
        """


def add_refine_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``refine`` (the common model and scheduling ones are added apart)."""
    parser.add_argument("input", metavar="IMAGE", help="an image file or zarr array")
    parser.add_argument(
        "--labels", required=True, help="label image on IMAGE's grid (file or zarr array)"
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument(
        "--format", choices=("tif", "zarr", "npy"), help="(default tif; zarr for stacks)"
    )
    parser.add_argument(
        "--box-only", action="store_true", help="prompt with each label's box, not its mask too"
    )
    parser.add_argument("--planes", metavar="A:B", help="only planes A..B-1 of stacks")


def add_each_point_argument(segment: argparse.ArgumentParser) -> None:
    segment.add_argument(
        "--each-point",
        action="store_true",
        help="one object per positive point outside the boxes (background points join every "
        "object); decoded in batches, overlaps go to the higher predicted IoU",
    )


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of pixels, got {text!r}")
    return value


def add_seed_arguments(everything: argparse.ArgumentParser) -> None:
    seeds = everything.add_argument_group("seeds instead of a grid")
    seeds.add_argument(
        "--seeds",
        action="store_true",
        help="prompt with blob-detector seeds (one object per seed) instead of a grid",
    )
    seeds.add_argument(
        "--diameter", type=_positive_float, metavar="D", help="object diameter in pixels"
    )
    seeds.add_argument(
        "--seed-threshold",
        type=float,
        default=None,
        metavar="T",
        help="detector threshold (default 0.05; higher finds fewer seeds)",
    )
