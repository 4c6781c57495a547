"""Many objects at once on the command line: ``refine``, ``segment --each-point`` and
``everything --seeds``.

``refine IMAGE --labels LABELS --out DIR``: every label of each plane of LABELS (Cellpose,
StarDist, a threshold) prompts one object on IMAGE (its box and its mask, see
:mod:`~napari_mobilesam.engine.refine`); the result keeps the source ids. Planes are tasks on the
chosen scheduler, like ``segment`` and ``everything``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from napari_mobilesam.batch.files import InputError, input_identity
from napari_mobilesam.cli.commands import (
    Plan,
    UserError,
    _execute,
    _label_tasks,
    _limits,
    _planes,
    _prepare_out,
    _weights_id,
    model_spec,
)
from napari_mobilesam.cli.inputs import discover
from napari_mobilesam.cli.summary import Summary


def seed_generator_options(args: argparse.Namespace) -> dict:
    """``segment_everything`` options for ``--seeds`` (empty without it)."""
    if not getattr(args, "seeds", False):
        if getattr(args, "diameter", None) is not None:
            raise UserError("--diameter is the seeds' object size: give --seeds too")
        return {}
    if args.diameter is None:
        raise UserError("--seeds needs --diameter D, the objects' diameter in pixels")
    options = {"prompts": "seeds", "diameter": args.diameter, "order": "score"}
    if args.seed_threshold is not None:
        if not 0 <= args.seed_threshold < float("inf"):
            raise UserError(f"--seed-threshold must be a number >= 0, got {args.seed_threshold}")
        options["threshold"] = args.seed_threshold
    return options


def with_seed_options(run: Callable[[argparse.Namespace], Summary]) -> Callable:
    """``run`` (``run_everything``) with ``--seeds`` turned into generator options first
    (``args.seed_options``), so a bad combination is a usage error like any other."""

    def wrapped(args: argparse.Namespace) -> Summary:
        args.seed_options = seed_generator_options(args)
        return run(args)

    return wrapped


def run_refine(args: argparse.Namespace) -> Summary:
    """Refined label image (or volume) of one image from a label image on its grid."""
    summary = Summary("refine")
    _prepare_out(args)
    sources = []
    for name, what in ((args.input, "IMAGE"), (args.labels, "--labels")):
        found = discover([name])
        if found.refused:
            raise UserError("; ".join(reason for _, reason in found.refused))
        if len(found.sources) != 1:
            raise UserError(f"{what} must name one image; {name} names {len(found.sources)}")
        sources.append(found.sources[0])
    source, labels = sources
    grid = (*source.leading_shape, *source.plane_shape)
    labels_grid = tuple(labels.shape[:-1] if labels.rgb else labels.shape)
    if labels_grid != grid:
        raise UserError(
            f"--labels {args.labels} has shape {labels_grid}, but {args.input} has the grid "
            f"{grid}; give the label image made for this image"
        )
    if labels.dtype[:1] not in ("i", "u", "b"):
        raise UserError(f"--labels {args.labels} holds {labels.dtype}; label ids are integers")
    try:
        options = {
            "contrast_limits": _limits(args, source),
            "labels": labels,
            "mask_prompt": not args.box_only,
        }
        planes = _planes(args, source)
    except InputError as exc:
        raise UserError(str(exc)) from exc
    spec = model_spec(args)
    plan = Plan(folders=[_prepare_out(args)])
    parts = {
        "weights": _weights_id(spec),
        "contrast_limits": options["contrast_limits"],
        "labels": input_identity(labels),
        "mask_prompt": options["mask_prompt"],
    }
    _label_tasks(args, plan, summary, "refine", source, planes, options, parts)
    return _execute(args, spec, plan, summary, "plane")
