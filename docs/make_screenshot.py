"""Make ``docs/widget.png``: the MobileSAM widget docked beside a previewed nucleus.

    python docs/make_screenshot.py [--weights mobile_sam.pt] [--out docs/widget.png]

Without ``--weights`` the synthetic test checkpoint (random values, official layout) is used when
it is found beside the checkout, so the mask shows the widget at work but not a real nucleus
outline. On a machine without a display run it under ``xvfb-run -a``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = ROOT.parent / "shared" / "golden" / "synthetic_mobile_sam.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=SYNTHETIC if SYNTHETIC.is_file() else None)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "widget.png")
    args = parser.parse_args()

    from napari_mobilesam import SamPredictor, build_mobile_sam

    predictor = SamPredictor(build_mobile_sam(args.weights, device="cpu"))

    import napari

    from napari_mobilesam.layers.sample_data import make_nuclei_stack

    viewer = napari.Viewer(title="napari-mobilesam")
    viewer.window.resize(1400, 900)
    image = viewer.add_image(make_nuclei_stack(), name="nuclei 3D", colormap="gray")
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    widget.use_predictor(predictor, args.weights, "cpu")
    points, shapes = widget.create_prompt_layers()
    viewer.dims.set_point(0, 12)

    # A box around the brightest nucleus of slice 12 and a click on its centre, previewed.
    plane = image.data[12]
    row, col = np.unravel_index(np.argmax(plane), plane.shape)
    r0, c0, r1, c1 = row - 18, col - 18, row + 18, col + 18
    shapes.add_rectangles(np.array([[12, r0, c0], [12, r0, c1], [12, r1, c1], [12, r1, c0]]))
    points.add([[12, row, col]])
    widget.segment()

    # Let Qt lay out the dock widget before fitting the image to the canvas and grabbing.
    from qtpy.QtWidgets import QApplication, QWidget

    for _ in range(3):
        QApplication.processEvents()
        time.sleep(0.1)
    viewer.reset_view()
    # Start-up notification pop-ups (e.g. about the Qt binding) would cover the canvas.
    for child in widget.native.window().findChildren(QWidget):
        if type(child).__name__ == "NapariQtNotification":
            child.close()
    QApplication.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print(f"saved {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
