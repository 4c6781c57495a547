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

import hashlib
import json
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from napari_mobilesam.engine.atomic_files import (
    remove_path,
    temporary_name,
    write_atomically,
    write_text_atomically,
)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
TIFF_SUFFIXES = (".tif", ".tiff")
OUTPUT_FORMATS = ("tif", "zarr", "npy")
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


def _finite_range(arrays: list[np.ndarray]) -> tuple[float, float]:
    """(min, max) over the finite values (NaN and +-inf pixels would give a layer limits that
    show nothing; napari shows such data with finite limits); (0, 1) when none is finite."""
    lows, highs = [], []
    for array in arrays:
        array = np.asarray(array)
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            array = array[np.isfinite(array)]
        if array.size:
            lows.append(float(array.min()))
            highs.append(float(array.max()))
    return (min(lows), max(highs)) if lows else (0.0, 1.0)


# napari samples three planes instead of reading everything above this many values.
_NAPARI_FULL_RANGE_LIMIT = 1e7


def napari_contrast_limits(source: ImageSource, data: np.ndarray | None = None) -> tuple:
    """The contrast limits napari gives a new Image layer of this data (numpy, as napari's
    reader loads TIFF/PNG files), so that ``embed`` fills the cache entries the plugin looks up.

    Mirrors napari's ``calc_data_range``: uint8 -> (0, 255); otherwise the minimum and maximum
    of the finite values (of the top, middle and bottom planes only when the array has more
    than 1e7 values); a constant image widens to include 0 and 1.
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
        low, high = _finite_range(planes)
    else:
        data = source.read_all() if data is None else data
        low, high = _finite_range([data])
    if low == high:
        low, high = min(low, 0.0), max(high, 1.0)
    return (low, high)


# --- Outputs and their manifests --------------------------------------------------------------

MANIFEST_SUFFIX = ".napari-mobilesam.json"
PROGRAM = "napari-mobilesam"
# States of an output at planning time (see output_state).
ABSENT, DONE_SAME, OURS_STALE, OURS_OTHER, FOREIGN = "absent", "same", "stale", "other", "foreign"


def manifest_path(output: str | os.PathLike[str]) -> Path:
    """The manifest of an output: ``.<name>.napari-mobilesam.json`` beside it."""
    output = Path(output)
    return output.with_name(f".{output.name}{MANIFEST_SUFFIX}")


def input_identity(source: ImageSource) -> dict[str, Any]:
    """What tells this input from another and from an edited copy of itself: the resolved
    path, the array inside, shape, dtype, and the size and modification time of the file (of
    a zarr array: of its metadata file)."""
    path = Path(source.path).resolve()
    stat_of = path
    if source.component is not None or path.is_dir():
        folder = path / (source.component or "")
        stat_of = next(
            (folder / m for m in ("zarr.json", ".zarray") if (folder / m).is_file()), folder
        )
    st = stat_of.stat()
    return {
        "path": os.fsdecode(path).encode("utf-8", "surrogateescape").decode("utf-8", "replace"),
        "component": source.component,
        "shape": list(source.shape),
        "dtype": source.dtype,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def recipe_digest(recipe: dict[str, Any]) -> str:
    """A short hash of what an output is made from (input, prompts, parameters, weights)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _output_stamp(output: Path) -> dict[str, Any]:
    st = output.stat()
    if output.is_dir():  # a zarr store: renamed into place whole, so its folder identifies it
        return {"kind": "folder", "inode": st.st_ino, "mtime_ns": st.st_mtime_ns}
    return {"kind": "file", "size": st.st_size, "inode": st.st_ino, "mtime_ns": st.st_mtime_ns}


def read_manifest(output: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The manifest of ``output`` if this program wrote one, else None."""
    try:
        data = json.loads(manifest_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("program") != PROGRAM:
        return None
    return data


def output_state(output: str | os.PathLike[str], digest: str) -> str:
    """What is at ``output`` compared with what a task would write there.

    ``ABSENT``: nothing. ``DONE_SAME``: this program wrote it from the same recipe and it is
    unchanged since. ``OURS_STALE``: this program was writing it when it stopped (redo it).
    ``OURS_OTHER``: this program wrote it from another input, prompts, parameters or weights.
    ``FOREIGN``: something this program did not write (also a folder where a file goes).
    """
    output = Path(output)
    manifest = read_manifest(output)
    if not output.exists() and not output.is_symlink():
        return ABSENT
    if manifest is None or output.is_symlink():
        return FOREIGN
    if manifest.get("state") != "done":
        return OURS_STALE
    try:
        unchanged = manifest.get("output") == _output_stamp(output)
    except OSError:
        unchanged = False
    if not unchanged:
        return OURS_OTHER
    return DONE_SAME if manifest.get("digest") == digest else OURS_OTHER


def write_output(
    output: str | os.PathLike[str],
    write: Callable[[Path], None],
    recipe: dict[str, Any] | None,
) -> Path:
    """Write an output atomically under its manifest: the manifest first claims the name
    (``state: writing``), then the output is renamed into place, then the manifest records it
    as done with the output's size and time. A stop at any point leaves either no output or
    one this program recognises as its own. An existing output is replaced only if this
    program wrote it (its manifest is there); anything else raises FileExistsError.
    """
    output = Path(output)
    recipe = recipe or {}
    digest = recipe_digest(recipe)
    if (output.exists() or output.is_symlink()) and read_manifest(output) is None:
        raise FileExistsError(
            f"{output} exists and was not written by napari-mobilesam; it is left alone "
            "(move it away or choose another --out)"
        )
    entry = {"program": PROGRAM, "digest": digest, "recipe": recipe}
    manifest = manifest_path(output)
    try:
        previous: str | None = manifest.read_text(encoding="utf-8")
    except OSError:
        previous = None
    write_text_atomically(manifest, json.dumps({**entry, "state": "writing"}))
    try:
        write_atomically(output, write, replace_folder=True)
    except BaseException:
        # Nothing was renamed into place: leave what was there (the old output keeps its old
        # manifest; no output, no manifest). A kill here instead leaves "writing": redone.
        if previous is None:
            manifest.unlink(missing_ok=True)
        else:
            write_text_atomically(manifest, previous)
        raise
    done = {**entry, "state": "done", "output": _output_stamp(output)}
    write_text_atomically(manifest_path(output), json.dumps(done, indent=1) + "\n")
    return output


def output_path(out_dir: str | os.PathLike[str], stem: str, fmt: str) -> Path:
    """Where the labels of an input with base name ``stem`` go."""
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {fmt!r}")
    return Path(out_dir) / f"{stem}.{fmt}"


def write_labels(
    path: str | os.PathLike[str], labels: np.ndarray, recipe: dict[str, Any] | None = None
) -> Path:
    """Write a label image atomically as ``.tif`` (zlib), ``.npy`` or ``.zarr``, with its
    manifest (see :func:`write_output`)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown label format {fmt!r} for {path}")

    def write(tmp: Path) -> None:
        if fmt == "tif":
            import tifffile

            tifffile.imwrite(tmp, labels, photometric="minisblack", compression="zlib")
        elif fmt == "npy":
            with open(tmp, "wb") as f:
                np.save(f, labels, allow_pickle=False)
        else:
            _new_zarr(tmp, labels.shape, labels.dtype, labels.shape)[...] = labels

    return write_output(path, write, recipe)


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
        probe = temporary_name(folder / "write-test")
        os.close(os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
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
    atomically with its manifest (:func:`write_output`), relabelling on the way if asked, and
    removes the work store. So the result's name exists only for a complete volume, and a
    re-run of the same recipe redoes only unmarked planes (the work store records the recipe's
    digest: another recipe starts over).

    Attributes:
      path: the result (``<out>/<stem>.zarr``, ``.tif`` or ``.npy``).
      shape: leading axes + (rows, cols).
      dtype: the labels' dtype name.
      recipe: JSON text of what the volume is made from (input, prompts, parameters, weights).
    """

    path: str
    shape: tuple[int, ...]
    dtype: str = "uint32"
    recipe: str = "{}"

    @property
    def digest(self) -> str:
        return recipe_digest(json.loads(self.recipe))

    def state(self) -> str:
        """The result's :func:`output_state` for this recipe."""
        return output_state(self.path, self.digest)

    @property
    def work_path(self) -> Path:
        result = Path(self.path)
        return result.with_name(f".{Path(result.stem).name}.planes.zarr")

    @property
    def done_folder(self) -> Path:
        return Path(str(self.work_path) + DONE_SUFFIX)

    def _marker(self, plane: tuple[int, ...]) -> Path:
        return self.done_folder / ("plane-" + "-".join(str(i) for i in plane))

    def plane_done(self, plane: tuple[int, ...]) -> bool:
        return self._marker(plane).is_file()

    def prepare(self, overwrite: bool = False) -> None:
        """Create the work store, or keep an unfinished one of this shape (to resume)."""
        import zarr

        recipe_file = self.done_folder / "recipe"
        if not overwrite and self.done_folder.is_dir():
            try:
                same = recipe_file.read_text() == self.digest
                existing = zarr.open_array(str(self.work_path), mode="r")
                if (
                    same
                    and tuple(existing.shape) == self.shape
                    and str(existing.dtype) == self.dtype
                ):
                    return
            except Exception:
                pass  # another recipe, or unreadable metadata: start over below
        for stale in (self.work_path, self.done_folder):
            remove_path(stale)
        self.done_folder.mkdir(parents=True)
        _new_zarr(self.work_path, self.shape, self.dtype, self._chunks())
        write_text_atomically(recipe_file, self.digest)

    def _chunks(self) -> tuple[int, ...]:
        return (1,) * (len(self.shape) - 2) + tuple(self.shape[-2:])

    def write_plane(self, plane: tuple[int, ...], labels: np.ndarray) -> None:
        """Write one plane's region, then its marker (a worker calls this directly)."""
        import zarr

        array = zarr.open_array(str(self.work_path), mode="r+")
        array[plane] = labels.astype(self.dtype, copy=False)
        write_text_atomically(self._marker(plane), "done\n")

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
                out = _new_zarr(tmp, self.shape, self.dtype, self._chunks())
                for p, plane in zip(planes, source(), strict=True):
                    out[p] = plane

        write_output(target, write, json.loads(self.recipe))
        remove_path(self.work_path)
        remove_path(self.done_folder)
        return target
