"""Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017): the baseline EC2T improves on.

Each ternarized layer keeps a full-precision kernel W and learns two scales w_p, w_n (the same layers and
gradients as EC2T: :mod:`tfcompress.quantization.ternary`). The assignment uses a fixed threshold relative to
the layer's largest weight (the paper normalizes W to [−1, 1] and uses t = 0.05):

    Δ = t·max|W|;   A = +1 where W > Δ,  −1 where W < −Δ,  0 elsewhere

recomputed after every step from the updated W. The scales start at the mean magnitude of the weights on
each side of the threshold (the least-squares ternary scale of Li & Liu 2016, TWN); the paper leaves the
initial value open. Unlike EC2T there is no floor on the scales, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

from tfcompress.quantization import ternary

DEFAULT_THRESHOLD = 0.05


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1) (a fraction of max|W|; the paper uses 0.05), got {threshold}")


def ttq_assignment(W: tf.Tensor, threshold: float = DEFAULT_THRESHOLD) -> tf.Tensor:
    """A = sign(W) where |W| > t·max|W|, else 0 (float32, W's shape)."""
    W = tf.cast(W, tf.float32)
    Delta = threshold * tf.reduce_max(tf.abs(W))
    return tf.cast(tf.greater(W, Delta), tf.float32) - tf.cast(tf.less(W, -Delta), tf.float32)


def initial_scales(W: tf.Tensor, A: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(w_p, w_n): mean |W| over A = +1 and over A = −1 (mean |W| of the layer when a side is empty)."""
    W = tf.abs(tf.cast(W, tf.float32))
    fallback = tf.reduce_mean(W)

    def side_mean(mask: tf.Tensor) -> tf.Tensor:
        count = tf.reduce_sum(mask)
        return tf.where(count > 0, tf.reduce_sum(W * mask) / tf.maximum(count, 1.0), fallback)

    return side_mean(tf.cast(A > 0, tf.float32)), side_mean(tf.cast(A < 0, tf.float32))


def initializer(threshold: float = DEFAULT_THRESHOLD):
    """The TTQ initialization of a ternary layer: thresholded assignment, scales from the mean magnitudes."""
    _check_threshold(threshold)

    def initialize(layer: ternary.TernaryMixin) -> None:
        W = tf.convert_to_tensor(layer.kernel)
        A = ttq_assignment(W, threshold)
        w_p, w_n = initial_scales(W, A)
        layer.w_p.assign(w_p)
        layer.w_n.assign(w_n)
        layer.assignment.assign(A)

    return initialize


def ternarize(
    model: keras.Model, threshold: float = DEFAULT_THRESHOLD, layers: Sequence[str] | None = None,
    *, reference_wn_gradient: bool = False,
) -> keras.Model:
    """A copy of ``model`` with the chosen layers ternary and TTQ-initialized (default layers as EC2T's)."""
    return ternary.ternarize(
        model, layers, reference_wn_gradient=reference_wn_gradient, initialize=initializer(threshold)
    )


class TTQ(ternary.AssignmentCallback):
    """Keras callback re-assigning every ternary layer with the TTQ threshold after each training step."""

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, layers: Sequence[ternary.TernaryMixin] | None = None):
        _check_threshold(threshold)
        super().__init__(layers)
        self.threshold = float(threshold)

    def update(self, layers: list[ternary.TernaryMixin], numels: list[int]) -> None:
        for layer in layers:
            layer.assignment.assign(ttq_assignment(tf.convert_to_tensor(layer.kernel), self.threshold))


def train(
    model: keras.Model,
    train_data: Any,
    epochs: int,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    learning_rate: float = 1e-4,
    centroid_learning_rate: float = 1e-5,
    validation_data: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: Any = "auto",
) -> dict[str, list[float]]:
    """Trains a TTQ-ternarized model (:func:`ternarize`) with the same optimizer as EC2T; returns the history."""
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    return ternary.fit(
        model, train_data, epochs, TTQ(threshold), learning_rate=learning_rate,
        centroid_learning_rate=centroid_learning_rate, validation_data=validation_data, callbacks=callbacks,
        verbose=verbose,
    )
