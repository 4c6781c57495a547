"""The ``weights`` command: say which weights file would be used; download it if needed.

The work itself is :mod:`napari_mobilesam.engine.weights` (resolution, hash-checked download).
"""

from __future__ import annotations

import argparse
import sys

from napari_mobilesam.cli.arguments import OneLineParser

EXIT_FAILED, EXIT_USAGE = 1, 2


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="napari-mobilesam weights",
        description="Show which MobileSAM weights would be used; download them if needed "
        "(hash-checked, into the cache folder).",
    )
    parser.add_argument("path", nargs="?", default=None, help="an explicit weights file")
    parser.add_argument("--no-download", action="store_true", help="only report, never download")
    return parser


def main(argv: list[str]) -> int:
    """``napari-mobilesam weights [--no-download] [PATH]``; returns the exit code: 0, 1 when the
    weights cannot be obtained, 2 when PATH (or ``$NAPARI_MOBILESAM_WEIGHTS``) names no file."""
    from napari_mobilesam.cli.summary import say
    from napari_mobilesam.engine.weights import (
        WeightsDownloadError,
        describe_resolution,
        resolve_weights,
    )

    args = build_parser().parse_args(argv)
    try:
        source = describe_resolution(args.path, download=not args.no_download)
        say(str(source))
        if source.needs_download and not args.no_download:
            say(str(resolve_weights(args.path, progressbar=True)))
    except FileNotFoundError as exc:
        say(f"napari-mobilesam weights: {exc}", sys.stderr)
        return EXIT_USAGE
    except WeightsDownloadError as exc:
        say(f"napari-mobilesam weights: {exc}", sys.stderr)
        return EXIT_FAILED
    return 0
