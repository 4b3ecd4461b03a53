"""``ChannelShuffle``: the channel shuffle of ShuffleNet (Zhang et al. 2018, §3.1), a layer the channel graph
follows as a permutation of channels."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from tfcompress.keras_graph import Call
from tfcompress.specs import Count, LayerSpec, Layout, register


@keras.saving.register_keras_serializable(package="tfcompress")
class ChannelShuffle(keras.layers.Layer):
    """Interleaves the channels of ``groups`` equal chunks: output channel ``j·groups + i`` is input channel
    ``i·(C/groups) + j`` (reshape to (groups, C/groups), transpose, flatten back).

    Args:
        groups: number of chunks the channel axis is cut into (2 in ShuffleNetV2, after the concatenation of
            its two branches).

    Input shape: ``(batch, ..., C)`` with C divisible by ``groups``; output shape: the same.

    Example:

    ```python
    x = keras.layers.Concatenate()([branch, shortcut])
    x = ChannelShuffle(2)(x)   # branch₀ shortcut₀ branch₁ shortcut₁ …
    ```
    """

    def __init__(self, groups: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
            raise ValueError(f"ChannelShuffle: groups must be an integer ≥ 1, got {groups!r}")
        self.groups = groups

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(f"ChannelShuffle: the channel axis ({channels}) must be a known multiple of "
                             f"groups={self.groups}")

    def call(self, inputs: Any) -> Any:
        known = tuple(inputs.shape[1:])
        # a constant target shape when the positions are known: TFLite then needs no SHAPE op at run time
        shape = (-1, *known) if None not in known else ops.shape(inputs)
        channels = inputs.shape[-1]
        # Batch and positions folded into one axis: a rank-3 transpose, which every TFLite kernel supports.
        x = ops.reshape(inputs, (-1, self.groups, channels // self.groups))
        x = ops.transpose(x, (0, 2, 1))
        return ops.reshape(x, shape)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return tuple(input_shape)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups}


def _chunks(layout: Layout, groups: int) -> list[Layout] | None:
    """``layout`` cut into ``groups`` chunks of equal width, or None when a cut falls inside a segment."""
    width = layout.channels // groups
    chunks, current, filled = [], [], 0
    for segment in layout.segments:
        current.append(segment)
        filled += segment.channels
        if filled > width:
            return None
        if filled == width:
            chunks.append(Layout(tuple(current)))
            current, filled = [], 0
    return chunks


def _shuffle_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    # Chunk i's channel j lands next to chunk 0's channel j. Coupling the chunks position by position keeps
    # every chunk the same width after pruning, so the shrunk layer interleaves exactly the kept channels;
    # the output is then chunk 0 with each channel repeated `groups` times.
    layout, groups = inputs[0], call.layer.groups
    chunks = _chunks(layout, groups) if layout.tile == 1 else None
    if chunks is None or not all(chunks[0].same_structure(chunk) for chunk in chunks[1:]):
        reason = (f"{call.name} (ChannelShuffle) cuts channel groups into {groups} unequal shuffle chunks: "
                  "pruning them would shift the interleaving")
        builder.block(layout, reason)
        return [builder.new_group(layout.channels, call.name, reason=reason)]
    return [builder.union(chunks, call.name).repeated(groups)]


# A reshape and a transpose: data movement, no arithmetic.
register(ChannelShuffle, spec=LayerSpec(channels=_shuffle_channels, micronet=lambda call, precision: Count()))
