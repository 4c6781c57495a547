"""Choose the compute device and build (once) the predictor for a weights file.

torch is imported inside the functions: napari imports the plugin's widget module when it lists
the plugin's widgets, and that must not pay torch's import time.
"""

from __future__ import annotations

import threading
import warnings
from pathlib import Path
from typing import Any

DEVICE_CHOICES = ("auto", "cuda", "mps", "cpu")


def resolve_device(choice: str = "auto") -> str:
    """The torch device for a user choice: ``auto`` picks CUDA, then Apple MPS, then CPU.

    A forced device that is not available falls back to CPU with a warning rather than failing
    later inside the model.
    """
    import torch

    if choice not in DEVICE_CHOICES:
        raise ValueError(f"device must be one of {DEVICE_CHOICES}, got {choice!r}")
    cuda = torch.cuda.is_available()
    mps = bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())
    if choice == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if (choice == "cuda" and not cuda) or (choice == "mps" and not mps):
        warnings.warn(f"{choice} is not available here; using the CPU.", stacklevel=2)
        return "cpu"
    return choice


def weights_path(value: str | Path | None) -> Path | None:
    """A weights file path, or ``None`` for an empty field (automatic: see ``weights.py``)."""
    if value is None or str(value).strip() in ("", "."):
        return None
    return Path(value).expanduser()


class PredictorLoader:
    """Keeps one predictor and rebuilds it only when the weights file or the device changes.

    Building is thread-safe: the widget builds in its worker thread while scripts may call in.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._key: tuple[Path | None, str, str] | None = None  # (weights, device, runtime)
        self._predictor: Any = None
        self.source: Path | None = None  # the weights file the predictor was built from
        # Devices that failed while running the model: the CPU stands in for them.
        self._failed: set[str] = set()
        # What runs the image encoder when a call does not say (the widget's runtime choice).
        self.runtime_choice = "torch"

    @property
    def device(self) -> str | None:
        """Device of the predictor built last, or ``None`` before the first build."""
        return None if self._key is None else self._key[1]

    @property
    def runtime(self) -> str | None:
        """What runs the image encoder of the predictor built last ("torch", "onnxruntime" or
        "openvino"; "auto" resolved), or ``None`` before the first build."""
        if self._predictor is None:
            return None
        from napari_mobilesam.engine.runtimes import RuntimeEncoder

        encoder = getattr(getattr(self._predictor, "model", None), "image_encoder", None)
        return encoder.runtime if isinstance(encoder, RuntimeEncoder) else "torch"

    def _device_for(self, choice: str) -> str:
        device = resolve_device(choice)
        return "cpu" if device in self._failed else device

    def fall_back_to_cpu(self, weights: str | Path | None, choice: str) -> Any:
        """After a failure on the device ``choice`` resolves to, use the CPU for it instead.

        Returns the CPU predictor (built now). The CPU stays in use for that device until
        :meth:`forget_failures` (the user picks a device again) or :meth:`set_predictor`.
        """
        with self._lock:
            self._failed.add(resolve_device(choice))
            runtime = self._key[2] if self._key is not None else "torch"
        return self.get(weights, choice, runtime=runtime)

    def forget_failures(self) -> None:
        """Try the devices that failed again on the next build."""
        self._failed.clear()

    def is_loaded(
        self, weights: str | Path | None, device: str = "auto", runtime: str | None = None
    ) -> bool:
        """Whether :meth:`get` would return without building."""
        runtime = self.runtime_choice if runtime is None else runtime
        return self._key == (weights_path(weights), self._device_for(device), runtime)

    def get(
        self,
        weights: str | Path | None,
        device: str = "auto",
        progress: Any = True,
        runtime: str | None = None,
        message: Any = None,
    ) -> Any:
        """The ``SamPredictor`` for ``weights`` on ``device``, its encoder run by ``runtime``.

        ``None`` means automatic: ``$NAPARI_MOBILESAM_WEIGHTS``, then the cache, then a
        hash-checked download (see :func:`napari_mobilesam.engine.weights.resolve_weights`), with
        ``progress`` as its progress bar (True: terminal bar; a callable ``(done, total)``).
        ``runtime`` is one of :data:`napari_mobilesam.engine.runtimes.RUNTIME_CHOICES` (see
        :func:`~napari_mobilesam.engine.runtimes.use_runtime`; which are installed:
        :func:`~napari_mobilesam.engine.runtimes.available_runtimes`); ``message`` receives the
        one-time notices of building a runtime's graph (default: printed to stderr). ``None``
        means :attr:`runtime_choice`.
        """
        runtime = self.runtime_choice if runtime is None else runtime
        key = (weights_path(weights), self._device_for(device), runtime)
        with self._lock:
            if self._key != key:
                from napari_mobilesam.engine.predictor import SamPredictor
                from napari_mobilesam.engine.weights import resolve_weights
                from napari_mobilesam.model.build import build_mobile_sam

                path = resolve_weights(key[0], progressbar=progress)
                model = build_mobile_sam(str(path), device=key[1])
                if runtime != "torch":
                    from napari_mobilesam.engine.runtimes import use_runtime

                    use_runtime(model, runtime, progress=message)
                self._predictor = SamPredictor(model)
                self._key = key
                self.source = path
            return self._predictor

    def set_predictor(
        self, predictor: Any, weights: str | Path | None, device: str, runtime: str = "torch"
    ) -> None:
        """Use an already built predictor (scripts and tests that share one model)."""
        with self._lock:
            self._failed.clear()
            self._predictor = predictor
            self._key = (weights_path(weights), resolve_device(device), runtime)
            self.source = weights_path(weights)
