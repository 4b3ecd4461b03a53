"""NetAdapt (Yang et al. 2018, as in the NetAdapt thesis): prune one group per iteration, chosen by measured
accuracy per microsecond a latency table says it saves.

    result = tfcompress.pruning.netadapt.netadapt(model, train, holdout, table=table, target_latency=0.5)
    result.model, result.plan, result.history

Each iteration sets a saving target (``(1 − kept) · latency / init_red_fact`` at first, × ``decay_rate`` per
iteration). For every prunable channel group it removes the fewest channels whose removal saves at least that
target according to the table (a linear scan: tables are staircases, not monotonic), keeping the group's best
channels by ``importance`` (l2 filter norms, or Fisher saliencies accumulated while fine-tuning); each candidate
is fine-tuned for ``short_term_steps`` batches and scored on a holdout split; the candidate with the smallest
Δerror / latency saved wins (``selection="thesis"``: the thesis's rule, which prefers the smallest Δerror once a
candidate improved the error). Until the predicted latency reaches the target. When no group can save the
iteration's target any more, the target is halved until one can (the reference skipped such groups and could
remove a whole residual block; tfcompress never empties a group).

Candidates share one model with a ``ChannelMask`` in front of every consumer: a candidate is the current
weights with other masks, so nothing is rebuilt or retraced per candidate (a masked model computes what the
pruned one does). With ``state_dir`` the model and the history are saved after every iteration, and a new call
with the same ``state_dir`` continues where a killed run stopped.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress import files, training
from tfcompress import progress as progress_bars
from tfcompress.graph import ChannelGraph
from tfcompress.pruning.channels import PruningPlan, latency_fraction, plan_for_model, plan_from_masks
from tfcompress.pruning.fisher import fisher_scores, keep_counts, reset_fisher
from tfcompress.pruning.importance import get_importance
from tfcompress.pruning.shrink import fold_channel_masks, insert_channel_masks, set_channel_masks, shrink
from tfcompress.summaries import Summaries

IMPORTANCES = ("l2", "l1", "fisher")
SELECTIONS = ("ratio", "thesis")
STATE_FORMAT = "tfcompress.netadapt/1"


@dataclasses.dataclass
class NetAdaptResult:
    """The physically pruned ``model``, the ``plan`` it follows (groups of the input model) and one ``history``
    row per iteration."""

    model: keras.Model
    plan: PruningPlan
    history: list[dict[str, Any]]
    target_us: float
    initial_us: float

    def report(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "history": self.history, "target_us": self.target_us,
                "initial_us": self.initial_us}


def netadapt(
    model: keras.Model,
    train_data: tf.data.Dataset,
    holdout_data: tf.data.Dataset,
    *,
    table: Any,
    target_latency: float | str,
    precision: str = "float32",
    importance: str = "l2",
    short_term_steps: int = 100,
    init_red_fact: float = 20.0,
    decay_rate: float = 0.98,
    selection: str = "ratio",
    min_channels: int = 1,
    max_iterations: int = 1000,
    optimizer: Callable[[], keras.optimizers.Optimizer] | None = None,
    state_dir: str | Path | None = None,
    measure: Callable[[keras.Model], float] | None = None,
    log_dir: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> NetAdaptResult:
    """Prunes ``model`` (logits output) to a predicted latency with NetAdapt; ``model`` itself is not changed.

    Args:
        train_data: labelled training batches for the short-term fine-tunes (repeated as needed).
        holdout_data: labelled batches the candidates are compared on (``data.load(split="holdout")``).
        table: the device's latency table (``tfcompress.latency.Table``, or anything with
            ``cost_fn(model, precision, graph)``).
        target_latency: the fraction of the model's predicted latency to reach (0.5), or milliseconds ("2ms").
        importance: which channels of a group stay: "l2" (filter norms, the default), "l1", or "fisher"
            (saliencies accumulated during the last short-term fine-tune).
        short_term_steps: fine-tune batches per candidate (the thesis's 100).
        init_red_fact, decay_rate: the first saving target is (1 − kept fraction) · latency / init_red_fact;
            it is multiplied by decay_rate after every iteration.
        selection: "ratio" (smallest Δerror / saved µs, the clean NetAdapt repo's and MobileNetV3's rule) or
            "thesis" (the thesis's: smallest Δerror once a candidate lowered the error).
        optimizer: a factory for the fine-tune optimizer (default: SGD lr 8e-4, momentum 0.9, weight decay 5e-4,
            as the thesis); its state is reset for every candidate.
        state_dir: where the state is saved after every iteration (model-NNNN.keras, state.json); a run with
            the same folder resumes.
        measure: ``measure(pruned_model) → µs`` on the device, called on the current model after every
            iteration (slow: export + benchmark) and recorded next to the prediction.
        log_dir: a TensorBoard folder for per-iteration scalars (``netadapt/predicted_latency_ms``,
            ``netadapt/holdout_error``, ``netadapt/measured_latency_ms``, ``netadapt/channels/<group>``); without
            it they go to a ``tf.summary`` default writer when the caller set one.
        progress: called with a line per candidate and per iteration (e.g. ``print``). Independently, progress
            bars (µs saved towards the target; each iteration's candidates) are drawn where
            :mod:`tfcompress.progress` draws bars.

    Raises:
        ValueError: bad arguments, or a target the table says cannot be reached.
    """
    if importance not in IMPORTANCES:
        raise ValueError(f"importance must be one of {IMPORTANCES} for NetAdapt, got {importance!r}")
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if short_term_steps < 1 or init_red_fact <= 0 or not 0 < decay_rate <= 1 or min_channels < 1:
        raise ValueError(f"need short_term_steps ≥ 1, init_red_fact > 0, decay_rate in (0, 1], min_channels ≥ 1; "
                         f"got {short_term_steps}, {init_red_fact}, {decay_rate}, {min_channels}")
    say = progress_bars.around_bars(progress)  # lines between the bars, not through them
    state_path = Path(state_dir) / "state.json" if state_dir is not None else None
    resumed = state_path is not None and state_path.is_file()
    if resumed:
        state = json.loads(state_path.read_text())
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"{state_path} is not a NetAdapt state ({STATE_FORMAT}); give another state_dir")
        masked = keras.models.load_model(Path(state_dir) / state["model"], compile=False)
        say(f"resuming NetAdapt at iteration {state['iteration']} from {state_dir}")
    else:
        masked = insert_channel_masks(model, track_fisher=importance == "fisher")
        state = None
    graph = ChannelGraph(masked)
    full = {g.id: g.size for g in graph.prunable_groups}
    cost = table.cost_fn(masked, precision, graph)
    initial_us = float(cost(full))
    target_us = latency_fraction(target_latency, initial_us) * initial_us
    settings = {"model": model.name, "groups": sorted((graph.groups[g].name, n) for g, n in full.items()),
                "target_us": target_us, "precision": precision, "importance": importance,
                "short_term_steps": short_term_steps, "decay_rate": decay_rate, "selection": selection}
    if resumed:
        differences = [k for k, v in settings.items() if json.loads(json.dumps(v)) != state["settings"].get(k)]
        if differences:
            raise ValueError(f"{state_dir} holds a NetAdapt run with other {', '.join(differences)}: resume it with "
                             "the same model and settings, or give another state_dir")
    training.compile_classifier(masked, (optimizer or training.finetune_sgd)())
    masked.optimizer.build(masked.trainable_variables)
    fresh = [v.numpy() for v in masked.optimizer.variables]  # learning rate, iterations, zero momenta
    batches = _forever(train_data)
    scorer = None if importance == "fisher" else get_importance(importance)
    summaries = Summaries(log_dir)  # tf.summary records: the tensorboard package is needed only to view them

    def fine_tune() -> float:
        for variable, value in zip(masked.optimizer.variables, fresh, strict=True):  # a fresh optimizer per
            variable.assign(value)                                                 # fine-tune, as the thesis
        if importance == "fisher":
            reset_fisher(graph)
        for _ in range(short_term_steps):
            x, y = next(batches)
            loss = masked.train_on_batch(x, y, return_dict=True)["loss"]
            if not np.isfinite(loss):
                raise ValueError(f"NetAdapt's short-term fine-tune diverged (loss {loss}): lower the learning rate")
        return 1.0 - float(masked.evaluate(holdout_data, verbose=0, return_dict=True)["accuracy"])

    if state is None:
        error = fine_tune()
        state = {"format": STATE_FORMAT, "settings": settings, "iteration": 0, "error": error, "initial_error": error,
                 "target_gain_us": (initial_us - target_us) / init_red_fact, "history": [],
                 "target_us": target_us, "initial_us": initial_us}
        say(f"NetAdapt: predicted {initial_us / 1000:.3f} ms → target {target_us / 1000:.3f} ms; "
            f"holdout error after {short_term_steps} fine-tune steps {error:.4f}")
        _save_state(state_dir, masked, state)
    masks = fold_channel_masks(graph, {})
    # the bar counts the µs the table says are saved: its ETA follows the latency, not the iterations
    bar = progress_bars.bar(round(initial_us - target_us), "NetAdapt", unit="µs",
                            initial=round(initial_us - cost(keep_counts(full, masks))))
    with bar:
        while cost(keep_counts(full, masks)) > target_us and state["iteration"] < max_iterations:
            started = time.monotonic()
            counts = keep_counts(full, masks)
            now = cost(counts)
            scores = fisher_scores(graph, short_term_steps) if scorer is None else scorer.scores(graph)
            snapshot = masked.get_weights()
            best: dict[str, Any] | None = None
            candidates: list[dict[str, Any]] = []
            gain = state["target_gain_us"]
            proposals = _proposals(graph, full, masks, scores, cost, now, gain, min_channels)
            while not proposals and gain > 1e-3 * now:  # no group can save that much any more: ask for less
                gain /= 2
                proposals = _proposals(graph, full, masks, scores, cost, now, gain, min_channels)
            if not proposals:
                raise ValueError(f"NetAdapt cannot go below {now / 1000:.3f} ms predicted (target "
                                 f"{target_us / 1000:.3f} ms): every group is at min_channels={min_channels}")
            candidates_bar = progress_bars.iterate(proposals, f"iteration {state['iteration'] + 1} candidates",
                                                   unit="candidate")
            for number, (group, mask, saved) in enumerate(candidates_bar, 1):
                masked.set_weights(snapshot)
                candidate_masks = {**masks, group: mask}
                set_channel_masks(masked, candidate_masks, graph=graph)
                error = fine_tune()
                delta = error - state["error"]
                row = {"group": graph.groups[group].name, "kept": int(mask.sum()), "size": full[group],
                       "saved_us": saved, "error": error, "delta_error": delta}
                candidates.append(row)
                say(f"  iteration {state['iteration'] + 1} candidate {number}/{len(proposals)}: "
                    f"{row['group']} {keep_counts(full, masks)[group]}→{row['kept']} saves "
                    f"{saved:.0f} µs, holdout error {error:.4f} ({delta:+.4f})")
                if best is None or _better(row, best, selection):
                    best = {**row, "_group": group, "_masks": candidate_masks, "_weights": masked.get_weights()}
            masks = best.pop("_masks")
            masked.set_weights(best.pop("_weights"))
            set_channel_masks(masked, masks, graph=graph)
            best.pop("_group")
            predicted = float(cost(keep_counts(full, masks)))
            record = {"iteration": state["iteration"] + 1, **best, "target_gain_us": gain, "predicted_us": predicted,
                      "channels": {graph.groups[g].name: n for g, n in keep_counts(full, masks).items()},
                      "candidates": candidates, "seconds": time.monotonic() - started}
            state["history"].append(record)
            state.update(iteration=record["iteration"], error=best["error"], target_gain_us=gain * decay_rate)
            _save_state(state_dir, masked, state)
            if measure is not None:  # after saving: a failed measurement loses no fine-tuning
                record["measured_us"] = float(measure(shrink(masked, graph=graph)))
                _save_state(state_dir, masked, state, model=False)
            if summaries.active:
                summaries.write(record["iteration"], {
                    "netadapt/predicted_latency_ms": predicted / 1000, "netadapt/holdout_error": best["error"],
                    **({"netadapt/measured_latency_ms": record["measured_us"] / 1000} if "measured_us" in record
                       else {}),
                    **{f"netadapt/channels/{name}": n for name, n in record["channels"].items()}})
            say(f"iteration {record['iteration']}: {record['group']} → {record['kept']} channels; predicted "
                f"{predicted / 1000:.3f} ms (target {target_us / 1000:.3f}); holdout error {best['error']:.4f} "
                f"({record['seconds']:.0f} s)")
            bar.update(min(bar.total, round(initial_us - predicted)) - bar.n)
            bar.note(f"iteration {record['iteration']}: {predicted / 1000:.3f} ms")
    summaries.end()
    if cost(keep_counts(full, masks)) > target_us:
        raise ValueError(f"NetAdapt stopped at max_iterations={max_iterations} above the target "
                         f"({cost(keep_counts(full, masks)) / 1000:.3f} > {target_us / 1000:.3f} ms predicted)")
    plan = plan_for_model(plan_from_masks(graph, masks), model)
    return NetAdaptResult(shrink(masked, graph=graph), plan, state["history"], target_us, initial_us)


def _forever(data: tf.data.Dataset) -> Iterator[tuple[Any, Any]]:
    while True:
        empty = True
        for batch in data:
            empty = False
            yield batch
        if empty:
            raise ValueError("NetAdapt's training data has no batch")


def _proposals(graph: ChannelGraph, full: Mapping[int, int], masks: Mapping[int, np.ndarray],
               scores: Mapping[int, np.ndarray], cost: Callable, now: float, gain: float, min_channels: int
               ) -> list[tuple[int, np.ndarray, float]]:
    """Per group, (group, keep-mask, µs saved) of the fewest removals that save at least ``gain``."""
    counts = keep_counts(full, masks)
    proposals = []
    for g, size in full.items():
        current = masks.get(g, np.ones(size, bool))
        for keep in range(counts[g] - 1, min_channels - 1, -1):  # linear: tables are not monotonic
            saved = now - cost({**counts, g: keep})
            if saved >= gain:
                kept = np.flatnonzero(current)
                best = kept[np.argsort(-np.asarray(scores[g])[kept], kind="stable")[:keep]]
                mask = np.zeros(size, bool)
                mask[best] = True
                proposals.append((g, mask, float(saved)))
                break
    return proposals


def _better(row: Mapping[str, Any], best: Mapping[str, Any], selection: str) -> bool:
    ratio = row["delta_error"] / abs(row["saved_us"])
    best_ratio = best["delta_error"] / abs(best["saved_us"])
    if selection == "thesis" and best["delta_error"] < 0:
        return row["delta_error"] < best["delta_error"]
    return ratio < best_ratio


def _save_state(state_dir: str | Path | None, masked: keras.Model, state: Mapping[str, Any], model: bool = True
                ) -> None:
    if state_dir is None:
        return
    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    name = f"model-{state['iteration']:04d}.keras"
    if model:
        files.save_model(masked, folder / name)  # the model first: the state on disk always has its model
    files.write_json(folder / "state.json", {**state, "model": name})
    for old in folder.glob("model-*.keras"):
        if old.name != name:
            old.unlink()
