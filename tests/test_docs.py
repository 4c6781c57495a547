"""Every code block of README.md and docs/*.md runs as written.

The blocks of one page run in the page's order in one temporary folder: the Python blocks in one
namespace (a fresh interpreter per page), each bash block as a bash script. The folder holds the
files the examples name (``mobile_sam.pt`` is the synthetic checkpoint, ``cells.png`` a small
image with bright blobs, ...; see :func:`write_example_inputs`) and ``NAPARI_MOBILESAM_WEIGHTS``
names the synthetic checkpoint, so nothing is downloaded. A block that cannot run here (it
installs packages, needs a GPU, a SLURM cluster or a download, or runs for minutes) is preceded
by the line ``<!-- docs-test: skip REASON -->``; it is still checked as far as possible: Python
is parsed, bash is checked by ``bash -n``, and each ``napari-mobilesam`` command in it is parsed
by the command's own argument parser.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from golden_cases import SYNTHETIC_CHECKPOINT

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Languages a block may have; "" and "text" are shown, never run.
LANGUAGES = {"python", "bash", "text", ""}
FENCE = re.compile(r"^```(\S*)\s*$")
SKIP = re.compile(r"^<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->\s*$")
# A page's Python blocks, or its bash blocks, run within this (a hang, not a timing check).
RUN_LIMIT_S = 900


@dataclass(frozen=True)
class Block:
    """One fenced code block: ``line`` is the 1-based line of its first code line."""

    page: Path
    line: int
    language: str
    code: str
    skip: str | None  # the reason given in the skip comment, or None


def code_blocks(page: Path) -> list[Block]:
    """The fenced blocks of a Markdown page, with the skip comment just above each, if any."""
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start = i
        end = start + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        if end == len(lines):
            raise AssertionError(f"{page.name}:{start + 1}: code block is never closed")
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        skip = SKIP.match(lines[above]) if above >= 0 else None
        code = "\n".join(lines[start + 1 : end]) + "\n"
        blocks.append(Block(page, start + 2, match.group(1), code, skip.group(1) if skip else None))
        i = end + 1
    return blocks


def _ids(pages: list[Path]) -> list[str]:
    return [str(page.relative_to(REPO)) for page in pages]


# --- the files the examples name ----------------------------------------------------------------


def _blobs(shape: tuple[int, int], seed: int, dtype=np.uint8) -> np.ndarray:
    """A dark image with a few bright discs (distinct per seed)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[: shape[0], : shape[1]]
    image = rng.normal(20, 4, shape)
    for _ in range(6):
        r, c = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        radius = rng.integers(6, max(7, min(shape) // 8))
        image[(rows - r) ** 2 + (cols - c) ** 2 < radius**2] += 180
    top = 255 if dtype == np.uint8 else 4000
    return np.clip(image * top / 255, 0, top).astype(dtype)


def write_example_inputs(folder: Path) -> None:
    """The files the examples name, small so that the pages run quickly.

    ``mobile_sam.pt``: the synthetic checkpoint (official layout); ``cells.png``, ``cells.tif``
    and ``tissue.png``: 480 x 360 images; ``b.png``; ``images/``: one image; ``data/`` and
    ``stack.tif``: 2-plane uint16 stacks of 64 x 64; ``big.tif``: 96 x 128; ``volume.zarr`` and
    ``experiment.zarr/0``: zarr stacks; ``points.csv`` / ``shapes.csv``: napari's CSVs of a
    Points and a Shapes layer.
    """
    import tifffile
    import zarr
    from PIL import Image

    (folder / "mobile_sam.pt").symlink_to(SYNTHETIC_CHECKPOINT)
    Image.fromarray(_blobs((360, 480), 0)).save(folder / "cells.png")
    Image.fromarray(_blobs((360, 480), 6)).save(folder / "tissue.png")
    tifffile.imwrite(folder / "cells.tif", _blobs((360, 480), 0, np.uint16))
    Image.fromarray(_blobs((48, 64), 1)).save(folder / "b.png")
    (folder / "images").mkdir()
    Image.fromarray(_blobs((64, 64), 2)).save(folder / "images" / "a.png")
    stack = np.stack([_blobs((64, 64), 3 + z, np.uint16) for z in range(2)])
    tifffile.imwrite(folder / "stack.tif", stack)
    (folder / "data").mkdir()
    tifffile.imwrite(folder / "data" / "plane.tif", stack[0])
    tifffile.imwrite(folder / "big.tif", _blobs((96, 128), 5, np.uint16))
    zarr.save_array(str(folder / "volume.zarr"), stack)
    zarr.open_group(str(folder / "experiment.zarr"), mode="w").create_array(
        "0", data=stack, chunks=(1, 64, 64)
    )
    (folder / "points.csv").write_text(
        "index,axis-0,axis-1,positive\n0,80,120,True\n1,210,300,True\n2,40,40,False\n",
        encoding="utf-8",
    )
    (folder / "shapes.csv").write_text(
        "index,shape-type,vertex-index,axis-0,axis-1\n"
        "0,rectangle,0,20,10\n0,rectangle,1,20,200\n0,rectangle,2,180,200\n0,rectangle,3,180,10\n",
        encoding="utf-8",
    )


@pytest.fixture
def example_folder(tmp_path: Path, golden_dir: Path) -> tuple[Path, dict[str, str]]:
    """A working folder with the example inputs, and the environment the examples run in."""
    work = tmp_path / "work"
    work.mkdir()
    write_example_inputs(work)
    # `python` in the pages is this interpreter, whatever the machine calls it.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").symlink_to(sys.executable)
    env = dict(os.environ)
    env.update(
        NAPARI_MOBILESAM_WEIGHTS=str(SYNTHETIC_CHECKPOINT),
        NAPARI_MOBILESAM_CACHE=str(tmp_path / "cache"),
        PATH=os.pathsep.join([str(bin_dir), str(Path(sys.executable).parent), env["PATH"]]),
        PYTHONUNBUFFERED="1",
    )
    return work, env


# --- the blocks are well formed ----------------------------------------------------------------


@pytest.mark.parametrize("page", PAGES, ids=_ids(PAGES))
def test_blocks_have_a_known_language_and_skips_give_a_reason(page: Path):
    text = page.read_text(encoding="utf-8")
    blocks = code_blocks(page)
    for block in blocks:
        where = f"{page.name}:{block.line - 1}"
        assert block.language in LANGUAGES, f"{where}: unknown language {block.language!r}"
        if block.skip is not None:
            assert block.skip, f"{where}: the skip comment must say why the block cannot run"
            assert block.language in ("python", "bash"), f"{where}: only code blocks are skipped"
    # every skip comment sits right above a block
    skips = sum(1 for line in text.splitlines() if SKIP.match(line))
    assert skips == sum(block.skip is not None for block in blocks), (
        f"{page.name}: a docs-test skip comment is not right above a code block"
    )


def test_the_block_reader_sees_skips_and_line_numbers(tmp_path: Path):
    page = tmp_path / "page.md"
    page.write_text(
        "# t\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip needs a GPU -->\n\n"
        "```bash\nnapari-mobilesam weights\n```\n\n```\ndiagram\n```\n",
        encoding="utf-8",
    )
    blocks = code_blocks(page)
    assert [(b.language, b.line, b.skip) for b in blocks] == [
        ("python", 4, None),
        ("bash", 10, "needs a GPU"),
        ("", 14, None),
    ]
    assert blocks[0].code == "x = 1\n"


# --- running a page ---------------------------------------------------------------------------

# Runs a page's blocks in the order of the page, in one folder: the Python blocks in one
# namespace (line numbers in a traceback are the page's), each bash block as a bash script.
RUNNER = textwrap.dedent(
    """
    import json, subprocess, sys
    blocks = json.load(open(sys.argv[1], encoding="utf-8"))
    namespace = {"__name__": "__main__"}
    for block in blocks:
        if block["language"] == "python":
            source = "\\n" * (block["line"] - 1) + block["code"]
            exec(compile(source, block["page"], "exec"), namespace)
            continue
        sys.stdout.flush()
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", block["code"]])
        if done.returncode != 0:
            sys.exit(f"{block['page']}:{block['line']}: the bash block exited {done.returncode}")
    """
)


def _runs(block: Block) -> bool:
    return block.language in ("python", "bash") and block.skip is None


def _page_param(page: Path):
    uses_qt = any("napari.Viewer" in b.code for b in code_blocks(page) if _runs(b))
    marks = [pytest.mark.slow] + ([pytest.mark.qt] if uses_qt else [])
    return pytest.param(page, marks=marks, id=str(page.relative_to(REPO)))


RUN_PAGES = [_page_param(page) for page in PAGES if any(_runs(b) for b in code_blocks(page))]


@pytest.mark.parametrize("page", RUN_PAGES)
def test_page_runs_as_written(page: Path, example_folder, tmp_path: Path):
    work, env = example_folder
    blocks = [
        {"page": str(page), "line": b.line, "language": b.language, "code": b.code}
        for b in code_blocks(page)
        if _runs(b)
    ]
    blocks_file = tmp_path / "blocks.json"
    blocks_file.write_text(json.dumps(blocks), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(blocks_file)],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
    )
    assert done.returncode == 0, (
        f"{page.name}: a block failed\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    )


def test_the_runner_runs_blocks_in_page_order_in_one_folder(tmp_path: Path, example_folder):
    work, env = example_folder
    page = tmp_path / "page.md"
    page.write_text(
        "```python\nfrom pathlib import Path\nPath('a.txt').write_text('1')\n```\n\n"
        '```bash\ntest "$(cat a.txt)" = 1 && echo 2 > b.txt\n```\n\n'
        "```python\nassert Path('b.txt').read_text().strip() == '2'\nraise SystemExit(3)\n```\n",
        encoding="utf-8",
    )
    blocks = [{**vars(b), "page": str(page)} for b in code_blocks(page)]
    (tmp_path / "blocks.json").write_text(json.dumps(blocks), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_S,
    )
    # the last block's exit status comes back: the earlier blocks saw each other's files
    assert done.returncode == 3, done.stderr


# --- blocks that are not run: checked as far as they can be -------------------------------------


def cli_commands(code: str) -> list[list[str]]:
    """The ``napari-mobilesam`` (or ``python -m napari_mobilesam``) commands of a bash block."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["napari-mobilesam"]:
            commands.append(words[1:])
        elif words[:3] in (
            ["python", "-m", "napari_mobilesam"],
            ["python3", "-m", "napari_mobilesam"],
        ):
            commands.append(words[3:])
    return commands


def check_cli_arguments(argv: list[str]) -> None:
    """Parse a command line with the command's own parser (exits with 2 on a bad argument)."""
    import argparse

    from napari_mobilesam.cli import build_parser
    from napari_mobilesam.cli.export_command import add_export_arguments

    if argv[:1] == ["export"]:
        if argv[1:] != ["--help"]:
            add_export_arguments(argparse.ArgumentParser(prog="export")).parse_args(argv[1:])
    elif argv[:1] == ["weights"]:
        from napari_mobilesam.cli.weights_command import build_parser as weights_parser

        weights_parser().parse_args(argv[1:])
    else:
        build_parser().parse_args(argv)


def test_cli_command_reader():
    code = "napari-mobilesam everything a.tif \\\n    --out labels/  # comment\npip install x\n"
    assert cli_commands(code) == [["everything", "a.tif", "--out", "labels/"]]
    check_cli_arguments(["everything", "a.tif", "--out", "labels/"])
    with pytest.raises(SystemExit):
        check_cli_arguments(["everything", "a.tif", "--out", "labels/", "--no-such-option"])


SKIPPED = [
    pytest.param(b, id=f"{b.page.relative_to(REPO)}:{b.line}")
    for page in PAGES
    for b in code_blocks(page)
    if b.skip is not None
]


@pytest.mark.parametrize("block", SKIPPED)
def test_skipped_blocks_are_checked_as_far_as_they_can_be(block: Block):
    if block.language == "python":
        ast.parse(block.code, filename=f"{block.page.name}:{block.line}")
        return
    syntax = subprocess.run(["bash", "-n", "-c", block.code], capture_output=True, text=True)
    assert syntax.returncode == 0, f"{block.page.name}:{block.line}: {syntax.stderr}"
    for argv in cli_commands(block.code):
        check_cli_arguments(argv)
