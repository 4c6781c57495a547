"""The ``export`` command: its arguments and the run.

The work itself is :func:`napari_mobilesam.engine.export.export_onnx`.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import NoReturn

from napari_mobilesam.engine.export import (
    DEFAULT_OPSET,
    FORMATS,
    MASK_CHOICES,
    MAX_OPSET,
    MIN_OPSET,
    MissingExtraError,
    check_opset,
    export_onnx,
)

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130

MASKS_HELP = (
    "what mobile_sam.decoder.onnx returns: all (default; segment-anything's default export: 4 "
    "masks, the single-object mask first), single (segment-anything's --return-single-mask "
    "choice), first (the single-object mask only, multimask_output=False), multimask (the 3 "
    "candidates, multimask_output=True). mobile_sam.decoder.single.onnx is always written too"
)


class _OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line (the argument and what is accepted) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see --help)\n")


def _opset(text: str) -> int:
    try:
        return check_opset(int(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a whole number from {MIN_OPSET} to {MAX_OPSET}, got {text!r}"
        ) from None


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
        "--opset",
        type=_opset,
        default=DEFAULT_OPSET,
        help=f"ONNX opset, {MIN_OPSET} to {MAX_OPSET} (default {DEFAULT_OPSET})",
    )
    parser.add_argument(
        "--quantize",
        action="store_true",
        help="dynamic int8 quantisation (ONNX only; smaller and approximate, see docs/export.md)",
    )
    masks = parser.add_mutually_exclusive_group()
    masks.add_argument("--masks", choices=MASK_CHOICES, default=None, help=MASKS_HELP)
    masks.add_argument("--multimask", action="store_true", help="the same as --masks multimask")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the export files in a non-empty folder"
    )
    return parser


def run_export(args: argparse.Namespace) -> int:
    """Run an export from parsed arguments; prints progress, returns the exit status.

    A refused request (folder not empty or read-only, weights missing or not MobileSAM, a
    missing extra, a bad option) prints one line and returns 2; an interrupted export returns
    130 and leaves no file of its own behind.
    """
    from napari_mobilesam.model.checkpoint import CheckpointError

    try:
        result = export_onnx(
            args.weights,
            args.out,
            opset=args.opset,
            quantize=args.quantize,
            format=args.format,
            overwrite=args.overwrite,
            masks=args.masks or ("multimask" if args.multimask else "all"),
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
        print(f"napari-mobilesam export: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("napari-mobilesam export: interrupted; no export file was written.", file=sys.stderr)
        return EXIT_INTERRUPTED
    for path in result.files:
        print(path)
    return 0


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (a cluster's job limit, ``kill``) ends the export like Ctrl+C, so that its clean-up
    runs; by default Python would exit at once and leave the temporaries to the next sweep."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str]) -> int:
    """``napari-mobilesam export ARGS``: parse ``argv`` (what follows the name) and run."""
    parser = _OneLineErrors(prog="napari-mobilesam export")
    add_export_arguments(parser)
    args = parser.parse_args(argv)
    with _sigterm_as_interrupt():
        return run_export(args)
