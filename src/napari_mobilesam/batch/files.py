"""Reading inputs and writing outputs for batch runs: images, stacks, zarr, atomic writers.

Everything here runs where a task runs (this process, or a dask worker on another machine), so a
task carries only a small, picklable :class:`ImageSource` and reads its own plane. Writers never
leave a half-written file under a result's name:

- files (TIFF, npy, a 2D zarr) are written to a temporary name in the same folder and renamed
  into place with :func:`os.replace` (atomic on one filesystem); temporaries are named
  ``.<name>.<random>.partial`` so :func:`sweep_partials` can remove those a killed process left;
- a label volume is first a hidden zarr work store (one chunk per plane) that many workers fill
  region by region; each plane gets a marker file in a sidecar folder, written after its
  region. When all planes are marked, the result is written from it atomically under its own
  name (see :class:`LabelVolume`). A re-run trusts only marked planes and finished results.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
OUTPUT_FORMATS = ("tif", "zarr", "npy")
PARTIAL_SUFFIX = ".partial"
DONE_SUFFIX = ".done"  # the sidecar folder of a label volume: <name>.zarr.done/


class InputError(Exception):
    """An input that cannot be used; the message says which and why (shown to the user)."""


class OutputError(Exception):
    """An output that cannot be written; the message says where and why (shown to the user)."""


# --- Inputs ------------------------------------------------------------------------------------


def guess_rgb(shape: tuple[int, ...]) -> bool:
    """napari's rule: a last axis of 3 or 4 on an array of 3+ axes is colour."""
    return len(shape) >= 3 and shape[-1] in (3, 4)


@dataclass(frozen=True)
class ImageSource:
    """One input: an image file, a (multi-page) TIFF or a zarr array. Small and picklable.

    Attributes:
      path: the file, or the zarr store's folder.
      component: the array inside a zarr group (e.g. ``"0"`` for OME-Zarr), or ``None``.
      shape: the array's shape (leading axes, then rows, columns, then colour if ``rgb``).
      dtype: the array's dtype name.
      rgb: whether the last axis is colour.
    """

    path: str
    component: str | None
    shape: tuple[int, ...]
    dtype: str
    rgb: bool

    @property
    def name(self) -> str:
        """What reports call this input: the path, plus the zarr component if any."""
        return self.path + (f"/{self.component}" if self.component else "")

    @property
    def stem(self) -> str:
        """The output's base name: the file name without its suffix (``data`` for data.zarr)."""
        name = Path(self.path).name
        for suffix in (*IMAGE_SUFFIXES, ".zarr"):
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
        return Path(name).stem

    @property
    def plane_shape(self) -> tuple[int, int]:
        offset = 3 if self.rgb else 2
        return int(self.shape[-offset]), int(self.shape[-offset + 1])

    @property
    def leading_shape(self) -> tuple[int, ...]:
        """The shape of the axes above one plane: () for a 2D image."""
        return tuple(self.shape[: len(self.shape) - (3 if self.rgb else 2)])

    @property
    def is_stack(self) -> bool:
        return len(self.leading_shape) > 0

    def planes(self) -> Iterator[tuple[int, ...]]:
        """The index of every plane (leading axes), in C order; one ``()`` for a 2D image."""
        yield from np.ndindex(*self.leading_shape)

    def read(self, plane: tuple[int, ...] = ()) -> np.ndarray:
        """The pixels of one plane (the whole image for a 2D input), read on its own."""
        try:
            if self.component is not None or self.path.lower().endswith(".zarr"):
                return np.asarray(_open_zarr(self.path, self.component)[plane])
            if self.path.lower().endswith(TIFF_SUFFIXES):
                return _read_tiff_plane(self, plane)
            return _read_pillow(self.path)
        except InputError:
            raise
        except Exception as exc:  # any reader failure is a bad input, not a crash
            raise InputError(f"cannot read {self.name}: {_reason(exc)}") from exc

    def read_all(self) -> np.ndarray:
        """The whole array (for contrast limits of a stack held in memory)."""
        if not self.is_stack:
            return self.read()
        return np.stack([self.read(p) for p in self.planes()]).reshape(self.shape)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) < 300 else text[:300] + "..."


def _read_pillow(path: str) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        img.load()  # a truncated file fails here, not later
        return np.array(img)


def _read_tiff_plane(source: ImageSource, plane: tuple[int, ...]) -> np.ndarray:
    import tifffile

    if not plane:
        return tifffile.imread(source.path)
    n_planes = math.prod(source.leading_shape)
    with tifffile.TiffFile(source.path) as tif:
        series = tif.series[0]
        if len(series.pages) == n_planes:  # one page per plane: read only that page
            flat = int(np.ravel_multi_index(plane, source.leading_shape))
            return series.pages[flat].asarray()
        return series.asarray()[plane]


def _open_zarr(path: str, component: str | None) -> Any:
    import zarr

    node = zarr.open(path, mode="r")
    if component:
        node = node[component]
    if not hasattr(node, "shape"):
        raise InputError(
            f"{path} is a zarr group, not an array: name the array, e.g. {path}/0 "
            f"(arrays here: {', '.join(sorted(node.array_keys())) or 'none'})"
        )
    return node


def _zarr_parts(text: str) -> tuple[str, str | None] | None:
    """(store folder, component) for ``x.zarr`` or ``x.zarr/0``; None if not a zarr path."""
    parts = Path(text).parts
    for i, part in enumerate(parts):
        if part.lower().endswith(".zarr"):
            component = "/".join(parts[i + 1 :]) or None
            return str(Path(*parts[: i + 1])), component
    return None


def _ome_zarr_component(path: str) -> str | None:
    """The full-resolution array of an OME-Zarr group (its first multiscales dataset)."""
    import zarr

    node = zarr.open(path, mode="r")
    if hasattr(node, "shape"):
        return None
    attrs = dict(node.attrs)
    multiscales = attrs.get("multiscales") or attrs.get("ome", {}).get("multiscales")
    if multiscales:
        return str(multiscales[0]["datasets"][0]["path"])
    keys = sorted(node.array_keys())
    if "0" in keys:
        return "0"
    raise InputError(
        f"{path} is a zarr group without an OME-Zarr 'multiscales' entry: name the array, "
        f"e.g. {path}/<array> (arrays here: {', '.join(keys) or 'none'})"
    )


def open_source(text: str | os.PathLike[str]) -> ImageSource:
    """Describe one input (shape, dtype, colour) without reading its pixels.

    Raises:
      InputError: the path does not exist, is not an image this tool reads, or its header is
        unreadable.
    """
    text = str(text)
    zarr_parts = _zarr_parts(text)
    try:
        if zarr_parts is not None:
            store, component = zarr_parts
            if not Path(store).exists():
                raise InputError(f"zarr path does not exist: {store}")
            if component is None:
                component = _ome_zarr_component(store)
            array = _open_zarr(store, component)
            shape, dtype = tuple(int(s) for s in array.shape), str(array.dtype)
            return ImageSource(store, component, shape, dtype, guess_rgb(shape))
        path = Path(text)
        if not path.is_file():
            raise InputError(f"input does not exist: {text}")
        if path.suffix.lower() in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                shape, dtype = tuple(int(s) for s in series.shape), str(series.dtype)
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            from PIL import Image

            with Image.open(path) as img:
                width, height = img.size
                bands = len(img.getbands())
                mode = img.mode
            shape = (height, width) if bands == 1 else (height, width, bands)
            dtype = "uint16" if mode.startswith("I;16") else "int32" if mode == "I" else "uint8"
            dtype = "float32" if mode == "F" else "bool" if mode == "1" else dtype
        else:
            raise InputError(
                f"{text}: not an image this tool reads (use {', '.join(IMAGE_SUFFIXES)} or zarr)"
            )
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"cannot read {text}: {_reason(exc)}") from exc
    if len(shape) < 2 or 0 in shape:
        raise InputError(f"{text}: shape {shape} is not an image")
    return ImageSource(str(path), None, shape, dtype, guess_rgb(shape))


# napari samples three planes instead of reading everything above this many values.
_NAPARI_FULL_RANGE_LIMIT = 1e7


def napari_contrast_limits(source: ImageSource, data: np.ndarray | None = None) -> tuple:
    """The contrast limits napari gives a new Image layer of this data (numpy, as napari's
    reader loads TIFF/PNG files), so that ``embed`` fills the cache entries the plugin looks up.

    Mirrors napari's ``calc_data_range``: uint8 -> (0, 255); otherwise the minimum and maximum
    (of the top, middle and bottom planes only when the array has more than 1e7 values); a
    constant image widens to include 0 and 1.
    """
    if np.dtype(source.dtype) == np.uint8:
        return (0.0, 255.0)
    shape = source.shape
    if data is None and float(np.prod(shape)) > _NAPARI_FULL_RANGE_LIMIT and source.is_stack:
        leading = source.leading_shape
        picks = [
            tuple(0 for _ in leading),
            tuple(s // 2 for s in leading),
            tuple(s - 1 for s in leading),
        ]
        planes = [source.read(p) for p in picks]
        plane_values = int(np.prod(source.plane_shape)) * (shape[-1] if source.rgb else 1)
        if plane_values > _NAPARI_FULL_RANGE_LIMIT and min(source.plane_shape) > 64:
            rows, cols = (s // 2 for s in source.plane_shape)
            planes = [p[rows - 31 : rows + 31, cols - 31 : cols + 31] for p in planes]
        low = float(min(np.nanmin(p) for p in planes))
        high = float(max(np.nanmax(p) for p in planes))
    else:
        data = source.read_all() if data is None else data
        low, high = float(np.nanmin(data)), float(np.nanmax(data))
    if low == high:
        low, high = min(low, 0.0), max(high, 1.0)
    return (low, high)


# --- Atomic files ------------------------------------------------------------------------------


def _temp_name(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
    os.close(fd)
    return Path(tmp)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary onto ``path``.

    The temporary sits in ``path``'s folder (a rename never crosses filesystems) and is removed
    if ``write`` fails or is interrupted, so ``path`` is either absent, the old file or the new
    one. ``write`` may create a file or a folder (a zarr store) at the temporary path.
    """
    path = Path(path)
    tmp = _temp_name(path)
    try:
        write(tmp)
        if path.is_dir():  # --overwrite of an earlier zarr store
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def sweep_partials(folder: str | os.PathLike[str]) -> int:
    """Remove the temporaries a killed or interrupted run left in ``folder``; how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    found = [p for p in folder.glob(f".*{PARTIAL_SUFFIX}") if p.name.count(".") >= 3]
    for path in found:
        _remove(path)
    return len(found)


def output_path(out_dir: str | os.PathLike[str], stem: str, fmt: str) -> Path:
    """Where the labels of an input with base name ``stem`` go."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    return Path(out_dir) / f"{stem}.{fmt}"


def write_labels(path: str | os.PathLike[str], labels: np.ndarray) -> Path:
    """Write a label image atomically as ``.tif`` (zlib), ``.npy`` or ``.zarr``."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")

    def write(tmp: Path) -> None:
        if fmt == "tif":
            import tifffile

            tifffile.imwrite(tmp, labels, photometric="minisblack", compression="zlib")
        elif fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, labels, allow_pickle=False)
        elif fmt == "zarr":
            tmp.unlink()  # mkstemp made a file; the store is a folder
            _new_zarr(tmp, labels.shape, labels.dtype, labels.shape)[...] = labels
        else:
            raise ValueError(f"unknown label format {fmt!r} for {path}")

    return atomic_write(path, write)


def _new_zarr(path: Path, shape: tuple, dtype: Any, chunks: tuple) -> Any:
    """A new zarr array of zeros (``open_array`` is the same call in zarr 2 and zarr 3)."""
    import zarr

    return zarr.open_array(str(path), mode="w", shape=shape, dtype=dtype, chunks=chunks)


def check_writable(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and prove a file can be written there.

    Raises:
      OutputError: the folder cannot be created or written (read-only, no permission, a file).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = _temp_name(folder / "write-test")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"cannot write to the output folder {folder}: {exc.strerror or exc}. "
            "Choose a writable folder."
        ) from exc
    return folder


# --- Label volumes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class LabelVolume:
    """A label volume that tasks fill one plane at a time, then finish into its final file.

    Planes go to a hidden work store, ``.<name>.planes.zarr`` beside the result (one chunk per
    plane, so workers never write the same chunk); each plane gets a marker in
    ``.<name>.planes.zarr.done/`` after its region is written. When every plane is marked,
    :meth:`finish` writes the result (``.zarr`` chunked per plane, ``.tif`` or ``.npy``)
    atomically, relabelling on the way if asked, and removes the work store. So the result's
    name exists only for a complete volume, and a re-run redoes only unmarked planes.

    Attributes:
      path: the result (``<out>/<stem>.zarr``, ``.tif`` or ``.npy``).
      shape: leading axes + (rows, cols).
      dtype: the labels' dtype name.
    """

    path: str
    shape: tuple[int, ...]
    dtype: str = "uint32"

    @property
    def work_path(self) -> Path:
        result = Path(self.path)
        return result.with_name(f".{Path(result.stem).name}.planes.zarr")

    @property
    def done_folder(self) -> Path:
        return Path(str(self.work_path) + DONE_SUFFIX)

    def _marker(self, plane: tuple[int, ...]) -> Path:
        return self.done_folder / ("plane-" + "-".join(str(i) for i in plane))

    @property
    def complete(self) -> bool:
        return Path(self.path).exists()

    def plane_done(self, plane: tuple[int, ...]) -> bool:
        return self._marker(plane).is_file()

    def prepare(self, overwrite: bool = False) -> None:
        """Create the work store, or keep an unfinished one of this shape (to resume)."""
        import zarr

        if not overwrite and self.done_folder.is_dir():
            try:
                existing = zarr.open_array(str(self.work_path), mode="r")
                if tuple(existing.shape) == self.shape and str(existing.dtype) == self.dtype:
                    return
            except Exception:
                pass  # unreadable metadata: start over below
        for stale in (self.work_path, self.done_folder):
            if stale.exists():
                _remove(stale)
        self.done_folder.mkdir(parents=True)
        _new_zarr(self.work_path, self.shape, self.dtype, self._chunks())

    def _chunks(self) -> tuple[int, ...]:
        return (1,) * (len(self.shape) - 2) + tuple(self.shape[-2:])

    def write_plane(self, plane: tuple[int, ...], labels: np.ndarray) -> None:
        """Write one plane's region, then its marker (a worker calls this directly)."""
        import zarr

        array = zarr.open_array(str(self.work_path), mode="r+")
        array[plane] = labels.astype(self.dtype, copy=False)
        atomic_write(self._marker(plane), lambda tmp: tmp.write_text("done\n"))

    def planes_missing(self) -> list[tuple[int, ...]]:
        return [p for p in np.ndindex(*self.shape[:-2]) if not self.plane_done(p)]

    def finish(
        self, relabel: Callable[[Iterator[np.ndarray]], Iterator[np.ndarray]] | None = None
    ) -> Path:
        """Write the result from the work store, a plane at a time, and remove the store.

        Arguments:
          relabel: turns the planes (in order) into the planes to write, e.g. linking objects
            across planes; None writes them as they are.
        """
        import zarr

        target = Path(self.path)
        work = zarr.open_array(str(self.work_path), mode="r")
        planes = list(np.ndindex(*self.shape[:-2]))

        def source() -> Iterator[np.ndarray]:
            raw = (np.asarray(work[p]) for p in planes)
            return relabel(raw) if relabel is not None else raw

        def write(tmp: Path) -> None:
            if target.suffix == ".tif":
                import tifffile

                tifffile.imwrite(
                    tmp,
                    source(),
                    shape=self.shape,
                    dtype=self.dtype,
                    photometric="minisblack",
                    compression="zlib",
                )
            elif target.suffix == ".npy":
                out = np.lib.format.open_memmap(tmp, mode="w+", dtype=self.dtype, shape=self.shape)
                for p, plane in zip(planes, source(), strict=True):
                    out[p] = plane
                out.flush()
                del out
            else:
                tmp.unlink()  # mkstemp made a file; the store is a folder
                out = _new_zarr(tmp, self.shape, self.dtype, self._chunks())
                for p, plane in zip(planes, source(), strict=True):
                    out[p] = plane

        atomic_write(target, write)
        _remove(self.work_path)
        _remove(self.done_folder)
        return target
