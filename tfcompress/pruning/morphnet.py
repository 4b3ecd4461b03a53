"""MorphNet: a resource-weighted sparsifying regularizer on the channels of any functional model (Gordon et al.
2018, "MorphNet: Fast & Simple Resource-Constrained Structure Learning of Deep Networks"), as the NetAdapt
thesis used it (``morph_net/cifar10_train.py``: group lasso by default, strength 5e-8, threshold 1e-3), then the
dead channels removed physically.

    wrapped = morphnet.MorphNetModel(model, morphnet.MorphNetRegularizer(model, cost="flops"))  # or expand(model)
    wrapped.compile(optimizer)
    wrapped.fit(train, epochs=..., callbacks=[morphnet.MorphNetCallback()])   # any other tfcompress callback too
    result = morphnet.shrink(model, threshold=1e-3)   # result.model, result.plan (re-applies to a fresh init)

Every channel c of a prunable group g of the :class:`~tfcompress.graph.ChannelGraph` has a regularization value
r_c, and is *alive* while r_c > ``threshold``:

- ``group_lasso`` (the thesis's default): r_c = √(mean of w² over every kernel slice the channel owns) — the
  output slices of all the group's producers (a residual stream: every convolution adding into it) and of the
  depthwise kernels it flows through; morph-net's ``GroupLassoRegularizer`` (L2 / √dim, ``l1_fraction`` 0).
- ``gamma``: r_c = Σ |γ_c| over the BatchNormalization scales on the group (one BN: morph-net's
  ``GammaL1Regularizer``). A group without one cannot be regularized this way: refused, naming it.

Coupled convolutions share one value per channel (one L2 over all their slices; morph-net groups per-op
values by their maximum instead). The loss added to training is

    strength · Σ_g w_g · Σ_{c∈g} r_c,      w_g = ∂cost/∂n_g at the alive counts n

which for FLOPs is morph-net's FLOP regularizer exactly: for every op its ``coeff · (alive_in · reg_out +
alive_out · reg_in)``, summed over the ops, is Σ_g R_g ∂FLOPs/∂n_g (the cost is multilinear in the counts).
FLOPs are 2 · MACs (morph-net's ``flop_coeff``), the MACs from the layer specs (:meth:`ChannelGraph.cost`);
a depthwise kernel counts its input channels once (morph-net counts reg_in + reg_out "for symmetry").
**Latency** (beyond the original) takes w_g from a device latency table: the predicted µs saved per channel
by removing the fewest channels of g that save time (tables are staircases: one channel less often saves
nothing; as the latency-aware Fisher pruning picks), 0 when none within ``window`` does. The weights are
constants of the loss, refreshed from the alive counts by :class:`MorphNetCallback` at every epoch (morph-net
recomputes them at every step).

Strength: ``5e-8`` per FLOP (the thesis's CIFAR-10 value; its runs span 8e-9 … 8e-8). Latency weights are µs,
about 10³–10⁶ times smaller than FLOP weights, so the latency default is the same pressure per unit of cost:
``5e-8 × FLOPs / predicted µs`` of the unpruned model on the table. Choose a strength by a short sweep (×0.3,
×1, ×3): larger kills more channels; the thesis's 8e-9 → 8e-8 went from 317 ms to 137 ms on its WRN.

Or give a target: :func:`morphnet_to_target` searches the strength for a fraction of the FLOPs, parameters or
predicted latency kept, applying the term as a proximal step (:class:`ProximalStep`: a trained model's channels
reach exactly zero in a few hundred steps, where gradient steps shrink them all alike and the accuracy goes first)
and guarding every run (:class:`AccuracyGuard`: a run that loses more than a limit on the holdout stops with its
last weights within it).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfcompress import training
from tfcompress.graph import ChannelGraph, Group
from tfcompress.keras_graph import copy_layer
from tfcompress.pruning.channels import PruningPlan, PruningResult, plan_from_masks
from tfcompress.pruning.shrink import shrink as remove_channels
from tfcompress.summaries import Summaries

REGULARIZERS = ("group_lasso", "gamma")
COSTS = ("flops", "latency")
THESIS_DEFAULTS = {"regularizer": "group_lasso", "strength": 5e-8, "threshold": 1e-3, "expand_factor": 1.8}
_EPSILON = 1e-20  # inside the square root: a zero slice keeps a finite (zero) gradient

CostFn = Callable[[Mapping[int, int]], float]


@dataclasses.dataclass
class _Slices:
    """The rows of one variable (bound axis first, flattened) that belong to one group: ``rows`` index the
    variable's axis, ``channels`` the group's channel of each row."""

    variable: Any
    axis: int
    rows: np.ndarray
    channels: np.ndarray
    row_size: int


class MorphNetRegularizer:
    """The MorphNet loss ``strength · Σ_g w_g · Σ_c r_c`` over the prunable channel groups of ``model``.

    Args:
        model: a functional or Sequential model; its variables are the ones regularized (train this model).
        regularizer: "group_lasso" (default) or "gamma" (see the module docstring).
        cost: "flops" (default) or "latency" (needs ``table``).
        strength: λ; default 5e-8 for FLOPs, and for latency the same pressure per unit of cost
            (5e-8 × FLOPs / µs of the unpruned model).
        threshold: a channel is alive while r_c > threshold (1e-3, the thesis's).
        table: a latency table of the device (``tfcompress.latency.Table``), for ``cost="latency"``.
        precision: the precision the table predicts for.
        window: at most this many channels are removed to find a latency saving (default: 4 × the table's
            grid step, at least 8).
        graph: ``ChannelGraph(model)`` if already built.

    Raises:
        ValueError: an unknown regularizer or cost, latency without a table, or ``gamma`` on a group that has
            no BatchNormalization scale (the message names the group and its layers).
    """

    def __init__(
        self,
        model: keras.Model,
        regularizer: str = "group_lasso",
        cost: str = "flops",
        *,
        strength: float | None = None,
        threshold: float = 1e-3,
        table: Any = None,
        precision: str = "float32",
        window: int | None = None,
        graph: ChannelGraph | None = None,
    ) -> None:
        if regularizer not in REGULARIZERS:
            raise ValueError(f"regularizer must be one of {REGULARIZERS}, got {regularizer!r}")
        if cost not in COSTS:
            raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
        if cost == "latency" and table is None:
            raise ValueError("cost='latency' needs table=: a latency table of the device (tfcompress.latency.Table)")
        if strength is not None and strength < 0:
            raise ValueError(f"strength must be ≥ 0, got {strength}")
        if threshold < 0:
            raise ValueError(f"threshold must be ≥ 0, got {threshold}")
        self.graph = graph or ChannelGraph(model)
        self.model = self.graph.model
        self.kind, self.cost, self.threshold = regularizer, cost, float(threshold)
        self.slices = {g.id: _group_slices(self.graph, g, regularizer) for g in self.graph.prunable_groups}
        self.rows = {g: _rows_per_channel(found, self.graph.groups[g].size) for g, found in self.slices.items()}
        self.groups: list[Group] = [self.graph.groups[g] for g, found in self.slices.items() if found]
        for group_id in [g for g, found in self.slices.items() if not found]:
            logging.warning("MorphNet: group %s (%s) has no kernel to regularize; its channels stay",
                            group_id, self.graph.groups[group_id].name)
            del self.slices[group_id]
        self.full = {g.id: g.size for g in self.groups}
        self.flops_full = self.flops()
        # with a table, latency is predicted (and logged) whatever the cost weights follow
        self.latency_fn: CostFn | None = table.cost_fn(model, precision, self.graph) if table is not None else None
        step = int((getattr(table, "meta", None) or {}).get("step", 1))
        self.window = int(window or max(8, 4 * step))
        if strength is None:
            strength = THESIS_DEFAULTS["strength"]
            if cost == "latency":  # the FLOP default's pressure per unit of cost, in µs
                strength *= self.flops_full / max(self.latency_fn(self.full), 1e-9)
        self.strength = float(strength)
        self.proximal = False  # True: ProximalStep applies the term to the weights, the loss does not carry it
        # w_g live in a variable: a compiled train step reads the refreshed values
        self.weight_vector = tf.Variable(np.zeros(len(self.groups), np.float32), trainable=False,
                                         name="morphnet_cost_weights")
        self.update_weights()

    # ------------------------------------------------------------------------------------------- values

    def vectors(self) -> dict[int, tf.Tensor]:
        """r_c of every channel, per regularized group (differentiable tensors)."""
        return {g.id: _group_vector(self.slices[g.id], g.size, self.kind) for g in self.groups}

    def __call__(self) -> tf.Tensor:
        """The loss term ``strength · Σ_g w_g · Σ_c r_c``."""
        if not self.groups:
            return tf.constant(0.0)
        vectors = self.vectors()
        sums = tf.stack([tf.reduce_sum(vectors[g.id]) for g in self.groups])
        return self.strength * tf.reduce_sum(tf.stop_gradient(self.weight_vector) * sums)

    def values(self) -> dict[int, np.ndarray]:
        """r_c of every channel, per regularized group (NumPy)."""
        return {g: np.asarray(v.numpy(), np.float64) for g, v in self.vectors().items()}

    def alive(self) -> dict[int, np.ndarray]:
        """Per regularized group, which channels are alive (r_c > threshold)."""
        return {g: v > self.threshold for g, v in self.values().items()}

    def alive_counts(self) -> dict[int, int]:
        return {g: int(a.sum()) for g, a in self.alive().items()}

    def kept_counts(self) -> dict[int, int]:
        """Channels :func:`shrink` would keep now: the alive ones, at least one per group."""
        return _counts(self.masks())

    def masks(self) -> dict[int, np.ndarray]:
        """Keep-masks of the alive channels; a group with none alive keeps its strongest channel."""
        return _keep_masks(self.values(), self.threshold)

    # --------------------------------------------------------------------------------------------- costs

    def flops(self, counts: Mapping[int, int] | None = None) -> float:
        """FLOPs (2 · MACs, morph-net's count) when each group keeps ``counts`` channels (default: all)."""
        return 2.0 * self.graph.cost(dict(counts or {}), "macs")

    def cost_weights(self, counts: Mapping[int, int] | None = None) -> dict[int, float]:
        """w_g: the marginal cost of one channel of each group at ``counts`` (default: the alive counts)."""
        counts = dict(self.alive_counts() if counts is None else counts)
        weights = {}
        for g in self.full:
            if self.cost == "flops":
                # central difference: exact, the cost is at most quadratic in one group's count
                up, down = {**counts, g: counts[g] + 1}, {**counts, g: counts[g] - 1}
                weights[g] = (self.flops(up) - self.flops(down)) / 2
            else:
                weights[g] = self._latency_weight(g, {k: max(1, n) for k, n in counts.items()})
        return weights

    def _latency_weight(self, g: int, counts: dict[int, int]) -> float:
        """µs saved per channel by removing the fewest channels of ``g`` that save time (tables are staircases:
        one channel less often saves nothing); 0 when no removal within ``window`` saves time."""
        now = self.latency_fn(counts)
        for removed in range(1, min(self.window, counts[g] - 1) + 1):
            saved = now - self.latency_fn({**counts, g: counts[g] - removed})
            if saved > 0:
                return saved / removed
        return 0.0  # a removal that makes the model slower must not make channels grow

    def update_weights(self) -> dict[int, float]:
        """Recomputes w_g from the current alive counts (what :class:`MorphNetCallback` does every epoch)."""
        weights = self.cost_weights()
        self.weight_vector.assign(np.array([weights[g.id] for g in self.groups], np.float32))
        return weights

    def predicted(self, counts: Mapping[int, int] | None = None) -> dict[str, float]:
        """FLOPs (and predicted latency in ms with a table) at ``counts`` (default: the alive counts)."""
        counts = self.alive_counts() if counts is None else counts
        report = {"flops": self.flops(counts)}
        if self.latency_fn is not None:
            report["latency_ms"] = self.latency_fn({g: max(1, n) for g, n in counts.items()}) / 1000
        return report

    def plan(self) -> PruningPlan:
        """The plan that removes the dead channels (:meth:`masks`), in the groups of the regularized model."""
        return plan_from_masks(self.graph, self.masks())

    def proximal_step(self, lr: float) -> None:
        """The proximal operator of ``lr`` × the MorphNet term, applied to the weights: every channel's slices
        shrink together by ``lr · strength · w_g`` of norm, and are exactly zero once that exceeds their norm
        (group soft-thresholding; for gamma, |γ| soft-thresholded). A gradient step on the term only shrinks
        values proportionally and never reaches zero in a short run; this makes dead channels dead."""
        weights = self.weight_vector.numpy()
        for index, group in enumerate(self.groups):
            push = lr * self.strength * float(weights[index])
            if push <= 0:
                continue
            parts = self.slices[group.id]
            if self.kind == "group_lasso":  # the term is strength · w_g · ‖W_c‖ / √n_c and ‖W_c‖ = r_c √n_c
                rms = _group_vector(parts, group.size, self.kind).numpy()
                scale = np.maximum(0.0, 1.0 - push / np.maximum(self.rows[group.id] * rms, 1e-12))
            for part in parts:
                value = np.moveaxis(np.array(part.variable.numpy()), part.axis, 0)
                if self.kind == "group_lasso":
                    value[part.rows] *= scale[part.channels].reshape((-1,) + (1,) * (value.ndim - 1))
                else:
                    value[part.rows] = np.sign(value[part.rows]) * np.maximum(0.0, np.abs(value[part.rows]) - push)
                part.variable.assign(np.moveaxis(value, 0, part.axis))


def _group_slices(graph: ChannelGraph, group: Group, kind: str) -> list[_Slices]:
    """The variable slices whose values make r_c: kernels' output slices (group lasso) or BN scales (gamma)."""
    role = "out" if kind == "group_lasso" else "norm"
    found = []
    for _, binding in group.members:
        if binding.role != role:
            continue
        groups, channels = binding.layout.channel_index()
        rows = np.flatnonzero(groups == group.id)
        shape = binding.variable.shape
        found.append(_Slices(binding.variable, binding.axis, rows, channels[rows],
                             int(np.prod(shape)) // int(shape[binding.axis])))
    if kind == "gamma" and not found:
        raise ValueError(
            f"group {group.id} ({group.name}) has no BatchNormalization scale γ: layers {', '.join(group.producers)} "
            "are not followed by a BatchNormalization with scale=True, so the gamma regularizer cannot reach their "
            "channels; use regularizer='group_lasso'")
    return found


def _rows_per_channel(slices: list[_Slices], size: int) -> np.ndarray:
    """n_c: the number of weights each channel owns across the slices (at least 1)."""
    counts = np.zeros(size)
    for part in slices:
        np.add.at(counts, part.channels, part.row_size)
    return np.maximum(counts, 1)


def _group_vector(slices: list[_Slices], size: int, kind: str) -> tf.Tensor:
    total = tf.zeros(size)
    for part in slices:
        value = tf.convert_to_tensor(part.variable.value)
        rows = tf.reshape(keras.ops.moveaxis(value, part.axis, 0), (value.shape[part.axis], -1))
        per_row = tf.reduce_sum(tf.square(rows) if kind == "group_lasso" else tf.abs(rows), axis=1)
        total += tf.math.unsorted_segment_sum(tf.gather(per_row, part.rows), part.channels, size)
    if kind == "gamma":
        return total
    return tf.sqrt(total / tf.constant(_rows_per_channel(slices, size), tf.float32) + _EPSILON)


# ------------------------------------------------------------------------------------------- training


@keras.saving.register_keras_serializable(package="tfcompress")
class MorphNetModel(keras.Model):
    """``model`` trained with the MorphNet loss added to its compiled loss; predicts as ``model``.

    ``save`` writes ``model`` alone (the regularizer is the training set-up, not the result). The tfcompress
    callbacks act on ``model`` (:func:`tfcompress.training.student_of` finds it as ``student``). The loss in
    ``evaluate`` includes the regularizer, as Keras includes weight regularizers. To regularize while distilling,
    make it the student: ``Distiller(MorphNetModel(model), teacher)`` adds :meth:`training_penalty` to the
    distillation loss, and :class:`MorphNetCallback` finds the regularizer through the distiller.
    """

    def __init__(self, model: keras.Model, regularizer: MorphNetRegularizer | None = None, **kwargs: Any) -> None:
        super().__init__(name=kwargs.pop("name", f"{model.name}_morphnet"), **kwargs)
        if not isinstance(model, keras.Model):
            raise TypeError(f"MorphNetModel wraps a keras.Model, got {type(model).__name__}")
        self.inner = model
        self.morphnet = regularizer or MorphNetRegularizer(model)
        own = {id(variable) for variable in model.weights}
        if any(id(part.variable) not in own for parts in self.morphnet.slices.values() for part in parts):
            raise ValueError(f"the regularizer was built for model {self.morphnet.model.name!r}, not {model.name!r}: "
                             "its variables are another model's")
        self.built = model.built

    @property
    def student(self) -> keras.Model:
        """The model callbacks act on (the name :func:`tfcompress.training.student_of` reads)."""
        return self.inner

    def compile(self, optimizer: keras.optimizers.Optimizer | str = "adam", **kwargs: Any) -> None:
        """``keras.Model.compile``; the default loss and metric are a classifier's (logits, or probabilities
        after a final softmax of the wrapped model), as :func:`tfcompress.training.compile_classifier`."""
        from_logits = training.softmax_output(self.inner) is None
        kwargs.setdefault("loss", keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits))
        kwargs.setdefault("metrics", [keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
        super().compile(optimizer=optimizer, **kwargs)

    def call(self, inputs: Any, training: bool = False) -> tf.Tensor:
        return self.inner(inputs, training=training)

    def training_penalty(self) -> tf.Tensor:
        """The MorphNet term this wrapper adds to whatever loss trains the model (its compiled loss here, the
        distillation loss when a :class:`tfcompress.distill.Distiller` trains this wrapper as its student);
        none when a :class:`ProximalStep` applies it to the weights instead."""
        return tf.constant(0.0) if self.morphnet.proximal else self.morphnet()

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        # scaled per replica as Keras scales its own regularizers (the replicas' gradients are summed)
        return loss + self.training_penalty() / tf.distribute.get_strategy().num_replicas_in_sync

    def save(self, filepath: Any, *args: Any, **kwargs: Any) -> None:
        """Saves the wrapped model alone."""
        self.inner.save(filepath, *args, **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {"model": keras.saving.serialize_keras_object(self.inner), "name": self.name}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> MorphNetModel:
        config = dict(config)
        return cls(keras.saving.deserialize_keras_object(config.pop("model")), **config)


class MorphNetCallback(keras.callbacks.Callback):
    """Refreshes the MorphNet cost weights from the alive counts and logs progress, for a :class:`MorphNetModel`.

    Every epoch end it adds to the epoch logs (so a TensorBoard callback after it records them)
    ``morphnet_regularizer``, ``channels_left`` and ``macs_left`` (fractions of the prunable channels and of the
    MACs that :func:`shrink` would keep now, as :class:`~tfcompress.pruning.fisher.FisherPruning` logs them)
    and, with a table, ``predicted_latency_ms``. When a summary writer is active (``log_dir``, a
    ``keras.callbacks.TensorBoard`` in the same ``fit``, or the caller's ``tf.summary`` default writer; see
    :mod:`tfcompress.summaries`) it writes ``morphnet/channels/<group>`` (kept channels per group),
    ``morphnet/regularizer``, ``morphnet/flops``, ``morphnet/channels_left``, ``morphnet/macs_left``,
    ``morphnet/predicted_latency_ms`` with a table, and a histogram of each group's channel values r_c,
    ``morphnet/channel_values/<group>``.

    Args:
        update_every: refresh the weights every this many steps (default: at every epoch start).
        log_dir: write the summaries here (a ``tf.summary`` file writer; TensorBoard is needed only to view them).
        verbose: 1 prints a line per epoch.

    Attributes:
        history: one dict per epoch (kept channels per group name, regularizer, FLOPs, latency).
    """

    def __init__(self, update_every: int | None = None, log_dir: str | None = None, verbose: int = 0) -> None:
        super().__init__()
        if update_every is not None and update_every < 1:
            raise ValueError(f"update_every must be ≥ 1 step, got {update_every}")
        self.update_every, self.log_dir, self.verbose = update_every, log_dir, verbose
        self.history: list[dict[str, Any]] = []
        self.summaries = Summaries(log_dir)

    @property
    def regularizer(self) -> MorphNetRegularizer:
        return _regularizer_of(self.model, type(self).__name__)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.regularizer.update_weights()
        self.summaries.begin(self)
        self._steps = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if self.update_every is None:
            self.regularizer.update_weights()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1
        if self.update_every is not None and self._steps % self.update_every == 0:
            self.regularizer.update_weights()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        regularizer = self.regularizer
        counts = regularizer.kept_counts()
        predicted = regularizer.predicted(counts)
        names = {g: regularizer.graph.groups[g].name for g in counts}
        record = {"epoch": epoch, "regularizer": float(regularizer()),
                  "kept": {names[g]: n for g, n in counts.items()},
                  "channels_left": sum(counts.values()) / max(1, sum(regularizer.full.values())),
                  "macs_left": predicted["flops"] / regularizer.flops_full, **predicted}
        self.history.append(record)
        if logs is not None:
            logs.update(morphnet_regularizer=record["regularizer"], channels_left=record["channels_left"],
                        macs_left=record["macs_left"])
            if "latency_ms" in predicted:
                logs["predicted_latency_ms"] = predicted["latency_ms"]
        if self.summaries.active:
            scalars = {**{f"morphnet/channels/{name}": n for name, n in record["kept"].items()},
                       "morphnet/regularizer": record["regularizer"], "morphnet/flops": predicted["flops"],
                       "morphnet/channels_left": record["channels_left"], "morphnet/macs_left": record["macs_left"]}
            if "latency_ms" in predicted:
                scalars["morphnet/predicted_latency_ms"] = predicted["latency_ms"]
            values = {f"morphnet/channel_values/{names[g]}": v for g, v in regularizer.values().items()}
            self.summaries.write(epoch, scalars, values)
        if self.verbose:
            latency = f", predicted {predicted['latency_ms']:.3f} ms" if "latency_ms" in predicted else ""
            print(f"MorphNet epoch {epoch + 1}: regularizer {record['regularizer']:.4g}, channels left "
                  f"{record['channels_left']:.3f}, FLOPs left {record['macs_left']:.3f}{latency}")

    def on_train_end(self, logs: dict | None = None) -> None:
        self.summaries.end()


def _regularizer_of(model: keras.Model, who: str) -> MorphNetRegularizer:
    """The regularizer of a MorphNetModel, or of a Distiller (or other wrapper) whose student is one."""
    while model is not None:
        if isinstance(getattr(model, "morphnet", None), MorphNetRegularizer):
            return model.morphnet
        model = getattr(model, "student", None)
    raise ValueError(f"{who} trains a tfcompress.pruning.morphnet.MorphNetModel: wrap the model (a Distiller's "
                     "student may be one)")


class ProximalStep(keras.callbacks.Callback):
    """Applies the MorphNet term as a proximal step after every optimizer step
    (:meth:`MorphNetRegularizer.proximal_step` at the step's learning rate) instead of through the loss's
    gradient: channels the regularizer outweighs become exactly zero within a short run. Use plain SGD (the
    operator is exact for it). Sets the regularizer's ``proximal`` before the first step is traced."""

    def on_train_begin(self, logs: dict | None = None) -> None:
        _regularizer_of(self.model, type(self).__name__).proximal = True

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        _regularizer_of(self.model, type(self).__name__).proximal_step(lr)


# ------------------------------------------------------------------------------------- shrink and search


def expand(model: keras.Model, factor: float = 1.8, *, graph: ChannelGraph | None = None) -> keras.Model:
    """A freshly initialized copy of ``model`` with every prunable group ``factor`` times wider (rounded up):
    MorphNet's expansion step (the thesis's ``mult_fact`` 1.8), to be regularized back down and retrained.

    Layers are rebuilt by their specs' ``resize`` as :func:`tfcompress.pruning.shrink` does; inputs, outputs and
    groups that are not prunable keep their channels.

    Raises:
        ValueError: ``factor`` < 1.
    """
    if factor < 1:
        raise ValueError(f"expand widens: factor must be ≥ 1, got {factor}")
    graph = graph or ChannelGraph(model)
    counts = {g.id: int(np.ceil(g.size * factor - 1e-9)) for g in graph.prunable_groups}
    made: dict[int, Any] = {}

    def widened(call: Any) -> Any:
        spec = graph.spec(call.layer)
        channels = graph.layout(call.outputs[0]).kept_channels(counts)
        if spec is not None and spec.resize is not None and channels != call.outputs[0].shape[-1]:
            return spec.resize(call.layer, channels)
        return copy_layer(call.layer) if call.is_layer else call.layer

    def call_fn(call: Any, args: tuple, kwargs: dict) -> Any:
        if not call.is_layer:  # an operation node: stateless, but its arguments may count channels
            return widened(call)(*args, **kwargs)
        if id(call.layer) not in made:  # a shared layer stays shared; new layers keep their fresh weights
            made[id(call.layer)] = widened(call)
        return made[id(call.layer)](*args, **kwargs)

    return graph.walk.rebuild(call_fn)



def shrink(
    model: keras.Model, threshold: float = 1e-3, *, regularizer: str = "group_lasso",
    graph: ChannelGraph | None = None, calibration: Any = None,
) -> PruningResult:
    """Removes the dead channels of a MorphNet-trained ``model`` physically (r_c ≤ ``threshold``; a group keeps
    at least its strongest channel). Returns the smaller model and its plan (``plan.apply`` or
    :func:`tfcompress.pruning.apply_plan` prunes a fresh initialization to the same structure).

    A dead channel is a constant, not a zero (its bias, or β after it, remains): with ``calibration`` images
    the constant is folded into the layers that read it (:func:`tfcompress.pruning.shrink.mean_replacement`)
    and the smaller model computes what ``model`` does."""
    morph = MorphNetRegularizer(model, regularizer, threshold=threshold, graph=graph)
    plan = morph.plan()
    return PruningResult(remove_channels(model, plan.masks, graph=morph.graph, calibration=calibration), plan)


@dataclasses.dataclass
class MorphNetResult:
    """What :func:`morphnet_prune` returns: the physically pruned ``model``, its ``plan`` (groups of the input
    model), the regularized-trained model before shrinking (``trained``), and the per-epoch ``history``."""

    model: keras.Model
    plan: PruningPlan
    trained: keras.Model
    history: list[dict[str, Any]]
    guard: AccuracyGuard | None = None
    search: dict[str, Any] | None = None  # :func:`morphnet_to_target`'s trials, strength and threshold

    def report(self) -> dict[str, Any]:
        report = {**self.plan.to_dict(), "history": self.history}
        if self.guard is not None:
            report["guard"] = self.guard.report()
        if self.search is not None:
            report["search"] = self.search
        return report


def morphnet_prune(
    model: keras.Model,
    data: tf.data.Dataset,
    *,
    regularizer: str = "group_lasso",
    cost: str = "flops",
    strength: float | None = None,
    threshold: float = 1e-3,
    table: Any = None,
    precision: str = "float32",
    epochs: int = 1,
    optimizer: keras.optimizers.Optimizer | None = None,
    callbacks: list[keras.callbacks.Callback] | None = None,
    log_dir: str | None = None,
    verbose: int = 0,
    holdout: tf.data.Dataset | None = None,
    max_accuracy_drop: float | None = None,
    proximal: bool = False,
    backoffs: int = 0,
) -> MorphNetResult:
    """Trains a copy of ``model`` (logits or softmax classifier) on ``data`` with the MorphNet loss for
    ``epochs``, then removes its dead channels. The input model is not changed.

    The default optimizer is SGD at a constant lr 0.01 (the thesis's MorphNet runs), momentum 0.9, weight decay
    5e-4 on kernels (never on γ: it would do the gamma regularizer's work). ``callbacks`` run after the
    :class:`MorphNetCallback` (a TensorBoard callback records its scalars); ``log_dir`` gets the per-group ones.
    With ``holdout`` and ``max_accuracy_drop`` (points), an :class:`AccuracyGuard` stops a run whose holdout
    accuracy falls further than that and keeps the last weights within it (``result.guard`` says), after
    ``backoffs`` falls that only halve the strength and go on from there. ``proximal``
    applies the term by a :class:`ProximalStep` instead of the loss (dead channels exactly zero).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    if (holdout is None) != (max_accuracy_drop is None):
        raise ValueError("the accuracy guard needs both holdout= (batches of (image, label)) and max_accuracy_drop=")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    graph = ChannelGraph(copy)
    morphnet = MorphNetRegularizer(copy, regularizer, cost, strength=strength, threshold=threshold, table=table,
                                   precision=precision, graph=graph)
    morphnet.proximal = proximal  # before the train step is traced: the loss carries the term or not
    wrapped = MorphNetModel(copy, morphnet)
    wrapped.compile(optimizer or training.finetune_sgd(0.01))
    progress = MorphNetCallback(log_dir=log_dir, verbose=verbose)
    steps = int(data.cardinality())  # negative when unknown: checked at epoch ends only
    # checks GUARD_CHECKS times an epoch, but never on more batches than were trained on since the last
    every = max(steps // GUARD_CHECKS, int(holdout.cardinality()) if holdout is not None else 0, 1)
    guard = None if holdout is None else AccuracyGuard(
        holdout, max_accuracy_drop, every=every if 0 < every < steps else None,
        recalibrate_on=data.take(GUARD_BATCH_NORM_BATCHES), backoffs=backoffs)
    for callback in callbacks or []:
        if isinstance(callback, StopAtTarget) and callback.guard is None:
            callback.guard = guard  # a landing counts where the guard accepts the weights
    steps_after = [ProximalStep()] if proximal else []
    wrapped.fit(data, epochs=epochs, verbose=0,
                callbacks=[*steps_after, progress, *([guard] if guard else []), *(callbacks or [])])
    plan = morphnet.plan()
    pruned = remove_channels(copy, plan.masks, graph=graph, calibration=data)
    # the copy's layers have the original's names: the plan re-applies to ``model`` and to fresh inits
    return MorphNetResult(pruned, plan, copy, progress.history, guard)


# ------------------------------------------------------------------------------------------- to a target

#: how often an epoch a run of :func:`morphnet_to_target` checks whether it reached the target
TARGET_CHECKS = 20

#: falls past the accuracy limit a trial of :func:`morphnet_to_target` goes on from at half the strength, before
#: the third stops it: on the reference ResNet-20, runs strong enough for half the FLOPs lost more than 10 points
#: while most channels were still shrinking (a BatchNorm-normalized kernel's updates grow as its norm falls)
TRIAL_BACKOFFS = 2

#: what :func:`morphnet_to_target` aims at: the fraction kept of the FLOPs, of the parameters, or of the latency
#: a table predicts
TARGETS = ("flops", "params", "latency")
#: accuracy checks per epoch of a guarded run (a strength that is far too large destroys a model within an epoch)
GUARD_CHECKS = 4
#: training batches that re-estimate BatchNorm statistics before each check (a momentum of 0.999 leaves them stale)
GUARD_BATCH_NORM_BATCHES = 5
#: the images the thesis regularized over (200 epochs of CIFAR-10's 50,000) at its strength 5e-8: a shorter run
#: starts at that strength × this / its own images, the same accumulated push (REFERENCE.md §1.4)
THESIS_REGULARIZED_IMAGES = 200 * 50_000


class AccuracyGuard(keras.callbacks.Callback):
    """Stops a regularized run whose holdout accuracy falls more than ``max_drop`` points below where it began,
    and ends it with the weights of the last check within the limit (the starting ones at worst): a strength
    too large for the model cannot destroy it silently. Checks every ``every`` steps, and at each epoch end.
    BatchNorm statistics are re-estimated on ``recalibrate_on`` batches before each check when given. With
    ``backoffs``, the first falls past the limit do not stop the run: it goes on from the last weights within
    the limit at half the MorphNet strength (``halved`` lists the strengths it left)."""

    def __init__(self, holdout: tf.data.Dataset, max_drop: float, every: int | None = None,
                 recalibrate_on: Any = None, backoffs: int = 0) -> None:
        super().__init__()
        if max_drop < 0:
            raise ValueError(f"max_accuracy_drop is in points, ≥ 0; got {max_drop}")
        self.holdout, self.max_drop, self.every, self.recalibrate_on = holdout, float(max_drop), every, recalibrate_on
        self.backoffs = backoffs
        self.scores: list[float] = []
        self.halved: list[float] = []  # the strengths a fall past the limit halved, in order
        self.collapsed = False
        self._kept: list[np.ndarray] | None = None

    def check(self) -> bool:
        """Scores the weights now; True when within the limit (else they were set back, or the run stops)."""
        model = training.student_of(self.model)
        if self.recalibrate_on is not None:
            training.recalibrate_batch_norm(model, self.recalibrate_on)
        self.scores.append(training.evaluate(model, self.holdout)["accuracy"])
        if 100 * (self.scores[0] - self.scores[-1]) <= self.max_drop:
            self._kept = [np.array(w) for w in model.get_weights()]
            return True
        if len(self.halved) < self.backoffs:  # back to the last weights within the limit, at half the strength
            model.set_weights(self._kept)
            regularizer = _regularizer_of(self.model, type(self).__name__)
            self.halved.append(regularizer.strength)
            regularizer.strength /= 2
        else:
            self.collapsed = True
            self.model.stop_training = True
        return False

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.scores, self.halved, self.collapsed, self._steps = [], [], False, 0
        self.check()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps += 1
        if self.every and self._steps % self.every == 0 and not self.collapsed:
            self.check()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not self.collapsed:
            self.check()

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.collapsed:
            training.student_of(self.model).set_weights(self._kept)

    @property
    def final(self) -> float:
        """The holdout accuracy of the weights the run ended with."""
        kept = [s for s in self.scores if 100 * (self.scores[0] - s) <= self.max_drop]
        return kept[-1]  # a check past the limit restored the weights of the last one within it

    def report(self) -> dict[str, Any]:
        return {"max_accuracy_drop": self.max_drop, "holdout_accuracy": self.scores, "stopped": self.collapsed,
                "strengths_halved": self.halved}


class StopAtTarget(keras.callbacks.Callback):
    """Ends a regularized run as soon as it would keep at most ``high`` (``kept(regularizer)``, checked every
    ``every`` steps): a strength strong enough for the target lands on it, instead of running on past it and
    counting as too strong. With a ``guard``, only where its holdout accuracy is within the limit (a state the
    guard sets back is not a landing). ``reached`` and ``kept`` say where the run ended."""

    def __init__(self, kept: Callable[[MorphNetRegularizer], float], high: float, every: int,
                 guard: AccuracyGuard | None = None) -> None:
        super().__init__()
        self.kept_fn, self.high, self.every, self.guard = kept, high, max(1, every), guard
        self.kept, self.reached, self.steps = 1.0, False, 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.steps += 1
        if self.steps % self.every or self.model.stop_training:
            return
        self.kept = self.kept_fn(_regularizer_of(self.model, type(self).__name__))
        if self.kept <= self.high and (self.guard is None or self.guard.check()):
            self.reached = self.model.stop_training = True


def next_strength(trials: Sequence[tuple[float, float]], low: float, high: float, start: float,
                  factor: float = 4.0) -> float | None:
    """The next MorphNet strength to try so that the pruned cost lands in [``low``, ``high``], or None when a trial
    already does. ``trials``: (strength, cost) pairs; a larger strength prunes more (lower cost). No trial:
    ``start``. All costs above the band: the strongest trial × ``factor``; all below: the weakest / ``factor``;
    else the geometric mean of the bracketing strengths (bisection on the log scale)."""
    if not trials:
        return start
    if any(low <= cost <= high for _, cost in trials):
        return None
    above = [s for s, cost in trials if cost > high]  # not pruned enough
    below = [s for s, cost in trials if cost < low]  # pruned too much
    if not below:
        return max(above) * factor
    if not above:
        return min(below) / factor
    weak, strong = max(above), min(below)
    if strong <= weak:  # the cost is not monotonic in the strength here: try beyond the strongest weak one
        return weak * math.sqrt(factor)
    return math.sqrt(weak * strong)


def pick_trial(trials: Sequence[Mapping[str, Any]], low: float, high: float) -> Mapping[str, Any]:
    """The trial to keep: within [``low``, ``high``] (the cost nearest ``high``), else the one with the largest
    cost ≤ ``high`` (the closest that fits), else the cheapest."""
    if not trials:
        raise ValueError("no MorphNet trial to pick from")
    inside = [t for t in trials if low <= t["cost"] <= high]
    if inside:
        return max(inside, key=lambda t: t["cost"])
    fitting = [t for t in trials if t["cost"] <= high]
    if fitting:
        return max(fitting, key=lambda t: t["cost"])
    return min(trials, key=lambda t: t["cost"])


def threshold_for(values: Mapping[int, Sequence[float]], cost: Callable[[dict[int, int]], float], target: float
                  ) -> float:
    """The smallest threshold among the channel ``values`` (r_c per group) whose alive counts (values above it,
    at least one per group) cost at most ``target``: the most channels that fit. The cost falls as channels go
    (tables are staircases, so a binary search finds a threshold that fits, not always the first one).

    Raises:
        ValueError: even one channel per group costs more than ``target``.
    """
    def counts(threshold: float) -> dict[int, int]:
        return {g: max(1, int(sum(v > threshold for v in vs))) for g, vs in values.items()}

    candidates = sorted({0.0, *(float(v) for vs in values.values() for v in vs)})
    if cost(counts(candidates[-1])) > target:
        raise ValueError(f"one channel per group costs {cost(counts(candidates[-1])):.4g} > target {target:.4g}")
    low, high = 0, len(candidates) - 1  # the first candidate that fits
    while low < high:
        middle = (low + high) // 2
        if cost(counts(candidates[middle])) <= target:
            high = middle
        else:
            low = middle + 1
    return candidates[low]


def fraction_kept(regularizer: MorphNetRegularizer, measure: str) -> Callable[[Mapping[int, int]], float]:
    """The fraction of the unpruned model's FLOPs, parameters or predicted latency (``measure``) that the
    regularized model keeps when each group keeps ``counts`` channels."""
    full = regularizer.full
    if measure == "flops":
        return lambda counts: regularizer.flops(counts) / regularizer.flops_full
    if measure == "params":
        total = regularizer.graph.cost(full, "params")
        return lambda counts: regularizer.graph.cost(dict(counts), "params") / total
    if regularizer.latency_fn is None:
        raise ValueError("a latency target needs table=: the device's latency table")
    total = regularizer.latency_fn(full)
    return lambda counts: regularizer.latency_fn({g: max(1, n) for g, n in counts.items()}) / total


def morphnet_to_target(
    model: keras.Model,
    data: tf.data.Dataset,
    *,
    target: float,
    measure: str = "flops",
    holdout: tf.data.Dataset,
    max_accuracy_drop: float = 10.0,
    tolerance: float = 0.05,
    trials: int = 6,
    epochs: int = 1,
    lr: float = 0.05,
    strength: float | None = None,
    regularizer: str = "group_lasso",
    relative_threshold: float = 0.01,
    table: Any = None,
    precision: str = "float32",
    seed: int | None = None,
    say: Callable[[str], None] = print,
) -> MorphNetResult:
    """MorphNet to a target instead of a strength: the pruned model keeps ``target`` of the input's FLOPs,
    parameters or predicted latency (``measure``), within ``tolerance`` of it (relative: 0.05 is ±5 %).

    The strength is searched, each trial a guarded MorphNet run of at most ``epochs`` on ``data`` from ``model``
    (SGD without momentum, cosine from ``lr``: momentum leaves the group-lasso values oscillating) that ends as soon
    as it would keep no more than the top of the band (:class:`StopAtTarget`, :data:`TARGET_CHECKS` checks an
    epoch): a strength past the one that lands exactly lands too, sooner. ×4 until the target is bracketed,
    then bisection on the log scale (:func:`next_strength`), at most ``trials`` runs. A channel is
    dead when the run shrank its value below ``relative_threshold`` of what it was: the scale a short run drives
    values to differs from group to group and from the thesis's 200 epochs (whose absolute 1e-3 assumed them).
    The first strength is ``strength``, by default the
    thesis's push per image (5e-8 over 200 × 50,000 images, for FLOPs) spread over this run's images. A trial
    whose holdout accuracy falls more than ``max_accuracy_drop`` points (:class:`AccuracyGuard`) goes on from its
    last weights within the limit at half the strength, twice (:data:`TRIAL_BACKOFFS`); a third fall stops it
    and it counts as too strong. When no trial lands within the tolerance: if the closest kept more than the
    target, the structure it found is narrowed uniformly until it fits (:func:`width_multiplier`, MorphNet's own
    step 3); if every trial that fits removed too much, the threshold of the closest is moved until the fraction
    kept is the most that is ≤ ``target`` (:func:`threshold_for` on the shrinkage ratios). The cost the
    regularizer weighs is the predicted latency for a latency target, the FLOPs otherwise. ``result.search``
    records every trial.

    Raises:
        ValueError: a target outside (0, 1), an unknown measure, a latency target without ``table``, or every
            trial losing more than ``max_accuracy_drop`` (a smaller ``lr``, or a larger limit).
    """
    if not 0 < target < 1:
        raise ValueError(f"target is the fraction of the {measure} kept, in (0, 1); got {target}")
    if measure not in TARGETS:
        raise ValueError(f"measure must be one of {TARGETS}, got {measure!r}")
    if trials < 1 or not 0 < tolerance < 1 or epochs < 1:
        raise ValueError(f"need trials ≥ 1, 0 < tolerance < 1 and epochs ≥ 1; got {trials}, {tolerance}, {epochs}")
    cost = "latency" if measure == "latency" else "flops"
    reference = MorphNetRegularizer(model, regularizer, cost, table=table, precision=precision)
    measure_of = fraction_kept(reference, measure)  # refuses a latency target without a table before any training
    before = reference.values()

    def shrinkage(regularizer: MorphNetRegularizer) -> dict[int, np.ndarray]:  # each channel's value over its start
        return {g: v / np.maximum(before[g], 1e-12) for g, v in regularizer.values().items()}
    steps = int(data.cardinality())
    images = epochs * steps * int(tf.shape(next(iter(data))[0])[0])
    start = strength or reference.strength * THESIS_REGULARIZED_IMAGES / max(1, images)
    low, high = target * (1 - tolerance), target * (1 + tolerance)
    done: list[dict[str, Any]] = []
    shrunk: list[dict[int, np.ndarray]] = []  # per trial: each channel's value over its value before the run
    results: list[tuple[MorphNetResult, ChannelGraph]] = []
    while len(done) < trials:
        # too strong: a trial the guard stopped, or whose strength it had to halve and that still did not land
        next_ = next_strength([(t["strength"], 0.0 if t["stopped"] or (t["halved"] and t["cost"] > high)
                                else t["cost"]) for t in done], low, high, start)
        if next_ is None:
            break
        if seed is not None:
            keras.utils.set_random_seed(seed)
        began = time.monotonic()
        at_target = StopAtTarget(lambda regularizer: measure_of(_counts(_keep_masks(shrinkage(regularizer),
                                                                                    relative_threshold))),
                                 high, steps // TARGET_CHECKS if steps > 0 else 50)
        result = morphnet_prune(
            model, data, regularizer=regularizer, cost=cost, strength=next_, table=table,
            precision=precision, epochs=epochs, holdout=holdout, max_accuracy_drop=max_accuracy_drop, proximal=True,
            backoffs=TRIAL_BACKOFFS, optimizer=training.sgd(lr, epochs * steps, "cosine", momentum=0.0, nesterov=False),
            callbacks=[training.StopOnNonFinite("MorphNet"), at_target])
        trained = MorphNetRegularizer(result.trained, regularizer, cost, table=table, precision=precision)
        shrunk.append(shrinkage(trained))
        kept = measure_of(_counts(_keep_masks(shrunk[-1], relative_threshold)))
        done.append({"strength": next_, "cost": kept, "stopped": result.guard.collapsed,
                     "holdout_accuracy": result.guard.final,
                     "epochs": round(at_target.steps / steps, 2) if steps > 0 else epochs,
                     "halved": len(result.guard.halved),
                     "seconds": round(time.monotonic() - began, 1)})
        results.append((result, trained.graph))
        halved = f" (strength halved {len(result.guard.halved)}× on the way)" if result.guard.halved else ""
        say(f"MorphNet strength {next_:.3g}: {measure} kept {kept:.3f} (target {target:g} ± {100 * tolerance:g} %) "
            f"after {done[-1]['epochs']:g} epochs{halved}, holdout accuracy {result.guard.final:.4f}"
            + (f" — stopped: accuracy fell more than {max_accuracy_drop:g} points" if result.guard.collapsed else ""))
    alive = [t for t in done if not t["stopped"]]
    if not alive:
        tried = ", ".join(f"{t['strength']:.3g}" for t in done)
        raise ValueError(f"every MorphNet strength tried ({tried}) lost "
                         f"more than {max_accuracy_drop:g} points of holdout accuracy: a smaller lr (now {lr:g}) or "
                         "a larger max_accuracy_drop")
    chosen = pick_trial(alive, low, high)
    index = done.index(chosen)
    (result, graph), ratios, cut = results[index], shrunk[index], relative_threshold
    masks, multiplier = _keep_masks(ratios, cut), None
    moved = chosen["cost"] < low
    if moved:  # every strength that fits removed too much: the channels it was still shrinking are kept
        cut = threshold_for({g: v.tolist() for g, v in ratios.items()}, measure_of, target)
        masks = _keep_masks(ratios, cut)
        say(f"no strength landed within ±{100 * tolerance:g} %: channels shrunk below {cut:.3g} of their value "
            f"(instead of {relative_threshold:g}) are removed from the run at strength {chosen['strength']:.3g}")
    elif chosen["cost"] > high:  # none reached it: the structure found, uniformly narrower (MorphNet's step 3)
        masks, multiplier = width_multiplier(ratios, masks, measure_of, target)
        say(f"no strength reached the target within ±{100 * tolerance:g} % (the closest kept {chosen['cost']:.3f}): "
            f"the structure of the run at strength {chosen['strength']:.3g}, every group ×{multiplier:.3f}")
    plan = plan_from_masks(graph, masks)
    pruned = remove_channels(result.trained, plan.masks, graph=graph, calibration=data)
    search = {"target": target, "measure": measure, "tolerance": tolerance, "trials": done,
              "strength": chosen["strength"], "relative_threshold": cut, "threshold_moved": moved,
              "width_multiplier": multiplier, "kept": measure_of(_counts(masks))}
    return MorphNetResult(pruned, plan, result.trained, result.history, result.guard, search)


def width_multiplier(values: Mapping[int, np.ndarray], masks: Mapping[int, np.ndarray],
                     cost: Callable[[dict[int, int]], float], target: float) -> tuple[dict[int, np.ndarray], float]:
    """MorphNet's uniform width multiplier (Gordon et al. 2018, step 3: the structure the regularizer found,
    scaled to the resource target): every group keeps ⌈ω · its kept channels⌉ (at least one; those of the largest
    ``values``) of ``masks``, ω the largest for which ``cost`` of the counts is at most ``target``. Returns the
    new masks and ω. A structure scaled this way keeps its proportions: no group falls to one channel where a
    threshold across groups would empty the ones the regularizer pushed hardest.

    Raises:
        ValueError: even one channel per group costs more than ``target``.
    """
    kept = {g: int(mask.sum()) for g, mask in masks.items()}

    def counts(omega: float) -> dict[int, int]:
        return {g: max(1, math.ceil(omega * n - 1e-9)) for g, n in kept.items()}

    if cost(counts(0.0)) > target:
        raise ValueError(f"one channel per group costs {cost(counts(0.0)):.4g} > target {target:.4g}")
    low, high = 0.0, 1.0
    for _ in range(40):  # cost grows with ω: bisection to the largest ω that fits
        middle = (low + high) / 2
        low, high = (middle, high) if cost(counts(middle)) <= target else (low, middle)
    scaled = {}
    for g, n in counts(low).items():
        order = np.argsort(-np.where(masks[g], values[g], -np.inf), kind="stable")
        scaled[g] = np.isin(np.arange(masks[g].size), order[:n])
    return scaled, low


def _keep_masks(values: Mapping[int, np.ndarray], cut: float) -> dict[int, np.ndarray]:
    """Keep-masks of the channels whose value (r_c, or a shrinkage ratio) is above ``cut``; a group with none
    above keeps its strongest channel (an empty group disconnects the network)."""
    masks = {}
    for g, value in values.items():
        mask = value > cut
        if not mask.any():
            mask[int(np.argmax(value))] = True
        masks[g] = mask
    return masks


def _counts(masks: Mapping[int, np.ndarray]) -> dict[int, int]:
    return {g: int(mask.sum()) for g, mask in masks.items()}
