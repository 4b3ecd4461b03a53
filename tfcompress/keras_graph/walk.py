"""Walking a Keras functional graph call by call, with nested functional models inlined.

Keras 3 has no public per-call API. A Functional model's ``_nodes_by_depth`` holds exactly the calls of its
own graph (a layer's ``_inbound_nodes`` would also hold calls from other models); depths count down from the
outputs, so decreasing depth is a topological order. This module is the one place in tfcompress that reads it.

A call is a layer call or a Keras 3 operation node (``x + 1.0``, ``keras.ops.relu(x)``). A nested functional
model is expanded into its own calls; its inner input tensors are *aliases* of the tensors the outer graph
passed in, and the outer call's outputs are aliases of the inner outputs, so that every tensor is known by one
canonical KerasTensor.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator
from typing import Any

import keras
from keras.src.models.functional import Functional  # no public alias; clone_model makes the same check

Shape = tuple  # a tensor's shape without the batch dimension; entries may be None


def as_functional(model: keras.Model) -> keras.Model:
    """A functional view of a built Sequential model (same layer objects); functional models pass through."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            raise ValueError(f"Sequential model {model.name!r} is not built; give it an Input or call it once.")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not isinstance(model, Functional):
        raise ValueError(
            f"{type(model).__name__} {model.name!r} is a subclassed model; tfcompress rewrites functional and "
            "Sequential models only. Rebuild it with the functional API."
        )
    return model


def iter_layers(model: keras.Model) -> Iterator[keras.layers.Layer]:
    """Every layer of ``model``, descending into nested models (the nested model itself is yielded first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a layer or operation: its Keras node and canonical input and output tensors.

    Attributes:
        layer: the layer (or ``keras.Operation`` for an operation node) called.
        node: the Keras node of the call.
        inputs, outputs: canonical KerasTensors (batch dimension included in their shapes).
        index: 0 for the first call of this layer, 1 for the second, … (weights count at index 0 only).
        name: the layer name, prefixed by the enclosing nested models (``"block/conv"``) and suffixed ``#k``
            for the k-th call (k ≥ 1).
        parents: the calls that produced ``inputs`` (None for a model input).
    """

    layer: Any
    node: Any
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    index: int
    name: str
    parents: tuple[Call | None, ...] = ()

    @property
    def input_shapes(self) -> tuple[Shape, ...]:
        return tuple(tuple(t.shape[1:]) for t in self.inputs)

    @property
    def output_shapes(self) -> tuple[Shape, ...]:
        return tuple(tuple(t.shape[1:]) for t in self.outputs)

    @property
    def input_shape(self) -> Shape:
        return self.input_shapes[0]

    @property
    def output_shape(self) -> Shape:
        return self.output_shapes[0]

    @property
    def is_layer(self) -> bool:
        return isinstance(self.layer, keras.layers.Layer)


@dataclasses.dataclass(frozen=True)
class Alias:
    """``tensor`` stands for ``canonical`` (a nested model's input, or a nested call's output)."""

    tensor: Any
    canonical: Any


def known_size(call: Call, shape: Shape) -> int:
    """Number of elements of ``shape``; a ValueError naming the call if a dimension is not fixed."""
    if any(dim is None for dim in shape):
        raise ValueError(
            f"layer {call.name!r} has an unknown dimension in shape {(None, *shape)}: build the model on a fixed "
            "input shape, e.g. keras.Input((32, 32, 3)), to count its operations."
        )
    return math.prod(shape)


def channels_first(layer: Any) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_first"


def spatial_positions(call: Call, shape: Shape) -> int:
    """Positions of a tensor at which a channel vector sits: all but the channel axis (per ``data_format``)."""
    return known_size(call, shape[1:] if channels_first(call.layer) else shape[:-1])


def output_positions(call: Call) -> int:
    return spatial_positions(call, call.output_shape)


def input_positions(call: Call) -> int:
    return spatial_positions(call, call.input_shape)


class GraphWalk:
    """The calls of a functional or Sequential model in topological order, nested models inlined.

    Attributes:
        model: the functional view of the model.
        steps: ``Call`` and ``Alias`` items in the order a rebuild must replay them.
        inputs, outputs: the model's input and (canonical) output tensors.
    """

    def __init__(self, model: keras.Model):
        self.model = as_functional(model)
        self._canonical: dict[int, Any] = {}
        self._producers: dict[int, Call] = {}
        self.steps: list[Call | Alias] = []
        self._call_counts: dict[int, int] = {}
        self._walk(self.model, prefix="")
        self.inputs = tuple(self.model.inputs)
        self.outputs = tuple(self.canonical(t) for t in self.model.outputs)

    @property
    def calls(self) -> list[Call]:
        return [step for step in self.steps if isinstance(step, Call)]

    def canonical(self, tensor: Any) -> Any:
        return self._canonical.get(id(tensor), tensor)

    def producer(self, tensor: Any) -> Call | None:
        """The call that produced ``tensor`` (None for a model input)."""
        return self._producers.get(id(self.canonical(tensor)))

    def readers(self, tensor: Any) -> list[Call]:
        """The calls that take ``tensor`` as an input."""
        key = id(self.canonical(tensor))
        return [call for call in self.calls if any(id(t) == key for t in call.inputs)]

    def _alias(self, tensor: Any, canonical: Any) -> None:
        canonical = self.canonical(canonical)
        self._canonical[id(tensor)] = canonical
        self.steps.append(Alias(tensor, canonical))

    def _walk(self, model: Functional, prefix: str) -> None:
        order = {id(op): i for i, op in enumerate(model.operations)}
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in sorted(model._nodes_by_depth[depth], key=lambda n: order.get(id(n.operation), 0)):
                layer = node.operation
                if layer is None or node.is_input:
                    continue
                if isinstance(layer, keras.Sequential):
                    layer = as_functional(layer)
                if isinstance(layer, Functional):
                    if len(node.input_tensors) != len(layer.inputs):
                        raise ValueError(f"nested model {layer.name!r} is called with nested structures; "
                                         "tfcompress supports flat inputs to nested models")
                    for inner, outer in zip(layer.inputs, node.input_tensors, strict=True):
                        self._alias(inner, outer)
                    self._walk(layer, f"{prefix}{layer.name}/")
                    for outer, inner in zip(node.outputs, layer.outputs, strict=True):
                        self._alias(outer, inner)
                    continue
                index = self._call_counts.get(id(layer), 0)
                self._call_counts[id(layer)] = index + 1
                inputs = tuple(self.canonical(t) for t in node.input_tensors)
                call = Call(
                    layer, node, inputs, tuple(node.outputs), index,
                    name=f"{prefix}{layer.name}" + (f"#{index}" if index else ""),
                    parents=tuple(self._producers.get(id(t)) for t in inputs),
                )
                for tensor in node.outputs:
                    self._producers[id(tensor)] = call
                self.steps.append(call)

    def rebuild(self, call_fn: Callable[[Call, tuple, dict], Any], extra_outputs: tuple = ()) -> keras.Model:
        """Replays the graph on fresh inputs: ``call_fn(call, args, kwargs)`` returns each call's outputs.

        ``args``/``kwargs`` are the call's arguments with every KerasTensor replaced by its new tensor.
        Returns a new flat functional model (nested models are inlined) with the original input names; with
        ``extra_outputs`` (tensors of this graph), the model outputs ``[outputs..., extra_outputs...]``.
        """
        new_inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=t._keras_history.operation.name)
                      for t in self.inputs]
        values: dict[int, Any] = {id(old): new for old, new in zip(self.inputs, new_inputs, strict=True)}
        for step in self.steps:
            if isinstance(step, Alias):
                values[id(step.tensor)] = values[id(step.canonical)]
                continue
            args, kwargs = step.node.arguments.fill_in(values)
            outputs = keras.tree.flatten(call_fn(step, args, kwargs))
            for old, new in zip(step.node.outputs, outputs, strict=True):
                values[id(old)] = new
        new_outputs = [values[id(t)] for t in self.outputs]
        if extra_outputs:
            return keras.Model(_single_or_list(new_inputs), [*new_outputs, *(values[id(self.canonical(t))]
                                                                            for t in extra_outputs)])
        return keras.Model(_single_or_list(new_inputs), _single_or_list(new_outputs), name=self.model.name)


def _single_or_list(tensors: list[Any]) -> Any:
    # A one-element list would make Keras expect a list at call time and warn on a plain tensor.
    return tensors[0] if len(tensors) == 1 else tensors
