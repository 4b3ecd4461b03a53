"""Choosing how many channels each group keeps, to a target, and pruning a model physically.

    small, plan = tfcompress.pruning.prune_channels(model, criterion="l1", target_macs=0.5)

Targets are fractions of the original model: ``ratio`` of channels removed, ``target_macs`` / ``target_params``
(the pruned model keeps at most that fraction), or ``target_cost`` of any ``cost_fn(keep_counts)`` the caller
supplies (NetAdapt passes a latency table). ``scope="global"`` ranks all channels together, with scores
divided by their group's mean so that groups of different fan-in compare; ``scope="local"`` removes the same
fraction from every group, ranking inside each group; criterion ``"uniform"`` is ``l1`` with local scope.
Every group keeps at least ``min_channels``; ``channel_multiple=8`` rounds every kept count up to a multiple of 8
(SIMD kernels such as XNNPACK's process channels in blocks, so 14 channels cost what 16 cost — see
benchmarks/channel_pruning.md). Fine-tuning afterwards is the user's ``model.fit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np

from tfcompress import surgery
from tfcompress.graph import ChannelGraph
from tfcompress.pruning.criteria import get_criterion

CostFn = Callable[[Mapping[int, int]], float]


@dataclasses.dataclass
class PruningPlan:
    """Which channels each group keeps, and what that costs.

    Attributes:
        masks: per-group boolean keep-masks (only groups that lose channels).
        channels_before, channels_after: per-group channel counts, every group of the graph.
        macs_before, macs_after, params_before, params_after: whole-model counts.
        group_names: readable group names (their producers).
    """

    masks: dict[int, np.ndarray]
    channels_before: dict[int, int]
    channels_after: dict[int, int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    group_names: dict[int, str]

    def keep_indices(self) -> dict[int, list[int]]:
        return {g: np.flatnonzero(mask).tolist() for g, mask in self.masks.items()}

    def to_dict(self) -> dict[str, Any]:
        return {
            "groups": [
                {"group": g, "name": self.group_names[g], "channels_before": self.channels_before[g],
                 "channels_after": self.channels_after[g],
                 **({"keep": np.flatnonzero(self.masks[g]).tolist()} if g in self.masks else {})}
                for g in self.channels_before
            ],
            "macs_before": self.macs_before, "macs_after": self.macs_after,
            "params_before": self.params_before, "params_after": self.params_after,
        }

    def table(self) -> str:
        lines = [f"{'group':>5}  {'before':>6}  {'after':>6}  name"]
        for g, before in self.channels_before.items():
            after = self.channels_after[g]
            lines.append(f"{g:>5}  {before:>6}  {after:>6}  {self.group_names[g]}{'' if after == before else '  *'}")
        lines.append(f"MACs {self.macs_before:,} → {self.macs_after:,} ({self.macs_after / self.macs_before:.1%}); "
                     f"params {self.params_before:,} → {self.params_after:,} "
                     f"({self.params_after / self.params_before:.1%})")
        return "\n".join(lines)


def plan_channels(
    graph: ChannelGraph,
    scores: Mapping[int, np.ndarray],
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    cost_fn: CostFn | None = None,
    target_cost: float | None = None,
    scope: str = "global",
    min_channels: int = 1,
    channel_multiple: int = 1,
) -> PruningPlan:
    """Turns channel scores into keep-masks that meet exactly one target.

    Raises:
        ValueError: no target or several, a target out of range, or one that cannot be met without emptying
            a group (the message gives the smallest reachable value).
    """
    targets = {"ratio": ratio, "target_macs": target_macs, "target_params": target_params, "target_cost": target_cost}
    given = {k: v for k, v in targets.items() if v is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one target of {', '.join(targets)}; got {sorted(given) or 'none'}")
    if scope not in ("global", "local"):
        raise ValueError(f"scope must be 'global' or 'local', got {scope!r}")
    if min_channels < 1:
        raise ValueError(f"min_channels must be ≥ 1 (an empty group disconnects the network), got {min_channels}")
    if channel_multiple < 1:
        raise ValueError(f"channel_multiple must be ≥ 1, got {channel_multiple}")
    if target_cost is not None and cost_fn is None:
        raise ValueError("target_cost needs cost_fn, a function of the per-group channel counts")
    (name, value), = given.items()
    if name == "ratio" and not 0.0 <= value < 1.0:
        raise ValueError(f"ratio (fraction of channels removed) must be in [0, 1), got {value}")
    if name != "ratio" and not 0.0 < value <= 1.0:
        raise ValueError(f"{name} (fraction of the original kept) must be in (0, 1], got {value}")

    groups = graph.prunable_groups
    order = _removal_order(groups, scores, scope, min_channels)
    removable = [(g.id, max(0, g.size - min_channels)) for g in groups]

    def keep_counts(removed: int) -> dict[int, int]:
        if scope == "local":  # the same fraction `removed / total` from every group
            fraction = removed / max(1, sum(g.size for g in groups))
            counts = {g: graph.groups[g].size - min(limit, round(fraction * graph.groups[g].size))
                      for g, limit in removable}
        else:
            counts = {g.id: g.size for g in groups}
            for g, _ in order[:removed]:
                counts[g] -= 1
        # rounding up keeps the next-best channels of the group: cost still falls as `removed` grows
        return {g: min(graph.groups[g].size, -(-count // channel_multiple) * channel_multiple)
                for g, count in counts.items()}

    total = len(order)
    if name == "ratio":
        removed = round(value * sum(g.size for g in groups))
        if scope == "global" and removed > total:
            raise ValueError(f"ratio {value} would empty a group: at most {total} channels can go "
                             f"(ratio ≤ {total / sum(g.size for g in groups):.3f}) with min_channels={min_channels}")
    else:
        cost = cost_fn or (lambda counts: graph.cost(counts, "macs" if name == "target_macs" else "params"))
        budget = value * cost({g.id: g.size for g in groups})
        most = total if scope == "global" else sum(g.size for g in groups)
        if cost(keep_counts(most)) > budget:
            reachable = cost(keep_counts(most)) / cost({g.id: g.size for g in groups})
            raise ValueError(f"{name}={value} cannot be reached without emptying a group: the smallest reachable "
                             f"is {reachable:.3f} with min_channels={min_channels}")
        low, high = 0, most  # smallest removal count meeting the budget (cost falls as channels go)
        while low < high:
            middle = (low + high) // 2
            if cost(keep_counts(middle)) <= budget:
                high = middle
            else:
                low = middle + 1
        removed = low
    counts = keep_counts(removed)
    masks = _masks_from_counts(graph, scores, counts, order if scope == "global" else None)
    all_after = {g: counts.get(g, graph.groups[g].size) for g in graph.groups}
    return PruningPlan(
        masks=masks,
        channels_before={g: group.size for g, group in graph.groups.items()},
        channels_after=all_after,
        macs_before=graph.cost(metric="macs"), macs_after=graph.cost(all_after, "macs"),
        params_before=graph.cost(metric="params"), params_after=graph.cost(all_after, "params"),
        group_names={g: group.name for g, group in graph.groups.items()},
    )


def _removal_order(groups, scores: Mapping[int, np.ndarray], scope: str, min_channels: int) -> list[tuple[int, int]]:
    """(group, channel) pairs, least important first, never taking a group's last ``min_channels``."""
    entries = []
    for group in groups:
        group_scores = np.asarray(scores[group.id], dtype=np.float64)
        if group_scores.shape != (group.size,):
            raise ValueError(f"scores of group {group.id} have shape {group_scores.shape}, expected ({group.size},)")
        mean = group_scores.mean()
        normalized = group_scores / mean if scope == "global" and mean > 0 else group_scores
        ranked = np.argsort(normalized, kind="stable")
        entries += [(normalized[c], group.id, int(c), rank) for rank, c in enumerate(ranked)
                    if rank < group.size - min_channels]  # the best channels always stay
    entries.sort(key=lambda e: (e[0], e[1], e[3]))
    return [(g, c) for _, g, c, _ in entries]


def _masks_from_counts(graph, scores, counts, order) -> dict[int, np.ndarray]:
    """Keep-masks with ``counts[g]`` channels: the group's first removals in the global ``order``, or (local
    scope, ``order`` None) its lowest-scored channels."""
    masks = {}
    for g, count in counts.items():
        size = graph.groups[g].size
        if count == size:
            continue
        if order is not None:
            removed = [c for group, c in order if group == g][: size - count]
        else:
            removed = np.argsort(np.asarray(scores[g]), kind="stable")[: size - count]
        mask = np.ones(size, bool)
        mask[removed] = False
        masks[g] = mask
    return masks


def prune_channels(
    model: keras.Model,
    criterion: str = "l1",
    *,
    ratio: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    cost_fn: CostFn | None = None,
    target_cost: float | None = None,
    scope: str | None = None,
    min_channels: int = 1,
    channel_multiple: int = 1,
    seed: int = 0,
    graph: ChannelGraph | None = None,
) -> tuple[keras.Model, PruningPlan]:
    """Scores channels with ``criterion``, plans to the target and returns the physically smaller model.

    Args:
        criterion: "l1", "l2", "bn", "random" (see :mod:`tfcompress.pruning.criteria`) or "uniform" (l1 scores,
            the same fraction removed from every group).
        scope: "global" (default) or "local"; "uniform" implies "local".
    """
    graph = graph or ChannelGraph(model)
    if criterion == "uniform":
        if scope == "global":
            raise ValueError("criterion 'uniform' removes the same fraction everywhere: scope must be 'local'")
        criterion, scope = "l1", "local"
    scores = get_criterion(criterion)(graph, np.random.default_rng(seed))
    plan = plan_channels(graph, scores, ratio=ratio, target_macs=target_macs, target_params=target_params,
                         cost_fn=cost_fn, target_cost=target_cost, scope=scope or "global",
                         min_channels=min_channels, channel_multiple=channel_multiple)
    return surgery.shrink(model, plan.masks, graph=graph), plan
