"""Read a MobileSAM checkpoint safely and say what a wrong file is.

The official file's identity (name, URL, size, sha256) lives here because the messages name it.
:func:`load_weights_state_dict` reads any candidate file without executing pickled code and
explains what a wrong file is (another SAM, SAM 2, an image, an HTML page, an empty or truncated
download...); :func:`check_state_dict` is the strict key/shape check ``build_mobile_sam`` runs.

torch is imported only inside the functions that need it, so the widget can name the weights
before torch is loaded. Finding and downloading the file is ``napari_mobilesam.engine.weights``.
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

# --- The official file. Module constants so tests (and mirrors) can patch them. ---------------
WEIGHTS_FILENAME = "mobile_sam.pt"
WEIGHTS_URL = "https://github.com/ChaoningZhang/MobileSAM/raw/master/weights/mobile_sam.pt"
WEIGHTS_SHA256 = "6dbb90523a35330fedd7f1d3dfc66f995213d81b29a5ca8108dbcdd4e37d6c2f"
WEIGHTS_SIZE = 40_728_226  # bytes; a cheap first check before hashing a cached file
WEIGHTS_LICENSE = "Apache-2.0"


class CheckpointError(ValueError):
    """A checkpoint that does not have the MobileSAM (``vit_t``) layout."""


def _summarise(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_state_dict(model: torch.nn.Module, state_dict: Mapping[str, object]) -> None:
    """Raise :class:`CheckpointError` naming every missing, unexpected or mis-shaped key."""
    import torch

    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mismatched = []
    for key, value in state_dict.items():
        if key in expected:
            if not isinstance(value, torch.Tensor):
                mismatched.append(f"{key} (not a tensor: {type(value).__name__})")
            elif tuple(value.shape) != tuple(expected[key].shape):
                mismatched.append(
                    f"{key} (checkpoint {tuple(value.shape)}, model {tuple(expected[key].shape)})"
                )
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_summarise(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_summarise(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} key(s) with the wrong shape: {_summarise(mismatched)}")
    if problems:
        raise CheckpointError(
            "The checkpoint does not have the MobileSAM (vit_t) layout: "
            + "; ".join(problems)
            + ". Use the official mobile_sam.pt or a fine-tuned file with the same layout."
            + layout_hint(state_dict)
        )


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict safely (``weights_only=True``: no pickled code is executed)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"MobileSAM checkpoint not found: {path}")
    try:
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for truncated or foreign files
        raise CheckpointError(
            f"Could not read {path} as a PyTorch checkpoint ({type(exc).__name__}: {exc}). "
            "The file may be truncated or not a torch file; download mobile_sam.pt again."
        ) from exc
    if not isinstance(state_dict, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(state_dict).__name__}, not a state dict of tensors."
        )
    return dict(state_dict)


# --- Recognising checkpoints -------------------------------------------------------------------

_NEEDED = (
    f"napari-mobilesam needs the MobileSAM vit_t file {WEIGHTS_FILENAME} "
    f"({WEIGHTS_URL}) or a fine-tuned file with the same layout"
)

# Keys under which training scripts commonly nest the model's state dict.
_WRAPPER_KEYS = ("model", "state_dict", "model_state_dict", "module", "net", "weights")

_SAM_VIT_SIZES = {768: "ViT-B", 1024: "ViT-L", 1280: "ViT-H"}
_SAM_VIT_DEPTHS = {12: "ViT-B", 24: "ViT-L", 32: "ViT-H"}

# The checkpoint kinds :func:`_classify` returns.
_MOBILESAM = "mobilesam"
_UNKNOWN = "unknown"
_KNOWN_FOREIGN = ("sam2", "hq-sam", "sam-vit", "encoder-only")


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else (plural or singular + 's')}"


def _keys_with(keys: list[str], prefixes: tuple[str, ...]) -> list[str]:
    return [k for k in keys if k.startswith(prefixes)]


def _examples(keys: list[str], limit: int = 3) -> str:
    """A few keys, shortened to their first three dotted parts, for a message."""
    seen: list[str] = []
    for key in keys:
        parts = key.split(".")
        short = ".".join(parts[:3]) + ("..." if len(parts) > 3 else "")
        if short not in seen:
            seen.append(short)
        if len(seen) == limit:
            break
    return ", ".join(seen)


def _sam_vit_size(state_dict: Mapping[str, Any], keys: list[str]) -> str:
    """ViT-B/L/H from the embedding width (pos_embed, patch_embed) or the number of blocks."""
    widths = (("image_encoder.pos_embed", -1), ("image_encoder.patch_embed.proj.weight", 0))
    for key, axis in widths:
        shape = getattr(state_dict.get(key), "shape", None)
        if shape is not None and len(shape) > 0 and int(shape[axis]) in _SAM_VIT_SIZES:
            return _SAM_VIT_SIZES[int(shape[axis])]
    block = re.compile(r"image_encoder\.blocks\.(\d+)\.")
    indices = {int(m.group(1)) for k in keys if (m := block.match(k))}
    if indices and max(indices) + 1 in _SAM_VIT_DEPTHS:
        return _SAM_VIT_DEPTHS[max(indices) + 1]
    return "ViT-B/L/H"


def _classify(state_dict: Mapping[Any, Any], depth: int = 0) -> tuple[str, str]:
    """(kind, description) of a loaded checkpoint; ``kind == "mobilesam"`` for our layout."""
    if len(state_dict) == 0:
        return "empty", "an empty dict (no weights at all)"
    keys = [str(k) for k in state_dict]

    sam2 = _keys_with(
        keys,
        (
            "image_encoder.trunk.",
            "memory_attention.",
            "memory_encoder.",
            "sam_mask_decoder.",
            "sam_prompt_encoder.",
            "obj_ptr_proj.",
        ),
    )
    if sam2:
        return "sam2", f"a SAM 2 / SAM 2.1 (Hiera) checkpoint ({_examples(sam2)})"
    hq = _keys_with(
        keys,
        (
            "mask_decoder.hf_",
            "mask_decoder.compress_vit_feat",
            "mask_decoder.embedding_encoder",
            "mask_decoder.embedding_maskfeature",
        ),
    )
    if hq:
        return "hq-sam", f"an HQ-SAM checkpoint (extra decoder keys {_examples(hq)})"
    vit = _keys_with(
        keys,
        ("image_encoder.blocks.", "image_encoder.pos_embed", "image_encoder.patch_embed.proj."),
    )
    if vit:
        size = _sam_vit_size(state_dict, keys)
        return "sam-vit", f"a SAM {size} checkpoint ({_examples(vit)})"
    tiny = _keys_with(keys, ("image_encoder.patch_embed.seq.", "image_encoder.layers."))
    if tiny:
        return _MOBILESAM, "a MobileSAM (vit_t, TinyViT image encoder) checkpoint"
    bare = _keys_with(keys, ("patch_embed.seq.", "layers.0."))
    if bare and not _keys_with(keys, ("mask_decoder.", "prompt_encoder.")):
        return "encoder-only", (
            "a TinyViT image-encoder-only checkpoint without the prompt encoder and mask decoder "
            f"({_examples(bare)}; e.g. from MobileSAM's distillation training)"
        )
    if depth < 2:
        for wrap in _WRAPPER_KEYS:
            inner = state_dict.get(wrap)
            if isinstance(inner, Mapping):
                inner_kind, inner_text = _classify(inner, depth + 1)
                if inner_kind in _KNOWN_FOREIGN:  # e.g. SAM 2's own {"model": {...}} format
                    return inner_kind, f"{inner_text}, stored under '{wrap}'"
                others = [k for k in keys if k != wrap]
                also = f" (other entries: {', '.join(others[:5])})" if others else ""
                return "wrapper", (
                    f"a training checkpoint whose weights sit under '{wrap}'{also}, holding "
                    f"{inner_text}"
                )
    n_tensors = sum(hasattr(v, "shape") for v in state_dict.values())
    if n_tensors == 0:
        entries = _count(len(keys), "entry", "entries")
        return "no-tensors", f"a dict of {entries} without any tensor ({_examples(keys)})"
    return _UNKNOWN, (
        f"a dict of {_count(len(keys), 'entry', 'entries')} ({_count(n_tensors, 'tensor')}) "
        "that matches no known model "
        f"(first keys: {_examples(keys)})"
    )


def identify_checkpoint(state_dict: Mapping[Any, Any]) -> str:
    """Describe a loaded checkpoint in words, e.g. "a SAM ViT-B checkpoint (image_encoder...)".

    Recognises MobileSAM, SAM ViT-B/L/H, HQ-SAM, SAM 2, a TinyViT encoder alone, training
    wrappers (``{"model": ...}``), empty dicts, and dicts without tensors. Needs no torch.
    """
    return _classify(state_dict)[1]


def layout_hint(state_dict: Mapping[Any, Any]) -> str:
    """A sentence for error messages: " It looks like <what>." unless it is MobileSAM ("")."""
    kind, text = _classify(state_dict)
    return "" if kind == _MOBILESAM else f" It looks like {text}."


def unwrap_state_dict(checkpoint: Mapping[Any, Any]) -> dict[Any, Any]:
    """The MobileSAM state dict inside common wrappers, else ``checkpoint`` unchanged (a dict).

    Unwraps ``{"model"|"state_dict"|...: sd, ...}`` (training checkpoints) and strips a
    ``module.`` prefix (``DataParallel``), but only when the result has the MobileSAM layout, so a
    wrapper around something else is left for the error message to explain.
    """
    candidates: list[Mapping[Any, Any]] = [checkpoint]
    for wrap in _WRAPPER_KEYS:
        inner = checkpoint.get(wrap)
        if isinstance(inner, Mapping):
            candidates.append(inner)
    for candidate in candidates:
        if _classify(candidate, depth=2)[0] == _MOBILESAM:
            return dict(candidate)
        keys = list(candidate)
        if keys and all(isinstance(k, str) and k.startswith("module.") for k in keys):
            stripped = {k[len("module.") :]: v for k, v in candidate.items()}
            if _classify(stripped, depth=2)[0] == _MOBILESAM:
                return stripped
    return dict(checkpoint)


# --- Recognising files -------------------------------------------------------------------------

_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive (unpack it first)"),
    (b"BZh", "a bzip2 archive (unpack it first)"),
    (b"\xfd7zXZ\x00", "an xz archive (unpack it first)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive (unpack it first)"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (e.g. Keras weights)"),
    (b"version https://git-lfs", "a Git LFS pointer, not the weights (clone with git-lfs)"),
)


def identify_file(path: str | os.PathLike[str]) -> str | None:
    """Describe a file that is certainly not a readable PyTorch checkpoint, else None.

    Looks only at the size and the first bytes (and, for zip files, the directory), so it is
    cheap and never unpickles anything. None means "may be a checkpoint: let torch try".
    """
    path = Path(path)
    size = path.stat().st_size
    if size == 0:
        return "an empty file (0 bytes: an interrupted download or copy)"
    with open(path, "rb") as fh:
        head = fh.read(1024)
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return what
    if head.startswith(b"PK"):
        # torch.save's format is a zip whose directory sits at the end: a cut-off copy has none.
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except zipfile.BadZipFile:
            return (
                f"a truncated (incomplete) checkpoint: {size:,} bytes with no zip directory at "
                f"the end (the official {WEIGHTS_FILENAME} is {WEIGHTS_SIZE:,} bytes)"
            )
        if not any(name == "data.pkl" or name.endswith("/data.pkl") for name in names):
            return f"a zip archive that is not a PyTorch checkpoint (contains {names[:3]})"
        return None
    if len(head) >= 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < size:
        return "a safetensors file (napari-mobilesam reads PyTorch .pt files)"
    if path.suffix.lower() == ".onnx":
        return "an ONNX model (napari-mobilesam reads the PyTorch .pt weights)"
    if head.startswith(b"\x80"):
        return None  # a pickle: the legacy torch.save format, or a plain pickle
    lowered = head.lstrip().lower()
    if lowered.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head")) or b"<html" in lowered:
        return "an HTML page (a web page was saved instead of the file; use the raw download link)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if all(ch.isprintable() or ch in "\r\n\t" for ch in text):
        first = text.strip().splitlines()[0][:60] if text.strip() else ""
        return f"a text file (starting with {first!r})"
    return None


def load_weights_state_dict(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a weights file into a MobileSAM state dict, explaining any wrong file.

    Never executes pickled code (``torch.load(weights_only=True)`` via
    :func:`load_checkpoint`). Foreign files (images, HTML, archives,
    empty or truncated files) are recognised from their first bytes before torch reads them.
    Training wrappers and ``module.`` prefixes are unwrapped. The strict key/shape check is
    :func:`check_state_dict` (``build_mobile_sam`` runs it).

    Returns:
      ``{key: tensor}`` with the MobileSAM layout (or an unrecognised dict, for the strict check
      to report key by key).

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: the file is unreadable or another model; the message says what it is.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"MobileSAM checkpoint not found: {path}")
    what = identify_file(path)
    if what is not None:
        raise CheckpointError(f"{path} is {what}, not a PyTorch checkpoint; {_NEEDED}.")
    state_dict = unwrap_state_dict(load_checkpoint(path))
    kind, text = _classify(state_dict)
    if kind not in (_MOBILESAM, _UNKNOWN):
        raise CheckpointError(f"{path} looks like {text}; {_NEEDED}.")
    return state_dict
