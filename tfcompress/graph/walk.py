"""Walking a Keras functional graph call by call, with nested functional models inlined.

Keras 3 has no public per-call API. A Functional model's ``_nodes_by_depth`` holds exactly the calls of its
own graph (a layer's ``_inbound_nodes`` would also hold calls from other models); depths count down from the
outputs, so decreasing depth is a topological order. This module is the one place that reads it.

A nested functional model is expanded into its own calls; its inner input tensors are *aliases* of the
tensors the outer graph passed in, and the outer call's outputs are aliases of the inner outputs, so that
every tensor is known by one canonical KerasTensor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from keras.src.models.functional import Functional  # no public alias

from tfcompress.surgery import as_functional


@dataclasses.dataclass(frozen=True)
class Call:
    """One layer call: the layer, its Keras node and its canonical input and output tensors."""

    layer: keras.layers.Layer
    node: Any
    inputs: tuple[Any, ...]
    outputs: tuple[Any, ...]
    index: int  # 0 for the first call of this layer, 1 for the second, …


@dataclasses.dataclass(frozen=True)
class Alias:
    """``tensor`` stands for ``canonical`` (a nested model's input, or a nested call's output)."""

    tensor: Any
    canonical: Any


class GraphWalk:
    """The calls of a functional model in topological order, nested models inlined.

    Attributes:
        model: the functional view of the model.
        steps: ``Call`` and ``Alias`` items in the order a rebuild must replay them.
        inputs, outputs: the model's input and (canonical) output tensors.
    """

    def __init__(self, model: keras.Model):
        self.model = as_functional(model)
        self._canonical: dict[int, Any] = {}
        self.steps: list[Call | Alias] = []
        self._call_counts: dict[int, int] = {}
        self._walk(self.model)
        self.inputs = tuple(self.model.inputs)
        self.outputs = tuple(self.canonical(t) for t in self.model.outputs)

    @property
    def calls(self) -> list[Call]:
        return [step for step in self.steps if isinstance(step, Call)]

    def canonical(self, tensor: Any) -> Any:
        return self._canonical.get(id(tensor), tensor)

    def _alias(self, tensor: Any, canonical: Any) -> None:
        canonical = self.canonical(canonical)
        self._canonical[id(tensor)] = canonical
        self.steps.append(Alias(tensor, canonical))

    def _walk(self, model: Functional) -> None:
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
                    self._walk(layer)
                    for outer, inner in zip(node.outputs, layer.outputs, strict=True):
                        self._alias(outer, inner)
                    continue
                index = self._call_counts.get(id(layer), 0)
                self._call_counts[id(layer)] = index + 1
                self.steps.append(Call(
                    layer, node, tuple(self.canonical(t) for t in node.input_tensors), tuple(node.outputs), index,
                ))

    def rebuild(self, call_fn) -> keras.Model:
        """Replays the graph on fresh inputs: ``call_fn(call, args, kwargs)`` returns each call's outputs.

        ``args``/``kwargs`` are the call's arguments with every KerasTensor replaced by its new tensor.
        Returns a new flat functional model (nested models are inlined) with the original input names.
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
        return keras.Model(_single_or_list(new_inputs), _single_or_list(new_outputs), name=self.model.name)


def _single_or_list(tensors: list[Any]) -> Any:
    # A one-element list would make Keras expect a list at call time and warn on a plain tensor.
    return tensors[0] if len(tensors) == 1 else tensors
