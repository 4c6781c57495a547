"""Pictures of the widget as a new user first meets it, in a 1366x768 napari window.

    xvfb-run -a -s "-screen 0 1366x768x24" python docs/make_first_run_screenshots.py

Writes, into ``docs/``:

- ``widget_no_weights.png``: no weights file and no network, after the first click: one short
  status line, the details in the notification;
- ``widget_long_path.png``: weights chosen through ``NAPARI_MOBILESAM_WEIGHTS`` in a deep
  folder: the file name stays readable, the whole path is in the tooltip;
- ``widget_stack_after_docking.png``: the widget docked first, then a stack opened: the 3D
  section opens by itself.

No download happens: the first picture simulates an offline machine, the others use the test
suite's threshold stand-in for the model (``tests/fakes.py``).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1366, 768)


def settle(rounds: int = 5) -> None:
    from qtpy.QtWidgets import QApplication

    for _ in range(rounds):
        QApplication.processEvents()
        time.sleep(0.05)


def viewer_at_laptop_size() -> Any:
    import napari
    from qtpy.QtWidgets import QApplication, QMainWindow

    viewer = napari.Viewer(title="napari-mobilesam")
    (window,) = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMainWindow)]
    window.resize(*WINDOW)
    settle()
    return viewer


def save(viewer: Any, out: Path) -> None:
    """Grab the whole window; keep the PNG small (a palette of 256 colours)."""
    from PIL import Image

    settle()
    array = viewer.screenshot(canvas_only=False, flash=False)
    Image.fromarray(array[..., :3]).quantize(256).save(out, optimize=True)
    print(f"saved {out} ({out.stat().st_size // 1024} KiB, {array.shape[1]}x{array.shape[0]})")


def no_weights(out: Path) -> None:
    from napari_mobilesam import make_nuclei_stack
    from napari_mobilesam.engine import weights

    os.environ.pop(weights.ENV_WEIGHTS, None)
    os.environ[weights.ENV_CACHE] = tempfile.mkdtemp()  # an empty cache

    def offline(**kwargs: Any) -> Path:
        target = Path(kwargs["cache_folder"]) / weights.WEIGHTS_FILENAME
        raise weights.WeightsDownloadError(
            "Could not download the MobileSAM weights: HTTPSConnectionPool(host='github.com', "
            "port=443): Max retries exceeded (NameResolutionError: Failed to resolve "
            "'github.com').\n"
            + weights._manual_install_help(
                target, weights.WEIGHTS_URL, weights.WEIGHTS_SHA256, weights.WEIGHTS_SIZE
            ),
            url=weights.WEIGHTS_URL,
            sha256=weights.WEIGHTS_SHA256,
            target=target,
        )

    weights.download_weights = offline  # this machine is offline (no network in the picture)
    viewer = viewer_at_laptop_size()
    viewer.add_image(make_nuclei_stack()[12], name="nuclei (plane 12)")
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    points, _ = widget.create_prompt_layers()
    points.add([[64, 64]])
    deadline = time.monotonic() + 60
    while widget.worker is not None or widget.interactive.timer.isActive():
        settle(1)
        if time.monotonic() > deadline:
            raise SystemExit("the run did not finish")
    settle()
    print("status:", widget.status.text)
    save(viewer, out)
    viewer.close()


def long_path(out: Path, predictor: Any) -> None:
    from napari_mobilesam import make_nuclei_stack
    from napari_mobilesam.engine import weights

    folder = (
        Path(tempfile.mkdtemp())
        / "NAPARI_MOBILESAM_shared_group_storage"
        / ("microscopy_projects_2026_weights_for_the_nuclei_annotation_campaign")
    )
    folder.mkdir(parents=True)
    path = folder / "synthetic_mobile_sam_fine_tuned.pt"
    path.write_bytes(b"a stand-in file: the picture uses the threshold stand-in")
    os.environ[weights.ENV_WEIGHTS] = str(path)
    viewer = viewer_at_laptop_size()
    viewer.add_image(make_nuclei_stack()[12], name="nuclei (plane 12)")
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    # The field stays empty: the environment variable decides. The stand-in plays the model
    # built from that file (the loader's record of its source included).
    widget.use_predictor(predictor, None, "cpu")
    widget.loader.source = path
    points, _ = widget.create_prompt_layers()
    points.add([[64, 64]])
    widget.segment()
    save(viewer, out)
    del os.environ[weights.ENV_WEIGHTS]
    viewer.close()


def stack_after_docking(out: Path) -> None:
    from napari_mobilesam import make_nuclei_stack

    viewer = viewer_at_laptop_size()
    _, widget = viewer.window.add_plugin_dock_widget("napari-mobilesam", "MobileSAM")
    settle()
    widget.prompts_section.expanded = False  # folded, so that the 3D section is in view
    viewer.add_image(make_nuclei_stack(), name="nuclei 3D")
    viewer.dims.set_point(0, 12)
    print("3D section open:", widget.stack.panel.expanded)
    save(viewer, out)
    viewer.close()


def main() -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from fakes import ThresholdPredictor

    out = ROOT / "docs"
    no_weights(out / "widget_no_weights.png")
    long_path(out / "widget_long_path.png", ThresholdPredictor(threshold=0.35))
    stack_after_docking(out / "widget_stack_after_docking.png")


if __name__ == "__main__":
    main()
