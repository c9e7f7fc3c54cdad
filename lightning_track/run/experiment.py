"""RunLogger's images, text and histograms, and the TensorBoard-style ``logger.experiment``.

Why ``experiment`` speaks TensorBoard: code written for ``TensorBoardLogger`` calls
``self.logger.experiment.add_scalar / add_image / add_text / ...`` (a ``SummaryWriter``). With RunLogger the
same calls land where ``log_metrics`` and :meth:`MediaLogging.log_image` put them: ``metrics.jsonl``,
``media/`` + ``media.jsonl``, TensorBoard and SwanLab, encoded off the training thread. The object is also
the run's :class:`~lightning_track.folder.layout.RunLayout` (a subclass), so code that used
``logger.experiment.run_dir`` or ``.checkpoints_dir`` keeps working (on rank 0: the other ranks get
Lightning's ``DummyExperiment``, as from every Lightning logger; ``logger.layout`` is the folder there).

Steps follow the run's one step convention: a step Lightning or the module chose (``self.global_step``)
becomes the step of the batch it belongs to; ``step=None`` is the current batch's step.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from ..folder.layout import RunLayout
from ..folder.media import HISTOGRAM, IMAGE, TEXT
from .media import MediaItem, histogram_values, image_array, image_grid

__all__ = ["MediaLogging", "RunExperiment", "RunWriting"]


def _is_batch(images: Any) -> bool:
    """A list of images, or one 4-D array/tensor (a batch, NCHW/NHWC)."""
    if isinstance(images, (list, tuple)):
        return True
    shape = getattr(images, "shape", None)
    return shape is not None and len(shape) == 4


class MediaLogging:
    """Images, text and histograms turned into :class:`~lightning_track.run.media.MediaItem` s for the run.

    Owned by :class:`~lightning_track.run.logger.RunLogger` (which calls it on rank 0 only): ``step`` is the
    run's step convention (an explicit step, or None for the current batch's), ``queue`` hands the items to
    the run's writer.
    """

    def __init__(self, step: Callable[[int | None], int], queue: Callable[[list[MediaItem]], None]) -> None:
        self._step, self._queue = step, queue

    def log_image(self, key: str, images: Any, step: int | None = None, caption: str | Sequence[str] | None = None,
                  dataformats: str | None = None) -> None:
        """Log one image or several (a list, or a 4-D batch): torch tensors, numpy arrays (``CHW``/``HWC``/
        ``HW``, floats in [0, 1] or 0-255 integers), PIL images, matplotlib figures. Only a copy of the
        pixels is taken here; the PNG files, ``media.jsonl``, TensorBoard and SwanLab are written off the
        training thread. ``caption``: one, or one per image."""
        batch = _is_batch(images)
        if batch and not isinstance(images, (list, tuple)):
            fmt = (dataformats or "NCHW").upper()
            images = [images[i] for i in range(images.shape[0])]
            dataformats = fmt[1:]
        items = list(images) if batch else [images]
        captions = list(caption) if isinstance(caption, (list, tuple)) else [caption] * len(items)
        if len(captions) != len(items):
            raise ValueError(f"log_image({key!r}): {len(captions)} captions for {len(items)} images")
        step, now = self._media_step(step), time.time()
        self._queue([MediaItem(key, step, now, IMAGE, image_array(image, dataformats), text,
                                     {"index": i, "many": len(items) > 1})
                           for i, (image, text) in enumerate(zip(items, captions, strict=True))])

    def log_text(self, key: str, text: Any = None, step: int | None = None, *, columns: Sequence[Any] | None = None,
                 rows: Sequence[Sequence[Any]] | None = None) -> None:
        """Log a string, or a table: ``columns=`` and ``rows=``, a pandas DataFrame, or a list of dicts."""
        if isinstance(text, str) and columns is None and rows is None:
            value: Any = text
        else:
            if text is not None and hasattr(text, "columns") and hasattr(text, "values"):  # a DataFrame
                columns, rows = list(text.columns), text.values.tolist()
            elif isinstance(text, (list, tuple)) and text and all(isinstance(r, Mapping) for r in text):
                columns = list(dict.fromkeys(k for r in text for k in r))
                rows = [[r.get(c, "") for c in columns] for r in text]
            elif text is not None:
                raise TypeError(f"log_text({key!r}): give a string, columns= and rows=, a DataFrame or a list of "
                                f"dicts, not {type(text).__name__}")
            if columns is None or rows is None:
                raise TypeError(f"log_text({key!r}): a table needs both columns= and rows=")
            value = ([list(r) for r in rows], list(columns))
        self._queue([MediaItem(key, self._media_step(step), time.time(), TEXT, value)])

    def log_histogram(self, key: str, values: Any, step: int | None = None) -> None:
        """Log the distribution of ``values`` (a tensor or array of any shape; TensorFlow's buckets)."""
        self._queue([MediaItem(key, self._media_step(step), time.time(), HISTOGRAM, histogram_values(values))])

    def _media_step(self, step: int | None) -> int:
        """The step convention of every file: an explicit step as for ``log_metrics``; None is the batch's."""
        return self._step(None if step is None else int(step))


class RunWriting(Protocol):
    """What ``RunExperiment`` writes through: the RunLogger's logging methods."""

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None: ...

    def log_image(self, key: str, images: Any, step: int | None = None) -> None: ...

    def log_text(self, key: str, text: Any = None, step: int | None = None) -> None: ...

    def log_histogram(self, key: str, values: Any, step: int | None = None) -> None: ...


class RunExperiment(RunLayout):
    """The run's layout, plus ``SummaryWriter``'s ``add_*`` methods writing through the RunLogger."""

    def __init__(self, run_dir: str | Path, logger: RunWriting | None) -> None:
        super().__init__(run_dir)
        self._logger = logger  # None on ranks > 0: every add_* is a no-op

    def add_scalar(self, tag: str, scalar_value: Any, global_step: int | None = None, walltime: float | None = None,
                   **_: Any) -> None:
        if self._logger is not None:
            self._logger.log_metrics({tag: scalar_value}, step=global_step)

    def add_scalars(self, main_tag: str, tag_scalar_dict: Mapping[str, Any], global_step: int | None = None,
                    walltime: float | None = None) -> None:
        if self._logger is not None:
            self._logger.log_metrics({f"{main_tag}/{k}": v for k, v in tag_scalar_dict.items()}, step=global_step)

    def add_image(self, tag: str, img_tensor: Any, global_step: int | None = None, walltime: float | None = None,
                  dataformats: str = "CHW") -> None:
        if self._logger is not None:
            self._logger.log_image(tag, image_array(img_tensor, dataformats), step=global_step)

    def add_images(self, tag: str, img_tensor: Any, global_step: int | None = None, walltime: float | None = None,
                   dataformats: str = "NCHW") -> None:
        if self._logger is not None:  # one grid image, as SummaryWriter shows a batch
            self._logger.log_image(tag, image_grid(img_tensor, dataformats), step=global_step)

    def add_figure(self, tag: str, figure: Any, global_step: int | None = None, close: bool = True,
                   walltime: float | None = None) -> None:
        if self._logger is None:
            return
        figures = figure if isinstance(figure, (list, tuple)) else [figure]
        self._logger.log_image(tag, figures if len(figures) > 1 else figures[0], step=global_step)
        if close:
            try:
                import matplotlib.pyplot as plt

                for one in figures:
                    plt.close(one)
            except ImportError:
                pass

    def add_text(self, tag: str, text_string: str, global_step: int | None = None, walltime: float | None = None
                 ) -> None:
        if self._logger is not None:
            self._logger.log_text(tag, text_string, step=global_step)

    def add_histogram(self, tag: str, values: Any, global_step: int | None = None, bins: str = "tensorflow",
                      walltime: float | None = None, max_bins: int | None = None) -> None:
        if self._logger is not None:
            self._logger.log_histogram(tag, values, step=global_step)

    def get_logdir(self) -> str:
        """Where TensorBoard's files are (``SummaryWriter.get_logdir``)."""
        return str(self.tensorboard_dir)

    def flush(self) -> None:
        """Nothing to do here: the RunLogger's writer flushes on its own interval."""

    def close(self) -> None:
        """The run is closed by the RunLogger (``finalize``)."""
