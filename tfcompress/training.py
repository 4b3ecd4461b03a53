"""The training recipe shared by scripts and compression loops: SGD + Nesterov, cosine or step schedule.

The defaults follow the reference recipes (thesis §1.5 and EC2T §2.1 of REFERENCE.md): momentum 0.9, Nesterov,
lr 0.1 with cosine annealing to 0, weight decay 5e-4 on kernels (not on biases or BatchNorm γ/β).
Keras applies weight decay decoupled (w ← w − lr·wd·w), which equals L2 regularisation of strength wd/2
for plain SGD.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfcompress.surgery import iter_layers

SCHEDULES = ("cosine", "step", "constant")


def learning_rate_schedule(
    lr: float, total_steps: int, schedule: str = "cosine"
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """Learning rate as a function of the optimizer step.

    ``cosine``: lr·½(1 + cos(π·t/T)); ``step``: ×0.1 at 50 % and 75 % of training (He et al. 2016);
    ``constant``: lr.
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
    if schedule == "constant":
        return lr
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def sgd(
    lr: float = 0.1,
    total_steps: int = 1,
    schedule: str = "cosine",
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    nesterov: bool = True,
) -> keras.optimizers.SGD:
    """SGD with (Nesterov) momentum and decoupled weight decay on kernels only."""
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be ≥ 0, got {weight_decay}")
    optimizer = keras.optimizers.SGD(
        learning_rate=learning_rate_schedule(lr, total_steps, schedule),
        momentum=momentum,
        nesterov=nesterov,
        weight_decay=weight_decay or None,
    )
    if weight_decay:
        optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    return optimizer


def compile_classifier(model: keras.Model, optimizer: keras.optimizers.Optimizer | str = "adam") -> keras.Model:
    """Compiles a logits model with sparse categorical cross-entropy and accuracy."""
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )
    return model


def evaluate(model: keras.Model, dataset: tf.data.Dataset) -> dict[str, float]:
    """Top-1 accuracy and mean cross-entropy (outputs taken as logits) of ``model`` on a batched dataset.

    Uses ``predict`` rather than ``model.evaluate`` so that it neither needs nor changes the model's compile
    state.
    """
    labels = np.concatenate([np.asarray(y) for _, y in dataset])
    logits = model.predict(dataset.map(lambda x, y: x), verbose=0)
    loss = keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == labels))
    return {"accuracy": accuracy, "loss": float(np.mean(np.asarray(loss))), "examples": int(labels.size)}


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
