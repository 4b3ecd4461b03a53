"""SNIP: single-shot network pruning at initialization by connection sensitivity.

Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
(official code namhoonlee/snip-public; see REFERENCE.md §4). Each prunable weight w_j gets an auxiliary gate
c_j = 1 (w_j → c_j·w_j); its connection sensitivity on a mini-batch D_b is

    s_j = |∂L(c ⊙ w; D_b)/∂c_j| at c = 1  =  |g_j · w_j|,   g_j = ∂L/∂w_j,

normalized by its global sum (s_j / Σ_k s_k). SNIP keeps the global top κ = round(N·(1 − sparsity)) of the N
prunable weights, once, before training, and trains the remaining network with the mask fixed.

As in the reference code:

* the network is re-initialized with variance scaling (scale 1, fan-in, truncated normal; biases 0) before
  the saliency pass (``init="variance_scaling"``; ``init="model"`` keeps the model's weights), and so are its
  BatchNorms: the reference builds the whole network anew, so their moving statistics start at mean 0 and
  variance 1 and γ, β at 1, 0 (:func:`reinitialize`);
* the mask is computed on that initialization and applied to a *separate* fresh one for training
  (``train_init="fresh"``, the paper's ``weights_bp`` vs ``weights_ap``); ``train_init="same"`` trains the very
  weights the mask was computed on;
* biases are pruned too by default (``prune_biases``); BatchNorm runs in inference mode during the pass;
* the loss is the mean softmax cross-entropy of the logits (of the probabilities, for a model that ends in a
  softmax: :func:`tfcompress.training.softmax_output` detects it).

The model must be functional or Sequential (a subclassed one is refused by name) and live outside any
``tf.distribute`` strategy: the saliency pass is one single-replica computation (:func:`check_model`).

With several batches, g is the gradient of the mean loss over all of them (the batches act as one big D_b).

:func:`channel_saliency` is a structured variant (beyond the paper): the normalized saliency summed per output
channel, {layer name: per-channel scores}, for the channel-pruning surgery to consume.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress import training
from tfcompress.keras_graph import as_functional, iter_layers
from tfcompress.pruning import weight_masks

INITS = ("variance_scaling", "model")
TRAIN_INITS = ("fresh", "same")


# ------------------------------------------------------------------------------------------------ saliency


def check_model(model: keras.Model) -> None:
    """Refuses, by name, a model SNIP cannot score: a subclassed model, or one inside a ``tf.distribute``
    strategy (its variables are per-replica, and the single-replica gradient tape cannot watch them).

    Raises:
        ValueError: either.
    """
    as_functional(model)
    if tf.distribute.has_strategy():
        why = f"it was called inside the scope of a {type(tf.distribute.get_strategy()).__name__}"
    elif any(isinstance(getattr(v, "value", v), tf.distribute.DistributedValues) for v in model.weights):
        why = f"the variables of model {model.name!r} were created in a tf.distribute strategy scope"
    else:
        return
    raise ValueError(
        f"SNIP runs outside tf.distribute, but {why}. Build the model and call snip.prune outside "
        "`with strategy.scope():`, then rebuild the masked model inside the scope to train it there "
        "(keras.models.clone_model(result.model), then set_weights)"
    )


def connection_sensitivity(
    model: keras.Model, batches: Any, *, prune_biases: bool = True, num_batches: int | None = 1,
    from_logits: bool | None = None,
) -> weight_masks.Scores:
    """Normalized connection sensitivity s_j / Σ_k s_k, s_j = |g_j · w_j|, of every prunable weight.

    Args:
        model: a functional or Sequential classifier (see :func:`check_model`).
        batches: an (x, y) batch, a list of them, or a ``tf.data`` pipeline (see :func:`as_batches`).
        prune_biases: score biases too (the reference code does).
        num_batches: how many batches of a pipeline or list to use (None: all).
        from_logits: whether the outputs are logits; None: yes unless the model ends in a softmax.

    Returns:
        {layer name: {weight name: scores}}, scores ≥ 0 summing to 1 over the whole model.
    """
    check_model(model)
    if from_logits is None:
        from_logits = training.softmax_output(model) is None
    data = training.as_batches(batches, model, num_batches, from_logits=from_logits)
    weights = weight_masks.prunable_weights(model, prune_biases)
    keys = [(layer, name) for layer, per in weights.items() for name in per]
    variables = [weights[layer][name] for layer, name in keys]
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits)
    g_sum = [np.zeros(v.shape, dtype=np.float64) for v in variables]
    examples = 0
    for x, y in data:
        with tf.GradientTape() as tape:
            for variable in variables:  # non-trainable (frozen) layers are scored too
                tape.watch(variable.value)
            loss = loss_fn(y, model(x, training=False))  # BatchNorm in inference mode, as in the reference
        grads = tape.gradient(loss, [v.value for v in variables])
        for total, grad in zip(g_sum, grads, strict=True):
            if grad is not None:
                total += np.asarray(grad, dtype=np.float64) * len(x)  # mean loss over all batches together
        examples += len(x)
    s = [np.abs(total / examples * np.asarray(v.numpy(), dtype=np.float64))
         for total, v in zip(g_sum, variables, strict=True)]
    norm = sum(float(part.sum()) for part in s)
    if not np.isfinite(norm) or norm <= 0:
        raise ValueError(
            "the connection sensitivity is zero (or not finite) everywhere: the loss does not depend on the "
            "prunable weights for this batch (all-zero weights or inputs?); re-initialize or check the data"
        )
    scores: weight_masks.Scores = {layer: {} for layer in weights}
    for (layer, name), part in zip(keys, s, strict=True):
        scores[layer][name] = part / norm
    return scores


def snip_masks(
    model: keras.Model, batches: Any, sparsity: float, *, prune_biases: bool = True, num_batches: int | None = 1,
    allow_empty_layers: bool = False,
) -> weight_masks.Masks:
    """SNIP masks of ``model`` on its current weights: the global top κ = round(N·(1 − sparsity)) saliencies.

    Raises:
        ValueError: sparsity outside [0, 1); a bad batch; a layer left without connections (unless
            ``allow_empty_layers``).
    """
    sparsity = weight_masks.check_sparsity(sparsity)
    scores = connection_sensitivity(model, batches, prune_biases=prune_biases, num_batches=num_batches)
    return weight_masks.masks_from_scores(scores, sparsity, scope="global", allow_empty_layers=allow_empty_layers)


def channel_saliency(
    model: keras.Model, batches: Any = None, *, scores: weight_masks.Scores | None = None, prune_biases: bool = True,
    num_batches: int | None = 1,
) -> dict[str, np.ndarray]:
    """Structured SNIP: the normalized connection sensitivity summed per output channel of each prunable layer.

    Give ``batches`` (scores are computed) or precomputed ``scores`` from :func:`connection_sensitivity`.
    Returns {layer name: scores of shape (output channels,)}; a depthwise layer's output channel c·m + k
    collects its kernel slice [:, :, c, k]. All channels of the model sum to 1. Removing the channels is the
    channel-pruning surgery's job.
    """
    if scores is None:
        if batches is None:
            raise ValueError("channel_saliency needs batches (or precomputed scores)")
        scores = connection_sensitivity(model, batches, prune_biases=prune_biases, num_batches=num_batches)
    weights = weight_masks.prunable_weights(model, prune_biases=True)
    per_channel: dict[str, np.ndarray] = {}
    for layer, per in scores.items():
        kernel_shape = tuple(weights[layer]["kernel"].shape)
        spec = weight_masks.prunable_spec(_layer_by_name(model, layer))
        out_channels = kernel_shape[-2] * kernel_shape[-1] if spec.depthwise else kernel_shape[-1]
        total = np.zeros(out_channels)
        for values in per.values():
            # C-order reshape: conv (kh·kw·C_in, C_out), dense (in, out), depthwise (kh·kw, C_in·multiplier)
            total += np.asarray(values).reshape(-1, out_channels).sum(axis=0)
        per_channel[layer] = total
    return per_channel


def _layer_by_name(model: keras.Model, name: str) -> keras.layers.Layer:
    return next(layer for layer in iter_layers(model) if layer.name == name)


# ------------------------------------------------------------------------------------------ initialization


def reinitialize(model: keras.Model, seed: int | None = None) -> None:
    """Re-draws, in place, every prunable layer's kernels with variance scaling (scale 1, fan-in, truncated
    normal — TF1's ``variance_scaling_initializer``, the reference's ``vs``) and zeroes its biases, and resets
    every BatchNormalization to its initializers (by default γ = 1, β = 0, moving mean 0, moving variance 1), as
    the reference builds its BatchNorms anew. Other layers are left as they are.

    A depthwise kernel (k_h, k_w, C_in, m) gets fan-in k_h·k_w, its true fan-in, not the k_h·k_w·C_in that a
    generic initializer would assume. The BatchNorm reset matters twice: the saliency pass runs BatchNorm in
    inference mode, on these statistics, and the fresh network trained afterwards must not start from a
    trained one's statistics.
    """
    rng = np.random.default_rng(seed)
    prunable = weight_masks.prunable_weights(model, prune_biases=True)
    for layer_name, per in prunable.items():
        spec = weight_masks.prunable_spec(_layer_by_name(model, layer_name))
        for name, variable in per.items():
            if name in spec.biases:
                variable.assign(np.zeros(variable.shape, dtype=variable.dtype))
                continue
            shape = tuple(variable.shape)
            draw_shape = (*shape[:-2], 1, shape[-2] * shape[-1]) if spec.depthwise else shape
            initializer = keras.initializers.VarianceScaling(
                scale=1.0, mode="fan_in", distribution="truncated_normal", seed=int(rng.integers(2**31 - 1))
            )
            variable.assign(np.reshape(keras.ops.convert_to_numpy(initializer(draw_shape, variable.dtype)), shape))
    for layer in iter_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in layer.weights:  # gamma, beta, moving_mean, moving_variance: each has <name>_initializer
                initializer = getattr(layer, f"{variable.name}_initializer")
                variable.assign(initializer(variable.shape, variable.dtype))


# ----------------------------------------------------------------------------------------------- pipeline


@dataclasses.dataclass
class SnipResult:
    """What :func:`prune` returns.

    Attributes:
        model: the masked model to train (:class:`~tfcompress.pruning.weight_masks.WeightMask` layers); export it with
            ``tfcompress.export.to_tflite``, which strips the masks.
        masks: {layer name: {weight name: bool mask}}.
        scores: the normalized connection sensitivities the masks were chosen from.
        prepass_seconds: wall time of the saliency pass and the top-κ selection.
    """

    model: keras.Model
    masks: weight_masks.Masks
    scores: weight_masks.Scores
    prepass_seconds: float

    def layer_sparsity(self) -> dict[str, float]:
        return weight_masks.mask_sparsity(self.masks)


def prune(
    model: keras.Model,
    batches: Any,
    sparsity: float,
    *,
    init: str = "variance_scaling",
    train_init: str | None = None,
    prune_biases: bool = True,
    num_batches: int | None = 1,
    seed: int | None = 0,
    allow_empty_layers: bool = False,
) -> SnipResult:
    """SNIP end to end: (re-)initialize, score one or more batches, keep the global top κ, mask a copy.

    Args:
        model: functional or Sequential classifier with logits out; it is not modified.
        batches: the pruning batch(es) D_b (100 examples in the paper's MNIST runs, 128 for VGG).
        sparsity: fraction of prunable weights removed, in [0, 1).
        init: "variance_scaling" (reference) re-initializes before scoring; "model" scores the model's weights.
        train_init: weights the mask is applied to: "fresh" — a new variance-scaling draw (reference:
            the mask is computed on one init and a separately initialized copy is trained) — or "same" — the
            weights that were scored. Default: "fresh" with ``init="variance_scaling"``, "same" with "model".
        prune_biases: biases compete in the global top-κ too (reference behaviour).
        num_batches: batches of a pipeline/list to score on.
        seed: seed of the re-initializations.
        allow_empty_layers: accept a mask that removes every connection of a layer.
    """
    sparsity = weight_masks.check_sparsity(sparsity)
    check_model(model)
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    train_init = train_init or ("fresh" if init == "variance_scaling" else "same")
    if train_init not in TRAIN_INITS:
        raise ValueError(f"train_init must be one of {TRAIN_INITS}, got {train_init!r}")
    # refuse bad batches before any work (a final softmax is fine: the loss takes probabilities then)
    data = training.as_batches(batches, model, num_batches, from_logits=False)
    working = weight_masks.copy_model(model)
    if init == "variance_scaling":
        reinitialize(working, seed)
    start = time.perf_counter()
    scores = connection_sensitivity(working, data, prune_biases=prune_biases, num_batches=None)
    masks = weight_masks.masks_from_scores(scores, sparsity, scope="global", allow_empty_layers=allow_empty_layers)
    prepass_seconds = time.perf_counter() - start
    if train_init == "fresh":
        reinitialize(working, None if seed is None else seed + 1)
    masked = weight_masks.apply_masks(working, masks, copy=False)
    return SnipResult(masked, masks, scores, prepass_seconds)
