"""EC2T: entropy-constrained trained ternarization (Marbán, Becking, Wiedemann, Samek, CVPR-W 2020).

"Learning Sparse & Ternary Neural Networks with Entropy-Constrained Trained Ternarization", as coded in
d-becking/efficientCNNs (``model_quantization/quantizer.py``). Each ternarized layer l keeps a full-precision
kernel W, centroids w_p, w_n > 0 and an assignment A ∈ {−1, 0, +1} (:mod:`tfcompress.quantization.ternary`).
After every training step the assignment is recomputed:

1. floor the centroids, w_x ← max(w_x, 0.675·std(W)) (keeps a layer from turning binary or unary);
2. preliminary nearest-centroid assignment → probabilities P = (P_−, P_0, P_+), with P_0 forced ≥ ½
   (P_− and P_+ reduced in proportion), then information content I_c = −log2 P_c;
3. Λ_x,max = (|ext_x|² − (w_x − |ext_x|)²) / (I_x − I_0), ext_x the layer's extreme weight on side x: the Λ at
   which that extreme weight would cost as much at 0 as at its centroid;
4. Λ = min(Λ_+,max, Λ_−,max) · lambda_max_divr · δ_l, with δ_l = (n_l/n_max + ς)/(1 + ς), n_l the layer's
   number of weights, n_max that of the largest ternary layer, ς = 0.05 (smaller layers are pruned less);
5. A = argmin_c (W − c)² + Λ·I_c over c ∈ {−w_n, 0, w_p}.

There is no schedule on Λ: it follows the weights, centroids and P every step; ``lambda_max_divr`` (γ) sets the
sparsity, ``ini_c_divr`` the initial centroids w_p = |max W|·ini_c_divr, w_n = |min W|·ini_c_divr (floored as
in step 1) and so the initial (nearest-neighbour) sparsity.

Two phases, as ``main_trained_quantization.py``: quantization epochs with the :class:`EC2T` callback; then
the state with the best validation accuracy (weights, assignment, centroids) is restored and retrain epochs
run with the assignment and the shadow kernels frozen
(:func:`~tfcompress.quantization.ternary.freeze_assignment`), where only the centroids and the full-precision
layers train. ``mode="prune"`` gives entropy-constrained pruning (ECP): the same assignment and the same
gradients (centroids train), but the non-zeros keep their full-precision values. :func:`train` runs both phases.

As in the reference, the 1×1 projection shortcuts of residual blocks stay full precision by default
(:func:`~tfcompress.quantization.ternary.default_selection`; ``ternarize_shortcuts=True`` ternarizes them).

Deliberate differences from the reference code (each documented where it is coded): P_− and P_+ are reduced
from their original values (the reference updates P_− first and then uses it for P_+, so P does not sum to 1);
a Λ that would come out negative (a centroid beyond twice the extreme weight) is taken as 0; the w_n gradient
sign is the exact one by default (``wn_gradient="reference"`` gives the reference's, with which the published
numbers were obtained; see :mod:`~tfcompress.quantization.ternary`); the best-validation state may come from
the first quantization epoch (the reference only saves it from the second epoch on) and includes the shadow
kernels (the reference keeps the last epoch's, which in the retrain phase only set the 0.675·std floor); in
ECP, the retrain phase keeps the full-precision non-zeros (the reference's frozen-assignment step writes
ternary values into them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress.quantization import ternary

STD_FLOOR = 0.675  # w_p, w_n ≥ 0.675·std(W) ("prevent binary/unary layers")
P0_MIN = 0.5  # the zero centroid always has the lowest information content
LAMBDA_SUSTAIN = 0.05  # ς in δ_l
PHASES = ("quantize", "retrain")
LEARNING_RATE = 1e-4  # reference Adam for the model and the shadow weights
CENTROID_LEARNING_RATE = 1e-5  # reference Adam for the centroids


def _check_divisor(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value} (reference grid: ini_c_divr 0.15–0.5, "
                         "lambda_max_divr 0.125–0.175)")


# --------------------------------------------------------------------------------------- the assignment rule


def clamp_centroids(W: tf.Tensor, w_p: tf.Tensor, w_n: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """w_x ← max(w_x, 0.675·std(W)); std with Bessel's correction, as ``torch.std``."""
    W = tf.reshape(tf.cast(W, tf.float32), [-1])
    n = tf.cast(tf.size(W), tf.float32)
    std = tf.sqrt(tf.reduce_sum(tf.square(W - tf.reduce_mean(W))) / tf.maximum(n - 1.0, 1.0))
    floor = STD_FLOOR * std
    return tf.maximum(tf.cast(w_p, tf.float32), floor), tf.maximum(tf.cast(w_n, tf.float32), floor)


def initial_centroids(W: tf.Tensor, ini_c_divr: float) -> tuple[tf.Tensor, tf.Tensor]:
    """w_p = |max W|·ini_c_divr, w_n = |min W|·ini_c_divr, floored at 0.675·std(W)."""
    _check_divisor("ini_c_divr", ini_c_divr)
    W = tf.cast(W, tf.float32)
    return clamp_centroids(W, tf.abs(tf.reduce_max(W)) * ini_c_divr, tf.abs(tf.reduce_min(W)) * ini_c_divr)


def _centroids(w_p: tf.Tensor, w_n: tf.Tensor) -> tf.Tensor:
    return tf.stack([-tf.cast(w_n, tf.float32), tf.constant(0.0), tf.cast(w_p, tf.float32)])


def _squared_distances(W: tf.Tensor, w_p: tf.Tensor, w_n: tf.Tensor) -> tf.Tensor:
    """(W − c)² for c = (−w_n, 0, w_p), on a new last axis."""
    return tf.square(tf.cast(W, tf.float32)[..., None] - _centroids(w_p, w_n))


def nearest_assignment(W: tf.Tensor, w_p: tf.Tensor, w_n: tf.Tensor) -> tf.Tensor:
    """A = argmin_c (W − c)², as −1 / 0 / +1 (float32, W's shape); ties go to the more negative centroid."""
    return tf.cast(tf.argmin(_squared_distances(W, w_p, w_n), axis=-1), tf.float32) - 1.0


def assignment_probabilities(A: tf.Tensor) -> tf.Tensor:
    """P = (P_−, P_0, P_+) of an assignment, with P_0 forced ≥ ½ (P_−, P_+ reduced in proportion).

    A centroid with no weight counts as one weight (as in the reference), so every I_c is finite.
    """
    A = tf.reshape(tf.cast(A, tf.float32), [-1])
    counts = tf.stack([tf.reduce_sum(tf.cast(tf.equal(A, c), tf.float32)) for c in (-1.0, 0.0, 1.0)])
    P = tf.maximum(counts, 1.0) / tf.cast(tf.size(A), tf.float32)
    P_n, P_0, P_p = P[0], P[1], P[2]
    deficit = tf.maximum(P0_MIN - P_0, 0.0)
    nonzero = P_n + P_p
    return tf.stack([P_n - P_n / nonzero * deficit, P_0 + deficit, P_p - P_p / nonzero * deficit])


def information_content(P: tf.Tensor) -> tf.Tensor:
    """I_c = −log2 P_c."""
    return -tf.math.log(P) / tf.math.log(2.0)


def lambda_decay(n_l: int, n_max: int, lambda_sustain: float = LAMBDA_SUSTAIN) -> float:
    """δ_l = (n_l/n_max + ς)/(1 + ς): 1 for the largest layer, ς/(1+ς) for a vanishing one."""
    if not 0 < n_l <= n_max:
        raise ValueError(f"need 0 < n_l ≤ n_max, got n_l={n_l}, n_max={n_max}")
    return (n_l / n_max + lambda_sustain) / (1.0 + lambda_sustain)


def lambda_max(W: tf.Tensor, w_p: tf.Tensor, w_n: tf.Tensor, I_c: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(Λ_+,max, Λ_−,max): Λ_x,max = (|ext_x|² − (w_x − |ext_x|)²)/(I_x − I_0), I_c = (I_−, I_0, I_+)."""
    W = tf.cast(W, tf.float32)
    ext_p, ext_n = tf.abs(tf.reduce_max(W)), tf.abs(tf.reduce_min(W))
    tiny = 1e-12  # I_x > I_0 whenever P_0 ≥ ½ and the other side holds a weight; guard the exact tie
    Lambda_p_max = (tf.square(ext_p) - tf.square(w_p - ext_p)) / tf.maximum(I_c[2] - I_c[1], tiny)
    Lambda_n_max = (tf.square(ext_n) - tf.square(w_n - ext_n)) / tf.maximum(I_c[0] - I_c[1], tiny)
    return Lambda_p_max, Lambda_n_max


def entropy_constrained_assignment(
    W: tf.Tensor, w_p: tf.Tensor, w_n: tf.Tensor, lambda_max_divr: float, delta_l: float = 1.0
) -> tuple[tf.Tensor, tf.Tensor]:
    """The EC2T assignment of one layer: returns (A as −1/0/+1 with W's shape, Λ).

    Args:
        W: the full-precision kernel.
        w_p, w_n: the (floored) centroid magnitudes.
        lambda_max_divr: γ, the fraction of Λ_max applied (0 gives the nearest-centroid assignment).
        delta_l: the layer-size decay δ_l (:func:`lambda_decay`).
    """
    if lambda_max_divr < 0:
        raise ValueError(f"lambda_max_divr must be ≥ 0, got {lambda_max_divr}")
    w_p, w_n = tf.cast(w_p, tf.float32), tf.cast(w_n, tf.float32)
    distances = _squared_distances(W, w_p, w_n)
    P = assignment_probabilities(tf.cast(tf.argmin(distances, axis=-1), tf.float32) - 1.0)
    I_c = information_content(P)
    Lambda_p_max, Lambda_n_max = lambda_max(W, w_p, w_n, I_c)
    # A centroid beyond twice its extreme weight makes Λ_x,max negative, which would favour non-zeros: use 0.
    Lambda = tf.maximum(tf.minimum(Lambda_p_max, Lambda_n_max), 0.0) * lambda_max_divr * delta_l
    cost = distances + Lambda * I_c
    return tf.cast(tf.argmin(cost, axis=-1), tf.float32) - 1.0, Lambda


# ------------------------------------------------------------------------------------------ Keras interface


def initializer(ini_c_divr: float = 0.3):
    """The EC2T initialization of a ternary layer: centroids from ``ini_c_divr``, nearest assignment."""
    _check_divisor("ini_c_divr", ini_c_divr)

    def initialize(layer: ternary.TernaryMixin) -> None:
        W = tf.convert_to_tensor(layer.kernel)
        w_p, w_n = initial_centroids(W, ini_c_divr)
        layer.w_p.assign(w_p)
        layer.w_n.assign(w_n)
        layer.assignment.assign(nearest_assignment(W, w_p, w_n))

    return initialize


def ternarize(
    model: keras.Model,
    ini_c_divr: float = 0.3,
    layers: Sequence[str] | None = None,
    *,
    mode: str = "ternary",
    wn_gradient: str = "exact",
    ternarize_shortcuts: bool = False,
) -> keras.Model:
    """A copy of ``model`` with the chosen layers ternary and EC2T-initialized (see the module docstring).

    Args:
        model: a trained functional or Sequential model.
        ini_c_divr: initial centroid scale (> 0; the reference grid is 0.15, 0.3, 0.5).
        layers: layer names; None = every Conv2D except the stem and the 1×1 projection shortcuts (not the
            classifier), as the reference.
        mode: "ternary" (EC2T) or "prune" (ECP: non-zeros keep full precision).
        wn_gradient: "exact" (∂L/∂w_n = −Σ g, default) or "reference" (+Σ g: the reference code's sign, with
            which the published numbers were obtained).
        ternarize_shortcuts: with ``layers=None``, also ternarize the projection shortcuts.
    """
    return ternary.ternarize(
        model, layers, mode=mode, wn_gradient=wn_gradient, ternarize_shortcuts=ternarize_shortcuts,
        initialize=initializer(ini_c_divr),
    )


class EC2T(ternary.AssignmentCallback):
    """Keras callback that applies the EC2T assignment after every training step.

    Args:
        lambda_max_divr: γ (> 0), the fraction of Λ_max applied; larger gives sparser layers.
        phase: "quantize" (floor the centroids and re-assign every step) or "retrain" (assignment frozen: only
            floor the centroids). A retrain phase needs layers that went through quantization and were frozen
            with :func:`~tfcompress.quantization.ternary.freeze_assignment` before compiling.
        lambda_sustain: ς of δ_l (0.05, as the reference code and the thesis).
        layers: the ternary layers to handle; None = all of the model's.
        log_dir: write the per-epoch summaries here (by default: into a ``keras.callbacks.TensorBoard`` of the same
            ``fit`` or a ``tf.summary`` default writer): those of
            :class:`~tfcompress.quantization.ternary.AssignmentCallback` under ``ec2t/``, and in the quantization
            phase each layer's Λ, ``ec2t/lambda/<layer>``.

    Example::

        model = ec2t.ternarize(trained, ini_c_divr=0.3)
        model.compile(ternary.CentroidAdam(1e-4, 1e-5), loss, metrics)
        model.fit(train, epochs=20, callbacks=[ec2t.EC2T(lambda_max_divr=0.15)])
    """

    summary_prefix = "ec2t"

    def __init__(
        self, lambda_max_divr: float = 0.15, phase: str = "quantize", lambda_sustain: float = LAMBDA_SUSTAIN,
        layers: Sequence[ternary.TernaryMixin] | None = None, log_dir: str | None = None,
    ) -> None:
        _check_divisor("lambda_max_divr", lambda_max_divr)
        if phase not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
        if lambda_sustain < 0:
            raise ValueError(f"lambda_sustain must be ≥ 0, got {lambda_sustain}")
        super().__init__(layers, log_dir=log_dir)
        self.lambda_max_divr = float(lambda_max_divr)
        self.phase = phase
        self.lambda_sustain = float(lambda_sustain)
        self.quantizing = phase == "quantize"

    def check(self, layers: list[ternary.TernaryMixin]) -> None:
        if self.phase == "quantize":
            frozen = [layer.name for layer in layers if layer.assignment_frozen]
            if frozen:
                raise ValueError(f"layers {frozen} have a frozen assignment; use EC2T(phase='retrain') for them")
            return
        never_quantized = [layer.name for layer in layers if float(layer.quantization_steps.numpy()) == 0]
        if never_quantized:
            raise ValueError(
                f"retrain phase before any quantization: the assignment of {never_quantized} was never updated. "
                "Train with EC2T(phase='quantize') first."
            )
        not_frozen = [layer.name for layer in layers if not layer.assignment_frozen]
        if not_frozen:
            raise ValueError(
                f"retrain phase: layers {not_frozen} are not frozen; call "
                "tfcompress.quantization.ternary.freeze_assignment(model), then compile the model again"
            )

    def update(self, layers: list[ternary.TernaryMixin], numels: list[int]) -> None:
        n_max = max(numels)
        for layer, n_l in zip(layers, numels, strict=True):
            W = tf.convert_to_tensor(layer.kernel)
            w_p, w_n = clamp_centroids(W, layer.w_p.value, layer.w_n.value)
            layer.w_p.assign(w_p)
            layer.w_n.assign(w_n)
            if self.quantizing:
                delta_l = lambda_decay(n_l, n_max, self.lambda_sustain)
                A, _ = entropy_constrained_assignment(W, w_p, w_n, self.lambda_max_divr, delta_l)
                layer.assignment.assign(A)

    def lambdas(self) -> dict[str, float]:
        """Each layer's Λ at the current weights and centroids (what the next step's assignment uses), by name."""
        numels = [int(np.prod(layer.kernel.shape)) for layer in self.layers]
        values = {}
        for layer, n_l in zip(self.layers, numels, strict=True):
            W = tf.convert_to_tensor(layer.kernel)
            w_p, w_n = clamp_centroids(W, layer.w_p.value, layer.w_n.value)
            delta_l = lambda_decay(n_l, max(numels), self.lambda_sustain)
            _, Lambda = entropy_constrained_assignment(W, w_p, w_n, self.lambda_max_divr, delta_l)
            values[layer.name] = float(Lambda)
        return values

    def summary_scalars(self) -> dict[str, float]:
        scalars = super().summary_scalars()
        if self.quantizing:  # the retrain phase assigns nothing: no Λ
            scalars.update({f"ec2t/lambda/{name}": value for name, value in self.lambdas().items()})
        return scalars


class BestState(keras.callbacks.Callback):
    """Keeps a copy of every model weight (shadow kernels, assignments, centroids, BatchNorm statistics) from
    the epoch with the highest ``monitor`` (first one on ties), as the reference's ``Ternary_best_acc.pt``,
    ``assignments.pt`` and ``centroids.pt``.

    Attributes:
        best_epoch: 0-based index of that epoch (None before any epoch with ``monitor`` in its logs).
    """

    def __init__(self, monitor: str = "val_accuracy") -> None:
        super().__init__()
        self.monitor = monitor
        self.best_epoch: int | None = None
        self.best_value = float("-inf")
        self.weights: list[Any] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is not None and float(value) > self.best_value:
            self.best_epoch, self.best_value = epoch, float(value)
            self.weights = self.model.get_weights()

    def restore(self) -> None:
        """Sets the model's weights back to the best epoch's."""
        if self.best_epoch is None:
            raise ValueError(f"no epoch logged {self.monitor!r}: pass validation_data to fit")
        self.model.set_weights(self.weights)


def train(
    model: keras.Model,
    train_data: Any,
    epochs: int,
    retrain_epochs: int = 0,
    *,
    lambda_max_divr: float = 0.15,
    learning_rate: float = LEARNING_RATE,
    centroid_learning_rate: float = CENTROID_LEARNING_RATE,
    validation_data: Any = None,
    restore_best: bool = True,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: Any = "auto",
) -> dict[str, list[float]]:
    """Runs EC2T's two phases on a ternarized model (:func:`ternarize`): ``epochs`` of quantization, then
    ``retrain_epochs`` with the assignment frozen. Optimizer as in the reference: Adam, ``learning_rate`` for
    the model and shadow weights, ``centroid_learning_rate`` for the centroids (:class:`ternary.CentroidAdam`);
    a fresh optimizer for the retrain phase.

    With ``validation_data`` and ``restore_best`` (default), the retrain phase starts, as in the reference,
    from the quantization epoch with the best validation accuracy: its weights, assignment and centroids
    (:class:`BestState`); the model ends with the last retrain epoch's weights. Without validation data (or with
    ``restore_best=False``) it starts from the last quantization epoch. (The reference selects on its
    validation loader, which is the test split.)

    Returns:
        The concatenated Keras history; when a best state was restored, ``best_quantization_epoch`` holds its
        1-based epoch number.

    Raises:
        ValueError: a divisor ≤ 0, ``epochs < 1`` with ``retrain_epochs > 0`` on a never-quantized model
            (retrain before quantization), or a model without ternary layers.
    """
    _check_divisor("lambda_max_divr", lambda_max_divr)
    if epochs < 0 or retrain_epochs < 0:
        raise ValueError(f"epochs and retrain_epochs must be ≥ 0, got {epochs} and {retrain_epochs}")
    history: dict[str, list[float]] = {}
    best = BestState() if restore_best and validation_data is not None and retrain_epochs else None

    def run(phase: str, n_epochs: int, extra: Sequence[keras.callbacks.Callback] = ()) -> None:
        result = ternary.fit(
            model, train_data, n_epochs, EC2T(lambda_max_divr, phase=phase), learning_rate=learning_rate,
            centroid_learning_rate=centroid_learning_rate, validation_data=validation_data,
            callbacks=[*extra, *callbacks], verbose=verbose,
        )
        for key, values in result.items():
            history.setdefault(key, []).extend(values)

    if epochs:
        run("quantize", epochs, [best] if best is not None else [])
    if retrain_epochs:
        if best is not None and best.best_epoch is not None:  # None: no quantization epoch in this call
            best.restore()
            history["best_quantization_epoch"] = [float(best.best_epoch + 1)]
        ternary.freeze_assignment(model)  # raises if nothing was ever quantized
        run("retrain", retrain_epochs)
    return history
