"""Specs of Keras 3 operation nodes: what a functional graph holds for ``x + 3.0``, ``x * gate``,
``keras.ops.relu(x)``, ``keras.ops.mean(x, axis=(1, 2))`` or ``keras.ops.reshape(x, ...)``.

Element-wise operations pass channels through (two full tensors are coupled like a merge layer; a scalar or
a broadcast operand couples nothing, but a per-channel constant is in the graph and keeps those channels);
reductions and shape operations pass them through when they leave the channel axis alone, and keep them
otherwise. An operation has no weights: MACs are 0, MicroNet counts its element-wise arithmetic.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras.src.ops import nn as ops_nn  # operation classes have no public alias
from keras.src.ops import numpy as ops_np

from tfcompress.keras_graph import Call, known_size
from tfcompress.specs import channels as ch
from tfcompress.specs.counting import ACTIVATION_OPS, Count, Precision
from tfcompress.specs.keras_layers import reshape_channels
from tfcompress.specs.layout import Layout
from tfcompress.specs.spec import LayerSpec, register


def _constants(call: Call) -> list[Any]:
    return [value for value in keras.tree.flatten((call.node.arguments.args, call.node.arguments.kwargs))
            if not isinstance(value, keras.KerasTensor)]


def _element_wise(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    channels = int(call.outputs[0].shape[-1])
    for value in _constants(call):
        if np.ndim(value) and np.shape(value)[-1] == channels > 1:
            for layout in inputs:
                builder.block(layout, f"{call.name} applies a per-channel constant")
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


def _axes(op: Any, rank: int) -> set[int] | None:
    axis = getattr(op, "axis", None)
    if axis is None:
        return None
    return {a % rank for a in (axis if isinstance(axis, list | tuple) else [axis])}


def _keeps_channel_axis(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    """Reductions and axis insertions that leave the channel (last) axis alone pass channels through."""
    rank = len(call.inputs[0].shape)
    axes = _axes(call.layer, rank)
    if axes is not None and rank - 1 not in axes and call.outputs[0].shape[-1] == call.inputs[0].shape[-1]:
        return [inputs[0]]
    return ch.barrier(call, inputs, builder)


def _transpose_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    rank = len(call.inputs[0].shape)
    axes = call.layer.axes
    if axes is not None and list(axes)[-1] % rank == rank - 1:
        return [inputs[0]]
    return ch.barrier(call, inputs, builder)


def _concatenate_channels(call: Call, inputs: list[Layout], builder: Any) -> list[Layout]:
    rank = len(call.outputs[0].shape)
    if call.layer.axis % rank != rank - 1:
        return [builder.union(inputs, call.name)]
    if any(layout.tile != 1 for layout in inputs):
        return ch.barrier(call, inputs, builder)
    return [Layout(tuple(s for layout in inputs for s in layout.segments))]


def _reshape_resize(op: Any, channels: int) -> Any:
    newshape = tuple(op.newshape)
    return op if newshape[-1] == -1 else type(op)(newshape=(*newshape[:-1], channels))


def _count_reduction(call: Call, precision: Precision) -> Count:
    inputs, outputs = known_size(call, call.input_shape), known_size(call, call.output_shape)
    mean = isinstance(call.layer, ops_np.Mean)
    return Count(mults=outputs if mean else 0, adds=inputs - outputs)


_NOTHING = _count_element_wise(0, 0)

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
    ops_np.Copy: (0, 0),
}
for _op, (_mults, _adds) in _UNARY.items():
    register(_op, spec=LayerSpec(channels=_element_wise, micronet=_count_element_wise(_mults, _adds)))

for _op, (_mults, _adds) in {
    ops_np.Add: (0, 1), ops_np.Subtract: (0, 1), ops_np.Multiply: (1, 0), ops_np.Divide: (1, 0),
    ops_np.TrueDivide: (1, 0), ops_np.Maximum: (1, 0), ops_np.Minimum: (1, 0), ops_np.Power: (1, 0),
}.items():
    register(_op, spec=LayerSpec(channels=_element_wise, micronet=_count_element_wise(_mults, _adds, True)))

register(ops_nn.Softmax, ops_nn.LogSoftmax, spec=LayerSpec(channels=ch.blocks("mixes channels (softmax)"),
                                                           micronet=_count_element_wise(*ACTIVATION_OPS["softmax"])))
register(ops_np.Mean, ops_np.Sum, ops_np.Max, ops_np.Min, spec=LayerSpec(channels=_keeps_channel_axis,
                                                                        micronet=_count_reduction))
register(ops_np.ExpandDims, ops_np.Squeeze, spec=LayerSpec(channels=_keeps_channel_axis, micronet=_NOTHING))
register(ops_np.Transpose, spec=LayerSpec(channels=_transpose_channels, micronet=_NOTHING))
register(ops_np.Reshape, spec=LayerSpec(channels=reshape_channels, resize=_reshape_resize, micronet=_NOTHING))
register(ops_np.Concatenate, spec=LayerSpec(channels=_concatenate_channels, micronet=_NOTHING))
