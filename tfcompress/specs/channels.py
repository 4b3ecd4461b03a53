"""The channel vocabulary of layer specs: how a layer maps input channel layouts to output layouts, and which
axes of which of its variables index which channels.

A channel rule is ``rule(call, input_layouts, builder) → output_layouts``. It records, through the ``builder``
the channel graph hands it (:class:`tfcompress.graph.channel_graph.GraphBuilder`), which variable axes index
which channels (``builder.bind``), which channels are coupled (``builder.union``), which cannot be pruned
(``builder.block``) and which are new (``builder.new_group``, ``builder.producer_group``). Variables are bound
as objects, never looked up by name.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import keras

from tfcompress.keras_graph import Call, known_size
from tfcompress.specs.layout import Layout

ROLES = ("out", "in", "norm", "param")


class GraphBuilder(Protocol):
    """What a channel rule may ask of the graph being built (:class:`tfcompress.graph.GraphBuilder` is one)."""

    def new_group(self, size: int, owner: str, reason: str = "") -> Layout:
        """A fresh group of ``size`` channels (not prunable when a ``reason`` is given)."""

    def producer_group(self, call: Call, size: int) -> Layout:
        """The output group of a producing layer (the same group at every call of a shared layer)."""

    def union(self, layouts: list[Layout], where: str) -> Layout:
        """Couples the channels of ``layouts`` position by position."""

    def block(self, layout: Layout, reason: str) -> None:
        """Marks every group in ``layout`` as not prunable."""

    def bind(self, call: Call, variable: Any, axis: int, layout: Layout, role: str) -> None:
        """Records that ``variable``'s ``axis`` indexes ``layout``'s channels."""


ChannelRule = Callable[[Call, list[Layout], GraphBuilder], list[Layout]]


@dataclasses.dataclass(frozen=True)
class Binding:
    """Axis ``axis`` of ``variable`` indexes the channels of ``layout``.

    ``role`` says what the slice means for importance: "out" (a producer's filter), "in" (a consumer's input
    slice), "norm" (a normalization scale such as BatchNorm's γ), or "param" (anything else per channel:
    biases, statistics, masks, ternary assignments).
    """

    variable: Any
    axis: int
    layout: Layout
    role: str


def spatial_size(call: Call, shape: Sequence[int | None]) -> int:
    """Positions of a channels-last tensor shape without batch: all axes but the last."""
    return known_size(call, tuple(shape)[:-1]) if len(shape) > 1 else 1


# -------------------------------------------------------------------------------------------------- rules


def barrier(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    """Treats the layer as opaque: its input and output channels are kept, it is rebuilt unchanged."""
    reason = f"{call.name} ({type(call.layer).__name__}) is a barrier"
    for layout in inputs:
        builder.block(layout, reason)
    return [builder.new_group(_channels(t), call.name, reason=reason) for t in call.outputs]


def _channels(tensor: Any) -> int:
    return int(tensor.shape[-1]) if len(tensor.shape) > 1 and tensor.shape[-1] is not None else 1


def pass_through(*per_channel: str, role: str = "param") -> ChannelRule:
    """Output channels are input channels; the variables at attributes ``per_channel`` are sliced along their
    last axis (a broadcast variable of size 1 needs no slicing)."""

    def rule(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
        layout = inputs[0]
        for attribute in per_channel:
            variable = getattr(call.layer, attribute, None)
            if not isinstance(variable, keras.Variable) or not variable.shape:
                continue
            if variable.shape[-1] == layout.channels:
                builder.bind(call, variable, len(variable.shape) - 1, layout, role)
            elif variable.shape[-1] != 1:
                builder.block(layout, f"{call.name}: {attribute} of shape {tuple(variable.shape)} is not per channel")
        return [layout for _ in call.outputs]

    return rule


def blocks(reason: str) -> ChannelRule:
    """Output channels are input channels, which cannot be pruned (``reason`` says why)."""

    def rule(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
        builder.block(inputs[0], f"{call.name} ({type(call.layer).__name__}) {reason}")
        return [inputs[0] for _ in call.outputs]

    return rule


def on_last_axis(call: Call, axis: Any, builder: GraphBuilder, layout: Layout) -> bool:
    """True when ``axis`` (an int or a list, batch axis counted) is the channel axis; else blocks ``layout``."""
    rank = len(call.inputs[0].shape)
    axes = axis if isinstance(axis, list | tuple) else [axis]
    if any(a in (-1, rank - 1) for a in axes):
        return True
    builder.block(layout, f"{call.name} works along axis {axis}, not the channel axis")
    return False


def concatenate(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    """A concatenation (layer or operation node): along the channel axis the output's channels are the inputs'
    segments in order; along another axis the inputs are coupled like a merge; flattened inputs are kept."""
    rank = len(call.outputs[0].shape)
    if call.layer.axis % rank != rank - 1:
        return [builder.union(inputs, call.name)]
    if any(layout.tile != 1 for layout in inputs):
        reason = f"{call.name} concatenates flattened tensors"
        for layout in inputs:
            builder.block(layout, reason)
        return [builder.new_group(_channels(call.outputs[0]), call.name, reason=reason)]
    return [Layout(tuple(s for layout in inputs for s in layout.segments))]


def merge(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    """An element-wise merge: inputs with the output's channels are coupled position by position; broadcast
    inputs with a single channel (a per-pixel gate) couple nothing."""
    channels = _channels(call.outputs[0])
    full = [layout for layout in inputs if layout.channels == channels]
    if not full:
        return [builder.new_group(channels, call.name, reason=f"{call.name} broadcasts its inputs")]
    return [builder.union(full, call.name)]
