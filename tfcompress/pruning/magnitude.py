"""Baselines for SNIP: random pruning, one-shot magnitude pruning, and gradual magnitude pruning in training.

* :func:`random_masks` — the same sparsity with uniformly random connections kept, globally or per layer
  (the control of Lee et al. 2019, and of every pruning-at-initialization paper since).
* :func:`magnitude_masks` — keep the largest |w| of a trained model, once (Han et al., "Learning both Weights
  and Connections for Efficient Neural Networks", NeurIPS 2015), globally or per layer.
* :class:`GradualMagnitudePruning` — a ``model.fit`` callback that raises the sparsity of a masked model along
  :class:`PolynomialDecay` (Zhu & Gupta, "To prune, or not to prune", 2017), pruning each layer to the
  scheduled sparsity by magnitude — the same schedule and step semantics as tfmot's
  ``PolynomialDecay`` / ``prune_low_magnitude``, without tfmot, but its masks only grow (see the class).

All return or maintain masks in the :mod:`tfcompress.pruning.weight_masks` format; apply them with
:func:`tfcompress.pruning.weight_masks.apply_masks`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np

from tfcompress.keras_graph import iter_layers
from tfcompress.pruning import weight_masks
from tfcompress.summaries import Summaries
from tfcompress.training import student_of


def random_masks(
    model: keras.Model, sparsity: float, *, scope: str = "local", prune_biases: bool = False, seed: int | None = 0,
    allow_empty_layers: bool = False,
) -> weight_masks.Masks:
    """Masks keeping a uniformly random set of weights: round(N_l·(1 − sparsity)) in each layer
    (``scope="local"``) or round(N·(1 − sparsity)) anywhere in the model (``scope="global"``)."""
    rng = np.random.default_rng(seed)
    scores = {name: {w: rng.random(v.shape) for w, v in per.items()}
              for name, per in weight_masks.prunable_weights(model, prune_biases).items()}
    return weight_masks.masks_from_scores(scores, sparsity, scope=scope, allow_empty_layers=allow_empty_layers)


def magnitude_masks(
    model: keras.Model, sparsity: float, *, scope: str = "global", prune_biases: bool = False,
    allow_empty_layers: bool = False,
) -> weight_masks.Masks:
    """Masks keeping the largest-magnitude weights of ``model`` (masked weights count as 0), globally or per layer."""
    current = weight_masks.get_masks(model)
    scores = {
        name: {w: np.abs(np.asarray(v.numpy())) * current.get(name, {}).get(w, 1) for w, v in per.items()}
        for name, per in weight_masks.prunable_weights(model, prune_biases).items()
    }
    return weight_masks.masks_from_scores(scores, sparsity, scope=scope, allow_empty_layers=allow_empty_layers)


def prune_magnitude(model: keras.Model, sparsity: float, **kwargs: Any) -> keras.Model:
    """One-shot magnitude pruning: a masked copy of (trained) ``model`` keeping its largest weights; fine-tune it
    with ``fit`` (the masks hold). Keyword arguments go to :func:`magnitude_masks`."""
    return weight_masks.apply_masks(model, magnitude_masks(model, sparsity, **kwargs))


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Sparsity schedule s(t) = s_f + (s_i − s_f)·(1 − p)^power, p = clip((t − begin_step)/(end_step − begin_step),
    0, 1), applied at steps t in [begin_step, end_step] with (t − begin_step) mod frequency = 0.

    The semantics of tfmot's ``PolynomialDecay`` (defaults power 3, frequency 100); t is the optimizer's
    iteration count before the batch.
    """

    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self) -> None:
        weight_masks.check_sparsity(self.initial_sparsity, "initial_sparsity")
        weight_masks.check_sparsity(self.final_sparsity, "final_sparsity")
        if self.begin_step < 0:
            raise ValueError(f"begin_step must be ≥ 0, got {self.begin_step}")
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step must be > begin_step ({self.begin_step}), got {self.end_step}")
        if self.frequency < 1:
            raise ValueError(f"frequency must be ≥ 1, got {self.frequency}")

    def should_prune(self, step: int) -> bool:
        return self.begin_step <= step <= self.end_step and (step - self.begin_step) % self.frequency == 0

    def sparsity(self, step: int) -> float:
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1.0 - p) ** self.power

    def __call__(self, step: int) -> tuple[bool, float]:
        """(prune at this step?, sparsity), like tfmot's schedule."""
        return self.should_prune(step), self.sparsity(step)


class GradualMagnitudePruning(keras.callbacks.Callback):
    """Prunes a masked model by magnitude during ``fit``, following a :class:`PolynomialDecay` schedule.

    At each training step t the schedule selects, each prunable layer is pruned to s(t) by magnitude (per layer,
    as tfmot does; ``scope="global"`` ranks all layers together).

    **Same schedule, masks only grow.** A weight pruned once stays pruned: each update ranks the weights still
    kept and prunes the smallest of them, so the pruned set at step t contains every earlier one. tfmot differs
    here. Its wrapper assigns w ← w ⊙ m at each training step, then runs the layer on that variable, so a pruned
    weight gets the gradient ∂L/∂w at the masked point and the optimizer moves it off zero until the next
    step's re-masking; at a pruning step ``pruning_impl._update_mask`` ranks |w| of *all* weights, these
    included, and keeps those ≥ the k-th largest, so a pruned weight whose last update (with momentum) carries
    it above the threshold comes back. Here the forward pass computes with w ⊙ m (zero gradient for pruned
    weights) and the mask's constraint re-zeroes them after every step — what SNIP and the other fixed-mask
    methods need — so there is nothing to regrow from, and ranking raw |w| would give the same masks. Matching
    tfmot would need a straight-through gradient to pruned weights and re-masking before the forward pass
    instead of after the step, a change to :class:`~tfcompress.pruning.weight_masks.WeightMask` that every
    masked model would feel. Smaller differences: tfmot keeps at least one weight per layer and every weight
    tied with the threshold; here exactly round(N·(1 − s)) are kept, and a layer left empty is refused unless
    ``allow_empty_layers``.

    The model must hold :class:`~tfcompress.pruning.weight_masks.WeightMask` layers: build it with
    ``tfcompress.pruning.weight_masks.wrap(model)`` before compiling.

    Args:
        schedule: when and how much to prune.
        scope: "local" (default: each layer to the scheduled sparsity, tfmot's behaviour) or "global".
        allow_empty_layers: accept a sparsity that removes every connection of a layer.
        log_dir: write the per-epoch summaries here; by default they go to the run of a
            ``keras.callbacks.TensorBoard`` in the same ``fit``, or to a ``tf.summary`` default writer
            (:mod:`tfcompress.summaries`): ``magnitude_pruning/sparsity`` (all masked weights),
            ``magnitude_pruning/sparsity/<layer>`` and ``magnitude_pruning/scheduled_sparsity``.
    """

    def __init__(self, schedule: PolynomialDecay, scope: str = "local", allow_empty_layers: bool = False,
                 log_dir: str | None = None) -> None:
        super().__init__()
        if scope not in weight_masks.SCOPES:
            raise ValueError(f"scope must be one of {weight_masks.SCOPES}, got {scope!r}")
        self.schedule = schedule
        self.scope = scope
        self.allow_empty_layers = allow_empty_layers
        self.history: list[tuple[int, float]] = []  # (step, sparsity) at each pruning step
        self.summaries = Summaries(log_dir)

    def _wrappers(self) -> list[weight_masks.WeightMask]:
        return [layer for layer in iter_layers(student_of(self.model)) if isinstance(layer, weight_masks.WeightMask)]

    def on_train_begin(self, logs: dict | None = None) -> None:
        if not self._wrappers():
            raise ValueError(
                f"GradualMagnitudePruning needs WeightMask layers in model {self.model.name!r}: wrap it with "
                "tfcompress.pruning.weight_masks.wrap(model) before compile()"
            )
        self.summaries.begin(self)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        prune, sparsity = self.schedule(step)
        if not prune:
            return
        wrappers = self._wrappers()
        scores = {}
        for layer in wrappers:
            current = layer.get_masks()
            scores[layer.name] = {w: np.abs(np.asarray(layer.target(w).numpy())) * current[w] for w in current}
        new_masks = weight_masks.masks_from_scores(scores, sparsity, scope=self.scope,
                                                allow_empty_layers=self.allow_empty_layers)
        for layer in wrappers:
            layer.set_masks(new_masks[layer.name])
        self.history.append((step, sparsity))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.summaries.active:  # computed only when written
            return
        masks = {layer.name: layer.get_masks() for layer in self._wrappers()}
        if not masks:
            return
        sparsity = weight_masks.mask_sparsity(masks)  # per layer, and "total" over all masked weights
        scalars = {"magnitude_pruning/sparsity": sparsity.pop("total"),
                   **{f"magnitude_pruning/sparsity/{name}": value for name, value in sparsity.items()}}
        if self.history:
            scalars["magnitude_pruning/scheduled_sparsity"] = self.history[-1][1]
        self.summaries.write(epoch, scalars)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.summaries.end()
