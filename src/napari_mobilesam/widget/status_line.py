"""The dock widget's read-outs and notifications: the status line, the device line, the
weights download bar, and errors and warnings from the workers (each shown once).

A failure gets one short status line; its details go into the notification, whose first line
napari shows and whose full text opens with the notification's expand button.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from magicgui.widgets import Label
from napari.utils import progress as napari_progress
from napari.utils.notifications import show_error, show_info, show_warning

from napari_mobilesam.widget.sections import breakable

if TYPE_CHECKING:
    from napari_mobilesam.engine.predictor_loader import PredictorLoader

NO_WEIGHTS = "No weights: choose a file under Model, or see Weights in the README"


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from."""
    found: list[BaseException] = []
    while exc is not None and exc not in found:
        found.append(exc)
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return found


def describe_error(exc: BaseException) -> tuple[str, str]:
    """A failure as (short status, details for the notification)."""
    from napari_mobilesam.engine.weights import WeightsDownloadError

    for link in _chain(exc):
        if isinstance(link, WeightsDownloadError):
            return NO_WEIGHTS, str(link)
    text = str(exc).strip() or type(exc).__name__
    first, _, rest = text.partition("\n")
    return first, rest.strip()


class StatusLine:
    """The status and device read-outs of one dock widget, and its notifications.

    Attributes:
        outcome_shown: whether the status line shows an outcome (a commit, an error) that a
            run with nothing to segment should leave in view.
        closed: set when the widget is torn down; nothing is shown after that.
    """

    def __init__(self, status: Label, device: Label, loader: PredictorLoader) -> None:
        self._status = status
        self._device = device
        self._loader = loader
        self._download_bar: Any = None
        self.outcome_shown = False
        self.closed = False

    @property
    def text(self) -> str:
        """The status line as shown (without the wrapping hints)."""
        return str(self._status.value).replace("\u200b", "")

    def set(self, text: str, outcome: bool = False) -> None:
        """Show ``text`` in the status line. An ``outcome`` (a commit, a propagation, an error)
        stays until the next action, instead of being replaced by "0 object(s)"."""
        if self.closed:
            return
        self._status.value = breakable(text)
        self.outcome_shown = outcome

    def show_device(self) -> None:
        """The device, weights and encoder runtime of the loaded model (once one is)."""
        loader = self._loader
        if self.closed or loader.device is None:
            return
        source = "random weights" if loader.source is None else loader.source.name
        runtime = loader.runtime
        encoder = "" if runtime in (None, "torch") else f", encoder: {runtime}"
        self._device.value = f"{loader.device} ({source}{encoder})"

    def device_unknown(self) -> None:
        """The model will be built again (other weights, device or runtime)."""
        self._device.value = "not loaded yet"

    def show_download(self, fraction: float | None) -> None:
        """napari's progress bar for a weights download; ``None`` closes it."""
        if fraction is None:
            if self._download_bar is not None:
                self._download_bar.close()
                self._download_bar = None
            return
        if self._download_bar is None:
            self._download_bar = napari_progress(total=100, desc="Downloading mobile_sam.pt")
        self._download_bar.update(int(100 * fraction) - self._download_bar.n)

    # ------------------------------------------------------------------ notifications
    def error(self, exc: BaseException, prefix: str = "") -> None:
        """A failed run: a short status line, the details in one notification."""
        # napari's worker classes do not relay errors or warnings to the notification area
        # (their notifying mixin never gets initialised), so the widget does it, once.
        short, details = describe_error(exc)
        self.set(short if short == NO_WEIGHTS else f"{prefix}error: {short}", outcome=True)
        show_error(f"MobileSAM: {short}" + (f"\n\n{details}" if details else ""))

    def worker_warning(self, show_warning_args: tuple[Any, ...]) -> None:
        """A warning raised in a worker (e.g. the fall-back from a failed GPU)."""
        if not self.closed:
            show_warning(f"MobileSAM: {show_warning_args[0]}")

    def warn(self, message: str) -> None:
        """A refusal the user should see even with the widget scrolled away."""
        show_warning(f"MobileSAM: {message}")

    def info(self, message: str) -> None:
        show_info(f"MobileSAM: {message}")
