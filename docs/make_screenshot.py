"""Make the README's pictures of the MobileSAM widget in a 1366x768 napari window.

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_screenshot.py [--weights mobile_sam.pt]

Writes ``docs/widget_2d.png`` (a live preview of a box and a click on one plane) and
``docs/widget_3d.png`` (an object propagated through the synthetic nuclei stack and committed,
with the planes it reached and why each direction stopped).

Without ``--weights`` the pictures use the test suite's threshold stand-in for the model
(``tests/fakes.py``): it returns the bright blob a prompt points at, so the outlines in the
pictures are what a trained model gives on these simple blobs, and no download is needed. With
``--weights`` the real model runs on the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1366, 768)
PLANE = 12


def stand_in_or_model(weights: Path | None) -> Any:
    if weights is None:
        sys.path.insert(0, str(ROOT / "tests"))
        from fakes import ThresholdPredictor

        return ThresholdPredictor(threshold=0.35)
    from napari_mobilesam import SamPredictor, build_mobile_sam

    return SamPredictor(build_mobile_sam(weights, device="cpu"))


def blobs(plane: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Bounding boxes (r0, c0, r1, c1) of the bright blobs of ``plane``, roundest first (a lone
    nucleus before a cluster of touching ones)."""
    from scipy import ndimage

    labels, count = ndimage.label(plane > np.percentile(plane, 80))
    found = []
    for rows, cols in ndimage.find_objects(labels):
        box = (rows.start, cols.start, rows.stop - 1, cols.stop - 1)
        area = np.count_nonzero(labels[rows, cols])
        if area > 50:
            found.append((area / ((rows.stop - rows.start) * (cols.stop - cols.start)), box))
    return [box for _, box in sorted(found, reverse=True)]


def docked(image_data: np.ndarray, name: str, predictor: Any, weights: Path | None):
    import napari
    from qtpy.QtWidgets import QApplication, QMainWindow

    viewer = napari.Viewer(title="napari-mobilesam")
    image = viewer.add_image(image_data, name=name, colormap="gray")
    # The window first, at its size, then the widget docked into it, as a user would.
    (window,) = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMainWindow)]
    window.resize(*WINDOW)
    for _ in range(3):
        QApplication.processEvents()
        time.sleep(0.1)
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    widget.use_predictor(predictor, weights, "cpu")
    return viewer, image, widget


def grab(viewer: Any, widget: Any, out: Path) -> None:
    from qtpy.QtWidgets import QApplication, QWidget

    # Let Qt lay out the window before fitting the image to the canvas and grabbing; the dock
    # takes its final width once napari's style is applied, so lay the window out once more.
    window = widget.native.window()
    for size in ((WINDOW[0] - 1, WINDOW[1]), WINDOW):
        window.resize(*size)
        for _ in range(3):
            QApplication.processEvents()
            time.sleep(0.1)
    viewer.reset_view()
    # Notification pop-ups (the commit's, or one about the Qt binding) would cover the canvas;
    # the status line in the widget says the same.
    for child in widget.native.window().findChildren(QWidget):
        if type(child).__name__ == "NapariQtNotification":
            child.close()
    QApplication.processEvents()
    viewer.screenshot(str(out), canvas_only=False)
    print(f"saved {out}")


def preview_2d(predictor: Any, weights: Path | None, out: Path) -> None:
    """A box around a cluster of nuclei with a click inside it, and a click on a lone nucleus:
    two objects, previewed on one plane."""
    from napari_mobilesam import make_nuclei_stack

    plane = make_nuclei_stack()[PLANE]
    viewer, _, widget = docked(plane, f"nuclei (plane {PLANE})", predictor, weights)
    points, shapes = widget.create_prompt_layers()
    (q0, d0, q1, d1), (r0, c0, r1, c1) = blobs(plane)[:2]  # a lone nucleus, then a cluster
    shapes.add_rectangles(
        np.array([[r0 - 3, c0 - 3], [r0 - 3, c1 + 3], [r1 + 3, c1 + 3], [r1 + 3, c0 - 3]])
    )
    points.add([[(r0 + r1) / 2, (c0 + c1) / 2], [(q0 + q1) / 2, (d0 + d1) / 2]])
    widget.segment()
    grab(viewer, widget, out)
    viewer.close()


def propagated_3d(predictor: Any, weights: Path | None, out: Path) -> None:
    """One click on a lone nucleus, Shift+P: the object followed through the stack and
    committed."""
    from napari_mobilesam import make_nuclei_stack

    stack = make_nuclei_stack()
    viewer, _, widget = docked(stack, "nuclei 3D", predictor, weights)
    points, _ = widget.create_prompt_layers()
    viewer.dims.set_point(0, PLANE)
    r0, c0, r1, c1 = blobs(stack[PLANE])[0]
    points.add([[PLANE, (r0 + r1) / 2, (c0 + c1) / 2]])
    widget.segment()
    widget.propagate()
    viewer.layers.selection.active = widget.labels_layer
    widget.prompts_section.expanded = False  # folded, so that the 3D section is in view
    grab(viewer, widget, out)
    viewer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--out-dir", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    predictor = stand_in_or_model(args.weights)
    preview_2d(predictor, args.weights, args.out_dir / "widget_2d.png")
    predictor = stand_in_or_model(args.weights)
    propagated_3d(predictor, args.weights, args.out_dir / "widget_3d.png")


if __name__ == "__main__":
    main()
