"""Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017): the baseline EC2T improves on.

Each ternarized layer keeps a full-precision kernel W and learns two scales w_p, w_n (the same layers and
gradients as EC2T: :mod:`tfcompress.quantization.ternary`; TTQ's official code has the exact w_n sign). The
assignment uses a fixed threshold relative to the layer's largest weight (the paper normalizes W to [−1, 1]
and uses t = 0.05):

    Δ = t·max|W|;   A = +1 where W > Δ,  −1 where W < −Δ,  0 elsewhere

recomputed after every step from the updated W. Unlike EC2T there is no floor on the scales, as in the paper.

**Recipe.** By default (``scale_init="ones"``, ``recipe="official"``) the baseline is trained as the official
CIFAR-10 ResNet code (czhu95/ternarynet, ``examples/Ternary-Net/tw-cifar10-resnet.py`` and ``ternary.py``):
w_p = w_n = 1.0 at the start; one momentum SGD optimizer for every weight, scales included (lr 0.1, momentum
0.9, no Nesterov); L2 regularization 2e-4·½‖w‖² on kernels and scales (not BatchNorm, not biases); lr ÷10 at
epochs 82, 123 and 150 — tensorpack's CIFAR ResNet schedule (He et al. 2016: 32 k and 48 k of 64 k iterations
at batch 128, i.e. epochs 82 and 123 of 164) with one more step. Here the steps fall at the same fractions of
``epochs`` (82/164, 123/164, 150/164), so a short fine-tune ends at a small learning rate too;
``decay_epochs`` gives them explicitly. (The committed script runs 400 epochs; its published ResNet-20 log
follows tensorpack's base schedule instead, whose last step is 2e-4 at epoch 300.) The official runs used two
GPUs of 128 images each; here the batch is the dataset's.

Both official networks (CIFAR ResNets, AlexNet) follow every ternary layer with BatchNormalization, which makes
the scale of W_t irrelevant to the forward pass: scales of 1.0 and lr 0.1 assume it. Without it (e.g. LeNet-5,
squeeze-excite convolutions) they blow the activations up and training can diverge;
:func:`layers_without_batch_norm` names such layers.

``recipe="ec2t"`` with ``scale_init="mean"`` is the former, weaker baseline: EC2T's optimizer (Adam 1e-4 for
the model and shadow weights, 1e-5 for the scales) and scales starting at the mean magnitude on each side of
the threshold (the least-squares ternary scale of Li & Liu 2016, TWN).

The official code also ternarizes the classifier (its exclusion tests for ``fct``, but the layer is named
``linear``) although its comment and the paper keep the first and last layers full precision; the default
selection here keeps them full precision.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf
from keras import ops

from tfcompress.keras_graph import GraphWalk
from tfcompress.quantization import ternary

DEFAULT_THRESHOLD = 0.05
RECIPES = ("official", "ec2t")
SCALE_INITS = ("ones", "mean")
# The official CIFAR-10 ResNet recipe (tw-cifar10-resnet.py).
OFFICIAL_LEARNING_RATE = 0.1
OFFICIAL_MOMENTUM = 0.9
OFFICIAL_L2 = 2e-4  # wd_w·tf.nn.l2_loss(W) = 2e-4·½‖W‖²; its ×0.2 per 480 k steps never triggers on CIFAR
OFFICIAL_DECAY_FRACTIONS = (82 / 164, 123 / 164, 150 / 164)  # lr ÷10 at epochs 82, 123, 150 of He et al.'s 164
EC2T_LEARNING_RATE = 1e-4


def _check_threshold(threshold: float) -> None:
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1) (a fraction of max|W|; the paper uses 0.05), got {threshold}")


def ttq_assignment(W: tf.Tensor, threshold: float = DEFAULT_THRESHOLD) -> tf.Tensor:
    """A = sign(W) where |W| > t·max|W|, else 0 (float32, W's shape)."""
    W = tf.cast(W, tf.float32)
    Delta = threshold * tf.reduce_max(tf.abs(W))
    return tf.cast(tf.greater(W, Delta), tf.float32) - tf.cast(tf.less(W, -Delta), tf.float32)


def initial_scales(W: tf.Tensor, A: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(w_p, w_n): mean |W| over A = +1 and over A = −1 (mean |W| of the layer when a side is empty)."""
    W = tf.abs(tf.cast(W, tf.float32))
    fallback = tf.reduce_mean(W)

    def side_mean(mask: tf.Tensor) -> tf.Tensor:
        count = tf.reduce_sum(mask)
        return tf.where(count > 0, tf.reduce_sum(W * mask) / tf.maximum(count, 1.0), fallback)

    return side_mean(tf.cast(A > 0, tf.float32)), side_mean(tf.cast(A < 0, tf.float32))


def initializer(threshold: float = DEFAULT_THRESHOLD, scale_init: str = "ones"):
    """The TTQ initialization of a ternary layer: thresholded assignment; scales 1.0 (``"ones"``, the official
    code) or the mean magnitudes (``"mean"``, :func:`initial_scales`)."""
    _check_threshold(threshold)
    if scale_init not in SCALE_INITS:
        raise ValueError(f"scale_init must be one of {SCALE_INITS}, got {scale_init!r}")

    def initialize(layer: ternary.TernaryMixin) -> None:
        W = tf.convert_to_tensor(layer.kernel)
        A = ttq_assignment(W, threshold)
        w_p, w_n = initial_scales(W, A) if scale_init == "mean" else (1.0, 1.0)
        layer.w_p.assign(w_p)
        layer.w_n.assign(w_n)
        layer.assignment.assign(A)

    return initialize


def ternarize(
    model: keras.Model,
    threshold: float = DEFAULT_THRESHOLD,
    layers: Sequence[str] | None = None,
    *,
    scale_init: str = "ones",
    wn_gradient: str = "exact",
    ternarize_shortcuts: bool = False,
) -> keras.Model:
    """A copy of ``model`` with the chosen layers ternary and TTQ-initialized.

    Args:
        model: a trained functional or Sequential model.
        threshold: t, the threshold as a fraction of max|W| (0.05 in the paper and the official code).
        layers: layer names; None = EC2T's default selection (every Conv2D except the stem and the 1×1
            projection shortcuts).
        scale_init: "ones" (w_p = w_n = 1.0, the official code) or "mean" (mean magnitude on each side).
        wn_gradient: "exact" (the official code's) or "reference" (the EC2T reference's sign).
        ternarize_shortcuts: with ``layers=None``, also ternarize the projection shortcuts.
    """
    return ternary.ternarize(
        model, layers, wn_gradient=wn_gradient, ternarize_shortcuts=ternarize_shortcuts,
        initialize=initializer(threshold, scale_init),
    )


def layers_without_batch_norm(model: keras.Model) -> list[str]:
    """Names of the ternary layers of ``model`` whose output is not (only) normalized by BatchNormalization:
    the official recipe's scales of 1.0 change their output's scale."""
    walk = GraphWalk(model)
    normalized: dict[int, bool] = {}
    for call in walk.calls:
        for tensor in call.inputs:
            producer = walk.producer(tensor)
            if producer is not None and isinstance(producer.layer, ternary.TernaryMixin):
                is_bn = isinstance(call.layer, keras.layers.BatchNormalization)
                normalized[id(producer)] = normalized.get(id(producer), True) and is_bn
    return [call.layer.name for call in walk.calls
            if isinstance(call.layer, ternary.TernaryMixin) and not normalized.get(id(call), False)]


class TTQ(ternary.AssignmentCallback):
    """Keras callback re-assigning every ternary layer with the TTQ threshold after each training step.

    Args:
        threshold: t, as a fraction of max|W|.
        layers: the ternary layers to handle; None = all of the model's.
        log_dir: write the per-epoch summaries of :class:`~tfcompress.quantization.ternary.AssignmentCallback`
            (under ``ttq/``) here; by default into a ``keras.callbacks.TensorBoard`` of the same ``fit`` or a
            ``tf.summary`` default writer.
    """

    summary_prefix = "ttq"

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, layers: Sequence[ternary.TernaryMixin] | None = None,
                 log_dir: str | None = None):
        _check_threshold(threshold)
        super().__init__(layers, log_dir=log_dir)
        self.threshold = float(threshold)

    def update(self, layers: list[ternary.TernaryMixin], numels: list[int]) -> None:
        for layer in layers:
            layer.assignment.assign(ttq_assignment(tf.convert_to_tensor(layer.kernel), self.threshold))


@keras.saving.register_keras_serializable(package="tfcompress")
class L2SGD(keras.optimizers.SGD):
    """Momentum SGD whose gradients include ``l2``·w for every variable but biases and BatchNorm γ/β.

    This is TF1's ``l2·tf.nn.l2_loss(w)`` added to the loss, as TTQ's official code does: unlike Keras's
    (decoupled) ``weight_decay``, the term goes through the momentum.
    """

    def __init__(
        self, learning_rate: float = OFFICIAL_LEARNING_RATE, momentum: float = OFFICIAL_MOMENTUM,
        l2: float = OFFICIAL_L2, **kwargs: Any,
    ) -> None:
        if l2 < 0:
            raise ValueError(f"l2 must be ≥ 0, got {l2}")
        super().__init__(learning_rate=learning_rate, momentum=momentum, **kwargs)
        self.l2 = float(l2)

    @staticmethod
    def is_regularized(variable: Any) -> bool:
        # Names as "layer/kernel:0" (mirrored copies: "layer/kernel/replica_1:0"), see ternary.CentroidAdam.
        segments = variable.name.split(":")[0].split("/")
        return not {"bias", "gamma", "beta"} & set(segments[-2:])

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        if self.l2 and self.is_regularized(variable):
            gradient = ops.add(gradient, ops.multiply(ops.cast(variable, gradient.dtype), self.l2))
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "l2": self.l2}


def official_decay_epochs(epochs: int) -> tuple[int, ...]:
    """The epochs (0-based) from which the official recipe's lr is ÷10, ÷100, ÷1000: 82/164, 123/164 and
    150/164 of ``epochs``, each at least 1 (the first epoch always runs at the full rate)."""
    return tuple(max(1, round(fraction * epochs)) for fraction in OFFICIAL_DECAY_FRACTIONS)


def stepped_learning_rate(epoch: int, learning_rate: float, decay_epochs: Sequence[int]) -> float:
    """``learning_rate`` ÷10 for every entry of ``decay_epochs`` ≤ ``epoch`` (0-based)."""
    return learning_rate * 0.1 ** sum(epoch >= boundary for boundary in decay_epochs)


def train(
    model: keras.Model,
    train_data: Any,
    epochs: int,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    recipe: str = "official",
    learning_rate: float | None = None,
    centroid_learning_rate: float = 1e-5,
    decay_epochs: Sequence[int] | None = None,
    validation_data: Any = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: Any = "auto",
) -> dict[str, list[float]]:
    """Trains a TTQ-ternarized model (:func:`ternarize`); returns the Keras history.

    Args:
        recipe: "official" (momentum SGD with L2 and the stepped schedule of the official code, see the module
            docstring) or "ec2t" (EC2T's Adam, ``centroid_learning_rate`` for the scales).
        learning_rate: the initial learning rate; None = the recipe's (0.1 official, 1e-4 ec2t).
        centroid_learning_rate: the scales' Adam learning rate (``recipe="ec2t"`` only).
        decay_epochs: official recipe: 0-based epochs from which the lr drops ÷10 each; None =
            :func:`official_decay_epochs` of ``epochs``.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be ≥ 1, got {epochs}")
    if recipe not in RECIPES:
        raise ValueError(f"recipe must be one of {RECIPES}, got {recipe!r}")
    if learning_rate is not None and not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate}")
    if recipe == "ec2t":
        return ternary.fit(
            model, train_data, epochs, TTQ(threshold), learning_rate=learning_rate or EC2T_LEARNING_RATE,
            centroid_learning_rate=centroid_learning_rate, validation_data=validation_data, callbacks=callbacks,
            verbose=verbose,
        )
    base = learning_rate or OFFICIAL_LEARNING_RATE
    steps = tuple(official_decay_epochs(epochs) if decay_epochs is None else decay_epochs)
    schedule = keras.callbacks.LearningRateScheduler(lambda epoch, lr: stepped_learning_rate(epoch, base, steps))
    return ternary.fit(
        model, train_data, epochs, TTQ(threshold), validation_data=validation_data,
        callbacks=[schedule, *callbacks], verbose=verbose, optimizer=L2SGD(base),
    )
