"""The training recipe shared by scripts and compression loops: SGD + Nesterov, cosine or step schedule.

The defaults follow the reference recipes (thesis §1.5 and EC2T §2.1 of REFERENCE.md): momentum 0.9, Nesterov,
lr 0.1 with cosine annealing to 0, weight decay 5e-4 on kernels (not on biases or BatchNorm γ/β).

**Weight decay, decoupled or coupled.** By default :func:`sgd` decays the Keras way, decoupled from the
gradient (w ← w − lr·wd·w beside the momentum step). The references couple it: an L2 term in the loss whose
gradient wd·w goes through the momentum like the loss gradient — SNIP's loss + 0.00025·Σw² (wd = 5e-4),
PyTorch's ``SGD(weight_decay=wd)`` in the thesis's and EC2T's PyTorch code; the thesis's tf.keras
``l2(1e-4)`` adds 1e-4·Σw², i.e. wd = 2e-4 here. ``weight_decay_mode="coupled"``
(:class:`CoupledWeightDecaySGD`) does that. The two agree for plain SGD; with momentum μ the coupled term is
accumulated like a gradient, so in a steady state it decays about 1/(1 − μ) times more (10× at μ = 0.9) at the
same wd.

Numbers that went wrong stop a run with a :class:`NonFiniteError` that says where: :class:`StopOnNonFinite`
during training (the epoch, the batch, the weights), :func:`evaluate` on a model whose outputs are not finite,
:func:`check_finite` wherever a model enters or leaves (loading, export). Models are taken as logits models;
one that ends in a softmax is detected (:func:`softmax_output`): :func:`compile_classifier` and
:func:`evaluate` take its outputs as probabilities, and :func:`as_batches` refuses it for scores whose loss
wants logits.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress.keras_graph import GraphWalk, as_functional, iter_layers

SCHEDULES = ("cosine", "step", "sixths", "constant")
WEIGHT_DECAY_MODES = ("decoupled", "coupled")


def learning_rate_schedule(
    lr: float, total_steps: int, schedule: str = "cosine"
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Learning rate as a function of the optimizer step.

    ``cosine``: lr·½(1 + cos(π·t/T)); ``step``: ×0.1 at 50 % and 75 % of training (He et al. 2016);
    ``sixths``: ×0.1 at every sixth of training (the EPFL SNIP reproduction's ×0.1 every 5,000 of 30,000
    iterations, at the same fractions of any length); ``constant``: lr.
    """
    if lr <= 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if total_steps < 1:
        raise ValueError(f"total_steps must be ≥ 1, got {total_steps}")
    if schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps, alpha=0.0)
    if schedule == "step":
        boundaries = [max(1, total_steps // 2), max(2, (3 * total_steps) // 4)]
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [lr, lr * 0.1, lr * 0.01])
    if schedule == "sixths":
        boundaries = [max(k, k * total_steps // 6) for k in range(1, 6)]  # strictly increasing on short runs too
        return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, [lr * 0.1**k for k in range(6)])
    if schedule == "constant":
        return lr
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


@keras.saving.register_keras_serializable(package="tfcompress")
class CoupledWeightDecaySGD(keras.optimizers.SGD):
    """SGD with L2 regularisation in the gradient: each decayed variable's gradient becomes g + λ·w before the
    (momentum) step, the gradient of loss + λ/2·‖w‖² (PyTorch's ``SGD(weight_decay=λ)``).

    Args:
        coupled_weight_decay: λ; which variables are decayed follows ``exclude_from_weight_decay`` as for
            Keras' own (decoupled) ``weight_decay``, which must stay unset.
        **kwargs: ``keras.optimizers.SGD`` arguments.

    Example::

        optimizer = CoupledWeightDecaySGD(5e-4, learning_rate=0.1, momentum=0.9)
        optimizer.exclude_from_weight_decay(var_names=["bias"])
    """

    def __init__(self, coupled_weight_decay: float = 5e-4, **kwargs: Any) -> None:
        if coupled_weight_decay < 0:
            raise ValueError(f"coupled_weight_decay must be ≥ 0, got {coupled_weight_decay}")
        if kwargs.get("weight_decay"):
            raise ValueError("CoupledWeightDecaySGD takes coupled_weight_decay, not Keras' decoupled weight_decay")
        super().__init__(**kwargs)
        self.coupled_weight_decay = coupled_weight_decay

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        # _use_weight_decay is Keras' own exclusion rule (names, variables), so both modes decay the same weights.
        if self.coupled_weight_decay and self._use_weight_decay(variable):
            gradient = keras.ops.cast(gradient, variable.dtype) + keras.ops.cast(
                self.coupled_weight_decay, variable.dtype) * variable
        super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "coupled_weight_decay": self.coupled_weight_decay}


def sgd(
    lr: float = 0.1,
    total_steps: int = 1,
    schedule: str = "cosine",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
    weight_decay_mode: str = "decoupled",
) -> keras.optimizers.SGD:
    """SGD with (Nesterov) momentum and weight decay on kernels only (not biases, BatchNorm γ or β).

    Args:
        weight_decay: wd; coupled, the L2 term is wd/2·‖w‖² (gradient wd·w).
        weight_decay_mode: "decoupled" (Keras: w ← w − lr·wd·w) or "coupled" (the references' L2 term, see the
            module docstring and :class:`CoupledWeightDecaySGD`).
    """
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
    if weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"weight_decay_mode must be one of {WEIGHT_DECAY_MODES}, got {weight_decay_mode!r}")
    learning_rate = learning_rate_schedule(lr, total_steps, schedule)
    if weight_decay_mode == "coupled":
        optimizer = CoupledWeightDecaySGD(weight_decay, learning_rate=learning_rate, momentum=momentum,
                                          nesterov=nesterov)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
                                         weight_decay=weight_decay or None)
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def sharpness(trainer: keras.Model, batches: Sequence[tuple], iterations: int = 10, *,
              variables: Sequence[Any] | None = None) -> float:
    """λ_max, the largest eigenvalue of the Hessian of ``trainer``'s loss over its trainable weights (or over
    ``variables``, the others held fixed), averaged over ``batches`` (``(x, y)``; the loss is
    ``trainer.compute_loss``: the compiled loss, or a Distiller's), by power iteration on Hessian-vector products
    (double backpropagation). All variables (BatchNorm statistics too) are as they were afterwards. ``trainer``
    must be compiled."""
    variables = list(trainer.trainable_variables if variables is None else variables)
    if not variables:
        return 0.0
    saved = [variable.numpy() for variable in trainer.weights]

    @tf.function
    def batch_hessian_times(x: Any, y: Any, vector: list[tf.Tensor]) -> list[tf.Tensor]:
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                loss = trainer.compute_loss(x, y, trainer(x, training=True), training=True)
            gradients = inner.gradient(loss, variables)
            projected = tf.add_n([tf.reduce_sum(g * v) for g, v in zip(gradients, vector, strict=True)
                                  if g is not None])
        return outer.gradient(projected, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    def hessian_times(vector: list[tf.Tensor]) -> list[tf.Tensor]:
        total = [tf.zeros_like(variable) for variable in variables]
        for x, y in batches:
            total = [t + h / len(batches) for t, h in zip(total, batch_hessian_times(x, y, vector), strict=True)]
        return total

    def norm(vector: list[tf.Tensor]) -> tf.Tensor:
        return tf.sqrt(tf.add_n([tf.reduce_sum(v * v) for v in vector]))

    vector = [tf.random.stateless_normal(v.shape, seed=(index, 0), dtype=v.dtype) for index, v in enumerate(variables)]
    eigenvalue = 0.0
    try:
        for _ in range(iterations):
            length = norm(vector)
            vector = [v / length for v in vector]
            product = hessian_times(vector)
            eigenvalue = float(tf.add_n([tf.reduce_sum(a * b) for a, b in zip(product, vector, strict=True)]))
            vector = product
    finally:
        for variable, value in zip(trainer.weights, saved, strict=True):
            variable.assign(value)
    return eigenvalue


def stability_edge(momentum: float = 0.9, nesterov: bool = True) -> float:
    """lr·λ_max above which (S)GD with this momentum diverges on a quadratic of curvature λ_max: 2(1+μ) for heavy
    ball, 2(1+μ)/(1+2μ) for Nesterov (1.36 at μ = 0.9), 2 without momentum."""
    return 2 * (1 + momentum) / (1 + 2 * momentum) if nesterov else 2 * (1 + momentum)


def stable_lr(trainer: keras.Model, batches: Sequence[tuple], lr: float, *, momentum: float = 0.9,
              nesterov: bool = True, margin: float = 0.5) -> float:
    """``lr``, or less where the loss at the current weights is too sharp for it: at most ``margin`` ×
    :func:`stability_edge` / :func:`sharpness` (the margin for λ_max's growth in training and between batches).

    Why: a rate that suits a model's training from scratch can be past the edge of stability for fine-tuning it.
    The distillation loss T²·CE(softmax(z_t/T), softmax(z/T)) keeps a curvature of about diag(q) − qqᵀ with q
    near uniform at T = 5 in every direction, where cross-entropy at a trained model is flat in most: on the
    L1-pruned reference LeNet-5 (no BatchNorm) λ_max was 152–162 at T 5 against 69 at T 1, so lr 0.01 with
    Nesterov momentum 0.9 put lr·λ_max at 1.5–1.6, past the edge of 1.36 — and the loss went from 46 to NaN in
    12 steps, or not, as the data order happened to excite the sharp direction. ``trainer`` must be compiled;
    a model whose loss has no second derivative here keeps ``lr``.

    The weights the loss does not feel the scale of (:func:`scale_invariant_variables`: a kernel whose output
    only a BatchNormalization reads) are left out: along them a step grows their norm, which flattens the loss in
    their direction — BatchNorm tunes their effective rate itself (Arora, Li & Lyu 2019) — and their curvature,
    large where their norm is small, says nothing about divergence. Counted in, a trained MobileNetV2 α 0.35 run
    at 96 px instead of 160 px (BatchNorm statistics re-estimated) got lr 3.5e-5 instead of 0.01 for its
    distillation: it stayed at 60 % where lr 0.01 reached 79.6 % (of 82.7 %) in one epoch.
    """
    if not batches:
        return lr
    invariant = scale_invariant_variables(student_of(trainer))
    try:
        curvature = sharpness(trainer, batches,
                              variables=[v for v in trainer.trainable_variables if id(v) not in invariant])
    except (LookupError, TypeError, ValueError, tf.errors.OpError):  # an op without a second-order gradient
        return lr
    if not math.isfinite(curvature) or curvature <= 0:
        return lr
    return min(lr, margin * stability_edge(momentum, nesterov) / curvature)


def scale_invariant_variables(model: keras.Model) -> set[int]:
    """``id``s of the trainable variables of ``model`` whose scale its training loss does not depend on: the
    weights of a layer (called once) whose output goes only into BatchNormalization layers, which normalize it
    by the batch's statistics in training. Empty for a model that is not functional."""
    try:
        walk = GraphWalk(model)
    except ValueError:
        return set()
    readers: dict[int, list[Any]] = {}
    calls_of: dict[int, int] = {}
    for call in walk.calls:
        calls_of[id(call.layer)] = calls_of.get(id(call.layer), 0) + 1
        for parent in call.parents:
            if parent is not None:
                readers.setdefault(id(parent), []).append(call)
    outputs = {id(walk.producer(tensor)) for tensor in walk.outputs}
    invariant: set[int] = set()
    for call in walk.calls:
        read_by = readers.get(id(call), [])
        if (read_by and all(isinstance(reader.layer, keras.layers.BatchNormalization) for reader in read_by)
                and id(call) not in outputs and calls_of[id(call.layer)] == 1):
            invariant |= {id(variable) for variable in call.layer.trainable_variables}
    return invariant


def finetune_sgd(lr: float = 8e-4) -> keras.optimizers.SGD:
    """The NetAdapt thesis's fine-tuning optimizer while pruning: SGD at a constant ``lr`` (8e-4), momentum 0.9
    (not Nesterov), weight decay 5e-4 on kernels."""
    return sgd(lr, schedule="constant", nesterov=False)


def compile_classifier(model: keras.Model, optimizer: keras.optimizers.Optimizer | str = "adam") -> keras.Model:
    """Compiles a classifier with sparse categorical cross-entropy and accuracy; its outputs are taken as
    logits, or as probabilities when it ends in a softmax (:func:`softmax_output`)."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=softmax_output(model) is None),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def compile_for(model: keras.Model, dataset: tf.data.Dataset,
                optimizer: keras.optimizers.Optimizer | str = "adam") -> keras.Model:
    """Compiles for the targets ``dataset`` holds: class labels → :func:`compile_classifier`; the original model's
    outputs (a tuple, one per head) → mean squared error on every head, i.e. distillation by matching the original's
    outputs (logits, boxes, landmarks alike: Ba & Caruana's logit regression for the classifier heads)."""
    if not isinstance(dataset.element_spec[1], tuple):
        return compile_classifier(model, optimizer)
    model.compile(optimizer=optimizer, loss=["mse"] * len(dataset.element_spec[1]))
    return model


def metric(result: dict[str, Any]) -> tuple[str, float]:
    """The headline of an :func:`evaluate` result: ("accuracy", value) or ("output error", value)."""
    return ("accuracy", result["accuracy"]) if "accuracy" in result else ("output error", result["output_error"])


def evaluate(model: keras.Model, dataset: tf.data.Dataset) -> dict[str, Any]:
    """Top-1 accuracy and mean cross-entropy (outputs taken as logits, or as probabilities after a final
    softmax) of ``model`` on a batched dataset of ``(image, label)``; on ``(image, (target_1, …))`` — the original
    model's outputs, one per head — the :func:`fidelity` of its outputs instead. ``score`` is the number to
    maximize either way (the accuracy, or 1 − the output error).

    Uses ``predict`` rather than ``model.evaluate`` so that it neither needs nor changes the model's compile
    state.

    Raises:
        NonFiniteError: a weight, or an output, is NaN or infinite (the message says which).
    """
    check_finite(model, f"model {model.name!r}")
    if isinstance(dataset.element_spec[1], tuple):
        targets = [tuple(np.asarray(head) for head in y) for _, y in dataset]
        outputs = model.predict(dataset.map(lambda x, y: x), verbose=0)
        outputs = list(outputs) if isinstance(outputs, list | tuple) else [outputs]
        if not all(np.isfinite(head).all() for head in outputs):
            raise NonFiniteError(f"model {model.name!r} outputs NaN or infinity although its weights are finite")
        return fidelity([outputs], [tuple(np.concatenate(head) for head in zip(*targets, strict=True))])
    labels = np.concatenate([np.asarray(y) for _, y in dataset])
    logits = model.predict(dataset.map(lambda x, y: x), verbose=0)
    finite = np.isfinite(logits).all(axis=tuple(range(1, logits.ndim)))
    if not finite.all():
        first = int(np.argmin(finite))
        raise NonFiniteError(
            f"model {model.name!r} outputs NaN or infinity for {int((~finite).sum())} of {finite.size} examples "
            f"(the first is example {first}) although its weights are finite: look at the inputs, or at a layer "
            "whose arithmetic overflows (e.g. a BatchNormalization moving_variance ≤ 0)"
        )
    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=softmax_output(model) is None)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == labels))
    return {"accuracy": accuracy, "loss": float(np.mean(np.asarray(loss))), "examples": int(labels.size),
            "score": accuracy}


def fidelity(outputs: Sequence[Sequence[np.ndarray]], targets: Sequence[Sequence[np.ndarray]]) -> dict[str, Any]:
    """How close a model's outputs are to the original's, head by head (batches of per-head arrays in, both).

    ``output_error`` of a head is the RMS of (output − original) over the original's standard deviation (0: the same
    outputs; 1: as far off as a constant at the mean); the model's is the worst head's. ``agreement`` is the top-1
    agreement on the first head when it has more than one value per example (a classifier head).
    """
    outputs = [np.concatenate(head) for head in zip(*outputs, strict=True)]
    targets = [np.concatenate(head) for head in zip(*targets, strict=True)]
    if len(outputs) != len(targets):
        raise ValueError(f"the model has {len(outputs)} outputs but the targets {len(targets)}")
    errors = [float(np.sqrt(np.mean((out - tgt) ** 2)) / (float(np.std(tgt)) or 1.0))
              for out, tgt in zip(outputs, targets, strict=True)]
    first_out, first_tgt = outputs[0], targets[0]
    agreement = (float(np.mean(np.argmax(first_out, -1) == np.argmax(first_tgt, -1)))
                 if first_out.ndim > 1 and first_out.shape[-1] > 1 else None)
    return {"output_error": max(errors), "per_output_error": errors, "agreement": agreement,
            "score": 1.0 - max(errors), "examples": len(first_out)}


def student_of(model: keras.Model) -> keras.Model:
    """The model a compression callback acts on: the innermost ``student`` of training wrappers (the student of a
    :class:`tfcompress.distill.Distiller`, not its frozen teacher; the model of a MorphNet wrapper, also inside a
    Distiller), else ``model`` itself."""
    while getattr(model, "student", None) is not None:
        model = model.student
    return model


# ----------------------------------------------------------------------------------- what a model must be


def softmax_output(model: keras.Model) -> str | None:
    """The name of the layer (or operation) that ends ``model`` in a softmax, i.e. makes its output
    probabilities; None for a logits model (and for a subclassed one, whose graph cannot be read).

    A softmax is a ``Softmax`` layer or ``keras.ops.softmax``, an ``Activation("softmax")``, or any layer
    built with ``activation="softmax"`` (``Dense(10, activation="softmax")``).
    """
    try:
        walk = GraphWalk(model)
    except Exception:  # subclassed, unbuilt, or a graph the walker cannot read: logits, as before detection
        return None
    if len(walk.outputs) != 1:
        return None
    call = walk.producer(walk.outputs[0])
    if call is None:
        return None
    is_softmax = type(call.layer).__name__ == "Softmax" or getattr(call.layer, "activation", None) is (
        keras.activations.softmax)
    return call.name if is_softmax else None


def nonfinite_weights(model: keras.Model) -> list[str]:
    """``"fc1/kernel (12 NaN, 0 inf of 400000)"`` for every floating-point weight of ``model`` that holds a
    NaN or an infinity."""
    found, seen = [], set()
    for variable in model.weights:
        if id(variable) in seen or not np.issubdtype(np.dtype(variable.dtype), np.floating):
            continue
        seen.add(id(variable))
        value = np.asarray(keras.ops.convert_to_numpy(variable))
        if not np.isfinite(value).all():
            found.append(f"{variable.path} ({int(np.isnan(value).sum())} NaN, {int(np.isinf(value).sum())} inf "
                         f"of {value.size})")
    return found


def check_logits(model: keras.Model, what: str) -> None:
    """Raises ValueError when ``model`` ends in a softmax but ``what`` (e.g. ``"the 'fisher' importance"``)
    takes its outputs as logits: the scores would be silently wrong."""
    softmax = softmax_output(model)
    if softmax is not None:
        raise ValueError(
            f"model {model.name!r} ends in a softmax ({softmax!r}) but {what} takes logits: give the model without "
            "its final softmax (e.g. Dense(10) instead of Dense(10, activation='softmax'))"
        )


class NonFiniteError(ValueError):
    """A NaN or an infinity where numbers must be finite: weights, outputs, a loss. The message says where."""


def check_finite(model: keras.Model, what: str) -> None:
    """Raises :class:`NonFiniteError` naming the weights of ``model`` that hold a NaN or an infinity.

    Args:
        what: how the message names the model, e.g. ``"model file 'm.keras'"``.
    """
    bad = nonfinite_weights(model)
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise NonFiniteError(f"{what} has non-finite weights: {', '.join(bad[:3])}{more}")


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops ``fit`` with a :class:`NonFiniteError` at the first batch whose loss is NaN or infinite, naming the
    epoch, the batch and the weights that went non-finite (Keras's ``TerminateOnNaN`` stops silently, and the
    program then reports chance accuracy as a result).

    Put it before callbacks that save state at the end of an epoch, so that a diverged epoch is not saved.
    """

    def __init__(self, what: str = "training"):
        super().__init__()
        self.what = what
        self._epoch = 0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self._fail(f"the loss is {float(loss)} at epoch {self._epoch + 1}, batch {batch + 1}")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if nonfinite_weights(self.model):  # a finite loss from non-finite weights (e.g. masked out)
            self._fail(f"the weights are not finite after epoch {epoch + 1}")

    def _fail(self, when: str) -> None:
        bad = nonfinite_weights(self.model)
        where = f"; non-finite weights: {', '.join(bad[:3])}" if bad else ""
        raise NonFiniteError(f"{self.what} diverged: {when}{where}. Lower the learning rate (or check the data)")


class KeepBestEpoch(keras.callbacks.Callback):
    """Ends ``fit`` with the weights of the best holdout score (:func:`evaluate`'s: the accuracy, or 1 − the output
    error on the original's outputs) among the starting weights and every epoch's, so
    that fine-tuning a trained model never leaves it worse than it began (a too-high rate or the wrong augmentation
    does); :meth:`summary` says which won. Acts on :func:`student_of` the trained model (a Distiller's student)."""

    def __init__(self, holdout: tf.data.Dataset, recalibrate_on: Any = None):
        """``recalibrate_on``: batches on which BatchNorm statistics are re-estimated before each epoch's score
        (:func:`recalibrate_batch_norm`; a momentum of 0.999 leaves them stale after a short epoch), or None."""
        super().__init__()
        self.holdout = holdout
        self.recalibrate_on = recalibrate_on
        self.scores: list[float] = []  # index 0: the starting weights; i: after epoch i
        self.best_epoch = 0
        self._best_weights: list[np.ndarray] | None = None

    def _score(self) -> float:
        return evaluate(student_of(self.model), self.holdout)["score"]

    def _keep_if_best(self, epoch: int) -> None:
        self.scores.append(self._score())
        if self._best_weights is None or self.scores[-1] > self.scores[self.best_epoch]:
            self.best_epoch, self._best_weights = epoch, [np.array(w) for w in student_of(self.model).get_weights()]

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.scores, self._best_weights, self.best_epoch = [], None, 0
        self._keep_if_best(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if self.recalibrate_on is not None:
            recalibrate_batch_norm(student_of(self.model), self.recalibrate_on)
        self._keep_if_best(epoch + 1)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.best_epoch != len(self.scores) - 1:
            student_of(self.model).set_weights(self._best_weights)

    @property
    def helped(self) -> bool:
        return self.best_epoch > 0

    def summary(self) -> str:
        trail = " → ".join(f"{score:.4f}" for score in self.scores)
        if self.helped:
            return f"holdout score (accuracy, or 1 − output error) by epoch {trail}: kept epoch {self.best_epoch}"
        return (f"holdout score (accuracy, or 1 − output error) by epoch {trail}: fine-tuning did not help, the "
                "starting weights are kept (a lower --lr, or more epochs, may)")


def recalibrate_batch_norm(model: keras.Model, batches, max_batches: int = 10) -> int:
    """Re-estimates every BatchNormalization's moving mean and variance as the plain average of the batch
    statistics over ``batches`` (images, or ``(images, labels)`` tuples), leaving all other weights alone.

    Useful after pruning or any weight surgery, whose effect on activation statistics the stored moving
    averages do not know about. Returns the number of batches used.
    """
    norms = [layer for layer in iter_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    used = 0
    try:
        for batch in batches:
            if used >= max_batches:
                break
            for layer in norms:  # moving ← k/(k+1)·moving + 1/(k+1)·batch: a running mean of batch statistics
                layer.momentum = used / (used + 1)
            model(batch[0] if isinstance(batch, tuple | list) else batch, training=True)
            used += 1
    finally:
        for layer, momentum in zip(norms, momenta, strict=True):
            layer.momentum = momentum
    return used


# ------------------------------------------------------------------------------------------ labelled batches


def _is_single_batch(data: Any) -> bool:
    return isinstance(data, tuple | list) and len(data) == 2 and hasattr(data[0], "shape")


def as_batches(
    data: Any, model: keras.Model, num_batches: int | None = 1, *, from_logits: bool = True
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Validated (x, y) numpy batches from ``data``: one ``(x, y)`` pair, a list of pairs, or a ``tf.data``
    pipeline of ``(x, y)`` batches (its first ``num_batches`` batches; all of them if None), for a loss on
    ``model``'s outputs taken as logits unless ``from_logits=False``.

    Raises:
        ValueError: a subclassed model; a model that ends in a softmax for a loss on logits; no batch; x whose
            shape does not fit the model input or that holds NaN; labels that are not integer class ids in
            [0, num_classes), one per example.
    """
    if num_batches is not None and num_batches < 1:
        raise ValueError(f"num_batches must be ≥ 1, got {num_batches}")
    as_functional(model)  # refuses a subclassed model by name (no input_shape to check batches against)
    if isinstance(model.output_shape, list) and len(model.output_shape) > 1:
        raise ValueError(f"model {model.name!r} has {len(model.output_shape)} outputs: this score's loss is a "
                         "classifier's on one output; score a model with several outputs by weights (l1, l2, bn, "
                         "magnitude) or apply a saved plan")
    if from_logits:
        check_logits(model, "this score's loss")
    if _is_single_batch(data):
        raw = [tuple(data)]
    elif isinstance(data, tf.data.Dataset):
        raw = list(data.take(num_batches) if num_batches is not None else data)
    elif isinstance(data, Iterable):
        raw = list(data)[:num_batches] if num_batches is not None else list(data)
    else:
        raise ValueError(f"batches must be an (x, y) pair, a list of pairs or a tf.data.Dataset, got {type(data)}")
    if not raw:
        raise ValueError("no batch to compute the saliency on: give at least one (x, y) batch")
    return [_check_batch(batch, model, index) for index, batch in enumerate(raw)]


def _check_batch(batch: Any, model: keras.Model, index: int) -> tuple[np.ndarray, np.ndarray]:
    if not (isinstance(batch, tuple | list) and len(batch) == 2):
        raise ValueError(f"batch {index} must be an (images, labels) pair, got {type(batch).__name__}")
    x, y = (np.asarray(part) for part in batch)
    expected = tuple(model.input_shape[1:])
    if x.ndim != len(expected) + 1 or any(e is not None and e != d for e, d in zip(expected, x.shape[1:], strict=True)):
        raise ValueError(
            f"batch {index}: images of shape {x.shape} do not fit model input (batch, {', '.join(map(str, expected))})"
        )
    if x.shape[0] == 0:
        raise ValueError(f"batch {index} is empty")
    if np.issubdtype(x.dtype, np.floating) and not np.isfinite(x).all():
        raise NonFiniteError(f"batch {index}: the images hold {int((~np.isfinite(x)).sum())} NaN or infinite values")
    num_classes = model.output_shape[-1]
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        hint = " (one-hot? pass np.argmax(labels, -1))" if y.ndim == 2 and y.shape[1] == num_classes else ""
        raise ValueError(
            f"batch {index}: labels must be integer class ids of shape ({x.shape[0]},), got shape {y.shape}{hint}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            raise ValueError(f"batch {index}: labels must be integer class ids, got {y.dtype} values like {y[:3]}")
        y = y.astype(np.int64)
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"batch {index}: labels must be in [0, {num_classes}) for a model with {num_classes} outputs, "
            f"got range [{y.min()}, {y.max()}]"
        )
    return x.astype(np.float32), y.astype(np.int64)
