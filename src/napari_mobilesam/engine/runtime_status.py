"""Which image-encoder runtimes can run here, without importing torch or the runtimes.

The widget lists the runtimes when it opens, before torch is loaded (torch takes seconds to
import); :mod:`napari_mobilesam.engine.runtimes` runs them.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

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


def bf16_supported() -> tuple[bool, str]:
    """Whether this CPU runs bfloat16 natively (AVX512-BF16 or AMX), and how that was found.

    Read from the CPU's own flags (``/proc/cpuinfo`` on Linux) or, elsewhere, from OpenVINO's
    capability query; never assumed. Without native support bf16 would be emulated: slower than
    float32 and still approximate.
    """
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        try:
            text = cpuinfo.read_text(errors="replace")
        except OSError:
            text = ""
        flags: set[str] = set()
        for line in text.splitlines():
            if line.startswith("flags"):
                flags.update(line.split(":", 1)[-1].split())
                break
        if flags:
            found = sorted(flags & {"avx512_bf16", "amx_bf16"})
            if found:
                return True, f"CPU flags: {', '.join(found)}"
            return False, "the CPU has neither avx512_bf16 nor amx_bf16"
    if importlib.util.find_spec("openvino") is not None:
        try:
            ov = importlib.import_module("openvino")
            capabilities = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" in capabilities:
                return True, "OpenVINO reports BF16 on this CPU"
            return False, "OpenVINO does not report BF16 on this CPU"
        except Exception as exc:  # any failure of the query means "unknown": not supported
            return False, f"the CPU's bf16 support could not be queried ({exc})"
    return False, "the CPU's bf16 support could not be determined"
