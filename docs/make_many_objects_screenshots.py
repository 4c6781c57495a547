"""Make the pictures of docs/many_objects.md in a 1366x768 napari window.

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_many_objects_screenshots.py

Writes ``docs/many_objects_seeds.png`` (Find seeds on a plane of the nuclei sample: the seeds in
a Points layer, previewed as one object per point) and ``docs/many_objects_refine.png`` (a rough
Labels layer beside the layer refined from it, in napari's grid view).

Without ``--weights`` the pictures use the test suite's threshold stand-in for the model
(``tests/fakes.py``, decoded one object at a time), as ``make_screenshot.py`` does; with
``--weights`` the real model runs on the CPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_screenshot import docked, grab, stand_in_or_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE, N_NUCLEI, PLANE = (5, 384, 384), 24, 2


def nuclei_plane() -> np.ndarray:
    from napari_mobilesam import make_nuclei_stack

    return make_nuclei_stack(SHAPE, N_NUCLEI, seed=3)[PLANE]


def seeds_picture(weights: Path | None, out: Path) -> None:
    """Find seeds (diameter 24 px): one point per nucleus, each previewed as its own object."""
    plane = nuclei_plane()
    viewer, _, widget = docked(plane, "nuclei", stand_in_or_model(weights), weights)
    widget.create_prompt_layers()
    widget.many.panel._diameter_spin.value = 24
    widget.many.panel.expanded = True
    widget.prompts_section.expanded = False
    widget.model_section.expanded = False
    widget.many.find_seeds()
    widget.segment()
    viewer.layers.selection.active = widget.points_layer
    grab(viewer, widget, out)
    viewer.close()


def refine_picture(weights: Path | None, out: Path) -> None:
    """Rough discs painted at the seeds (a stand-in for another tool's labels), refined: the
    source on the left, the refined layer on the right."""
    from napari.layers import Image, Labels

    from napari_mobilesam.engine.seeds import find_seeds

    plane = nuclei_plane()
    viewer, image, widget = docked(plane, "nuclei", stand_in_or_model(weights), weights)
    rough = np.zeros(plane.shape, np.int32)
    rows, cols = np.mgrid[: plane.shape[0], : plane.shape[1]]
    for k, (x, y) in enumerate(find_seeds(plane, 24), start=1):
        rough[(rows - y) ** 2 + (cols - x) ** 2 <= 36] = k
    source = viewer.add_layer(Labels(rough, name="rough labels (source)"))
    twin = viewer.add_layer(Image(plane, name="nuclei ", colormap="gray"))
    widget.many.panel._source_combo.value = source
    widget.many.panel.expanded = True
    widget.prompts_section.expanded = False
    widget.model_section.expanded = False
    widget._image_combo.value = image
    widget.many.refine()
    refined = widget.labels_layer
    refined.name = "refined"
    viewer.layers.move(viewer.layers.index(twin), len(viewer.layers) - 1)
    viewer.layers.move(viewer.layers.index(refined), len(viewer.layers) - 1)
    viewer.grid.stride = 2
    viewer.grid.enabled = True
    grab(viewer, widget, out)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    seeds_picture(args.weights, args.out_dir / "many_objects_seeds.png")
    refine_picture(args.weights, args.out_dir / "many_objects_refine.png")


if __name__ == "__main__":
    main()
