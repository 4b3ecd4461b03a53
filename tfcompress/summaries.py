"""TensorBoard summaries of the compression callbacks' state (sparsity, centroids, channels, predicted cost).

A callback writes its state once per epoch into the first of:

1. its own ``log_dir`` (a file writer of ours), when given;
2. the run of a ``keras.callbacks.TensorBoard`` in the same ``fit`` (its ``train`` writer, so the values sit next
   to ``epoch_loss``), found among the callbacks of the ``fit``;
3. the ``tf.summary`` default writer a caller set around ``fit`` (``with writer.as_default(): model.fit(...)``);

and nowhere when there is none (a ``fit`` without TensorBoard pays nothing). The summaries are written with
``tf.summary.write`` and the metadata of TensorBoard's scalar and histogram plugins, the records
``tf.summary.scalar`` / ``tf.summary.histogram`` write, so the ``tensorboard`` package is needed only to view them,
not to write them.

    summaries = Summaries(log_dir)          # in the callback's __init__
    summaries.begin(self)                   # in on_train_begin: looks for a TensorBoard callback
    if summaries.active:                    # in on_epoch_end: compute only what will be written
        summaries.write(epoch, scalars={"gmp/sparsity": 0.5}, histograms={"ec2t/conv2/kernel": w})
    summaries.end()                         # in on_train_end: flushes
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

HISTOGRAM_BUCKETS = 30  # tf.summary.histogram's default

# The plugin metadata tensorboard.plugins.{scalar,histogram}.metadata.create_summary_metadata() make.
_SCALAR = tf.compat.v1.SummaryMetadata(plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="scalars"))
_HISTOGRAM = tf.compat.v1.SummaryMetadata(
    plugin_data=tf.compat.v1.SummaryMetadata.PluginData(plugin_name="histograms"))


def histogram_buckets(values: Any, buckets: int = HISTOGRAM_BUCKETS) -> np.ndarray:
    """(k, 3) float64 rows of (left edge, right edge, count), as TensorBoard's histogram summary buckets them."""
    data = np.asarray(values, np.float64).ravel()
    if data.size == 0:
        return np.zeros((buckets, 3))
    low, high = float(data.min()), float(data.max())
    if low == high:  # one value: every count in the last bucket, all edges at the value (as TensorBoard)
        counts = np.zeros(buckets)
        counts[-1] = data.size
        return np.stack([np.full(buckets, low), np.full(buckets, low), counts], axis=1)
    index = np.minimum(np.floor((data - low) / ((high - low) / buckets)).astype(np.int64), buckets - 1)
    edges = np.linspace(low, high, buckets + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], np.bincount(index, minlength=buckets).astype(np.float64)], axis=1)


def tensorboard_callbacks(callback: keras.callbacks.Callback) -> list[keras.callbacks.TensorBoard]:
    """The ``keras.callbacks.TensorBoard`` callbacks of the ``fit`` that ``callback`` is in, called from one of
    its hooks.

    Keras 3 gives a callback no handle on the others: they are in the ``CallbackList`` whose method is calling
    this callback's hook, so the call stack is searched for it (a user-made ``CallbackList`` is found too).
    """
    frame = inspect.currentframe()
    try:
        while frame is not None:
            owner = frame.f_locals.get("self")
            if isinstance(owner, keras.callbacks.CallbackList) and any(c is callback for c in owner.callbacks):
                return [c for c in owner.callbacks if isinstance(c, keras.callbacks.TensorBoard)]
            frame = frame.f_back
    finally:
        del frame  # a frame in a local keeps every frame above it alive
    return []


def tensorboard_writer(tensorboard: keras.callbacks.TensorBoard) -> Any:
    """The summary writer of a Keras TensorBoard callback's ``train`` run (created when Keras has not yet)."""
    try:
        return tensorboard._train_writer  # Keras 3: a lazy property over _writers["train"]
    except AttributeError:  # another Keras: a writer of our own into the same run folder
        writers = getattr(tensorboard, "_writers", None)
        if isinstance(writers, dict) and "train" in writers:
            return writers["train"]
        writers = vars(tensorboard).setdefault("_tfcompress_writers", {})
        if "train" not in writers:
            writers["train"] = tf.summary.create_file_writer(os.path.join(str(tensorboard.log_dir), "train"))
        return writers["train"]


def write_scalars(scalars: Mapping[str, float], step: int) -> None:
    """Writes each value as a scalar summary at ``step`` into the current default writer."""
    for tag, value in scalars.items():
        tf.summary.write(tag, tf.constant(float(value), tf.float32), step=step, metadata=_SCALAR)


def write_histograms(histograms: Mapping[str, Any], step: int) -> None:
    """Writes each array as a histogram summary at ``step`` into the current default writer."""
    for tag, values in histograms.items():
        tf.summary.write(tag, tf.constant(histogram_buckets(values)), step=step, metadata=_HISTOGRAM)


class Summaries:
    """Where one callback's summaries go during a ``fit`` (see the module docstring); also usable outside ``fit``
    (then only ``log_dir`` or a default writer).

    Args:
        log_dir: write here, with a file writer of our own (TensorBoard's ``--logdir`` or a run folder in it).
    """

    def __init__(self, log_dir: str | os.PathLike | None = None) -> None:
        self.log_dir = None if log_dir is None else str(log_dir)
        self._own = None
        self._tensorboard: keras.callbacks.TensorBoard | None = None

    def begin(self, callback: keras.callbacks.Callback | None = None) -> None:
        """Finds where to write: call it from ``callback.on_train_begin``."""
        if self.log_dir is not None:
            if self._own is None:
                self._own = tf.summary.create_file_writer(self.log_dir)
            return
        found = tensorboard_callbacks(callback) if callback is not None else []
        self._tensorboard = found[0] if found else None

    def _writer(self) -> Any:
        if self._own is None and self.log_dir is not None:  # used without begin()
            self._own = tf.summary.create_file_writer(self.log_dir)
        if self._own is not None:
            return self._own
        return tensorboard_writer(self._tensorboard) if self._tensorboard is not None else None

    @property
    def active(self) -> bool:
        """Whether :meth:`write` writes anything now."""
        return (self.log_dir is not None or self._tensorboard is not None
                or bool(tf.summary.should_record_summaries()))

    def write(self, step: int, scalars: Mapping[str, float] | None = None,
              histograms: Mapping[str, Any] | None = None) -> bool:
        """Writes ``scalars`` and ``histograms`` (tag → array) at ``step``; returns whether anything was written."""
        writer = self._writer()
        if writer is None:
            if not tf.summary.should_record_summaries():
                return False
            write_scalars(scalars or {}, step)
            write_histograms(histograms or {}, step)
            return True
        # record_if(True): a TensorBoard callback with update_freq=N leaves a record_if of its own batches active
        with writer.as_default(), tf.summary.record_if(True):
            write_scalars(scalars or {}, step)
            write_histograms(histograms or {}, step)
        return True

    def end(self) -> None:
        """Flushes our own writer (a Keras TensorBoard callback closes its own)."""
        if self._own is not None:
            self._own.flush()
