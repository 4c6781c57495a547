"""The ``replay`` subcommand: re-run the prompts recorded in a project folder.

``napari-mobilesam replay cells.mobilesam --weights other.pt --out replayed/`` decodes every
recorded object again (see :mod:`napari_mobilesam.engine.replay`) and writes ``replayed/project``
(a project folder with the replayed label volume and steps) and ``replayed/replay.csv`` (per
object: IoU between the stored and the replayed mask, area change). The image is the one the
project names, or ``--image``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from napari_mobilesam.cli.commands import UserError

EXAMPLES = """
        examples:
          napari-mobilesam replay cells.mobilesam --out replayed/
          napari-mobilesam replay cells.mobilesam --weights finetuned.pt --out finetuned/
          napari-mobilesam replay cells.mobilesam --image moved/cells.tif --out replayed/

        Writes OUT/project (a project folder napari opens) and OUT/replay.csv: one row per
        object with its IoU against the stored mask and its area change. With the weights and
        runtime of the recording, the replayed labels equal the stored ones. Without
        --weights: the recorded weights file if it is still there, else as for the other
        commands (environment, cache, download).
        """


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The replay-specific arguments (the model and scheduling ones are the shared ones)."""
    parser.add_argument("folder", metavar="FOLDER", help="a project folder (*.mobilesam)")
    parser.add_argument("--out", required=True, help="output folder (must not hold a project)")
    parser.add_argument("--image", help="the image file (default: the one the project was made on)")


class ReplayError(UserError):
    """Arguments or inputs that stop the replay (exit code 2)."""


@dataclass
class ReplaySummary:
    """What a replay did, printed like the other commands' summaries."""

    table: str
    identical: bool
    objects: int
    changed: int
    notes: list[str] = field(default_factory=list)
    finished: bool = True

    def exit_code(self) -> int:
        return 0

    def print(self, stream: TextIO | None = None) -> None:
        from napari_mobilesam.cli.summary import say

        stream = stream or sys.stdout
        say(self.table.rstrip("\n"), stream)
        verdict = "identical to the stored labels" if self.identical else "differs"
        say(f"replay: {self.objects} object(s), {self.changed} changed; {verdict}", stream)
        for note in self.notes:
            say(f"  {note}", stream)


def _image_path(args: argparse.Namespace, manifest: dict) -> str:
    if args.image:
        return args.image
    path = (manifest.get("image") or {}).get("path")
    if not path:
        raise ReplayError(
            "the project names no image file (the image did not come from a file); give it "
            "with --image"
        )
    if not Path(path).exists():
        raise ReplayError(f"the project's image {path} does not exist; give it with --image")
    return path


def run_replay(args: argparse.Namespace) -> ReplaySummary:
    """Replay ``args.folder`` into ``args.out``."""
    from napari_mobilesam.batch.files import open_source
    from napari_mobilesam.batch.tasks import parse_scheduler
    from napari_mobilesam.engine.predictor_loader import resolve_device
    from napari_mobilesam.engine.project_store import ProjectError, ProjectStore, is_project
    from napari_mobilesam.engine.replay import replay_project

    if args.contrast_limits is not None:
        raise ReplayError("--contrast-limits: replay uses the contrast limits each record kept")
    kind, _ = parse_scheduler(args.scheduler)
    if is_project(Path(args.out) / "project") and not args.overwrite:
        raise ReplayError(f"--out {args.out} holds a replay already; add --overwrite")
    try:
        with ProjectStore.open(args.folder, writable=False) as store:
            manifest = store.manifest
            recorded = [o.get("weights") for r in store.records for o in r.get("objects", [])]
    except ProjectError as exc:
        raise ReplayError(str(exc)) from exc
    source = open_source(_image_path(args, manifest))
    shape = tuple(manifest["shape"])
    if tuple(source.leading_shape) + tuple(source.plane_shape) != shape:
        raise ReplayError(
            f"--image {source.name} has shape {(*source.leading_shape, *source.plane_shape)}; "
            f"the project's labels have {shape}"
        )
    # Default: the recorded weights file where it still is, else the usual resolution.
    weights = next((w for w in recorded if w and Path(w).is_file()), None)
    if args.weights is not None or weights is None:
        from napari_mobilesam.engine.weights import WeightsDownloadError, resolve_weights

        try:
            weights = resolve_weights(args.weights, progressbar=not args.quiet)
        except (FileNotFoundError, WeightsDownloadError) as exc:
            raise ReplayError(str(exc)) from exc
    out = Path(args.out)
    if args.overwrite and (out / "project").exists():
        from napari_mobilesam.engine.atomic_files import remove_path

        remove_path(out / "project")
    job = {
        "folder": str(Path(args.folder).resolve()),
        "image": str(Path(_image_path(args, manifest)).resolve()),
        "weights": str(Path(weights).resolve()),
        "device": resolve_device(args.device),
        "rgb": source.rgb,
        "workers": args.workers or 1,
        "out": str(out.resolve()),
    }
    try:
        if kind == "threads":
            result = replay_project(
                job["folder"], source.read, weights=job["weights"], device=job["device"],
                rgb=job["rgb"], workers=job["workers"], out=job["out"],
            )  # fmt: skip
        else:
            result = _replay_on_cluster(args, job)
    except (ProjectError, ValueError) as exc:
        raise ReplayError(str(exc)) from exc
    changed = sum(1 for o in result.objects if o.iou < 1.0)
    notes = [f"written: {out / 'project'} and {out / 'replay.csv'}", *result.skipped_steps]
    return ReplaySummary(result.table(), result.identical, len(result.objects), changed, notes)


def replay_job(job: dict) -> Any:
    """Run one replay from plain values (what a dask worker receives): the image is opened
    where the job runs, so the folders and files must be reachable there (a shared disk)."""
    from napari_mobilesam.batch.files import open_source
    from napari_mobilesam.engine.replay import replay_project

    source = open_source(job["image"])
    return replay_project(
        job["folder"], source.read, weights=job["weights"], device=job["device"],
        rgb=job["rgb"], workers=job["workers"], out=job["out"],
    )  # fmt: skip


def _replay_on_cluster(args: argparse.Namespace, job: dict) -> Any:
    """The replay as one task on ``--scheduler local:N`` or a scheduler's address.

    Each step of a project depends on the ones before it (refinements, protection, undo), so a
    replay is one task: the cluster gives it a worker's machine (a compute node), not a split.
    """
    from napari_mobilesam.batch.tasks import connect

    client, cluster = connect(args.scheduler, args.scheduler_timeout)
    try:
        return client.submit(replay_job, job, pure=False).result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
