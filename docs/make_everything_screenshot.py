"""Make ``docs/everything.png``: "Segment everything" on the nuclei sample, in a 1366x768 window.

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_everything_screenshot.py \
        [--weights mobile_sam.pt]

Opens File > Open Sample > MobileSAM > Nuclei (synthetic 3D stack), docks the widget, runs its
"Segment everything" section on the whole stack (the section's CPU defaults) and grabs the
window with the written labels and the outcome in the status line.

Without ``--weights`` the model is the test suite's threshold stand-in (``tests/fakes.py``):
every grid prompt on a bright blob returns that blob, which is what a trained model gives on
these simple nuclei, and no download is needed. With ``--weights`` the real model runs on the
CPU (a few minutes for the 24 planes).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs"))

from make_screenshot import PLANE, WINDOW, grab, stand_in_or_model  # noqa: E402


def stand_in_generator(predictor: Any, settings: Any) -> Any:
    """The threshold stand-in for ``SamAutomaticMaskGenerator``, with the section's grid."""
    from fakes import ThresholdMaskGenerator

    return ThresholdMaskGenerator(
        settings.points_per_side, predictor=copy.copy(predictor), split_touching=8
    )


def everything_on_sample(weights: Path | None, out: Path) -> None:
    import napari
    from qtpy.QtCore import QPoint
    from qtpy.QtWidgets import QApplication, QMainWindow

    from napari_mobilesam.widget.everything_panel import WHOLE_STACK

    viewer = napari.Viewer(title="napari-mobilesam")
    (window,) = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMainWindow)]
    window.resize(*WINDOW)
    viewer.open_sample("napari-mobilesam", "nuclei_3d")  # File > Open Sample, as a user would
    for _ in range(3):
        QApplication.processEvents()
        time.sleep(0.1)
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    widget.use_predictor(stand_in_or_model(weights), weights, "cpu")
    if weights is None:
        widget.everything.make_generator = stand_in_generator
    viewer.dims.set_point(0, PLANE)

    # The section in view: the others folded, "Segment everything" open.
    widget.prompts_section.expanded = False
    widget.model_section.expanded = False
    widget.stack.panel.expanded = False
    panel = widget.everything.panel
    panel.expanded = True
    panel._scope_combo.value = WHOLE_STACK
    report = widget.everything.run()
    print(f"{len(report.ids)} object(s) written")
    viewer.layers.selection.active = widget.labels_layer
    # The column scrolled to the status line (the outcome), with the section below it; again
    # whenever grab's resizing lays the column out anew.
    column = widget._column
    bar = column.verticalScrollBar()

    def scroll(*_: Any) -> None:
        top = widget.status_section.native.mapTo(column.inner, QPoint(0, 0)).y()
        bar.setValue(min(top, bar.maximum()))

    bar.rangeChanged.connect(scroll)
    scroll()
    grab(viewer, widget, out)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "everything.png")
    args = parser.parse_args()
    everything_on_sample(args.weights, args.out)


if __name__ == "__main__":
    main()
