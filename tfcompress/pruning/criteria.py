"""Channel importance criteria: a score per channel of every group, aggregated over the group's members.

A criterion is ``fn(graph, rng) → {group id: scores}``; register a new one with :func:`register_criterion`.
Higher scores mean more important. Aggregation follows Torch-Pruning's group importance: a channel's score
sums the per-member scores of every weight slice coupled to it (all convolutions feeding a residual stream,
not only one of them).

- ``l1`` / ``l2``: norm of each producer filter (Li et al. 2017, "Pruning Filters for Efficient ConvNets"),
  summed over the group's producers; groups without a producer (none here, but custom layers) use their
  consumers' input slices.
- ``bn``: |γ| of the BatchNorms on the group (Liu et al. 2017, "Network Slimming"); groups without BatchNorm
  fall back to ``l1``.
- ``random``: uniform random scores (a baseline).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfcompress.graph import ChannelGraph, Group
from tfcompress.graph.channel_graph import weight_name

Criterion = Callable[[ChannelGraph, np.random.Generator], dict[int, np.ndarray]]
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str) -> Callable[[Criterion], Criterion]:
    def register(criterion: Criterion) -> Criterion:
        CRITERIA[name] = criterion
        return criterion

    return register


def get_criterion(name: str) -> Criterion:
    try:
        return CRITERIA[name]
    except KeyError:
        raise ValueError(f"unknown criterion {name!r}; known: {', '.join(sorted(CRITERIA))}") from None


def member_scores(graph: ChannelGraph, group: Group, roles: tuple[str, ...], norm: Callable) -> np.ndarray | None:
    """Σ over the group's members with one of ``roles`` of ``norm(slice)`` per group channel (None if none)."""
    scores, found = np.zeros(group.size), False
    for layer_name, binding in group.members:
        if binding.role not in roles:
            continue
        layer = next(layer for layer in graph.layers.values() if layer.name == layer_name)
        weight = next(w for w in layer.weights if weight_name(layer, w) == binding.weight)
        values = np.moveaxis(np.asarray(weight.numpy()), binding.axis, 0)
        per_channel = norm(values.reshape(values.shape[0], -1))
        groups, indices = binding.layout.channel_index()
        on_group = groups == group.id
        np.add.at(scores, indices[on_group], per_channel[on_group])
        found = True
    return scores if found else None


def _norm_criterion(norm: Callable[[np.ndarray], np.ndarray]) -> Criterion:
    def criterion(graph: ChannelGraph, rng: np.random.Generator) -> dict[int, np.ndarray]:
        result = {}
        for group in graph.prunable_groups:
            scores = member_scores(graph, group, ("out",), norm)
            result[group.id] = scores if scores is not None else member_scores(graph, group, ("in",), norm)
        return result

    return criterion


l1 = register_criterion("l1")(_norm_criterion(lambda rows: np.abs(rows).sum(axis=1)))
l2 = register_criterion("l2")(_norm_criterion(lambda rows: np.sqrt(np.square(rows).sum(axis=1))))


@register_criterion("bn")
def bn_gamma(graph: ChannelGraph, rng: np.random.Generator) -> dict[int, np.ndarray]:
    result = l1(graph, rng)
    for group in graph.prunable_groups:
        scores = member_scores(graph, group, ("norm",), lambda rows: np.abs(rows).sum(axis=1))
        if scores is not None:
            result[group.id] = scores
    return result


@register_criterion("random")
def random_scores(graph: ChannelGraph, rng: np.random.Generator) -> dict[int, np.ndarray]:
    return {group.id: rng.random(group.size) for group in graph.prunable_groups}
