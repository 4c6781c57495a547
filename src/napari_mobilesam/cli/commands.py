"""The subcommands that plan and run batch work: ``embed``, ``segment``, ``everything``.

Each turns its arguments into :class:`~napari_mobilesam.batch.tasks.Task`\\ s, skips what a
previous run finished from the same recipe (input, prompts, parameters, weights: recorded in a
manifest beside each output), runs the rest on the chosen scheduler and closes label volumes
whose planes all finished. An output this program did not write is never replaced, and one it
wrote from another recipe only with ``--overwrite``. User errors raise :class:`UserError` (a
message, exit code 2).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from napari_mobilesam.batch.files import (
    DONE_SAME,
    FOREIGN,
    OURS_OTHER,
    ImageSource,
    InputError,
    LabelVolume,
    OutputError,
    check_writable,
    input_identity,
    napari_contrast_limits,
    output_path,
    output_state,
    recipe_digest,
)
from napari_mobilesam.batch.tasks import (
    SKIPPED,
    ModelSpec,
    Task,
    TaskReport,
    run_tasks,
)
from napari_mobilesam.cli.inputs import PlanesError, discover, duplicate_stems, parse_planes
from napari_mobilesam.cli.prompts import (
    PromptError,
    Prompts,
    check_inside,
    group_objects,
    read_boxes,
    read_points,
)
from napari_mobilesam.cli.summary import Progress, Summary
from napari_mobilesam.engine.atomic_files import sweep_temporaries


class UserError(Exception):
    """Wrong arguments or inputs that stop the whole run; printed without a traceback."""


@dataclass
class Plan:
    """The tasks of a run, what was already finished, and the volumes to close at the end."""

    tasks: list[Task] = field(default_factory=list)
    finals: list[Task] = field(default_factory=list)  # write each label volume at the end
    folders: list[Path] = field(default_factory=list)  # where temporaries may be left


def model_spec(args: argparse.Namespace) -> ModelSpec:
    """Resolve the weights here (download if needed) so every worker gets the same file."""
    from napari_mobilesam.engine.weights import WeightsDownloadError, resolve_weights

    try:
        weights = resolve_weights(args.weights, progressbar=not args.quiet)
    except (FileNotFoundError, WeightsDownloadError) as exc:
        raise UserError(str(exc)) from exc
    return ModelSpec(str(Path(weights).resolve()), args.device, 1)


def _decoder_precision(args: argparse.Namespace) -> str:
    """--decoder-precision, refused up front where the device cannot run it."""
    from napari_mobilesam.engine.decoder_precision import check_decoder_precision
    from napari_mobilesam.model.build import resolve_device

    try:
        return check_decoder_precision(args.decoder_precision, resolve_device(args.device))
    except ValueError as exc:
        raise UserError(f"--decoder-precision: {exc}") from exc


def _weights_id(spec: ModelSpec) -> str:
    from napari_mobilesam.engine.weights import file_sha256

    return file_sha256(spec.weights)


def _limits(args: argparse.Namespace, source: ImageSource) -> tuple[float, float] | None:
    """Given limits, or napari's default ones (None for a 2D image: the task computes them
    from the pixels it reads anyway, so a folder of images is not read twice)."""
    if args.contrast_limits is not None:
        return args.contrast_limits
    if not source.is_stack:
        return None
    return napari_contrast_limits(source)


def _planes(args: argparse.Namespace, source: ImageSource) -> list[tuple[int, ...]]:
    if not source.is_stack:
        return [()]
    try:
        wanted = set(parse_planes(getattr(args, "planes", None), source.leading_shape[0]))
    except PlanesError as exc:
        raise UserError(f"{exc} ({source.name})") from exc
    return [p for p in source.planes() if p[0] in wanted]


def _planned(
    args: argparse.Namespace, sources: list[ImageSource]
) -> list[tuple[ImageSource, list[tuple[int, ...]]]]:
    """Each input with its planes; a bad ``--planes`` stops the run before any work, and so
    does ``--planes`` when no input is a stack (it would select nothing it names)."""
    planes = getattr(args, "planes", None)
    if planes is not None and sources and not any(s.is_stack for s in sources):
        raise UserError(
            f"--planes {planes!r} selects planes of stacks, but no input is a stack "
            "(leave --planes out for 2D images)"
        )
    return [(s, _planes(args, s)) for s in sources]


def _sweep(plan: Plan, older_than: float | None) -> None:
    for folder in plan.folders:
        sweep_temporaries(folder, older_than=older_than)


def _execute(
    args: argparse.Namespace, spec: ModelSpec, plan: Plan, summary: Summary, unit: str
) -> Summary:
    """Run the plan with a progress bar, then write finished volumes; clean temporaries."""
    _sweep(plan, None)  # those of runs killed before this one
    if not plan.tasks and not plan.finals:
        return summary  # all done before: no scheduler to start
    summary.expected = len(plan.tasks) + len(plan.finals)
    progress = Progress(summary, summary.expected, unit, quiet=args.quiet)
    try:
        run_tasks(
            plan.tasks,
            spec,
            args.scheduler,
            finals=plan.finals,
            workers=args.workers,
            on_report=progress,
            connect_timeout_s=args.scheduler_timeout,
        )
    finally:
        progress.close()
        _sweep(plan, time.time())  # also those of workers that died during this run
    return summary


def _skip(summary: Summary, task: Task) -> None:
    summary.add(TaskReport(task.name, SKIPPED))


def _discovered(args: argparse.Namespace, summary: Summary) -> list[ImageSource]:
    found = discover(args.inputs)
    for name, reason in found.refused:
        summary.refuse(name, reason)
    return found.sources


def run_embed(args: argparse.Namespace) -> Summary:
    """Fill the disk cache the plugin reads with the embeddings of images and stack planes."""
    from napari_mobilesam.engine.disk_cache import DiskEmbeddingCache, default_cache_folder

    summary = Summary("embed")
    cache = Path(args.cache).expanduser() if args.cache else default_cache_folder()
    try:
        check_writable(cache)
    except OutputError as exc:
        raise UserError(str(exc)) from exc
    DiskEmbeddingCache(cache, "").sweep()
    sources = _discovered(args, summary)
    planned = _planned(args, sources)
    if not planned:
        return summary
    spec = model_spec(args)
    plan = Plan()
    for source, planes in planned:
        try:
            options = {"cache": str(cache), "contrast_limits": _limits(args, source)}
        except InputError as exc:
            summary.refuse(source.name, str(exc))
            continue
        for plane in planes:
            plan.tasks.append(
                Task("embed", source, plane, options=options, overwrite=args.overwrite)
            )
    summary.notes.append(f"cache: {cache}")
    return _execute(args, spec, plan, summary, "plane")


def _prepare_out(args: argparse.Namespace) -> Path:
    try:
        return check_writable(args.out)
    except OutputError as exc:
        raise UserError(str(exc)) from exc


def _refusal(path: Path, state: str) -> str:
    if state == FOREIGN:
        kind = "a folder" if path.is_dir() else "a file"
        return (
            f"{path} is {kind} napari-mobilesam did not write; it is left alone (move it away "
            "or choose another --out; --overwrite replaces only this program's outputs)"
        )
    return (
        f"{path} holds labels made from another input, prompts, parameters or weights (or "
        "changed since); pass --overwrite to replace them"
    )


def _recipe(args: argparse.Namespace, kind: str, source: ImageSource, fmt: str, **parts) -> dict:
    """What an output is made from (recorded in its manifest; JSON)."""
    recipe = {"command": kind, "input": input_identity(source), "format": fmt, **parts}
    return json.loads(json.dumps(recipe, default=list))  # tuples as lists: stable digests


def _label_tasks(
    args: argparse.Namespace,
    plan: Plan,
    summary: Summary,
    kind: str,
    source: ImageSource,
    planes: list[tuple[int, ...]],
    options: dict,
    recipe_parts: dict,
    per_plane: dict[tuple[int, ...], dict] | None = None,
) -> None:
    """Tasks writing a label image (2D) or the planes of a label volume (stack)."""
    out = Path(args.out)
    fmt = args.format or ("zarr" if source.is_stack else "tif")
    path = output_path(out, source.stem, fmt)
    recipe = _recipe(args, kind, source, fmt, **recipe_parts)
    state = output_state(path, recipe_digest(recipe))
    if state == FOREIGN or (state == OURS_OTHER and not args.overwrite):
        summary.refuse(source.name, _refusal(path, state))
        return
    if not source.is_stack:
        task = Task(
            kind,
            source,
            (),
            output=str(path),
            options={**options, "recipe": recipe},
            overwrite=args.overwrite,
        )
        if state == DONE_SAME and not args.overwrite:
            _skip(summary, task)
        else:
            plan.tasks.append(task)
        return
    shape = (*source.leading_shape, *source.plane_shape)
    volume = LabelVolume(str(path), shape, recipe=json.dumps(recipe, sort_keys=True))
    tasks = [
        Task(
            kind,
            source,
            p,
            volume=volume,
            options={**options, **(per_plane or {}).get(p, {})},
            overwrite=args.overwrite,
        )
        for p in planes
    ]
    if state == DONE_SAME and not args.overwrite:
        for task in tasks:
            _skip(summary, task)
        return
    volume.prepare(overwrite=args.overwrite)
    for task in tasks:
        if not args.overwrite and volume.plane_done(task.plane):
            _skip(summary, task)
        else:
            plan.tasks.append(task)
    plan.folders.append(volume.done_folder)
    # The volume is written once every plane it needs is done: all planes for segment
    # everything, the prompted planes for segment. A run of some planes (--planes) marks only
    # those.
    needed = sorted(per_plane) if per_plane is not None else list(source.planes())
    ready = {t.plane for t in tasks} | {p for p in needed if volume.plane_done(p)}
    missing = [p for p in needed if p not in ready]
    if missing:
        summary.notes.append(
            f"{source.name}: {len(needed) - len(missing)} of {len(needed)} planes done; "
            f"{path.name} is written when all are (run again without --planes)"
        )
        return
    # Objects found plane by plane get 3D ids at the end (prompted objects keep their own).
    link = kind == "everything" and len(source.leading_shape) == 1
    plan.finals.append(
        Task("finish", source, volume=volume, options={"link": link, "planes": needed})
    )


def _check_stems(sources: list[ImageSource], summary: Summary) -> list[ImageSource]:
    clashes = duplicate_stems(sources)
    for stem, names in clashes.items():
        for name in names[1:]:
            summary.refuse(name, f"its output name {stem!r} is also that of {names[0]}")
    dropped = {n for names in clashes.values() for n in names[1:]}
    return [s for s in sources if s.name not in dropped]


def run_segment(args: argparse.Namespace) -> Summary:
    """Label image (or volume planes) from point and box prompts of one input."""
    summary = Summary("segment")
    out = _prepare_out(args)
    found = discover([args.input])
    if found.refused:
        raise UserError("; ".join(reason for _, reason in found.refused))
    if len(found.sources) != 1:
        raise UserError(f"segment takes one image; {args.input} names {len(found.sources)}")
    source = found.sources[0]
    ndim = len(source.shape) - (1 if source.rgb else 0)
    prompts = Prompts()
    try:
        if args.points:
            read_points(args.points, prompts, ndim)
        if args.boxes:
            read_boxes(args.boxes, prompts, ndim)
        if source.is_stack and () in prompts.planes():
            raise PromptError(
                "inline prompts have no plane; for a stack, use napari's CSV (axis-0 is the "
                "plane) or a JSON file with 'plane'"
            )
        check_inside(prompts, (*source.leading_shape, *source.plane_shape), source.plane_shape)
    except PromptError as exc:
        raise UserError(str(exc)) from exc
    per_plane = {p: {"objects": group_objects(prompts, p)} for p in prompts.planes()}
    per_plane = {p: v for p, v in per_plane.items() if v["objects"]}
    if not per_plane:
        raise UserError("no object to segment: give a positive point or a box (--points/--boxes)")
    try:
        options = {
            "contrast_limits": _limits(args, source),
            "multimask": not args.single_mask,
            "each_point": bool(getattr(args, "each_point", False)),
        }
    except InputError as exc:
        raise UserError(str(exc)) from exc
    spec = model_spec(args)
    plan = Plan(folders=[out])
    planes = sorted(per_plane) if source.is_stack else [()]
    if not source.is_stack:
        options.update(per_plane[()])
    parts = {
        "weights": _weights_id(spec),
        "contrast_limits": options["contrast_limits"],
        "multimask": options["multimask"],
        "each_point": options["each_point"],
        "objects": {",".join(map(str, p)): v["objects"] for p, v in sorted(per_plane.items())},
    }
    _label_tasks(
        args, plan, summary, "segment", source, planes, options, parts,
        per_plane if source.is_stack else None,
    )  # fmt: skip
    return _execute(args, spec, plan, summary, "image")


def run_everything(args: argparse.Namespace) -> Summary:
    """Automatic segmentation of images and stacks into label images and label volumes."""
    summary = Summary("everything")
    out = _prepare_out(args)
    # --seeds (cli/refine.py's with_seed_options) replaces the grid by seeds.
    generator: dict = getattr(args, "seed_options", None) or {
        "points_per_side": args.points_per_side,
        "pred_iou_thresh": args.pred_iou_thresh,
        "stability_score_thresh": args.stability_score_thresh,
        "min_size": args.min_size,
    }
    if args.tile_shape is not None:
        generator["tile_shape"] = args.tile_shape
    if getattr(args, "decoder_precision", "fp32") != "fp32":
        if getattr(args, "seed_options", None):
            raise UserError("--decoder-precision applies to the point grid, not to --seeds")
        generator["decoder_precision"] = _decoder_precision(args)
    if args.halo is not None:
        if args.tile_shape is None:
            raise UserError("--halo is the overlap of tiles: give --tile-shape too")
        generator["halo"] = args.halo
    sources = _check_stems(_discovered(args, summary), summary)
    planned = _planned(args, sources)
    spec = model_spec(args) if planned else None
    plan = Plan(folders=[out])
    for source, planes in planned:
        try:
            options = {"contrast_limits": _limits(args, source), "generator": generator}
        except InputError as exc:
            summary.refuse(source.name, str(exc))
            continue
        parts = {
            "weights": _weights_id(spec),
            "contrast_limits": options["contrast_limits"],
            "generator": generator,
        }
        _label_tasks(args, plan, summary, "everything", source, planes, options, parts)
    if spec is None:
        return summary
    return _execute(args, spec, plan, summary, "plane")
