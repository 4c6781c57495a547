"""The ``napari-mobilesam`` command (also ``python -m napari_mobilesam``).

Subcommands: ``weights``, ``export``, ``embed``, ``segment``, ``everything``; ``--help`` on each
shows examples. This package parses arguments, finds inputs, reads prompt files and prints
summaries; the work itself is :mod:`napari_mobilesam.batch.tasks`. It imports neither napari nor
Qt (napari's CSV files are read with ``csv``).
"""

from __future__ import annotations

import argparse
import sys
import textwrap

from napari_mobilesam.cli import arguments as types
from napari_mobilesam.engine.predictor_loader import DEVICE_CHOICES

EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 1, 2, 130
# The widget's CPU defaults (engine.everything.CPU_EVERYTHING_DEFAULTS): about 4x quicker than
# segment-anything's 32 points per side. Spelt out here so that --help needs no torch import.
EVERYTHING_POINTS_PER_SIDE = 16
EVERYTHING_PRED_IOU_THRESH = 0.86
EVERYTHING_STABILITY_SCORE_THRESH = 0.92
EVERYTHING_MIN_SIZE = 25

EXAMPLES = {
    "embed": """
        examples:
          napari-mobilesam embed data/*.tif
          napari-mobilesam embed stack.tif --planes 10:20 --scheduler local:4
          napari-mobilesam embed experiment.zarr/0 --cache /scratch/emb --scheduler tcp://node1:8786
        """,
    "segment": """
        examples:
          napari-mobilesam segment cells.png --points "120,80;300,210" --out labels/
          napari-mobilesam segment cells.tif --points points.csv --boxes shapes.csv --out labels/
          napari-mobilesam segment stack.tif --points prompts.json --out labels/ --format zarr

        points.csv / shapes.csv are what napari saves for a Points / Shapes layer (File > Save
        Selected Layers); the Points layer's boolean 'positive' column marks background points.
        Inline points may carry a label: "x,y,0" is a background point.
        """,
    "everything": """
        examples:
          napari-mobilesam everything images/ --out labels/
          napari-mobilesam everything big.tif --tile-shape 1024,1024 --halo 64 --out labels/
          napari-mobilesam everything volume.zarr --planes 0:50 --out labels/ --scheduler local:8
        """,
}

MAIN_EPILOG = """
examples:
  napari-mobilesam weights                       # which weights file, download if needed
  napari-mobilesam embed data/ --scheduler local:4
  napari-mobilesam segment cells.png --points "120,80" --out labels/
  napari-mobilesam everything data/*.tif --out labels/
  napari-mobilesam export --help

Each subcommand has --help. Exit code: 0 if nothing failed, 1 if some inputs failed (the summary
says why), 2 for unusable arguments, 130 when interrupted.
"""


def _common(parser: argparse.ArgumentParser) -> None:
    run = parser.add_argument_group("model and scheduling")
    run.add_argument("--weights", help="mobile_sam.pt (default: environment, cache, download)")
    run.add_argument("--device", default="auto", choices=DEVICE_CHOICES, help="(default auto)")
    run.add_argument(
        "--scheduler",
        default="threads",
        type=types.scheduler,
        help="threads (this process, default), local:N (N worker processes on this machine, "
        "needs napari-mobilesam[distributed]) or tcp://host:port (a running dask scheduler)",
    )
    run.add_argument(
        "--workers",
        type=types.whole_number(1, types.MAX_WORKERS),
        help="threads for --scheduler threads (default: CPUs)",
    )
    run.add_argument(
        "--scheduler-timeout",
        type=types.seconds,
        default=5.0,
        metavar="S",
        help="seconds to wait for a tcp:// scheduler (default 5)",
    )
    run.add_argument(
        "--contrast-limits",
        type=types.contrast_limits,
        metavar="LO,HI",
        help="intensities mapped to black and white, finite, LO below HI (default: napari's "
        "for the data, so the plugin finds the same embeddings)",
    )
    run.add_argument(
        "--overwrite",
        action="store_true",
        help="redo work already done and replace outputs this program wrote (never other files)",
    )
    run.add_argument("--quiet", action="store_true", help="no progress bar")


def _add(sub: argparse._SubParsersAction, name: str, help_text: str) -> argparse.ArgumentParser:
    return sub.add_parser(
        name,
        help=help_text,
        description=help_text,
        epilog=textwrap.dedent(EXAMPLES.get(name, "")),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (subcommands and their options)."""
    from napari_mobilesam.cli.many_objects_args import (
        REFINE_EXAMPLES,
        add_each_point_argument,
        add_refine_arguments,
        add_seed_arguments,
    )

    parser = types.OneLineParser(
        prog="napari-mobilesam",
        description="MobileSAM from the command line: embeddings, prompted and automatic "
        "segmentation of images and stacks, in this process or on a dask cluster.",
        epilog=MAIN_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("weights", help="show which weights would be used; download them if needed")
    sub.add_parser("export", help="export the model to ONNX (see export --help)", add_help=False)

    embed = _add(sub, "embed", "precompute embeddings into the disk cache the plugin reads")
    embed.add_argument("inputs", nargs="+", metavar="INPUT", help="files, folders, globs, zarr")
    embed.add_argument("--cache", help="cache folder (default: the plugin's disk cache)")
    embed.add_argument("--planes", metavar="A:B", help="only planes A..B-1 of stacks")
    _common(embed)

    segment = _add(sub, "segment", "segment one image from point and box prompts")
    segment.add_argument("input", metavar="INPUT", help="an image file or zarr array")
    segment.add_argument("--points", help='napari Points CSV, JSON, or "x,y;x,y"')
    segment.add_argument("--boxes", help='napari Shapes CSV, or "x0,y0,x1,y1;..."')
    segment.add_argument("--out", required=True, help="output folder")
    segment.add_argument(
        "--format", choices=("tif", "zarr", "npy"), help="(default tif; zarr for stacks)"
    )
    segment.add_argument(
        "--single-mask",
        action="store_true",
        help="one candidate per object instead of the best of 3",
    )
    add_each_point_argument(segment)
    _common(segment)

    everything = _add(sub, "everything", "automatic segmentation into label images / volumes")
    everything.add_argument(
        "inputs", nargs="+", metavar="INPUT", help="files, folders, globs, zarr"
    )
    everything.add_argument("--out", required=True, help="output folder")
    everything.add_argument(
        "--format", choices=("tif", "zarr", "npy"), help="(default tif; zarr for stacks)"
    )
    everything.add_argument(
        "--points-per-side",
        type=types.whole_number(1, types.MAX_POINTS_PER_SIDE),
        default=EVERYTHING_POINTS_PER_SIDE,
        metavar="N",
        help=f"prompt grid of N x N points per image or tile, 1 to {types.MAX_POINTS_PER_SIDE} "
        f"(default {EVERYTHING_POINTS_PER_SIDE}, the plugin's CPU default; 32 is "
        "segment-anything's). On a CPU expect about 17 s per 1024 x 1024 image (or tile) at "
        "16 and 70 s at 32 (2 cores, benchmarks/README.md)",
    )
    everything.add_argument(
        "--pred-iou-thresh",
        type=types.fraction,
        default=EVERYTHING_PRED_IOU_THRESH,
        metavar="T",
        help=f"keep masks whose predicted IoU is above T, 0 to 1 (default "
        f"{EVERYTHING_PRED_IOU_THRESH}, the plugin's CPU default; segment-anything's is 0.88)",
    )
    everything.add_argument(
        "--stability-score-thresh",
        type=types.fraction,
        default=EVERYTHING_STABILITY_SCORE_THRESH,
        metavar="T",
        help=f"keep masks whose stability score is at least T, 0 to 1 (default "
        f"{EVERYTHING_STABILITY_SCORE_THRESH}; segment-anything's is 0.95)",
    )
    everything.add_argument(
        "--min-size",
        type=types.whole_number(0, 10**9),
        default=EVERYTHING_MIN_SIZE,
        metavar="N",
        help=f"drop objects with fewer than N visible pixels (default {EVERYTHING_MIN_SIZE})",
    )
    everything.add_argument(
        "--tile-shape", type=types.tile_shape, metavar="H,W", help="tile large images"
    )
    everything.add_argument(
        "--halo",
        type=types.whole_number(0, 4096),
        metavar="N",
        help="pixels each tile sees beyond its edges, at least the largest object's radius "
        "(default 128)",
    )
    everything.add_argument("--planes", metavar="A:B", help="only planes A..B-1 of stacks")
    everything.add_argument(
        "--decoder-precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: faster, approximate mask decoding on devices with native bf16 (refused "
        "elsewhere; bounds in docs/performance.md) (default fp32)",
    )
    add_seed_arguments(everything)
    _common(everything)

    EXAMPLES.setdefault("refine", REFINE_EXAMPLES)
    refine = _add(sub, "refine", "refine a label image: every label prompts one object")
    add_refine_arguments(refine)
    _common(refine)

    from napari_mobilesam.cli.replay import EXAMPLES as REPLAY_EXAMPLES
    from napari_mobilesam.cli.replay import add_arguments as add_replay_arguments

    EXAMPLES.setdefault("replay", REPLAY_EXAMPLES)
    replay = _add(sub, "replay", "re-run the prompts recorded in a project folder")
    add_replay_arguments(replay)
    _common(replay)
    return parser


def _export(argv: list[str]) -> int:
    from napari_mobilesam.cli.export_command import main as export_main

    return export_main(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # weights and export keep their own parsers: hand them everything after the name.
    if argv[:1] == ["weights"]:
        from napari_mobilesam.cli.weights_command import main as weights_main

        return weights_main(argv[1:])
    if argv[:1] == ["export"]:
        return _export(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE

    from napari_mobilesam.batch.files import InputError
    from napari_mobilesam.batch.tasks import SchedulerError
    from napari_mobilesam.cli.commands import UserError, run_embed, run_everything, run_segment
    from napari_mobilesam.cli.interrupts import remember_interrupts
    from napari_mobilesam.cli.summary import say

    command = {"embed": run_embed, "segment": run_segment, "everything": run_everything}
    from napari_mobilesam.cli.replay import run_replay

    command["replay"] = run_replay
    from napari_mobilesam.cli.refine import run_refine, with_seed_options

    command.update(refine=run_refine, everything=with_seed_options(run_everything))
    name = f"napari-mobilesam {args.command}"
    interrupted_text = (
        f"{name}: interrupted before all work was done. Finished outputs are kept and no "
        "partial file is left; run the same command again to continue."
    )
    with remember_interrupts() as interrupted:
        try:
            summary = command[args.command](args)
        except (UserError, SchedulerError, InputError) as exc:
            say(f"{name}: {exc}", sys.stderr)
            return EXIT_INTERRUPTED if interrupted.is_set() else EXIT_USAGE
        except KeyboardInterrupt:
            say(interrupted_text, sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:  # the model could not be built, a worker setup failed, ...
            from napari_mobilesam.batch.tasks import failure_reason

            say(f"{name}: {failure_reason(exc)}", sys.stderr)
            return EXIT_INTERRUPTED if interrupted.is_set() else EXIT_FAILED
    summary.print()
    if interrupted.is_set() and not summary.finished:
        # Ctrl+C was swallowed on the way (a library caught it) while tasks were left undone.
        say(interrupted_text, sys.stderr)
        return EXIT_INTERRUPTED
    return summary.exit_code()
