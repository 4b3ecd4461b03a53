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
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
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
        return {g: int(mask.sum()) for g, mask in self.masks().items()}

    def masks(self) -> dict[int, np.ndarray]:
        """Keep-masks of the alive channels; a group with none alive keeps its strongest channel."""
        masks = {}
        for g, values in self.values().items():
            mask = values > self.threshold
            if not mask.any():  # an empty group disconnects the network
                mask[int(np.argmax(values))] = True
            masks[g] = mask
        return masks

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


def _group_vector(slices: list[_Slices], size: int, kind: str) -> tf.Tensor:
    total = tf.zeros(size)
    counts = np.zeros(size)
    for part in slices:
        value = tf.convert_to_tensor(part.variable.value)
        rows = tf.reshape(keras.ops.moveaxis(value, part.axis, 0), (value.shape[part.axis], -1))
        per_row = tf.reduce_sum(tf.square(rows) if kind == "group_lasso" else tf.abs(rows), axis=1)
        total += tf.math.unsorted_segment_sum(tf.gather(per_row, part.rows), part.channels, size)
        np.add.at(counts, part.channels, part.row_size)
    if kind == "gamma":
        return total
    return tf.sqrt(total / tf.constant(np.maximum(counts, 1), tf.float32) + _EPSILON)


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
        distillation loss when a :class:`tfcompress.distill.Distiller` trains this wrapper as its student)."""
        return self.morphnet()

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
        model = self.model  # a MorphNetModel, or a Distiller (or other wrapper) whose student is one
        while model is not None:
            if isinstance(getattr(model, "morphnet", None), MorphNetRegularizer):
                return model.morphnet
            model = getattr(model, "student", None)
        raise ValueError("MorphNetCallback trains a tfcompress.pruning.morphnet.MorphNetModel: wrap the model "
                         "(a Distiller's student may be one)")

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
    graph: ChannelGraph | None = None,
) -> PruningResult:
    """Removes the dead channels of a MorphNet-trained ``model`` physically (r_c ≤ ``threshold``; a group keeps
    at least its strongest channel). Returns the smaller model and its plan (``plan.apply`` or
    :func:`tfcompress.pruning.apply_plan` prunes a fresh initialization to the same structure)."""
    morph = MorphNetRegularizer(model, regularizer, threshold=threshold, graph=graph)
    plan = morph.plan()
    return PruningResult(remove_channels(model, plan.masks, graph=morph.graph), plan)


@dataclasses.dataclass
class MorphNetResult:
    """What :func:`morphnet_prune` returns: the physically pruned ``model``, its ``plan`` (groups of the input
    model), the regularized-trained model before shrinking (``trained``), and the per-epoch ``history``."""

    model: keras.Model
    plan: PruningPlan
    trained: keras.Model
    history: list[dict[str, Any]]

    def report(self) -> dict[str, Any]:
        return {**self.plan.to_dict(), "history": self.history}


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
) -> MorphNetResult:
    """Trains a copy of ``model`` (logits or softmax classifier) on ``data`` with the MorphNet loss for
    ``epochs``, then removes its dead channels. The input model is not changed.

    The default optimizer is SGD at a constant lr 0.01 (the thesis's MorphNet runs), momentum 0.9, weight decay
    5e-4 on kernels (never on γ: it would do the gamma regularizer's work). ``callbacks`` run after the
    :class:`MorphNetCallback` (a TensorBoard callback records its scalars); ``log_dir`` gets the per-group ones.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    graph = ChannelGraph(copy)
    morphnet = MorphNetRegularizer(copy, regularizer, cost, strength=strength, threshold=threshold, table=table,
                                   precision=precision, graph=graph)
    wrapped = MorphNetModel(copy, morphnet)
    wrapped.compile(optimizer or training.finetune_sgd(0.01))
    progress = MorphNetCallback(log_dir=log_dir, verbose=verbose)
    wrapped.fit(data, epochs=epochs, callbacks=[progress, *(callbacks or [])], verbose=0)
    plan = morphnet.plan()
    pruned = remove_channels(copy, plan.masks, graph=graph)
    # the copy's layers have the original's names: the plan re-applies to ``model`` and to fresh inits
    return MorphNetResult(pruned, plan, copy, progress.history)
