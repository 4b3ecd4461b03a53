"""Specs of Keras 3 operation nodes: what a functional graph holds for ``x + 3.0``, ``x * gate``,
``keras.ops.relu(x)``, ``keras.ops.mean(x, axis=(1, 2))``, ``x[:, None, None, :]`` or ``keras.ops.reshape(x, ...)``.

Element-wise operations pass channels through (two full tensors are coupled like a merge layer; a scalar or
a broadcast operand couples nothing, but a per-channel constant is in the graph and keeps those channels);
reductions, pooling, slicing, padding and shape operations pass them through when they leave the channel axis
alone, and keep them otherwise (a reduction *over* channels would read the channels a masked model has not
zeroed yet). An operation has no weights: MACs are 0, MicroNet counts its element-wise arithmetic.

Operations with no spec here (``keras.ops.einsum``, ``keras.ops.matmul``, …) are refused by the channel graph
with their class path; ``ChannelGraph(model, barriers=[...])`` keeps their channels instead.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from keras.src.ops import core as ops_core  # operation classes have no public alias
from keras.src.ops import image as ops_image
from keras.src.ops import math as ops_math
from keras.src.ops import nn as ops_nn
from keras.src.ops import numpy as ops_np

from tfcompress.keras_graph import Call, known_size
from tfcompress.specs import channels as ch
from tfcompress.specs.counting import ACTIVATION_OPS, Count, Precision
from tfcompress.specs.keras_layers import reshape_channels
from tfcompress.specs.layout import Layout
from tfcompress.specs.spec import LayerSpec, register


def _classes(module: Any, *names: str) -> list[type]:
    """The operation classes of ``module`` among ``names`` (older Keras 3 releases lack some of them)."""
    return [getattr(module, name) for name in names if isinstance(getattr(module, name, None), type)]


def _constants(call: Call) -> list[Any]:
    return [value for value in keras.tree.flatten((call.node.arguments.args, call.node.arguments.kwargs))
            if not isinstance(value, keras.KerasTensor)]


def _rank(tensor: Any) -> int:
    return len(tensor.shape)


def _channel_count(tensor: Any) -> int:
    return int(tensor.shape[-1]) if _rank(tensor) > 1 and tensor.shape[-1] is not None else 1


def _normalized_axes(axis: Any, rank: int) -> set[int] | None:
    """``axis`` (an int, a sequence, or None for all axes) as non-negative axes of a tensor of ``rank``."""
    if axis is None:
        return None
    return {int(a) % rank for a in (axis if isinstance(axis, list | tuple) else [axis])}


def _new_kept_group(call: Call, inputs: list[Layout], builder: Any, why: str) -> list[Layout]:
    """Keeps the input channels and starts kept groups for the outputs (``why`` names what the call does)."""
    reason = f"{call.name} ({type(call.layer).__name__}) {why}"
    for layout in inputs:
        builder.block(layout, reason)
    return [builder.new_group(_channel_count(t), call.name, reason=reason) for t in call.outputs]


# ------------------------------------------------------------------------------------------- element-wise


def _element_wise(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    channels = _channel_count(call.outputs[0])
    for value in _constants(call):
        if np.ndim(value) and np.shape(value)[-1] == channels > 1:
            for layout in inputs:
                builder.block(layout, f"{call.name} ({type(call.layer).__name__}) applies a per-channel constant "
                                      f"of shape {tuple(np.shape(value))}")
    if len(inputs) == 1:
        if inputs[0].channels != channels:  # a single-channel tensor broadcast against a per-channel constant
            return [builder.new_group(channels, call.name, reason=f"{call.name} broadcasts a constant")]
        return [inputs[0]]
    return ch.merge(call, inputs, builder)


def _operands(call: Call) -> int:
    return len(call.inputs) + sum(1 for value in _constants(call) if np.ndim(value) or np.isscalar(value)) - 1


def _count_element_wise(mults: int, adds: int, per_operand: bool = False):
    def count(call: Call, precision: Precision) -> Count:
        n = known_size(call, call.output_shape) * (max(1, _operands(call)) if per_operand else 1)
        return Count(mults=mults * n, adds=adds * n)

    return count


_NOTHING = _count_element_wise(0, 0)


def _axis_softmax(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    """A softmax normalizes along its axis: over channels it mixes them (kept), over positions it does not."""
    axes = _normalized_axes(call.layer.axis, _rank(call.inputs[0]))
    if axes is not None and _rank(call.inputs[0]) - 1 not in axes:
        return [inputs[0]]
    builder.block(inputs[0], f"{call.name} ({type(call.layer).__name__}) mixes channels (softmax over axis "
                             f"{call.layer.axis})")
    return [inputs[0]]


# ---------------------------------------------------------------------------------------------- reductions


def _reduction(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    """A reduction over positions keeps channels; one over the channel axis reads every channel (kept)."""
    axes = _normalized_axes(getattr(call.layer, "axis", None), _rank(call.inputs[0]))
    if axes is not None and _rank(call.inputs[0]) - 1 not in axes:
        return [inputs[0]]
    return _new_kept_group(call, inputs, builder, f"reduces over the channel axis (axis={call.layer.axis})")


def _count_reduction(call: Call, precision: Precision) -> Count:
    inputs, outputs = known_size(call, call.input_shape), known_size(call, call.output_shape)
    if isinstance(call.layer, ops_np.Var | ops_np.Std):  # mean, then squared deviations and their mean
        return Count(mults=inputs + 2 * outputs, adds=2 * inputs)
    mean = isinstance(call.layer, ops_np.Mean)
    return Count(mults=outputs if mean else 0, adds=inputs - outputs)


# -------------------------------------------------------------------------------------------------- shapes


def _expand_dims(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    rank = _rank(call.outputs[0])  # ExpandDims' axes count the output's axes
    if rank - 1 not in _normalized_axes(call.layer.axis, rank):
        return [inputs[0]]
    return _new_kept_group(call, inputs, builder, "adds an axis after the channel axis")


def _squeeze(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    rank = _rank(call.inputs[0])
    axes = _normalized_axes(call.layer.axis, rank)
    removed = {a for a in range(rank) if call.inputs[0].shape[a] == 1} if axes is None else axes
    if rank - 1 not in removed:
        return [inputs[0]]
    return _new_kept_group(call, inputs, builder, "squeezes the channel axis")


def _transpose_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    rank = _rank(call.inputs[0])
    axes = call.layer.axes
    if axes is not None and list(axes)[-1] % rank == rank - 1:
        return [inputs[0]]
    return _new_kept_group(call, inputs, builder, f"moves the channel axis (axes={axes})")


def _reshape_resize(op: Any, channels: int) -> Any:
    newshape = tuple(op.newshape)
    return op if newshape[-1] == -1 else type(op)(newshape=(*newshape[:-1], channels))


def _split(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    if call.layer.axis % _rank(call.inputs[0]) != _rank(call.inputs[0]) - 1:
        return [inputs[0] for _ in call.outputs]
    return _new_kept_group(call, inputs, builder, "splits the channel axis")


def _channel_key(key: Any, rank: int) -> Any:
    """The entry of a ``__getitem__`` key that indexes the last of ``rank`` axes, or None when the key adds
    an axis after it or indexes with tensors (then the channel axis cannot be followed)."""
    entries = list(key) if isinstance(key, tuple | list) else [key]
    if not all(e is None or e is Ellipsis or isinstance(e, int | slice) for e in entries):
        return None
    consuming = [e for e in entries if e is not None and e is not Ellipsis]
    if Ellipsis in entries:
        at = entries.index(Ellipsis)
        entries[at:at + 1] = [slice(None)] * (rank - len(consuming))
    else:
        entries += [slice(None)] * (rank - len(consuming))
    last = max(i for i, e in enumerate(entries) if e is not None)
    return None if any(e is None for e in entries[last:]) else entries[last]


def _get_item(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    """``x[:, 1:, ::2]``, ``x[:, None, None, :]`` keep the channel axis; ``x[..., :4]`` or ``x[..., 0]`` cut it."""
    channels = call.inputs[0].shape[-1]
    entry = _channel_key(call.node.arguments.args[1], _rank(call.inputs[0]))
    if channels is not None and isinstance(entry, slice) and range(channels)[entry] == range(channels):
        return [inputs[0]]
    return _new_kept_group(call, inputs, builder, "indexes the channel axis")


def _pad(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    pad_width = call.layer.pad_width
    if len(pad_width) == _rank(call.inputs[0]) and tuple(pad_width[-1]) == (0, 0):
        return [inputs[0]]
    return _new_kept_group(call, inputs, builder, f"pads the channel axis ({pad_width})")


def _spatial(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    """Pooling and resizing act on each channel; an operation built without ``data_format`` (keras.ops fills
    it in, a bare ``MaxPool()`` does not) pools the last axes, channels included: keep them."""
    if call.layer.data_format == "channels_last":
        return [inputs[0]]
    return _new_kept_group(call, inputs, builder, f"has data_format={call.layer.data_format!r}")


def _count_resize(call: Call, precision: Precision) -> Count:
    # Bilinear interpolation: 4 products and 3 sums per output element; nearest is data movement.
    n = known_size(call, call.output_shape)
    return Count() if call.layer.interpolation == "nearest" else Count(mults=4 * n, adds=3 * n)


def _count_pool(call: Call, precision: Precision) -> Count:
    pool = call.layer.pool_size
    window = math.prod(pool) if isinstance(pool, list | tuple) else pool ** (_rank(call.inputs[0]) - 2)
    n = known_size(call, call.output_shape)
    if isinstance(call.layer, ops_nn.MaxPool):  # comparisons, counted as multiplications like ReLU
        return Count(mults=(window - 1) * n)
    return Count(mults=n, adds=(window - 1) * n)


# ---------------------------------------------------------------------------------------------- registry

_UNARY = {
    ops_nn.Relu: ACTIVATION_OPS["relu"], ops_nn.Relu6: ACTIVATION_OPS["relu6"],
    ops_nn.LeakyRelu: ACTIVATION_OPS["leaky_relu"], ops_nn.Sigmoid: ACTIVATION_OPS["sigmoid"],
    ops_nn.HardSigmoid: ACTIVATION_OPS["hard_sigmoid"], ops_nn.Silu: ACTIVATION_OPS["silu"],
    ops_nn.HardSilu: ACTIVATION_OPS["hard_silu"], ops_nn.Gelu: ACTIVATION_OPS["gelu"],
    ops_nn.Elu: ACTIVATION_OPS["elu"], ops_nn.Selu: ACTIVATION_OPS["selu"],
    ops_nn.Softplus: ACTIVATION_OPS["softplus"], ops_nn.Softsign: (1, 1), ops_np.Tanh: ACTIVATION_OPS["tanh"],
    ops_np.Abs: (1, 0), ops_np.Absolute: (1, 0), ops_np.Negative: (1, 0), ops_np.Square: (1, 0),
    ops_np.Sqrt: (1, 0), ops_np.Exp: (1, 0), ops_np.Log: (1, 0), ops_np.Reciprocal: (1, 0),
    ops_np.Sign: (1, 0), ops_np.Clip: (2, 0), ops_np.Round: (0, 0), ops_np.Floor: (0, 0), ops_np.Ceil: (0, 0),
    ops_np.Copy: (0, 0), ops_np.Log1p: (1, 1), ops_np.Expm1: (1, 1), ops_math.Rsqrt: (2, 0),
    ops_math.Erf: (4, 3), ops_core.Cast: (0, 0), ops_core.StopGradient: (0, 0), ops_np.LogicalNot: (1, 0),
    **{op: (2, 0) for op in _classes(ops_nn, "HardTanh", "SoftShrink", "HardShrink", "Threshold")},
    **{op: ACTIVATION_OPS["elu"] for op in _classes(ops_nn, "Celu")},
    **{op: ACTIVATION_OPS["softplus"] for op in _classes(ops_nn, "LogSigmoid", "Squareplus")},
}
for _op, (_mults, _adds) in _UNARY.items():
    register(_op, spec=LayerSpec(channels=_element_wise, micronet=_count_element_wise(_mults, _adds)))

for _op, (_mults, _adds) in {
    ops_np.Add: (0, 1), ops_np.Subtract: (0, 1), ops_np.Multiply: (1, 0), ops_np.Divide: (1, 0),
    ops_np.TrueDivide: (1, 0), ops_np.Maximum: (1, 0), ops_np.Minimum: (1, 0), ops_np.Power: (1, 0),
    ops_np.Where: (1, 0),  # a selection, counted like a comparison
    # comparisons and logic (``ops.where(x > 0, x, 0.1 * x)``), counted like ReLU's comparison
    ops_np.Greater: (1, 0), ops_np.GreaterEqual: (1, 0), ops_np.Less: (1, 0), ops_np.LessEqual: (1, 0),
    ops_np.Equal: (1, 0), ops_np.NotEqual: (1, 0), ops_np.LogicalAnd: (1, 0), ops_np.LogicalOr: (1, 0),
}.items():
    register(_op, spec=LayerSpec(channels=_element_wise, micronet=_count_element_wise(_mults, _adds, True)))

register(ops_nn.Softmax, ops_nn.LogSoftmax, spec=LayerSpec(channels=_axis_softmax,
                                                           micronet=_count_element_wise(*ACTIVATION_OPS["softmax"])))
register(ops_np.Mean, ops_np.Sum, ops_np.Max, ops_np.Min, ops_np.Amax, ops_np.Amin, ops_np.Var, ops_np.Std,
         spec=LayerSpec(channels=_reduction, micronet=_count_reduction))
register(ops_nn.MaxPool, ops_nn.AveragePool, spec=LayerSpec(channels=_spatial, micronet=_count_pool))
register(ops_image.Resize, spec=LayerSpec(channels=_spatial, micronet=_count_resize))
register(ops_np.ExpandDims, spec=LayerSpec(channels=_expand_dims, micronet=_NOTHING))
register(ops_np.Squeeze, spec=LayerSpec(channels=_squeeze, micronet=_NOTHING))
register(ops_np.Transpose, spec=LayerSpec(channels=_transpose_channels, micronet=_NOTHING))
register(ops_np.Reshape, spec=LayerSpec(channels=reshape_channels, resize=_reshape_resize, micronet=_NOTHING))
register(ops_np.Concatenate, spec=LayerSpec(channels=ch.concatenate, micronet=_NOTHING))
register(ops_np.Split, spec=LayerSpec(channels=_split, micronet=_NOTHING))
# Constants shaped like their input (``ops.where(c, x, ops.zeros_like(x))``) follow its channels, unless
# ``full_like`` fills them with a per-channel constant.
register(*_classes(ops_np, "ZerosLike", "OnesLike", "FullLike"), spec=LayerSpec(channels=_element_wise,
                                                                               micronet=_NOTHING))
register(ops_np.GetItem, spec=LayerSpec(channels=_get_item, micronet=_NOTHING))
register(ops_np.Pad, spec=LayerSpec(channels=_pad, micronet=_NOTHING))
