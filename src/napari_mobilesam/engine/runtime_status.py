"""Which image-encoder runtimes can run here, without importing torch or the runtimes.

The widget lists the runtimes when it opens, before torch is loaded (torch takes seconds to
import); :mod:`napari_mobilesam.engine.runtimes` runs them.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from importlib import metadata

RUNTIMES = ("torch", "onnxruntime", "openvino")
RUNTIME_CHOICES = ("auto", *RUNTIMES)
# runtime -> (its package, the pip extra that installs it)
_PACKAGES = {"onnxruntime": ("onnxruntime", "onnx"), "openvino": ("openvino", "openvino")}


@dataclass(frozen=True)
class RuntimeStatus:
    """Whether a runtime can be used here, and why not.

    Attributes:
      name: "torch", "onnxruntime" or "openvino".
      available: the packages it needs are installed.
      version: the runtime package's version, when installed.
      reason: why it is unavailable (names the pip extra), "" when available.
    """

    name: str
    available: bool
    version: str | None
    reason: str = ""


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def available_runtimes() -> dict[str, RuntimeStatus]:
    """Every runtime with its availability, in :data:`RUNTIMES` order; imports nothing heavy.

    A widget can list all three and disable the unavailable ones with ``reason`` as tooltip.
    """
    statuses = {"torch": RuntimeStatus("torch", True, _version("torch"))}
    for name, (package, extra) in _PACKAGES.items():
        needed = [package, "onnx"]
        missing = [p for p in needed if importlib.util.find_spec(p) is None]
        if missing:
            reason = (
                f'{" and ".join(missing)} not installed: pip install "napari-mobilesam[{extra}]"'
            )
            statuses[name] = RuntimeStatus(name, False, _version(package), reason)
        else:
            statuses[name] = RuntimeStatus(name, True, _version(package))
    return statuses
