"""The ``export`` command: its arguments and the run.

The work itself is :func:`napari_mobilesam.engine.export.export_onnx`.
"""

from __future__ import annotations

import argparse
import sys

from napari_mobilesam.engine.export import (
    DEFAULT_OPSET,
    FORMATS,
    MissingExtraError,
    export_onnx,
)


def add_export_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``export`` command's options to ``parser`` (a subcommand parser)."""
    parser.add_argument(
        "--weights",
        default=None,
        help="MobileSAM weights (.pt); default: $NAPARI_MOBILESAM_WEIGHTS, the cache, a download",
    )
    parser.add_argument("--out", required=True, help="output folder (created; must be empty)")
    parser.add_argument(
        "--format", choices=FORMATS, default="onnx", help="onnx (default) or openvino (IR)"
    )
    parser.add_argument(
        "--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})"
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="dynamic int8 quantisation (ONNX only; smaller and approximate, see README)",
    )
    parser.add_argument(
        "--multimask",
        action="store_true",
        help="decoder returns the 3 candidate masks instead of the single-object mask",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the export files in a non-empty folder"
    )
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Run an export from parsed arguments; prints progress, returns the exit status."""
    from napari_mobilesam.model.checkpoint import CheckpointError

    try:
        result = export_onnx(
            args.weights,
            args.out,
            opset=args.opset,
            quantize=args.quantize,
            format=args.format,
            overwrite=args.overwrite,
            multimask=args.multimask,
            progress=lambda message: print(message, file=sys.stderr),
        )
    except (
        FileExistsError,
        PermissionError,
        FileNotFoundError,
        CheckpointError,
        MissingExtraError,
        ValueError,
    ) as exc:
        print(f"export failed: {exc}", file=sys.stderr)
        return 1
    for path in result.files:
        print(path)
    return 0


def main(argv: list[str]) -> int:
    """``napari-mobilesam export ARGS``: parse ``argv`` (what follows the name) and run."""
    parser = argparse.ArgumentParser(prog="napari-mobilesam export")
    add_export_arguments(parser)
    return run_export(parser.parse_args(argv))
