"""``python -m napari_mobilesam``: the same as the ``napari-mobilesam`` command."""

from napari_mobilesam.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
