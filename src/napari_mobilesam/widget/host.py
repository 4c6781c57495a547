"""What a section of the dock widget may use of the widget that holds it.

The dock widget (:class:`napari_mobilesam.widget.dock_widget.MobileSAMWidget`) composes its
sections: the interactive preview, the 3D section, "Segment everything". Each section gets the
widget as a :class:`WidgetHost` and uses only what is listed here: the shared model (loader,
embedding cache, model lock), the chosen layers and settings, the status line and the commit
target. A new section is a panel (a ``FormSection``) plus a runner built on
:class:`napari_mobilesam.widget.worker_runner.WorkerRunner`, added in the dock widget's
``__init__``; it needs nothing private of the widget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import threading
    from pathlib import Path

    import napari
    from napari.layers import Image, Labels, Points, Shapes

    from napari_mobilesam.engine.embedding_cache import EmbeddingCache
    from napari_mobilesam.engine.predictor_loader import PredictorLoader
    from napari_mobilesam.layers.segment import SegmentedObject, SegmentRequest
    from napari_mobilesam.widget.status_line import StatusLine


class WidgetHost(Protocol):
    """The dock widget as its sections see it (``MobileSAMWidget`` provides it).

    Attributes:
        viewer: the napari viewer.
        loader: builds and keeps the predictor for the chosen weights and device.
        cache: embeddings of recently encoded planes, shared by every section.
        model_lock: held by whoever runs the model, one step at a time.
        status: the status and device lines, the download bar, and notifications.
    """

    viewer: napari.viewer.Viewer
    loader: PredictorLoader
    cache: EmbeddingCache
    model_lock: threading.Lock
    status: StatusLine

    @property
    def closed(self) -> bool:
        """Whether the widget was torn down (its Qt controls may be gone)."""

    @property
    def weights(self) -> Path | None: ...
    @property
    def device(self) -> str: ...
    @property
    def protect(self) -> bool: ...
    @property
    def live(self) -> bool: ...
    @property
    def multimask(self) -> bool: ...
    @property
    def each_point(self) -> bool: ...
    @property
    def image_layer(self) -> Image | None: ...
    @property
    def points_layer(self) -> Points | None: ...
    @property
    def shapes_layer(self) -> Shapes | None: ...

    def capture_request(self) -> SegmentRequest:
        """The plane on screen and its prompts, read now (main thread)."""

    def require_image(self) -> Image:
        """The chosen image layer; ``ValueError`` when there is none."""

    def target_labels(self, image: Image) -> Labels:
        """The Labels layer to write into (created, aligned to ``image``, if none is chosen)."""

    def current_objects(self) -> list[SegmentedObject]:
        """The previewed objects if they match the prompts on screen, else ``[]``."""

    def segment(self) -> list[SegmentedObject]:
        """Segment the prompts on the current plane now, in the calling thread."""

    def finish_commit(self, message: str) -> None:
        """Report a write, then clear the preview and the prompts that made it."""

    def watch_window(self) -> None:
        """Tear the widget down with napari's main window too (called when work starts)."""

    def interactive_started(self) -> None:
        """An interactive run wants the model: background work gives way."""

    def interactive_finished(self) -> None:
        """The interactive run is over: background work may resume."""
