"""Choosing how many channels each group keeps, to a target, and pruning a model physically.

    result = tfcompress.pruning.prune_channels(model, "l1", target_macs=0.5)
    result.model, result.plan

Every target is the **fraction of the original that is kept**: ``target_channels`` (of the prunable channels),
``target_macs``, ``target_params``, or ``target_cost`` of any ``cost_fn(keep_counts)`` the caller supplies
(NetAdapt passes a latency table). ``scope="global"`` ranks all channels together, with scores divided by their
group's mean so that groups of different fan-in compare; ``scope="local"`` removes the same fraction from every
group, ranking inside each group; importance ``"uniform"`` is ``l1`` with local scope. Data-driven importances
(``snip``, ``taylor``, ``fisher``) take ``data=`` (labelled batches).
Every group keeps at least ``min_channels``; ``channel_multiple=8`` rounds every kept count up to a multiple of 8
(SIMD kernels such as XNNPACK's process channels in blocks, so 14 channels cost what 16 cost — see
benchmarks/channel_pruning.md). Fine-tuning afterwards is the user's ``model.fit``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress import files
from tfcompress.graph import ChannelGraph
from tfcompress.pruning.importance import IMPORTANCES, Importance, get_importance
from tfcompress.pruning.shrink import channel_mask_params, fold_channel_masks, shrink

CostFn = Callable[[Mapping[int, int]], float]
PLAN_FORMAT = "tfcompress.channel_plan/1"


@dataclasses.dataclass
class PruningPlan:
    """Which channels each group keeps, and what that costs.

    Attributes:
        masks: per-group boolean keep-masks (only groups that lose channels).
        channels_before, channels_after: per-group channel counts, every group of the graph.
        macs_before, macs_after, params_before, params_after: whole-model counts.
        group_names: readable group names (their producers).
        group_layers: the layers producing each group's channels (how a saved plan finds its groups again).
    """

    masks: dict[int, np.ndarray]
    channels_before: dict[int, int]
    channels_after: dict[int, int]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    group_names: dict[int, str]
    group_layers: dict[int, list[str]] = dataclasses.field(default_factory=dict)

    def keep_indices(self) -> dict[int, list[int]]:
        return {g: np.flatnonzero(mask).tolist() for g, mask in self.masks.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, keyed by layer names (group ids are internal): re-apply it with :meth:`from_dict`."""
        return {
            "format": PLAN_FORMAT,
            "groups": [
                {"layers": self.group_layers.get(g, []), "name": self.group_names[g],
                 "channels_before": self.channels_before[g], "channels_after": self.channels_after[g],
                 **({"keep": np.flatnonzero(self.masks[g]).tolist()} if g in self.masks else {})}
                for g in self.channels_before
            ],
            "macs_before": self.macs_before, "macs_after": self.macs_after,
            "params_before": self.params_before, "params_after": self.params_after,
        }

    def save(self, path: str | Any) -> None:
        """Writes the plan as JSON (atomically)."""
        files.write_json(path, self.to_dict())

    @staticmethod
    def load(path: str | Any) -> dict[str, Any]:
        """Reads a plan written by :meth:`save` (apply it with :func:`apply_plan`)."""
        plan = json.loads(Path(path).read_text())
        if not isinstance(plan, dict) or plan.get("format") != PLAN_FORMAT:
            raise ValueError(f"{path} is not a tfcompress channel plan (format {PLAN_FORMAT!r})")
        return plan

    def apply(self, model: keras.Model, graph: ChannelGraph | None = None) -> keras.Model:
        """Prunes ``model`` (this architecture, e.g. freshly initialized) to the same channels."""
        return apply_plan(model, self.to_dict(), graph=graph)

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
    target_channels: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    cost_fn: CostFn | None = None,
    target_cost: float | None = None,
    target_latency: float | str | None = None,
    scope: str = "global",
    min_channels: int = 1,
    channel_multiple: int = 1,
    already_removed: Mapping[int, np.ndarray] | None = None,
) -> PruningPlan:
    """Turns channel scores into keep-masks that meet exactly one target.

    ``target_latency`` aims at a predicted latency: ``cost_fn`` must return microseconds (a latency table's
    ``Table.cost_fn(model)``); the target is a fraction of the unpruned prediction (0.6) or milliseconds
    (``"1.5ms"``).

    ``already_removed`` gives per-group keep-masks of channels that are gone whatever the plan says (the model's
    ``ChannelMask`` layers, :func:`tfcompress.pruning.shrink.fold_channel_masks`): they are removed first, and the
    plan's counts and costs include them.

    Raises:
        ValueError: no target or several, a target out of range, or one that cannot be met without emptying
            a group (the message gives the smallest reachable value).
    """
    if target_latency is not None:
        if cost_fn is None:
            raise ValueError("target_latency needs cost_fn=table.cost_fn(model): the latency a table predicts, in µs")
        target_latency = latency_fraction(target_latency, cost_fn({g.id: g.size for g in graph.prunable_groups}))
    targets = {"target_channels": target_channels, "target_macs": target_macs, "target_params": target_params,
               "target_cost": target_cost, "target_latency": target_latency}
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
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} (the fraction of the original kept) must be in (0, 1], got {value}")

    groups = graph.prunable_groups
    already_removed = graph.check_masks(already_removed or {})
    scores = {g: np.where(already_removed[g], s, -np.inf) if g in already_removed else s for g, s in scores.items()}
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
    if name == "target_channels":
        channels = sum(g.size for g in groups)
        removed = round((1.0 - value) * channels)
        if scope == "global" and removed > total:
            raise ValueError(f"target_channels={value} would empty a group: at most {total} channels can go "
                             f"(target_channels ≥ {1 - total / channels:.3f}) with min_channels={min_channels}")
    else:
        cost = cost_fn if name in ("target_cost", "target_latency") else (
            lambda counts: graph.cost(counts, "macs" if name == "target_macs" else "params"))
        budget = value * cost({g.id: g.size for g in groups})
        most = total if scope == "global" else sum(g.size for g in groups)
        if cost(keep_counts(0)) <= budget:  # met as it is (a table is not monotonic in every count: check first)
            most = 0
        elif cost(keep_counts(most)) > budget:
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
    for g, keep in already_removed.items():  # gone anyway, even where the target did not need them
        masks[g] = masks.get(g, np.ones(graph.groups[g].size, bool)) & keep
    return plan_from_masks(graph, masks)


def plan_from_masks(graph: ChannelGraph, masks: Mapping[int, np.ndarray]) -> PruningPlan:
    """The plan that keeps what per-group keep-``masks`` keep (groups not listed keep all), with its costs."""
    masks = graph.check_masks(dict(masks))
    all_after = {g: int(masks[g].sum()) if g in masks else graph.groups[g].size for g in graph.groups}
    return PruningPlan(
        masks={g: mask for g, mask in masks.items() if not mask.all()},
        channels_before={g: group.size for g, group in graph.groups.items()},
        channels_after=all_after,
        macs_before=graph.cost(metric="macs"), macs_after=graph.cost(all_after, "macs"),
        # shrink removes the ChannelMask layers: their vectors are not in the pruned model
        params_before=graph.cost(metric="params"),
        params_after=graph.cost(all_after, "params") - channel_mask_params(graph, all_after),
        group_names={g: group.name for g, group in graph.groups.items()},
        group_layers={g: list(group.producers) for g, group in graph.groups.items()},
    )


def plan_for_model(plan: PruningPlan, model: keras.Model, graph: ChannelGraph | None = None) -> PruningPlan:
    """``plan`` (of a model with channel masks, or any copy of the architecture) in the groups of ``model``,
    matched by the layers producing each group, with ``model``'s costs.

    Raises:
        ValueError: a group's producer is not in ``model``, or its channel count differs.
    """
    graph = graph or ChannelGraph(model)
    masks = {}
    for g, mask in plan.masks.items():
        layers = plan.group_layers.get(g) or []
        if not layers:
            raise ValueError(f"plan group {plan.group_names[g]!r} names no layer; it cannot be matched")
        group = graph.group_of_layer(layers[0])
        if group.size != mask.size:
            raise ValueError(f"plan group {plan.group_names[g]!r} has {mask.size} channels, {layers[0]!r} of "
                             f"{model.name!r} produces {group.size}: not the same architecture")
        masks[group.id] = mask
    return plan_from_masks(graph, masks)


def latency_fraction(target: float | str, unpruned_us: float) -> float:
    """A latency target as the fraction of ``unpruned_us`` kept: a fraction as it is, ``"1.5ms"`` converted.

    Raises:
        ValueError: neither a number nor milliseconds, or a non-positive one.
    """
    text = str(target).strip().lower()
    try:
        value = float(text.removesuffix("ms"))
    except ValueError:
        raise ValueError(f"target_latency must be a fraction of the unpruned latency (0.6) or milliseconds "
                         f"('1.5ms'), got {target!r}") from None
    if value <= 0:
        raise ValueError(f"target_latency must be positive, got {target!r}")
    if text.endswith("ms"):
        return min(1.0, value * 1000 / unpruned_us)
    return value


def _removal_order(groups, scores: Mapping[int, np.ndarray], scope: str, min_channels: int) -> list[tuple[int, int]]:
    """(group, channel) pairs, least important first, never taking a group's last ``min_channels``."""
    entries = []
    for group in groups:
        group_scores = np.asarray(scores[group.id], dtype=np.float64)
        if group_scores.shape != (group.size,):
            raise ValueError(f"scores of group {group.id} have shape {group_scores.shape}, expected ({group.size},)")
        finite = group_scores[np.isfinite(group_scores)]  # −inf: a channel already removed
        mean = finite.mean() if finite.size else 0.0
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


@dataclasses.dataclass
class PruningResult:
    """What :func:`prune_channels` returns: the pruned ``model`` and the ``plan`` it follows."""

    model: keras.Model
    plan: PruningPlan

    def report(self) -> dict[str, Any]:
        return self.plan.to_dict()


def prune_channels(
    model: keras.Model,
    importance: str | Importance = "l1",
    *,
    target_channels: float | None = None,
    target_macs: float | None = None,
    target_params: float | None = None,
    cost_fn: CostFn | None = None,
    target_cost: float | None = None,
    target_latency: float | str | None = None,
    scope: str | None = None,
    min_channels: int = 1,
    channel_multiple: int = 1,
    data: Any = None,
    num_batches: int | None = 1,
    seed: int = 0,
    graph: ChannelGraph | None = None,
) -> PruningResult:
    """Scores channels with ``importance``, plans to the target and returns the physically smaller model.

    Weight masks, ternary layers and channel masks in ``model`` are kept and sliced with their kernels (a sparse
    model keeps its zeros, a ternary model stays ternary); training can go on with them afterwards.

    Args:
        importance: "l1", "l2", "bn", "random", "snip", "taylor", "fisher" (see
            :mod:`tfcompress.pruning.importance`), an :class:`Importance`, or "uniform" (l1 scores, the same
            fraction removed from every group).
        target_channels, target_macs, target_params, target_cost: the fraction of the original kept (one).
        target_latency: with ``cost_fn=table.cost_fn(model)`` (a latency table): the fraction of the unpruned
            predicted latency kept, or milliseconds as ``"1.5ms"``.
        scope: "global" (default) or "local"; "uniform" implies "local".
        data: labelled batches for data-driven importances (an (x, y) pair, a list, or a tf.data pipeline).

    Raises:
        ValueError: a bad target, an unknown importance, a data-driven importance without ``data``.
    """
    graph = graph or ChannelGraph(model)
    if importance == "uniform":
        if scope == "global":
            raise ValueError("importance 'uniform' removes the same fraction everywhere: scope must be 'local'")
        importance, scope = "l1", "local"
    elif isinstance(importance, str) and importance not in IMPORTANCES:
        raise ValueError(f"unknown importance {importance!r}; known: {', '.join(sorted([*IMPORTANCES, 'uniform']))}")
    scorer = get_importance(importance, **({"seed": seed} if importance == "random" else {}))
    if scorer.requires_data:
        if data is None:
            raise ValueError(f"importance {scorer.name!r} needs data=: labelled batches (x, y) of the task")
        scorer.fit(graph, data, num_batches)
    plan = plan_channels(graph, scorer.scores(graph), target_channels=target_channels, target_macs=target_macs,
                         target_params=target_params, cost_fn=cost_fn, target_cost=target_cost,
                         target_latency=target_latency,
                         scope=scope or "global", min_channels=min_channels, channel_multiple=channel_multiple,
                         already_removed=fold_channel_masks(graph, {}))
    return PruningResult(shrink(model, plan.masks, graph=graph), plan)


def apply_plan(model: keras.Model, plan: Mapping[str, Any], *, graph: ChannelGraph | None = None) -> keras.Model:
    """Prunes ``model`` to a saved plan (:meth:`PruningPlan.to_dict` or a JSON file's content), matching groups
    by the layers that produce them: the way to retrain a pruned architecture from scratch.

    Raises:
        ValueError: a plan layer not in the model, or a group whose channel count differs from the plan's.
    """
    graph = graph or ChannelGraph(model)
    masks = {}
    for entry in plan.get("groups", []):
        if "keep" not in entry:
            continue
        if not entry.get("layers"):
            raise ValueError(f"plan group {entry.get('name')!r} names no layer; it cannot be matched")
        group = graph.group_of_layer(entry["layers"][0])
        if group.size != entry["channels_before"]:
            raise ValueError(f"plan group {entry['name']!r} had {entry['channels_before']} channels, but layer "
                             f"{entry['layers'][0]!r} of {model.name!r} produces {group.size}: "
                             "not the same architecture")
        mask = np.zeros(group.size, bool)
        mask[np.asarray(entry["keep"], dtype=np.int64)] = True
        masks[group.id] = mask
    return shrink(model, masks, graph=graph)
