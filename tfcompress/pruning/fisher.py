"""Fisher pruning during training (Theis et al. 2018, as in the NetAdapt thesis), optionally per unit of latency.

    result = tfcompress.pruning.fisher.fisher_prune(model, train_batches, target_latency=0.5, table=table)
    result.model, result.plan, result.history

The model trains with a ``ChannelMask`` (``track_fisher=True``) in front of every layer that consumes
channels; each training step adds every channel's saliency Δ_k = ½ · mean_n (Σ_ij a_nkij · ∂L_n/∂a_nkij)² to the
mask in its backward pass. Every ``prune_every`` steps (default 100, the thesis's) :class:`FisherPruning` masks
the channel with the smallest accumulated saliency, resets the sums, and training goes on, until a target
(channels, MACs or predicted latency, each the fraction of the original kept). ``fisher_prune`` then removes the
masked channels physically.

A channel group spans every tensor its channels flow through (a residual stream feeds many layers): its score
is the mean over those tensors of their accumulated saliency divided by the steps, as the thesis's NetAdapt-WRN
code does (``fisher / (steps × coupled layers)``). The one-pass importance ``"fisher"`` of
:func:`tfcompress.pruning.prune_channels` instead squares the gradient of one mask shared by the whole group.

**Latency-aware** (the thesis's "improved Fisher", ``table=``): the pick minimises saliency / latency saved,
from a latency table of the device. Tables are staircases (SIMD kernels work on blocks of channels: removing
one channel often saves nothing, sometimes costs a little), so each group's candidate is its *fewest* lowest-
scored channels whose removal saves time, scored by their summed saliency over the time saved. The thesis
removed one channel and divided by whatever the table said, which picked channels whose removal made the
model slower first (its code comments on this "glitch").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress import progress as progress_bars
from tfcompress import training
from tfcompress.graph import ChannelGraph, ChannelMask
from tfcompress.pruning.channels import PruningPlan, latency_fraction, plan_for_model, plan_from_masks
from tfcompress.pruning.shrink import fold_channel_masks, insert_channel_masks, set_channel_masks, shrink
from tfcompress.summaries import Summaries

CostFn = Callable[[Mapping[int, int]], float]
TARGETS = ("target_channels", "target_macs", "target_latency")


def fisher_scores(graph: ChannelGraph, steps: int = 1) -> dict[int, np.ndarray]:
    """Per prunable group, each channel's accumulated Fisher saliency: the mean over the group's tensors of
    ``ChannelMask.fisher`` divided by ``steps``.

    Raises:
        ValueError: the model has no ChannelMask tracking Fisher saliencies.
    """
    sums = {g.id: np.zeros(g.size) for g in graph.prunable_groups}
    tensors = {g: np.zeros(size.size) for g, size in sums.items()}
    for layer, tensor in _fisher_masks(graph):
        groups, indices = graph.layout(tensor).channel_index()
        fisher = np.asarray(layer.fisher.numpy(), np.float64)
        # one entry per channel: the first of the flattened positions, every ``repeat``-th copy
        take = slice(0, fisher.size * layer.repeat, layer.repeat)
        groups, indices = groups[take], indices[take]
        for group in np.unique(groups):
            if int(group) in sums:
                on = groups == group
                np.add.at(sums[int(group)], indices[on], fisher[on])
                np.add.at(tensors[int(group)], indices[on], 1)
    return {g: total / np.maximum(tensors[g], 1) / max(steps, 1) for g, total in sums.items()}


def keep_counts(full: Mapping[int, int], masks: Mapping[int, np.ndarray]) -> dict[int, int]:
    """Channels each group keeps: its keep-mask's count, or its ``full`` size when it has no mask."""
    return {g: int(masks[g].sum()) if g in masks else size for g, size in full.items()}


def reset_fisher(graph: ChannelGraph) -> None:
    """Zeroes every ChannelMask's accumulated saliency."""
    for layer, _ in _fisher_masks(graph):
        layer.fisher.assign(np.zeros(layer.fisher.shape, "float32"))


def _fisher_masks(graph: ChannelGraph) -> list[tuple[ChannelMask, Any]]:
    found = [(call.layer, call.inputs[0]) for call in graph.walk.calls
             if isinstance(call.layer, ChannelMask) and call.layer.track_fisher and call.index == 0]
    if not found:
        raise ValueError(f"model {graph.model.name!r} has no ChannelMask tracking Fisher saliencies: train "
                         "tfcompress.pruning.insert_channel_masks(model, track_fisher=True)")
    return found


class FisherPruning(keras.callbacks.Callback):
    """Masks the least salient channel every ``prune_every`` training steps until a target is met.

    Train a model from ``insert_channel_masks(model, track_fisher=True)`` with this callback; afterwards
    :meth:`plan` says what was removed and ``tfcompress.pruning.shrink(model)`` removes it physically.

    Args:
        prune_every: training steps between two prunes (the thesis's 100).
        channels_per_prune: channels masked at each prune (1 in the thesis; more reach a target sooner).
        target_channels, target_macs: stop when at most this fraction of the original prunable channels or
            MACs is left.
        target_latency: stop at this fraction of the unpruned predicted latency (0.5) or milliseconds ("2ms"),
            predicted by ``table``.
        table: a latency table (``tfcompress.latency.Table``) of the device; with it, channels are picked by
            saliency per microsecond saved (``latency_aware``, on by default when a table is given).
        precision: the precision the table predicts for ("float32" or "int8").
        min_channels: every group keeps at least this many channels.
        stop_at_target: end training (``model.stop_training``) once the target is met.
        verbose: 1 prints a line per prune.
        log_dir: write the per-epoch summaries here; by default they go to the run of a
            ``keras.callbacks.TensorBoard`` in the same ``fit``, or to a ``tf.summary`` default writer
            (:mod:`tfcompress.summaries`): ``fisher/channels/<group>`` (channels kept per group),
            ``fisher/channels_left``, ``fisher/macs_left``, ``fisher/prunes`` and, with a table,
            ``fisher/predicted_latency_ms``.

    Attributes:
        history: one dict per prune (step, group, channels removed, score, channels/MACs/latency left).
        reached: whether the target is met.
        exhausted: no group could lose a channel (or save time) before the target was met.
    """

    def __init__(
        self,
        *,
        prune_every: int = 100,
        channels_per_prune: int = 1,
        target_channels: float | None = None,
        target_macs: float | None = None,
        target_latency: float | str | None = None,
        table: Any = None,
        precision: str = "float32",
        latency_aware: bool | None = None,
        min_channels: int = 1,
        stop_at_target: bool = True,
        verbose: int = 0,
        log_dir: str | None = None,
    ) -> None:
        super().__init__()
        given = {k: v for k, v in zip(TARGETS, (target_channels, target_macs, target_latency), strict=True)
                 if v is not None}
        if len(given) != 1:
            raise ValueError(f"give exactly one target of {', '.join(TARGETS)}; got {sorted(given) or 'none'}")
        if prune_every < 1 or channels_per_prune < 1 or min_channels < 1:
            raise ValueError(f"prune_every, channels_per_prune and min_channels must be ≥ 1, got {prune_every}, "
                             f"{channels_per_prune}, {min_channels}")
        self.latency_aware = table is not None if latency_aware is None else latency_aware
        if (target_latency is not None or self.latency_aware) and table is None:
            raise ValueError("target_latency and latency_aware need table=: a latency table of the device")
        (self.target_name, self.target), = given.items()
        if self.target_name != "target_latency" and not 0.0 < float(self.target) <= 1.0:
            raise ValueError(f"{self.target_name} (the fraction of the original kept) must be in (0, 1], "
                             f"got {self.target}")
        self.prune_every, self.channels_per_prune, self.min_channels = prune_every, channels_per_prune, min_channels
        self.table, self.precision = table, precision
        self.stop_at_target, self.verbose = stop_at_target, verbose
        self.history: list[dict[str, Any]] = []
        self.reached = self.exhausted = False
        self.graph: ChannelGraph | None = None
        self.summaries = Summaries(log_dir)

    # ------------------------------------------------------------------------------------------- state

    def attach(self, model: keras.Model, graph: ChannelGraph | None = None) -> None:
        """Reads ``model``'s channel groups (``on_train_begin`` does it for the model being trained)."""
        self.graph = graph or ChannelGraph(model)
        self._full = {g.id: g.size for g in self.graph.prunable_groups}
        self.cost_fn: CostFn | None = (self.table.cost_fn(model, self.precision, self.graph)
                                       if self.table is not None else None)
        if self.target_name == "target_latency":
            self.target = latency_fraction(self.target, self.cost_fn(self._full))
        self.steps = 0

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.graph is None or self.graph.model is not training.student_of(self.model):
            self.attach(training.student_of(self.model))
        reset_fisher(self.graph)
        self.masks = {g: np.asarray(m) for g, m in fold_channel_masks(self.graph, {}).items()}
        self.reached = self.fraction_left() <= self.target
        self.exhausted = False
        self.summaries.begin(self)
        if self.reached and self.stop_at_target:
            self.model.stop_training = True

    def counts(self) -> dict[int, int]:
        return keep_counts(self._full, self.masks)

    def fraction_left(self, counts: Mapping[int, int] | None = None) -> float:
        """What is left of the original, in the target's measure."""
        counts = self.counts() if counts is None else counts
        if self.target_name == "target_channels":
            return sum(counts.values()) / sum(self._full.values())
        if self.target_name == "target_macs":
            return self.graph.cost(dict(counts), "macs") / self.graph.cost(metric="macs")
        return self.cost_fn(counts) / self.cost_fn(self._full)

    def way_done(self) -> float:
        """How far pruning has come towards the target, from 0 (nothing pruned) to 1 (target met)."""
        return 1.0 if self.reached else min(1.0, (1.0 - self.fraction_left()) / max(1e-12, 1.0 - self.target))

    def plan(self) -> PruningPlan:
        """The channels removed so far, as a plan of the masked model's groups."""
        return plan_from_masks(self.graph, self.masks)

    # ------------------------------------------------------------------------------------------- pruning

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1
        if self.steps % self.prune_every or self.reached or self.exhausted:
            return
        scores = fisher_scores(self.graph, self.prune_every)
        if not np.isfinite(np.concatenate(list(scores.values()) or [np.zeros(0)])).all():
            raise ValueError(f"Fisher saliencies are not finite at step {self.steps}: training diverged (lower the "
                             "learning rate)")
        choice = self._choose(scores)
        reset_fisher(self.graph)
        if not choice:
            self.exhausted = True  # the target is not met: fisher_prune says so
            self.model.stop_training = True
            if self.verbose:
                print(f"FisherPruning: nothing left to prune at step {self.steps} (min_channels={self.min_channels})")
            return
        for group, channels in choice.items():
            mask = self.masks.get(group, np.ones(self._full[group], bool)).copy()
            mask[channels] = False
            self.masks[group] = mask
        set_channel_masks(training.student_of(self.model), self.masks, graph=self.graph)
        left = self.fraction_left()
        self.reached = left <= self.target
        counts = self.counts()
        record = {"step": self.steps, "removed": {self.graph.groups[g].name: len(c) for g, c in choice.items()},
                  "score": float(sum(scores[g][c].sum() for g, c in choice.items())), "left": left,
                  "channels_left": sum(counts.values()) / sum(self._full.values())}
        if self.cost_fn is not None:
            record["predicted_us"] = float(self.cost_fn(counts))
        self.history.append(record)
        if self.verbose:
            removed = ", ".join(f"{name} −{n}" for name, n in record["removed"].items())
            print(f"FisherPruning step {self.steps}: {removed}; "
                  f"{self.target_name.removeprefix('target_')} left {left:.3f}")
        if self.reached and self.stop_at_target:
            self.model.stop_training = True

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.graph is None:
            return
        counts = self.counts()
        state = {"channels_left": sum(counts.values()) / sum(self._full.values()),
                 "macs_left": self.graph.cost(counts, "macs") / self.graph.cost(metric="macs")}
        if self.cost_fn is not None:
            state["predicted_latency_ms"] = self.cost_fn(counts) / 1000
        if logs is not None:  # callbacks after this one (TensorBoard) log them
            logs.update(state)
        if self.summaries.active:
            self.summaries.write(epoch, {**{f"fisher/{key}": value for key, value in state.items()},
                                         "fisher/prunes": len(self.history),
                                         **{f"fisher/channels/{self.graph.groups[g].name}": n
                                            for g, n in counts.items()}})

    def on_train_end(self, logs: dict | None = None) -> None:
        self.summaries.end()

    def _choose(self, scores: Mapping[int, np.ndarray]) -> dict[int, list[int]]:
        """Channels to mask now, per group; empty when no group can lose a channel."""
        counts = self.counts()
        kept = {g: np.flatnonzero(self.masks.get(g, np.ones(size, bool))) for g, size in self._full.items()}
        if not self.latency_aware:  # the least salient channels overall, each group keeping min_channels
            pool = sorted((float(scores[g][c]), g, int(c)) for g, channels in kept.items() for c in channels)
            spare = {g: counts[g] - self.min_channels for g in counts}
            choice: dict[int, list[int]] = {}
            for _, g, c in pool:
                if spare[g] > 0 and sum(map(len, choice.values())) < self.channels_per_prune:
                    choice.setdefault(g, []).append(c)
                    spare[g] -= 1
            return choice
        now = self.cost_fn(counts)
        best: tuple[float, int, list[int]] | None = None
        for g, channels in kept.items():
            ranked = channels[np.argsort(scores[g][channels], kind="stable")]
            # the fewest least-salient channels whose removal saves time (tables are staircases): at least
            # channels_per_prune, or all a small group can spare (else it could never be pruned at all)
            spare = channels.size - self.min_channels
            for removed in range(max(1, min(self.channels_per_prune, spare)), spare + 1):
                saved = now - self.cost_fn({**counts, g: channels.size - removed})
                if saved > 0:
                    score = float(scores[g][ranked[:removed]].sum()) / saved
                    if best is None or score < best[0]:
                        best = (score, g, sorted(int(c) for c in ranked[:removed]))
                    break
        return {} if best is None else {best[1]: best[2]}


@dataclasses.dataclass
class FisherResult:
    """What :func:`fisher_prune` returns: the physically pruned ``model``, its ``plan`` (in the groups of the
    input model) and the prune ``history``."""

    model: keras.Model
    plan: PruningPlan
    history: list[dict[str, Any]]

    def report(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "history": self.history}


def fisher_prune(
    model: keras.Model,
    data: tf.data.Dataset,
    *,
    target_channels: float | None = None,
    target_macs: float | None = None,
    target_latency: float | str | None = None,
    table: Any = None,
    precision: str = "float32",
    latency_aware: bool | None = None,
    prune_every: int = 100,
    channels_per_prune: int = 1,
    min_channels: int = 1,
    optimizer: keras.optimizers.Optimizer | None = None,
    max_steps: int | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    verbose: int = 0,
    progress: bool = True,
) -> FisherResult:
    """Trains ``model`` on ``data`` (labelled batches, logits output) while pruning it by Fisher saliency to one
    target, and returns the physically pruned model. The input model is not changed.

    The default optimizer is the thesis's fine-tuning one: SGD, lr 8e-4, momentum 0.9, weight decay 5e-4.
    ``max_steps`` bounds the training (default: enough steps for every prunable channel); the result says in
    ``history`` how far it got. ``progress``: a bar of the way to the target (% and ETA) where bars are shown
    (:mod:`tfcompress.progress`); False: never.

    Raises:
        ValueError: a bad target (see :class:`FisherPruning`), or ``max_steps`` reached before the target.
    """
    pruner = FisherPruning(prune_every=prune_every, channels_per_prune=channels_per_prune,
                           target_channels=target_channels, target_macs=target_macs, target_latency=target_latency,
                           table=table, precision=precision, latency_aware=latency_aware,
                           min_channels=min_channels, verbose=verbose)
    masked = insert_channel_masks(model, track_fisher=True)
    graph = ChannelGraph(masked)
    if max_steps is None:
        max_steps = prune_every * (sum(g.size for g in graph.prunable_groups) // channels_per_prune + 1)
    training.compile_classifier(masked, optimizer or training.finetune_sgd())
    pruner.attach(masked, graph)
    with progress_bars.bar(100, "Fisher pruning", unit="%", enable=progress) as bar:
        masked.fit(data.repeat(), steps_per_epoch=prune_every, epochs=-(-max_steps // prune_every),
                   callbacks=[pruner, _WayDone(pruner, bar), *(callbacks or [])], verbose=0, shuffle=False)
    if pruner.exhausted:
        raise ValueError(f"fisher_prune cannot reach {pruner.target_name}={pruner.target}: every group is at "
                         f"min_channels={min_channels} or no removal saves time ({pruner.fraction_left():.3f} left)")
    if not pruner.reached:
        raise ValueError(f"fisher_prune stopped after {pruner.steps} steps (max_steps={max_steps}) with "
                         f"{pruner.fraction_left():.3f} left, target {pruner.target_name}={pruner.target}: "
                         "raise max_steps or channels_per_prune")
    return FisherResult(shrink(masked, graph=graph), plan_for_model(pruner.plan(), model), pruner.history)


class _WayDone(keras.callbacks.Callback):
    """Moves a progress bar to :meth:`FisherPruning.way_done` after every epoch (one prune, in ``fisher_prune``)."""

    def __init__(self, pruner: FisherPruning, bar: progress_bars.Bar) -> None:
        super().__init__()
        self.pruner, self.bar = pruner, bar

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.bar.shown:
            return
        percent = round(100 * self.pruner.way_done(), 1)
        self.bar.update(percent - self.bar.n)
        self.bar.note(f"{self.pruner.target_name.removeprefix('target_')} left {self.pruner.fraction_left():.3f}")
