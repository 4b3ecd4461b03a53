"""Channel importance: objects that score the channels of a channel group, higher = more important.

An importance is ``importance(graph, group) → scores`` (one per channel of the group); data-driven ones first
take a pass over labelled batches with ``importance.fit(graph, data)``. Scores aggregate over the group's
members, as Torch-Pruning's group importance does: a channel's score sums what every coupled variable slice
says about it (all convolutions feeding a residual stream, not only one of them).

- ``l1`` / ``l2``: norm of each producer filter (Li et al. 2017, "Pruning Filters for Efficient ConvNets");
  groups without a producer use their consumers' input slices.
- ``bn``: |γ| of the normalization scales on the group (Liu et al. 2017, "Network Slimming"); ``l1`` where
  there is none.
- ``random``: uniform random scores (a baseline).
- ``snip``: connection sensitivity |g ⊙ w| summed over each channel's filters, normalized to sum 1 over the
  model (Lee et al. 2019, structured); ``taylor``: (Σ g ⊙ w)² per filter, first-order Taylor expansion of the
  loss change (Molchanov et al. 2019); g the gradient of the mean loss over the batches.
- ``fisher``: Δ_c = 1/(2N) Σ_n (Σ_t Σ_hw a_{n,t,c} · g_{n,t,c})², the Fisher information of a mask on the
  channel (Theis et al. 2018, "Faster gaze prediction with dense networks and Fisher pruning"); a and g are
  the activations that consumers read and their per-example gradients, summed over every tensor t of the group.

``get_importance(name)`` gives a fresh object; register a new one with :func:`register_importance`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress import training
from tfcompress.graph import ChannelGraph, Group
from tfcompress.specs import effective_values

IMPORTANCES: dict[str, Callable[..., Importance]] = {}


def register_importance(name: str) -> Callable[[type], type]:
    def register(cls: type) -> type:
        IMPORTANCES[name] = cls
        cls.name = name
        return cls

    return register


def get_importance(name: str | Importance, **kwargs: Any) -> Importance:
    """A fresh importance object by name (or ``name`` itself if it already is one)."""
    if isinstance(name, Importance):
        return name
    if name not in IMPORTANCES:
        raise ValueError(f"unknown importance {name!r}; known: {', '.join(sorted(IMPORTANCES))}")
    return IMPORTANCES[name](**kwargs)


class Importance:
    """Scores the channels of one group of a :class:`ChannelGraph` (higher = more important).

    ``requires_data`` importances need :meth:`fit` on labelled batches of the same model first.
    """

    name = "importance"
    requires_data = False

    def fit(self, graph: ChannelGraph, data: Any, num_batches: int | None = 1) -> Importance:
        return self

    def __call__(self, graph: ChannelGraph, group: Group) -> np.ndarray:
        raise NotImplementedError

    def scores(self, graph: ChannelGraph) -> dict[int, np.ndarray]:
        """Scores of every prunable group."""
        return {group.id: np.asarray(self(graph, group), np.float64) for group in graph.prunable_groups}


def member_scores(
    graph: ChannelGraph, group: Group, roles: tuple[str, ...], per_slice: Callable[[Any, np.ndarray], np.ndarray]
) -> np.ndarray | None:
    """Σ over the group's members with one of ``roles`` of ``per_slice(variable, rows)`` per group channel,
    ``rows`` the variable's values (as the layer computes with them) with the bound axis first, flattened
    per channel. None when the group has no such member."""
    scores, found = np.zeros(group.size), False
    for _, binding in group.members:
        if binding.role not in roles:
            continue
        with effective_values(graph.owners[id(binding.variable)]):
            values = np.asarray(keras.ops.convert_to_numpy(binding.variable), np.float64)
        rows = np.moveaxis(values, binding.axis, 0)
        per_channel = per_slice(binding.variable, rows.reshape(rows.shape[0], -1))
        groups, indices = binding.layout.channel_index()
        on_group = groups == group.id
        np.add.at(scores, indices[on_group], per_channel[on_group])
        found = True
    return scores if found else None


class _Norm(Importance):
    p = 1

    def __call__(self, graph: ChannelGraph, group: Group) -> np.ndarray:
        def norm(variable: Any, rows: np.ndarray) -> np.ndarray:
            return np.linalg.norm(rows, ord=self.p, axis=1)

        scores = member_scores(graph, group, ("out",), norm)
        if scores is None:
            scores = member_scores(graph, group, ("in",), norm)
        return scores if scores is not None else np.ones(group.size)


@register_importance("l1")
class L1(_Norm):
    p = 1


@register_importance("l2")
class L2(_Norm):
    p = 2


@register_importance("bn")
class BatchNormScale(Importance):
    def __call__(self, graph: ChannelGraph, group: Group) -> np.ndarray:
        scores = member_scores(graph, group, ("norm",), lambda variable, rows: np.abs(rows).sum(axis=1))
        return scores if scores is not None else L1()(graph, group)


@register_importance("random")
class Random(Importance):
    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def __call__(self, graph: ChannelGraph, group: Group) -> np.ndarray:
        return self.rng.random(group.size)


# -------------------------------------------------------------------------------------------- data-driven


def _loss(from_logits: bool = True) -> keras.losses.Loss:
    return keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)


class _Gradient(Importance):
    """Importances from g, the gradient of the mean loss over the batches, for every bound variable."""

    requires_data = True

    def __init__(self) -> None:
        self.gradients: dict[int, np.ndarray] | None = None

    def fit(self, graph: ChannelGraph, data: Any, num_batches: int | None = 1) -> Importance:
        model = graph.model
        batches = training.as_batches(data, model, num_batches)
        variables = [b.variable for bindings in graph.bindings.values() for b in bindings[:1]]
        variables = [v for v in variables if v.trainable]
        totals = [np.zeros(v.shape) for v in variables]
        examples = 0
        for x, y in batches:
            with tf.GradientTape() as tape:
                loss = _loss()(y, model(x, training=False))  # BatchNorm in inference mode
            for total, grad in zip(totals, tape.gradient(loss, [v.value for v in variables]), strict=True):
                if grad is not None:
                    total += np.asarray(grad, np.float64) * len(x)
            examples += len(x)
        self.gradients = {id(v): total / examples for v, total in zip(variables, totals, strict=True)}
        return self

    def _g_times_w(self, graph: ChannelGraph, group: Group, reduce: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
        if self.gradients is None:
            raise ValueError(f"the {self.name!r} importance needs data: call .fit(graph, batches) first")
        scores = np.zeros(group.size)
        for _, binding in group.members:
            if binding.role != "out" or id(binding.variable) not in self.gradients:
                continue
            product = np.asarray(binding.variable.numpy(), np.float64) * self.gradients[id(binding.variable)]
            rows = np.moveaxis(product, binding.axis, 0).reshape(product.shape[binding.axis], -1)
            groups, indices = binding.layout.channel_index()
            on_group = groups == group.id
            np.add.at(scores, indices[on_group], reduce(rows)[on_group])
        return scores


@register_importance("snip")
class SNIP(_Gradient):
    def fit(self, graph: ChannelGraph, data: Any, num_batches: int | None = 1) -> Importance:
        super().fit(graph, data, num_batches)
        # Σ |g·w| over every scored variable, once: the normalization of the connection sensitivity
        self.norm = sum(float(np.abs(np.asarray(binding.variable.numpy()) * self.gradients[id(binding.variable)]).sum())
                        for bindings in graph.bindings.values() for binding in bindings[:1]
                        if id(binding.variable) in self.gradients)
        return self

    def __call__(self, graph: ChannelGraph, group: Group) -> np.ndarray:
        scores = self._g_times_w(graph, group, lambda rows: np.abs(rows).sum(axis=1))
        return scores / self.norm if self.norm > 0 else scores


@register_importance("taylor")
class Taylor(_Gradient):
    def __call__(self, graph: ChannelGraph, group: Group) -> np.ndarray:
        return self._g_times_w(graph, group, lambda rows: np.square(rows.sum(axis=1)))


@register_importance("fisher")
class Fisher(Importance):
    requires_data = True

    def __init__(self) -> None:
        self.fisher: dict[int, np.ndarray] | None = None

    def fit(self, graph: ChannelGraph, data: Any, num_batches: int | None = 1) -> Importance:
        batches = training.as_batches(data, graph.model, num_batches)
        # The tensors that layers with dot products read: a mask on a channel sits there (ChannelMask).
        tensors = {}
        for call in graph.dot_product_calls():
            tensors.setdefault(id(graph.walk.canonical(call.inputs[0])), call.inputs[0])
        tensors = list(tensors.values())
        probe = graph.walk.rebuild(lambda call, args, kwargs: call.layer(*args, **kwargs), extra_outputs=tensors)
        sums = {g.id: np.zeros(g.size) for g in graph.prunable_groups}
        examples = 0
        for x, y in batches:
            with tf.GradientTape() as tape:
                outputs = probe(x, training=False)
                activations = outputs[1:]
                # Summed, not averaged: each example's gradient stays its own.
                loss = keras.ops.sum(keras.losses.sparse_categorical_crossentropy(y, outputs[0], from_logits=True))
            gradients = tape.gradient(loss, activations)
            per_example = {g: np.zeros((len(x), total.size)) for g, total in sums.items()}
            for tensor, a, g in zip(tensors, activations, gradients, strict=True):
                if g is None:
                    continue
                gate = np.asarray(a * g, np.float64).reshape(len(x), -1, a.shape[-1]).sum(axis=1)
                groups, indices = graph.layout(tensor).channel_index()
                for group_id in np.unique(groups):
                    if int(group_id) in per_example:
                        on = groups == group_id
                        np.add.at(per_example[int(group_id)].T, indices[on], gate[:, on].T)
            for group_id, values in per_example.items():
                sums[group_id] += np.square(values).sum(axis=0)
            examples += len(x)
        self.fisher = {g: total / (2 * examples) for g, total in sums.items()}
        return self

    def __call__(self, graph: ChannelGraph, group: Group) -> np.ndarray:
        if self.fisher is None:
            raise ValueError("the 'fisher' importance needs data: call .fit(graph, batches) first")
        return self.fisher[group.id]
