"""``ChannelMask``: training-time masking of channels before they are physically removed."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfcompress.specs import Count, LayerSpec, pass_through, register


@keras.saving.register_keras_serializable(package="tfcompress")
class ChannelMask(keras.layers.Layer):
    """Multiplies the channel (last) axis by a fixed 0/1 vector.

    tfcompress inserts one in front of every layer that consumes channels (convolutions, dense layers), so a
    masked model computes exactly what the physically pruned model computes: ``tfcompress.pruning.shrink``
    reads the masks, removes these layers and slices the weights. The vector is a non-trainable weight, so it
    is saved with the model.

    With ``track_fisher=True`` every training step also adds each channel's Fisher saliency (Theis et al. 2018)
    to the non-trainable ``fisher`` vector: the gradient of the loss with respect to the mask at mask = 1,
    squared per example, Δ_k = ½ · mean_n (Σ_ij a_nkij · ∂L_n/∂a_nkij)², computed in the backward pass of the
    step that trains anyway (``tfcompress.pruning.fisher.FisherPruning`` reads and resets it). ∂L_n is the
    gradient of example n's own loss (the batch-mean loss's gradient × N; the thesis used the batch mean, which
    only rescales every score by the same 1/N² for a fixed batch size). On a flattened tensor (``Flatten`` before
    a ``Dense``) the channel's ``positions`` elements (and ``repeat`` consecutive copies) are summed before
    squaring, so ``fisher`` has one entry per channel.

    Input shape: ``(batch, ..., channels)``; output shape: the same.

    Example:

    ```python
    masked = tfcompress.pruning.insert_channel_masks(model)
    small = tfcompress.pruning.shrink(masked)        # channels whose mask is 0 are gone
    ```
    """

    def __init__(self, track_fisher: bool = False, positions: int = 1, repeat: int = 1, **kwargs) -> None:
        super().__init__(**kwargs)
        self.track_fisher = bool(track_fisher)
        self.positions, self.repeat = int(positions), int(repeat)  # the layout of a flattened tensor

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if input_shape[-1] is None:
            raise ValueError(f"ChannelMask {self.name!r} needs a known channel count, got input shape {input_shape}")
        channels = int(input_shape[-1])
        self.mask = self.add_weight(name="mask", shape=(channels,), initializer="ones", trainable=False)
        if self.track_fisher:
            if channels % (self.positions * self.repeat):
                raise ValueError(f"ChannelMask {self.name!r}: {channels} channels are not {self.positions} "
                                 f"positions × {self.repeat} copies of whole channels")
            self.fisher = self.add_weight(name="fisher", shape=(channels // self.positions // self.repeat,),
                                          initializer="zeros", trainable=False)

    def call(self, inputs, training=None):
        mask = ops.cast(self.mask, inputs.dtype)
        if self.track_fisher and training:
            return _fisher_gate(inputs, mask, self.fisher, self.positions, self.repeat)
        return inputs * mask

    def set_mask(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype="float32")
        if mask.shape != tuple(self.mask.shape):
            raise ValueError(f"ChannelMask {self.name!r} has {self.mask.shape[0]} channels, got a mask of {mask.shape}")
        if not np.isin(mask, (0.0, 1.0)).all():
            raise ValueError(f"ChannelMask {self.name!r} takes a 0/1 mask")
        self.mask.assign(mask)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "track_fisher": self.track_fisher, "positions": self.positions,
                "repeat": self.repeat}


def _fisher_gate(inputs: tf.Tensor, mask: tf.Tensor, sink: keras.Variable, positions: int, repeat: int
                 ) -> tf.Tensor:
    """``inputs · mask``, whose backward pass adds the per-channel Fisher saliency of the step to ``sink``."""

    @tf.custom_gradient
    def gate(a: tf.Tensor, m: tf.Tensor):
        def backward(upstream: tf.Tensor):
            batch = tf.cast(tf.shape(a)[0], tf.float32)
            # Σ over positions (spatial, or flattened positions × copies) of a·∂L/∂a, per example and channel;
            # ×N turns the gradient of the batch-mean loss into each example's own.
            channels = sink.shape[0]
            gates = tf.cast(a, tf.float32) * tf.cast(upstream, tf.float32)
            gates = tf.reshape(gates, (tf.shape(a)[0], -1, positions, channels, repeat))
            gates = tf.reduce_sum(gates, axis=(1, 2, 4)) * batch
            sink.assign_add(0.5 * tf.reduce_mean(tf.square(gates), axis=0))
            return upstream * m, tf.zeros_like(m)

        return a * m, backward

    return gate(inputs, mask)


# Shrinking removes the layer; until then it is one multiplication per element.
register(ChannelMask, spec=LayerSpec(
    channels=pass_through("mask"),  # fisher: one entry per channel of a flattened tensor, not bound
    micronet=lambda call, precision: Count(note="removed by shrink"),
))
