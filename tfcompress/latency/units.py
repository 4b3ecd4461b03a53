"""A model cut into the pieces a latency table measures: **units** of one layer call and the channel-preserving
calls fused onto it, each with a structure key and the channel axes its latency depends on.

The TFLite converter folds a BatchNormalization into the convolution before it and fuses a ReLU/ReLU6 into
the op, so measuring ``Conv2D``, ``BatchNormalization`` and ``ReLU`` apart would count three ops where the
device runs one. A unit therefore starts at a call and absorbs every following call that keeps the shape and
the channel layout of its input and is the only reader of it (BN, activations, a stride-1 depthwise
convolution): measured together, as the runtime runs them.

A unit's **axes** are the prunable channel groups (:class:`tfcompress.graph.ChannelGraph`) its tensors are made
of — (c_in, c_out) for a convolution, one axis for a depthwise convolution, a pooling or an ``Add``. Channels
that cannot be pruned (the model input, the classifier output) are part of the key instead. The **key**
describes everything else the latency depends on — layer types and configs without their channel counts,
input H×W, how each tensor's channels are made of the axes — so every residual block of a ResNet stage shares
one key, and a pruned model finds the entries measured for the unpruned one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np

from tfcompress.graph import ChannelGraph
from tfcompress.keras_graph import Call, copy_layer
from tfcompress.specs import Layout, class_path, spec_for

# Above this many independent axes a unit's grid would explode (a Concatenate of many DenseNet layers): its
# groups then move together along one axis, all kept in the same proportion.
MAX_AXES = 3

# Config entries that do not change the latency (names, initializers) or that the axes give (channel counts).
_IGNORED_CONFIG = ("name", "trainable", "dtype", "filters", "units", "projection_dim", "seed")
_IGNORED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


@dataclasses.dataclass(frozen=True)
class Axis:
    """Channel groups that a unit's latency depends on and that move together (one group, almost always)."""

    groups: tuple[int, ...]
    sizes: tuple[int, ...]

    @property
    def size(self) -> int:
        return sum(self.sizes)

    @property
    def smallest(self) -> int:
        return len(self.groups)  # every group keeps at least one channel

    def value(self, keep_counts: Mapping[int, int]) -> int:
        """Channels kept on this axis when group g keeps ``keep_counts[g]`` (default: all)."""
        return sum(keep_counts.get(g, s) for g, s in zip(self.groups, self.sizes, strict=True))

    def counts(self, value: int) -> dict[int, int]:
        """Per-group channel counts that add up to ``value``, each group keeping the same proportion."""
        if len(self.groups) == 1:
            return {self.groups[0]: int(value)}
        shares = np.asarray(self.sizes, float) * value / self.size
        counts = np.maximum(1, np.floor(shares)).astype(int)
        for i in np.argsort(counts - shares)[: max(0, value - counts.sum())]:  # hand out what rounding lost
            counts[i] += 1
        return {g: int(c) for g, c in zip(self.groups, counts, strict=True)}


@dataclasses.dataclass
class Unit:
    """Calls measured as one piece: ``calls[0]`` and the channel-preserving calls fused onto it.

    Attributes:
        calls: the calls, in order.
        inputs: the tensors it reads from outside.
        outputs: the tensors it produces (those of its last call).
        axes: the channel axes its latency depends on (prunable groups of the model).
        layouts: the channel layout of every tensor the unit touches, by id.
        key: what else its latency depends on (see the module docstring), as canonical JSON.
    """

    calls: list[Call]
    inputs: list[Any]
    outputs: list[Any]
    axes: list[Axis]
    layouts: dict[int, Layout]
    key: str

    @property
    def name(self) -> str:
        return self.calls[0].name

    @property
    def layer_names(self) -> list[str]:
        return [call.name for call in self.calls]

    @property
    def key_id(self) -> str:
        return hashlib.sha1(self.key.encode()).hexdigest()[:16]

    def values(self, keep_counts: Mapping[int, int] | None = None) -> tuple[int, ...]:
        """The unit's axis values (channels) when each group keeps ``keep_counts[g]`` (default: all)."""
        return tuple(axis.value(keep_counts or {}) for axis in self.axes)

    def build(self, values: Sequence[int] | None = None) -> keras.Model:
        """A one-unit Keras model (batch 1, fresh weights) with the axes at ``values`` (default: as in the model).

        Raises:
            ValueError: a value outside 1..size of its axis.
        """
        values = self.values() if values is None else tuple(int(v) for v in values)
        counts: dict[int, int] = {}
        for axis, value in zip(self.axes, values, strict=True):
            if not axis.smallest <= value <= axis.size:
                raise ValueError(f"unit {self.name}: axis value {value} outside {axis.smallest}..{axis.size}")
            counts.update(axis.counts(value))

        def channels(tensor: Any) -> int:
            return self.layouts[id(tensor)].kept_channels(counts)

        new = {id(t): keras.Input(batch_shape=(1, *t.shape[1:-1], channels(t)), dtype=t.dtype) for t in self.inputs}
        for call in self.calls:
            values_by_id = {id(raw): new[id(canonical)]
                            for raw, canonical in zip(call.node.input_tensors, call.inputs, strict=True)}
            args, kwargs = call.node.arguments.fill_in(values_by_id)
            kwargs.pop("training", None)
            layer = _resized(call, channels(call.outputs[0])) if call.is_layer else call.layer
            try:
                produced = keras.tree.flatten(layer(*args, **kwargs))
            except ValueError as error:  # e.g. an operation whose arguments spell out a channel count
                raise ValueError(f"layer {call.name} ({class_path(call.layer)}) cannot be rebuilt alone with "
                                 f"{[int(v) for v in values]} channels for a latency table: {error}") from None
            for old, output in zip(call.outputs, produced, strict=True):
                new[id(old)] = output
        inputs, outputs = [new[id(t)] for t in self.inputs], [new[id(t)] for t in self.outputs]
        return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs[0] if len(outputs) == 1 else outputs,
                           name="unit")


def find_units(model: keras.Model, graph: ChannelGraph | None = None) -> list[Unit]:
    """Cuts ``model`` (a plain model: strip compression layers first, :func:`tfcompress.export.strip`) into units.

    Raises:
        ValueError: a tensor whose size is unknown (build the model with a fixed input shape).
    """
    graph = graph or ChannelGraph(model)
    readers: dict[int, list[Call]] = {}
    for call in graph.walk.calls:
        for tensor in call.inputs:
            readers.setdefault(id(tensor), []).append(call)
    model_outputs = {id(t) for t in graph.walk.outputs}
    absorbed: set[int] = set()
    units = []
    for call in graph.walk.calls:
        if id(call.node) in absorbed:
            continue
        _check_call(call)
        calls = [call]
        while len(calls[-1].outputs) == 1:
            tail = calls[-1].outputs[0]
            following = readers.get(id(tail), [])
            if id(tail) in model_outputs or len(following) != 1 or not _fusable(following[0], graph):
                break
            calls.append(following[0])
            absorbed.add(id(following[0].node))
        units.append(_unit(calls, graph))
    return units


def _check_call(call: Call) -> None:
    for tensor in (*call.inputs, *call.outputs):
        if any(d is None for d in tensor.shape[1:]):
            raise ValueError(f"layer {call.name} has a tensor of unknown size {tuple(tensor.shape)}: latency "
                             "depends on it, so build the model with a fixed input shape (e.g. (32, 32, 3))")


def _fusable(call: Call, graph: ChannelGraph) -> bool:
    """One input, one output of the same shape and channel layout: BN, activations, stride-1 depthwise."""
    if len(call.inputs) != 1 or len(call.outputs) != 1:
        return False
    source, result = call.inputs[0], call.outputs[0]
    return tuple(source.shape) == tuple(result.shape) and graph.layout(source) == graph.layout(result)


def _unit(calls: list[Call], graph: ChannelGraph) -> Unit:
    inside = {id(t) for c in calls for t in c.outputs}
    inputs, seen = [], set()
    for call in calls:
        for tensor in call.inputs:
            if id(tensor) not in inside and id(tensor) not in seen:
                seen.add(id(tensor))
                inputs.append(tensor)
    tensors = [*inputs, *(t for c in calls for t in c.outputs)]
    layouts = {id(t): graph.layout(t) for t in tensors}

    groups: list[int] = []  # prunable groups in order of appearance
    for tensor in tensors:
        for segment in layouts[id(tensor)].segments:
            if graph.groups[segment.group].prunable and segment.group not in groups:
                groups.append(segment.group)
    if len(groups) <= MAX_AXES:
        axes = [Axis((g,), (graph.groups[g].size,)) for g in groups]
    else:
        axes = [Axis(tuple(groups), tuple(graph.groups[g].size for g in groups))]
    axis_of = {g: i for i, axis in enumerate(axes) for g in axis.groups}

    def describe(tensor: Any) -> dict[str, Any]:
        layout = layouts[id(tensor)]
        segments = [[f"axis{axis_of[s.group]}" if s.group in axis_of else s.size, s.repeat] for s in layout.segments]
        return {"shape": list(tensor.shape[1:-1]), "dtype": str(tensor.dtype), "channels": segments,
                "tile": layout.tile}

    index = {id(t): i for i, t in enumerate(tensors)}
    key = {
        "inputs": [describe(t) for t in inputs],
        "calls": [{"op": class_path(c.layer), "config": _structure(c), "reads": [index[id(t)] for t in c.inputs],
                   "outputs": [describe(t) for t in c.outputs]} for c in calls],
    }
    return Unit(calls, inputs, list(calls[-1].outputs), axes, layouts, json.dumps(key, sort_keys=True, default=str))


def _structure(call: Call) -> Any:
    """The call's layer config (or operation arguments) without names, initializers and channel counts."""
    if not call.is_layer:
        arguments = keras.tree.map_structure(
            lambda v: "tensor" if isinstance(v, keras.KerasTensor) else _plain(v),
            (call.node.arguments.args, call.node.arguments.kwargs))
        return {"arguments": arguments}
    try:
        config = call.layer.get_config()
    except (NotImplementedError, TypeError):
        return {}
    kept = {}
    for name, value in config.items():
        if name in _IGNORED_CONFIG or name.endswith(_IGNORED_SUFFIXES):
            continue
        if name == "groups":
            value = value == 1  # grouped-as-depthwise convolutions change their group count with the channels
        elif name == "target_shape":
            value = list(value)[:-1]
        kept[name] = _plain(value)
    return kept


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray | np.generic) or hasattr(value, "numpy"):
        array = np.asarray(value)
        return array.tolist() if array.size <= 16 else hashlib.sha1(array.tobytes()).hexdigest()[:16]
    return value


def _resized(call: Call, out_channels: int) -> Any:
    spec = spec_for(call.layer)
    if spec is not None and spec.resize is not None and out_channels != call.outputs[0].shape[-1]:
        return spec.resize(call.layer, out_channels)
    return copy_layer(call.layer)
