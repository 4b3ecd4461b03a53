"""The stages a recipe chains: each takes the model so far and the run's :class:`Context`, returns the next model.

A stage is a function ``stage(model, context, **params) -> keras.Model`` in :data:`STAGES`; its keyword
arguments are what a recipe entry may give (checked before the run, with the function's ``check`` when it
has one). A new stage is one function here and one entry in ``STAGES``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress import data, decomposition, distill, export, resolution, training
from tfcompress.pruning import channels, fisher, magnitude, morphnet, netadapt, snip
from tfcompress.quantization import ec2t, ttq

PRUNE_METHODS = ("uniform", "l1", "l2", "bn", "random", "taylor", "snip", "fisher", "netadapt")
SPARSIFY_METHODS = ("magnitude", "snip")
PRECISIONS = ("float32", "float16", "dynamic", "int8")


@dataclasses.dataclass
class Context:
    """What every stage may use.

    Attributes:
        original: the model the run started from (the default teacher of ``distill``).
        train: labelled training batches (augmented and shuffled as the caller wants).
        holdout: labelled batches not trained on, for NetAdapt's and evaluation-led choices (None: the stages
            that need it refuse).
        test: the labelled test batches every row's accuracy is measured on.
        table: the device's latency table, for latency targets (``tfcompress.latency.Table``), or None.
        progress: called with a line of news (e.g. ``print``), or None.
    """

    original: keras.Model
    train: tf.data.Dataset
    test: tf.data.Dataset
    holdout: tf.data.Dataset | None = None
    table: Any = None
    progress: Callable[[str], None] | None = None

    def say(self, line: str) -> None:
        if self.progress is not None:
            self.progress(line)

    @classmethod
    def of_dataset(cls, original: keras.Model, dataset: str, *, image_size: int | None = None,
                   batch_size: int = 128, holdout_fraction: float = 0.1, train_limit: int | None = None,
                   seed: int = 0, augment: bool = True,
                   progress: Callable[[str], None] | None = print) -> Context:
        """The usual fine-tuning data of ``dataset``: shuffled training batches (``train_limit`` images per
        epoch, None: all; ``augment``: random crop and flip) with ``holdout_fraction`` of the training split kept
        out as the holdout, and the test split."""
        opts = {"image_size": image_size, "batch_size": batch_size}
        return cls(
            original=original,
            train=data.load(dataset, "train", holdout_fraction=holdout_fraction, augment=augment, shuffle=True,
                            seed=seed, limit=train_limit, **opts),
            holdout=data.load(dataset, "holdout", holdout_fraction=holdout_fraction, **opts),
            test=data.load(dataset, "test", **opts),
            progress=progress,
        )


    @classmethod
    def of_data(cls, original: keras.Model, model_data: data.ModelData, *, batch_size: int = 128,
                holdout_fraction: float = 0.1, train_limit: int | None = None, seed: int = 0, augment: bool = False,
                progress: Callable[[str], None] | None = print) -> Context:
        """The fine-tuning data of the user's images (:class:`tfcompress.data.ModelData`; unlabelled ones are
        labelled by ``original`` first): shuffled training batches (``augment``: random crop and flip, off unless
        asked), ``holdout_fraction`` of them kept out as the holdout, and the test images."""
        model_data = model_data.labelled_by(original, batch_size=batch_size)
        return cls(
            original=original,
            train=model_data.batches("train", batch_size=batch_size, holdout_fraction=holdout_fraction,
                                     augment=augment, shuffle=True, seed=seed, limit=train_limit),
            holdout=model_data.batches("holdout", batch_size=batch_size, holdout_fraction=holdout_fraction),
            test=model_data.batches("test", batch_size=batch_size),
            progress=progress,
        )


def _one_target(**targets: Any) -> dict[str, Any]:
    given = {name: value for name, value in targets.items() if value is not None}
    if len(given) != 1:
        raise ValueError(f"give exactly one of {', '.join(targets)}; got {', '.join(given) or 'none'}")
    return given


# ------------------------------------------------------------------------------------------------- pruning


#: training batches over which BatchNorm statistics are re-estimated after surgery and after every fine-tune epoch:
#: a BatchNorm with momentum 0.999 (keras.applications') barely moves its statistics in a short fine-tune, and
#: pruned channels change the statistics of the layers after them (a 5 % uniform prune of a trained MobileNetV2:
#: 87 % → 46 %, 78 % once re-estimated)
BATCH_NORM_BATCHES = 10


def prune(model: keras.Model, context: Context, method: str = "l1", target_macs: float | None = None,
          target_channels: float | None = None, target_params: float | None = None,
          target_latency: float | str | None = None, precision: str = "float32", min_channels: int = 1,
          steps: int | None = None, prune_every: int = 100) -> keras.Model:
    """Removes channels: ``method`` uniform, l1, l2, bn, random, taylor, snip (one-shot, to a target of MACs,
    channels, params or latency), fisher (Fisher pruning while training: one channel every ``prune_every``
    steps, the thesis's 100; ``steps`` at most) or netadapt (to a latency target with the table). Latency targets
    use ``context.table`` at ``precision``."""
    target = _one_target(target_macs=target_macs, target_channels=target_channels, target_params=target_params,
                         target_latency=target_latency)
    if "target_latency" in target and context.table is None:
        raise ValueError(f"prune(method={method}) to a target_latency needs the device's latency table")
    if method == "netadapt":
        result = netadapt.netadapt(model, context.train, _holdout(context, "netadapt"), table=context.table,
                                   target_latency=target_latency, precision=precision, min_channels=min_channels,
                                   progress=context.progress)
        return _recalibrated(result.model, context)
    if method == "fisher":
        result = fisher.fisher_prune(model, context.train, **target, table=context.table, precision=precision,
                                     min_channels=min_channels, max_steps=steps, prune_every=prune_every)
        return _recalibrated(result.model, context)
    latency = {}
    if "target_latency" in target:
        latency = {"cost_fn": context.table.cost_fn(model, precision), "target_latency": target_latency}
        target = {}
    data = {"data": context.train} if method in ("taylor", "snip") else {}
    return _recalibrated(
        channels.prune_channels(model, method, **target, **latency, min_channels=min_channels, **data).model, context)


def _recalibrated(model: keras.Model, context: Context) -> keras.Model:
    """``model`` with its BatchNorm statistics re-estimated on training images (see :data:`BATCH_NORM_BATCHES`)."""
    training.recalibrate_batch_norm(model, context.train, max_batches=BATCH_NORM_BATCHES)
    return model


def _check_prune(method: str = "l1", target_macs: float | None = None, target_channels: float | None = None,
                 target_params: float | None = None, target_latency: float | str | None = None,
                 precision: str = "float32", **_: Any) -> None:
    if method not in PRUNE_METHODS:
        raise ValueError(f"unknown method {method!r}; methods: {', '.join(PRUNE_METHODS)}")
    given = _one_target(target_macs=target_macs, target_channels=target_channels, target_params=target_params,
                        target_latency=target_latency)
    if method == "netadapt" and "target_latency" not in given:
        raise ValueError("netadapt prunes to a target_latency")
    if precision not in ("float32", "int8"):
        raise ValueError(f"precision of a latency table is float32 or int8, got {precision!r}")


prune.check = _check_prune


def morphnet_stage(model: keras.Model, context: Context, target_flops: float | None = None,
                   target_params: float | None = None, target_latency: float | str | None = None,
                   precision: str = "float32", regularizer: str = "group_lasso", epochs: int = 1, trials: int = 6,
                   tolerance: float = 0.05, lr: float = 0.05, strength: float | None = None,
                   max_accuracy_drop: float = 10.0) -> keras.Model:
    """MorphNet to a target (:func:`tfcompress.pruning.morphnet.morphnet_to_target`): the regularization strength
    searched in guarded runs of ``epochs`` until the pruned model keeps ``target_flops``, ``target_params`` or
    ``target_latency`` (a fraction of the predicted latency, or "1.5ms"; ``context.table`` at ``precision``) within
    ``tolerance``; a run losing more than ``max_accuracy_drop`` holdout points counts as too strong. Fine-tune
    after it."""
    (name, value), = _one_target(target_flops=target_flops, target_params=target_params,
                                 target_latency=target_latency).items()
    measure = name.removeprefix("target_")
    if measure == "latency":
        if context.table is None:
            raise ValueError("morphnet to a target_latency needs the device's latency table")
        value = channels.latency_fraction(value, context.table.predict(model, precision).ms * 1000)
    result = morphnet.morphnet_to_target(
        model, context.train, target=value, measure=measure, holdout=_holdout(context, "morphnet"),
        max_accuracy_drop=max_accuracy_drop, tolerance=tolerance, trials=trials, epochs=epochs, lr=lr,
        strength=strength, regularizer=regularizer, table=context.table, precision=precision, say=context.say)
    return _recalibrated(result.model, context)


def _check_morphnet(target_flops: float | None = None, target_params: float | None = None,
                    target_latency: float | str | None = None, precision: str = "float32",
                    regularizer: str = "group_lasso", epochs: int = 1, trials: int = 6, tolerance: float = 0.05,
                    lr: float = 0.05, strength: float | None = None, max_accuracy_drop: float = 10.0) -> None:
    (name, value), = _one_target(target_flops=target_flops, target_params=target_params,
                                 target_latency=target_latency).items()
    if name != "target_latency" and not 0 < value < 1:
        raise ValueError(f"{name} is the fraction kept, in (0, 1); got {value}")
    if regularizer not in morphnet.REGULARIZERS:
        raise ValueError(f"unknown regularizer {regularizer!r}; regularizers: {', '.join(morphnet.REGULARIZERS)}")
    if epochs < 1 or trials < 1 or not 0 < tolerance < 1 or lr <= 0 or max_accuracy_drop <= 0:
        raise ValueError(f"need epochs ≥ 1, trials ≥ 1, 0 < tolerance < 1, lr > 0 and max_accuracy_drop > 0; got "
                         f"{epochs}, {trials}, {tolerance}, {lr} and {max_accuracy_drop}")
    if precision not in ("float32", "int8"):
        raise ValueError(f"precision of a latency table is float32 or int8, got {precision!r}")


morphnet_stage.check = _check_morphnet


def sparsify(model: keras.Model, context: Context, method: str = "magnitude", sparsity: float = 0.5) -> keras.Model:
    """Unstructured sparsity: zero the ``sparsity`` fraction of prunable weights with the smallest magnitude, or
    by SNIP's connection sensitivity on a training batch (scored on the model's weights); the zeros are kept by
    weight masks through later fine-tuning."""
    if method == "magnitude":
        return magnitude.prune_magnitude(model, sparsity)
    batch = next(iter(context.train))
    return snip.prune(model, batch, sparsity, init="model", train_init="same").model


def _check_sparsify(method: str = "magnitude", sparsity: float = 0.5) -> None:
    if method not in SPARSIFY_METHODS:
        raise ValueError(f"unknown method {method!r}; methods: {', '.join(SPARSIFY_METHODS)}")
    if not 0.0 < sparsity < 1.0:
        raise ValueError(f"sparsity is the fraction of weights removed, in (0, 1); got {sparsity}")


sparsify.check = _check_sparsify


# ---------------------------------------------------------------------------------- decomposition, ternary


def decompose(model: keras.Model, context: Context, method: str = "data_free", compression_factor: float = 0.5,
              max_acc_loss: float = 0.02, sparsity_weight: float | str = "inf", structure: str = "unstructured",
              holdout_limit: int = 1000) -> keras.Model:
    """Tucker / SVD decomposition (:func:`tfcompress.decomposition.decompose`); by default data-free without a
    sparse residual (``sparsity_weight="inf"``: LiteRT runs a residual as a dense convolution)."""
    holdout = None
    if method == "evaluation":
        images, labels = zip(*_holdout(context, "evaluation-led decomposition").unbatch().take(holdout_limit)
                             .as_numpy_iterator(), strict=True)
        holdout = (np.stack(images), np.stack(labels))
    result = decomposition.decompose(model, method=method, compression_factor=compression_factor,
                                     max_acc_loss=max_acc_loss, holdout=holdout, structure=structure,
                                     sparsity_weight=float(sparsity_weight), progress=context.progress)
    return result.model


def _check_decompose(method: str = "data_free", compression_factor: float = 0.5, structure: str = "unstructured",
                     **_: Any) -> None:
    if method not in ("data_free", "evaluation"):
        raise ValueError(f"method is data_free or evaluation, got {method!r}")
    if not 0.0 < compression_factor < 1.0:
        raise ValueError(f"compression_factor is in (0, 1), got {compression_factor}")
    decomposition.Structure.parse(structure)


decompose.check = _check_decompose


def ternarize(model: keras.Model, context: Context, method: str = "ec2t", epochs: int = 1, retrain_epochs: int = 0,
              lambda_max_divr: float = 0.15, threshold: float = ttq.DEFAULT_THRESHOLD,
              learning_rate: float | None = None) -> keras.Model:
    """Ternary weights (three values per layer) trained ``epochs`` with EC2T (then ``retrain_epochs`` with the
    assignment frozen) or TTQ, on the layers the reference ternarizes, each with its reference's optimizer
    (``learning_rate`` None: its learning rate)."""
    rate = {} if learning_rate is None else {"learning_rate": learning_rate}
    if method == "ec2t":
        ternary_model = ec2t.ternarize(model)
        ec2t.train(ternary_model, context.train, epochs, retrain_epochs, lambda_max_divr=lambda_max_divr, **rate,
                   verbose=0)
    else:
        ternary_model = ttq.ternarize(model, threshold)
        ttq.train(ternary_model, context.train, epochs, threshold=threshold, **rate, verbose=0)
    return ternary_model


def _check_ternarize(method: str = "ec2t", epochs: int = 1, retrain_epochs: int = 0, **_: Any) -> None:
    if method not in ("ec2t", "ttq"):
        raise ValueError(f"method is ec2t or ttq, got {method!r}")
    if epochs < 1 or retrain_epochs < 0:
        raise ValueError(f"need epochs ≥ 1 and retrain_epochs ≥ 0, got {epochs} and {retrain_epochs}")


ternarize.check = _check_ternarize


# ------------------------------------------------------------------------------------------------ training


#: batches over which the loss's sharpness is measured before every fine-tune and distillation
SHARPNESS_BATCHES = 2


def finetune(model: keras.Model, context: Context, epochs: int = 1, lr: float = 0.01, teacher: str | None = None,
             alpha: float = distill.THESIS_DEFAULTS["alpha"],
             temperature: float = distill.THESIS_DEFAULTS["temperature"]) -> keras.Model:
    """Trains ``epochs`` (SGD, Nesterov momentum 0.9, cosine from ``lr``, or from less where the loss at these
    weights is too sharp for it: :func:`training.stable_lr`); with ``teacher`` ("original": the run's input
    model, or a .keras path) by knowledge distillation. With a holdout in the context, the weights of the best
    holdout epoch are kept, the starting ones included (:class:`training.KeepBestEpoch`). Weight masks keep their
    zeros; ternary layers stay ternary (their assignment is whatever it was). When the targets are the original's
    outputs (a model with several heads, from images without labels), training matches them on every head
    (:func:`training.compile_for`): that is distillation from the original (the only teacher it takes)."""
    steps = epochs * int(context.train.cardinality())
    trainer: keras.Model = model
    if isinstance(context.train.element_spec[1], tuple):
        if teacher not in (None, "original"):
            raise ValueError(f"the targets are the original model's outputs, so it is the teacher; teacher "
                             f"{teacher!r} cannot teach without class labels: drop it, or give labelled data")

        def compile_with(rate: float) -> None:
            training.compile_for(model, context.train, training.sgd(rate, steps, "cosine"))
    elif teacher is None:
        def compile_with(rate: float) -> None:
            training.compile_classifier(model, training.sgd(rate, steps, "cosine"))
    else:
        source = context.original if teacher == "original" else export.load_keras_model(teacher)
        trainer = distill.Distiller(model, source, alpha=alpha, temperature=temperature)

        def compile_with(rate: float) -> None:
            trainer.compile(training.sgd(rate, steps, "cosine"))
    # lr is the most it may use: less where the loss at these weights is too sharp for it (training.stable_lr)
    compile_with(lr)
    rate = training.stable_lr(trainer, list(context.train.take(SHARPNESS_BATCHES)), lr)
    if rate < lr:
        context.say(f"lr {lr:g} is past the edge of stability of this loss at these weights: training at "
                    f"{rate:.3g}")
        compile_with(rate)
    callbacks: list[keras.callbacks.Callback] = [training.StopOnNonFinite()]
    if context.holdout is not None:  # never leaves the model worse than it began (on data it did not train on)
        best = training.KeepBestEpoch(context.holdout, recalibrate_on=context.train.take(BATCH_NORM_BATCHES))
        callbacks.append(best)
    trainer.fit(context.train, epochs=epochs, verbose=0, callbacks=callbacks)
    if context.holdout is not None and not best.helped:
        context.say(best.summary())
    return model


def _check_finetune(epochs: int = 1, lr: float = 0.01, teacher: str | None = None, alpha: float = 0.1,
                    temperature: float = 5.0) -> None:
    if epochs < 1 or lr <= 0:
        raise ValueError(f"need epochs ≥ 1 and lr > 0, got {epochs} and {lr}")
    if teacher not in (None, "original") and not Path(teacher).is_file():
        raise ValueError(f"teacher is \"original\" (the run's input model) or a .keras file; {teacher!r} is neither")
    if not 0 <= alpha <= 1 or temperature <= 0:
        raise ValueError(f"need 0 ≤ alpha ≤ 1 and temperature > 0, got {alpha} and {temperature}")


finetune.check = _check_finetune


def distill_stage(model: keras.Model, context: Context, epochs: int = 1, lr: float = 0.01,
                  teacher: str = "original", alpha: float = distill.THESIS_DEFAULTS["alpha"],
                  temperature: float = distill.THESIS_DEFAULTS["temperature"]) -> keras.Model:
    """:func:`finetune` with a teacher, by default the run's input model."""
    return finetune(model, context, epochs, lr, teacher, alpha, temperature)


distill_stage.check = _check_finetune


def resize_input(model: keras.Model, context: Context, size: int) -> keras.Model:
    """Runs the network on ``size`` px behind a ``Resizing`` layer that keeps the model's input
    (:func:`tfcompress.resolution.rescale_input`): the same weights on fewer pixels, BatchNorm statistics
    re-estimated at that size (the features' statistics change with the scale of objects: Touvron et al. 2019,
    "FixRes"; a trained MobileNetV2 at 96 instead of 160 px: 23.6 %, 39.3 % re-estimated, of 82.7 %); fine-tune
    after it."""
    return _recalibrated(resolution.rescale_input(model, size), context)


def _check_resize_input(size: int = 0) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ValueError(f"size is the new input size in pixels, a positive integer; got {size!r}")


resize_input.check = _check_resize_input


# ------------------------------------------------------------------------------------ export and measurement


def quantize(model: keras.Model, context: Context, precision: str = "int8") -> keras.Model:
    """Sets the export precision of this and every later row (and of the final .tflite): float32, float16,
    dynamic (int8 weights) or int8 (full integer, calibrated on training images). The model is unchanged."""
    return model


def _check_quantize(precision: str = "int8") -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"precision is one of {', '.join(PRECISIONS)}, got {precision!r}")


quantize.check = _check_quantize


def evaluate(model: keras.Model, context: Context) -> keras.Model:
    """Measures a row (every stage does; this one changes nothing): a checkpoint in the table."""
    return model


def _holdout(context: Context, who: str) -> tf.data.Dataset:
    if context.holdout is None:
        raise ValueError(f"{who} needs holdout data (labelled batches not trained on)")
    return context.holdout


STAGES: dict[str, Callable[..., keras.Model]] = {
    "prune": prune,
    "morphnet": morphnet_stage,
    "resize_input": resize_input,
    "sparsify": sparsify,
    "decompose": decompose,
    "ternarize": ternarize,
    "finetune": finetune,
    "distill": distill_stage,
    "quantize": quantize,
    "evaluate": evaluate,
}

__all__ = ["PRECISIONS", "PRUNE_METHODS", "STAGES", "Context"]
