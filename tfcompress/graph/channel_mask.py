"""``ChannelMask``: training-time masking of channels before they are physically removed."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from tfcompress.specs import Count, LayerSpec, pass_through, register


@keras.saving.register_keras_serializable(package="tfcompress")
class ChannelMask(keras.layers.Layer):
    """Multiplies the channel (last) axis by a fixed 0/1 vector.

    tfcompress inserts one in front of every layer that consumes channels (convolutions, dense layers), so a
    masked model computes exactly what the physically pruned model computes: ``tfcompress.pruning.shrink``
    reads the masks, removes these layers and slices the weights. The vector is a non-trainable weight, so it
    is saved with the model.

    Input shape: ``(batch, ..., channels)``; output shape: the same.

    Example:

    ```python
    masked = tfcompress.pruning.insert_channel_masks(model)
    small = tfcompress.pruning.shrink(masked)        # channels whose mask is 0 are gone
    ```
    """

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        if input_shape[-1] is None:
            raise ValueError(f"ChannelMask {self.name!r} needs a known channel count, got input shape {input_shape}")
        self.mask = self.add_weight(name="mask", shape=(int(input_shape[-1]),), initializer="ones", trainable=False)

    def call(self, inputs):
        return inputs * ops.cast(self.mask, inputs.dtype)

    def set_mask(self, mask: np.ndarray) -> None:
        mask = np.asarray(mask, dtype="float32")
        if mask.shape != tuple(self.mask.shape):
            raise ValueError(f"ChannelMask {self.name!r} has {self.mask.shape[0]} channels, got a mask of {mask.shape}")
        if not np.isin(mask, (0.0, 1.0)).all():
            raise ValueError(f"ChannelMask {self.name!r} takes a 0/1 mask")
        self.mask.assign(mask)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape


# Shrinking removes the layer; until then it is one multiplication per element.
register(ChannelMask, spec=LayerSpec(
    channels=pass_through("mask"),
    micronet=lambda call, precision: Count(note="removed by shrink"),
))
