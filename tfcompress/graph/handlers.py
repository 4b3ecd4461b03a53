"""Per-layer channel handlers: how a layer maps input channel layouts to output layouts, which of its weight
axes index which channels, and how its config changes when channels go.

A new layer type is one handler registered with :func:`register_handler`; lookup follows the class's MRO, so
subclasses of a registered layer are handled like it unless they register their own. ``BARRIER`` treats a
layer as opaque: its input and output channels are never pruned, and it is rebuilt unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from keras import layers

from tfcompress.graph.layout import Layout

if TYPE_CHECKING:
    from tfcompress.graph.channel_graph import GraphBuilder
    from tfcompress.graph.walk import Call


@dataclasses.dataclass(frozen=True)
class Binding:
    """Axis ``axis`` of the weight named ``weight`` indexes the channels of ``layout``.

    ``role`` says what the slice means for importance: "out" (a producer's filter), "in" (a consumer's input
    slice), "norm" (a BatchNorm γ), or "param" (anything else per channel: biases, statistics).
    """

    weight: str
    axis: int
    layout: Layout
    role: str


@dataclasses.dataclass(frozen=True)
class ChannelHandler:
    """How one layer type relates to channels.

    Attributes:
        layouts: ``(call, input layouts, builder) → output layouts``; records bindings and couplings on the
            builder as a side effect.
        resize: ``(config, kept output channels) → config`` for layers whose config counts channels.
        mac_positions: for layers that do dot products, the number of positions at which the whole kernel
            is applied (output pixels; input pixels for transposed convolutions). MACs = positions · Σ numel
            of the kernels.
        kernels: the weights that count in MACs.
    """

    layouts: Callable[[Call, list[Layout], GraphBuilder], list[Layout]]
    resize: Callable[[dict[str, Any], int], dict[str, Any]] | None = None
    mac_positions: Callable[[Call], int] | None = None
    kernels: tuple[str, ...] = ()


_HANDLERS: dict[type, ChannelHandler] = {}


def register_handler(*layer_classes: type, handler: ChannelHandler) -> None:
    """Registers ``handler`` for ``layer_classes`` (replacing any earlier one)."""
    for cls in layer_classes:
        _HANDLERS[cls] = handler


def handler_for(layer: Any) -> ChannelHandler | None:
    for cls in type(layer).__mro__:
        if cls in _HANDLERS:
            return _HANDLERS[cls]
    return None


def _spatial_positions(shape: Sequence[int | None]) -> int:
    dims = shape[1:-1]
    if any(d is None for d in dims):
        raise ValueError(f"spatial dimensions must be fixed to count MACs, got shape {tuple(shape)}")
    return math.prod(dims) if dims else 1


def _output_positions(call: Call) -> int:
    return _spatial_positions(call.outputs[0].shape)


def _input_positions(call: Call) -> int:
    return _spatial_positions(call.inputs[0].shape)


# -------------------------------------------------------------------------------------------------- barrier


def _barrier_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    reason = f"{call.layer.name} ({type(call.layer).__name__}) is a barrier"
    for layout in inputs:
        builder.block(layout, reason)
    return [builder.new_group(int(t.shape[-1]), call.layer.name, reason=reason) for t in call.outputs]


BARRIER = ChannelHandler(_barrier_layouts)


# ------------------------------------------------------------------------------------------ pass-through


def pass_through(*per_channel_weights: str, role: str = "param") -> ChannelHandler:
    """Output channels are input channels; ``per_channel_weights`` are sliced along their last axis."""

    def layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
        layout = inputs[0]
        for name in per_channel_weights:
            weight = getattr(call.layer, name, None)
            if weight is None:
                continue
            if weight.shape[-1] == layout.channels:
                builder.bind(call, name, len(weight.shape) - 1, layout, "norm" if name == "gamma" else role)
            elif weight.shape[-1] != 1:  # a shared (broadcast) parameter needs no slicing
                builder.block(layout, f"{call.layer.name}: {name} of shape {tuple(weight.shape)} is not per channel")
        return [layout for _ in call.outputs]

    return ChannelHandler(layouts)


def _check_last_axis(call: Call, axis: Any, builder: GraphBuilder, layout: Layout) -> bool:
    rank = len(call.inputs[0].shape)
    axes = axis if isinstance(axis, list | tuple) else [axis]
    if any(a in (-1, rank - 1) for a in axes):
        return True
    builder.block(layout, f"{call.layer.name} works along axis {axis}, not the channel axis")
    return False


def _batch_norm_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    if _check_last_axis(call, call.layer.axis, builder, inputs[0]):
        return _BATCH_NORM_PARAMS.layouts(call, inputs, builder)
    return [inputs[0]]


_BATCH_NORM_PARAMS = pass_through("gamma", "beta", "moving_mean", "moving_variance")


def _normalizes_across_channels(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    # LayerNormalization/GroupNormalization statistics mix channels: removing one changes all the others, so a
    # masked model and its shrunk copy would differ. Keep these channels.
    builder.block(inputs[0], f"{call.layer.name} ({type(call.layer).__name__}) normalizes across channels")
    return [inputs[0]]


def _activation_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    activation = getattr(call.layer.activation, "__name__", str(call.layer.activation))
    if activation in ("softmax", "log_softmax"):
        builder.block(inputs[0], f"{call.layer.name}: {activation} mixes channels")
    return [inputs[0]]


def _softmax_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    builder.block(inputs[0], f"{call.layer.name}: softmax mixes channels")
    return [inputs[0]]


# ------------------------------------------------------------------------------------------------ producers


def _producer(kernel_in_axis: int, kernel_out_axis: int) -> Callable[..., list[Layout]]:
    def layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
        layer = call.layer
        out = builder.producer_group(call, int(call.outputs[0].shape[-1]))
        if getattr(layer, "groups", 1) != 1:
            builder.block(inputs[0], f"{layer.name} is a grouped convolution")
            builder.block(out, f"{layer.name} is a grouped convolution")
        ndim = len(layer.kernel.shape)
        builder.bind(call, "kernel", kernel_in_axis % ndim, inputs[0], "in")
        builder.bind(call, "kernel", kernel_out_axis % ndim, out, "out")
        if getattr(layer, "bias", None) is not None:
            builder.bind(call, "bias", 0, out, "param")
        return [out]

    return layouts


def _resize(key: str) -> Callable[[dict[str, Any], int], dict[str, Any]]:
    return lambda config, channels: {**config, key: channels}


_CONV = ChannelHandler(_producer(-2, -1), _resize("filters"), _output_positions, ("kernel",))
_DENSE = ChannelHandler(_producer(0, 1), _resize("units"), _output_positions, ("kernel",))
_TRANSPOSED = ChannelHandler(_producer(-1, -2), _resize("filters"), _input_positions, ("kernel",))


def _depthwise_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    layer = call.layer
    out = inputs[0].repeated(layer.depth_multiplier)
    # Keras 3 keeps the depthwise kernel as ``kernel``, shaped (kh, kw, C, multiplier)
    builder.bind(call, "kernel", len(layer.kernel.shape) - 2, inputs[0], "out")
    if getattr(layer, "bias", None) is not None:
        builder.bind(call, "bias", 0, out, "param")
    return [out]


def _separable_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    layer = call.layer
    out = builder.producer_group(call, int(call.outputs[0].shape[-1]))
    rank = len(layer.pointwise_kernel.shape)
    builder.bind(call, "depthwise_kernel", rank - 2, inputs[0], "in")
    builder.bind(call, "pointwise_kernel", rank - 2, inputs[0].repeated(layer.depth_multiplier), "in")
    builder.bind(call, "pointwise_kernel", rank - 1, out, "out")
    if getattr(layer, "bias", None) is not None:
        builder.bind(call, "bias", 0, out, "param")
    return [out]


# ---------------------------------------------------------------------------------------- merges and shapes


def _merge_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    # Broadcast inputs with a single channel (a per-pixel gate) do not couple channels.
    full = [layout for layout in inputs if layout.channels == call.outputs[0].shape[-1]]
    return [builder.union(full, call.layer.name)]


def _concatenate_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    rank = len(call.outputs[0].shape)
    if call.layer.axis not in (-1, rank - 1):
        return [builder.union(inputs, call.layer.name)]
    if any(layout.tile != 1 for layout in inputs):
        for layout in inputs:
            builder.block(layout, f"{call.layer.name} concatenates flattened tensors")
        return [builder.new_group(int(call.outputs[0].shape[-1]), call.layer.name, reason="flattened concat")]
    return [Layout(tuple(s for layout in inputs for s in layout.segments))]


def _flatten_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    return [inputs[0].tiled(_spatial_positions(call.inputs[0].shape))]


def _reshape_layouts(call: Call, inputs: list[Layout], builder: GraphBuilder) -> list[Layout]:
    in_shape, out_shape = call.inputs[0].shape, call.outputs[0].shape
    channels = in_shape[-1]
    if out_shape[-1] == channels and _spatial_positions(in_shape) == _spatial_positions(out_shape):
        return [inputs[0]]  # e.g. (C,) → (1, 1, C) in squeeze-excite blocks
    if len(out_shape) == 2 and inputs[0].tile == 1:
        return [inputs[0].tiled(_spatial_positions(in_shape))]  # a flatten
    builder.block(inputs[0], f"{call.layer.name} reshapes {tuple(in_shape)} → {tuple(out_shape)} across channels")
    return [builder.new_group(int(out_shape[-1]), call.layer.name, reason="reshape across channels")]


def _reshape_resize(config: dict[str, Any], channels: int) -> dict[str, Any]:
    return {**config, "target_shape": (*tuple(config["target_shape"])[:-1], channels)}


_PASS = pass_through()

register_handler(layers.InputLayer, handler=_PASS)
register_handler(
    layers.ReLU, layers.LeakyReLU, layers.ELU, layers.Dropout, layers.SpatialDropout1D, layers.SpatialDropout2D,
    layers.SpatialDropout3D, layers.GaussianNoise, layers.GaussianDropout, layers.AlphaDropout,
    layers.ActivityRegularization, layers.MaxPooling1D, layers.MaxPooling2D, layers.MaxPooling3D,
    layers.AveragePooling1D, layers.AveragePooling2D, layers.AveragePooling3D, layers.GlobalAveragePooling1D,
    layers.GlobalAveragePooling2D, layers.GlobalAveragePooling3D, layers.GlobalMaxPooling1D,
    layers.GlobalMaxPooling2D, layers.GlobalMaxPooling3D, layers.ZeroPadding1D, layers.ZeroPadding2D,
    layers.ZeroPadding3D, layers.Cropping1D, layers.Cropping2D, layers.Cropping3D, layers.UpSampling1D,
    layers.UpSampling2D, layers.UpSampling3D, layers.Identity, layers.Resizing, layers.Rescaling,
    handler=_PASS,
)
register_handler(layers.PReLU, handler=pass_through("alpha"))
register_handler(layers.Activation, handler=ChannelHandler(_activation_layouts))
register_handler(layers.Softmax, handler=ChannelHandler(_softmax_layouts))
register_handler(layers.BatchNormalization, handler=ChannelHandler(_batch_norm_layouts))
register_handler(layers.LayerNormalization, layers.GroupNormalization,
                 handler=ChannelHandler(_normalizes_across_channels))
register_handler(layers.Conv1D, layers.Conv2D, layers.Conv3D, handler=_CONV)
register_handler(layers.Conv1DTranspose, layers.Conv2DTranspose, layers.Conv3DTranspose, handler=_TRANSPOSED)
register_handler(layers.Dense, handler=_DENSE)
register_handler(layers.DepthwiseConv1D, layers.DepthwiseConv2D, handler=ChannelHandler(
    _depthwise_layouts, None, _output_positions, ("kernel",)))
register_handler(layers.SeparableConv1D, layers.SeparableConv2D, handler=ChannelHandler(
    _separable_layouts, _resize("filters"), _output_positions, ("depthwise_kernel", "pointwise_kernel")))
register_handler(layers.Add, layers.Subtract, layers.Multiply, layers.Average, layers.Maximum, layers.Minimum,
                 handler=ChannelHandler(_merge_layouts))
register_handler(layers.Concatenate, handler=ChannelHandler(_concatenate_layouts))
register_handler(layers.Flatten, handler=ChannelHandler(_flatten_layouts))
register_handler(layers.Reshape, handler=ChannelHandler(_reshape_layouts, _reshape_resize))
