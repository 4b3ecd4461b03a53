"""SNIP: connection sensitivity as the paper defines it, global top-κ, init options, bad input, the script."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfcompress as tfc
from tests.conftest import run_script
from tfcompress.pruning import magnitude, snip, weight_masks


def _model() -> keras.Model:
    inputs = keras.Input((8, 8, 2))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", name="depthwise")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", bias_initializer="random_normal", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))


def _batch(n: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 2)).astype("float32"), rng.integers(0, 5, n)


def test_saliency_is_the_gate_gradient_of_the_paper() -> None:
    """s_j = |∂L/∂c_j| at c = 1, computed through real gates (mask variables), equals our |g·w|, normalized."""
    keras.utils.set_random_seed(0)
    model, (x, y) = _model(), _batch()
    scores = snip.connection_sensitivity(model, (x, y), prune_biases=True)

    gated = weight_masks.wrap(model, prune_biases=True, copy=False)  # c = 1 everywhere
    gates = {(layer.name, name): mask for layer in gated.layers if isinstance(layer, weight_masks.WeightMask)
             for name, mask in zip(layer.masked_weights, layer.masks, strict=True)}
    with tf.GradientTape() as tape:
        for gate in gates.values():
            tape.watch(gate.value)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, gated(x, training=False))
    grads = dict(zip(gates, tape.gradient(loss, [g.value for g in gates.values()]), strict=True))
    total = sum(float(np.abs(g).sum()) for g in grads.values())
    for (layer, name), grad in grads.items():
        np.testing.assert_allclose(scores[layer][name], np.abs(grad.numpy()) / total, rtol=1e-4, atol=1e-9)
    assert sum(float(s.sum()) for per in scores.values() for s in per.values()) == pytest.approx(1.0)


def test_snip_masks_keep_the_global_top_kappa() -> None:
    keras.utils.set_random_seed(1)
    model, batch = _model(), _batch()
    scores = snip.connection_sensitivity(model, batch, prune_biases=False)
    masks = snip.snip_masks(model, batch, 0.8, prune_biases=False)
    n = sum(s.size for per in scores.values() for s in per.values())
    assert sum(int(m.sum()) for per in masks.values() for m in per.values()) == round(n * 0.2)
    assert all(set(per) == {"kernel"} for per in masks.values())  # biases excluded
    kept = np.concatenate([scores[k][w][masks[k][w]] for k in scores for w in scores[k]])
    pruned = np.concatenate([scores[k][w][~masks[k][w]] for k in scores for w in scores[k]])
    assert kept.min() >= pruned.max()


def test_several_batches_act_as_one_batch() -> None:
    keras.utils.set_random_seed(2)
    model, (x, y) = _model(), _batch(40)
    split = snip.connection_sensitivity(model, [(x[:10], y[:10]), (x[10:], y[10:])], num_batches=None)
    whole = snip.connection_sensitivity(model, (x, y))
    first_only = snip.connection_sensitivity(model, [(x[:10], y[:10]), (x[10:], y[10:])], num_batches=1)
    for layer, per in whole.items():
        for name, values in per.items():
            np.testing.assert_allclose(split[layer][name], values, rtol=1e-4, atol=1e-9)
    assert not np.allclose(first_only["fc"]["kernel"], whole["fc"]["kernel"])
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    from_pipeline = snip.connection_sensitivity(model, dataset, num_batches=4)
    np.testing.assert_allclose(from_pipeline["fc"]["kernel"], whole["fc"]["kernel"], rtol=1e-4, atol=1e-9)


def test_batchnorm_runs_in_inference_mode() -> None:
    keras.utils.set_random_seed(3)
    model, batch = _model(), _batch()
    bn = model.get_layer("bn")
    bn.moving_mean.assign(np.full(6, 0.5, np.float32))
    before = [w.numpy().copy() for w in bn.weights]
    scores = snip.connection_sensitivity(model, batch)
    for old, new in zip(before, bn.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())  # moving statistics untouched
    bn.moving_mean.assign(np.zeros(6, np.float32))  # the saliency depends on them: inference mode was used
    assert not np.allclose(snip.connection_sensitivity(model, batch)["fc"]["kernel"], scores["fc"]["kernel"])


def test_prune_init_options_and_original_untouched() -> None:
    keras.utils.set_random_seed(4)
    model, batch = _model(), _batch()
    original = [w.numpy().copy() for w in model.weights]

    same = snip.prune(model, batch, 0.7, init="model", seed=0)  # train_init defaults to "same"
    fc = weight_masks.get_masks(same.model)["fc"]["kernel"]
    np.testing.assert_array_equal(same.model.get_layer("fc").layer.kernel.numpy(),
                                  model.get_layer("fc").kernel.numpy() * fc)

    reference = snip.prune(model, batch, 0.7, init="variance_scaling", train_init="fresh", seed=0)
    scored = snip.prune(model, batch, 0.7, init="variance_scaling", train_init="same", seed=0)
    for name in reference.masks:  # same init and batch: same mask, whatever the weights trained afterwards
        np.testing.assert_array_equal(reference.masks[name]["kernel"], scored.masks[name]["kernel"])
    kept = reference.masks["fc"]["kernel"]
    fresh_w = reference.model.get_layer("fc").layer.kernel.numpy()[kept]
    scored_w = scored.model.get_layer("fc").layer.kernel.numpy()[kept]
    assert not np.allclose(fresh_w, scored_w)
    assert reference.prepass_seconds > 0
    for old, new in zip(original, model.weights, strict=True):
        np.testing.assert_array_equal(old, new.numpy())
    with pytest.raises(ValueError, match="train_init must be one of"):
        snip.prune(model, batch, 0.5, train_init="old")


def test_variance_scaling_reinit_uses_true_fan_in() -> None:
    model = keras.Sequential([keras.Input((32, 32, 64)), keras.layers.DepthwiseConv2D(3, name="dw"),
                              keras.layers.Conv2D(128, 3, bias_initializer="ones", name="conv")])
    snip.reinitialize(model, seed=0)
    # std = sqrt(scale / fan_in) after truncation; depthwise fan-in is 3·3 = 9 (not 3·3·64), conv 3·3·64
    assert np.std(model.get_layer("dw").kernel.numpy()) == pytest.approx(np.sqrt(1 / 9), rel=0.1)
    assert np.std(model.get_layer("conv").kernel.numpy()) == pytest.approx(np.sqrt(1 / 576), rel=0.05)
    assert not model.get_layer("conv").bias.numpy().any()


def _trained_batch_norm(model: keras.Model) -> list[np.ndarray]:
    """Sets the BatchNorm of ``_model`` to values no fresh layer has (as after training); returns them."""
    values = [np.full(6, value, np.float32) for value in (3.0, 1.5, 0.5, 2.0)]  # γ, β, moving mean, variance
    model.get_layer("bn").set_weights(values)
    return values


def test_reinitialization_builds_batch_norm_fresh() -> None:
    keras.utils.set_random_seed(7)
    model = _model()
    _trained_batch_norm(model)
    snip.reinitialize(model, seed=0)
    gamma, beta, mean, variance = model.get_layer("bn").get_weights()
    assert (gamma == 1).all() and (beta == 0).all() and (mean == 0).all() and (variance == 1).all()


def test_prune_resets_batch_norm_only_with_fresh_weights() -> None:
    keras.utils.set_random_seed(8)
    model, batch = _model(), _batch()
    trained = _trained_batch_norm(model)
    fresh = snip.prune(model, batch, 0.5, init="variance_scaling", seed=0)
    for value, default in zip(fresh.model.get_layer("bn").get_weights(), (1.0, 0.0, 0.0, 1.0), strict=True):
        assert (value == default).all()
    # the saliency pass ran on the fresh statistics: it equals a pass on a model re-initialized by hand
    scored = weight_masks.copy_model(model)
    snip.reinitialize(scored, seed=0)
    np.testing.assert_allclose(snip.connection_sensitivity(scored, batch)["fc"]["kernel"], fresh.scores["fc"]["kernel"],
                               rtol=1e-5, atol=1e-12)
    kept = snip.prune(model, batch, 0.5, init="model")  # the model's own weights, statistics included
    for value, expected in zip(kept.model.get_layer("bn").get_weights(), trained, strict=True):
        np.testing.assert_array_equal(value, expected)
    for value, expected in zip(model.get_layer("bn").get_weights(), trained, strict=True):
        np.testing.assert_array_equal(value, expected)  # the input model is left alone


@pytest.mark.parametrize(("total_steps", "boundaries"), [
    (600, [100, 200, 300, 400, 500]), (6, [1, 2, 3, 4, 5]), (4, [1, 2, 3, 4, 5])])
def test_the_references_schedule_divides_by_ten_at_every_sixth(total_steps, boundaries) -> None:
    """The EPFL reproduction's ×0.1 every 5,000 of 30,000 iterations at the same fractions of a run of any length;
    on runs shorter than six steps the boundaries stay increasing."""
    schedule = tfc.training.learning_rate_schedule(0.1, total_steps, "sixths")
    for k, boundary in enumerate(boundaries):
        assert float(schedule(boundary)) == pytest.approx(0.1 * 0.1**k, rel=1e-5)  # the last step at this rate
        assert float(schedule(boundary + 1)) == pytest.approx(0.1 * 0.1 ** (k + 1), rel=1e-5)


@pytest.mark.parametrize("nesterov", [True, False])
def test_coupled_weight_decay_adds_exactly_the_l2_gradient(nesterov) -> None:
    """One and two SGD steps with coupled decay λ equal SGD on the gradient of loss + λ/2·‖w‖², by hand and by
    autodiff; Keras' decoupled decay differs under momentum; biases are not decayed."""
    lr, momentum, wd = 0.1, 0.9, 0.05
    dense = keras.layers.Dense(3)
    dense.build((None, 4))
    rng = np.random.default_rng(0)
    dense.set_weights([rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")])
    kernel, bias = (v.numpy().copy() for v in (dense.kernel, dense.bias))
    g_kernel, g_bias = rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=3).astype("float32")

    def step(weight_decay_mode: str) -> keras.optimizers.Optimizer:
        optimizer = tfc.training.sgd(lr, 10, "constant", momentum, wd, nesterov, weight_decay_mode=weight_decay_mode)
        dense.set_weights([kernel, bias])
        optimizer.apply_gradients([(g_kernel, dense.kernel), (g_bias, dense.bias)])
        return optimizer

    first = 1 + momentum if nesterov else 1.0  # the first step from zero momentum, in units of lr·gradient
    coupled = step("coupled")
    assert isinstance(coupled, tfc.training.CoupledWeightDecaySGD)
    np.testing.assert_allclose(dense.kernel.numpy(), kernel - first * lr * (g_kernel + wd * kernel), rtol=1e-6)
    np.testing.assert_allclose(dense.bias.numpy(), bias - first * lr * g_bias, rtol=1e-6)
    step("decoupled")
    np.testing.assert_allclose(dense.kernel.numpy(), kernel - lr * wd * kernel - first * lr * g_kernel, rtol=1e-6)

    # Two steps of a real loss: coupled decay on the loss gradient = no decay on the gradient of loss + λ/2·‖w‖²
    x = rng.normal(size=(8, 4)).astype("float32")

    def loss(l2: float) -> tf.Tensor:
        return tf.reduce_mean(tf.square(dense(x))) + l2 / 2 * tf.reduce_sum(tf.square(dense.kernel.value))

    def train(optimizer: keras.optimizers.Optimizer, l2: float) -> np.ndarray:
        dense.set_weights([kernel, bias])
        for _ in range(2):
            with tf.GradientTape() as tape:
                value = loss(l2)
            optimizer.apply_gradients(zip(tape.gradient(value, dense.trainable_variables), dense.trainable_variables,
                                          strict=True))
        return dense.kernel.numpy()

    coupled_kernel = train(tfc.training.sgd(lr, 10, "constant", momentum, wd, nesterov, weight_decay_mode="coupled"),
                           0.0)
    l2_kernel = train(tfc.training.sgd(lr, 10, "constant", momentum, 0.0, nesterov), wd)
    np.testing.assert_allclose(coupled_kernel, l2_kernel, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="weight_decay_mode must be one of"):
        tfc.training.sgd(weight_decay_mode="l2")


def test_channel_saliency_sums_per_output_channel() -> None:
    keras.utils.set_random_seed(5)
    model, batch = _model(), _batch()
    scores = snip.connection_sensitivity(model, batch)
    channels = snip.channel_saliency(model, scores=scores)
    assert {k: v.shape for k, v in channels.items()} == {"conv": (6,), "depthwise": (12,), "fc": (16,), "logits": (5,)}
    assert sum(float(v.sum()) for v in channels.values()) == pytest.approx(1.0)
    kernel = scores["depthwise"]["kernel"]  # (3, 3, 6, 2): output channel c·2 + k
    assert channels["depthwise"][7] == pytest.approx(kernel[:, :, 3, 1].sum() + scores["depthwise"]["bias"][7])
    np.testing.assert_allclose(channels["fc"], scores["fc"]["kernel"].sum(0) + scores["fc"]["bias"])
    np.testing.assert_allclose(snip.channel_saliency(model, batch)["conv"], channels["conv"])


@pytest.mark.parametrize(("batch", "message"), [
    ((np.zeros((4, 9, 8, 2), np.float32), np.zeros(4, int)), r"images of shape \(4, 9, 8, 2\) do not fit"),
    ((np.zeros((4, 8, 8, 2), np.float32), np.zeros(3, int)), r"labels must be integer class ids of shape \(4,\)"),
    ((np.zeros((4, 8, 8, 2), np.float32), np.eye(5)[:4]), "one-hot"),
    ((np.zeros((4, 8, 8, 2), np.float32), np.array([0, 1, 5, 2])), r"labels must be in \[0, 5\)"),
    ((np.zeros((4, 8, 8, 2), np.float32), np.array([0, 1.5, 2, 2])), "integer class ids"),
    ([], "no batch"),
])
def test_bad_batches_are_refused(batch, message) -> None:
    with pytest.raises(ValueError, match=message):
        snip.snip_masks(_model(), batch, 0.5)


@pytest.mark.parametrize("sparsity", [-0.5, 1.0, 2.0])
def test_bad_sparsity_is_refused(sparsity) -> None:
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\)"):
        snip.prune(_model(), _batch(), sparsity)


def test_sparsity_that_empties_a_layer_is_refused_unless_allowed() -> None:
    keras.utils.set_random_seed(6)
    model, batch = _model(), _batch()
    with pytest.raises(ValueError, match="disconnects the network"):
        snip.snip_masks(model, batch, 0.999)
    masks = snip.snip_masks(model, batch, 0.999, allow_empty_layers=True)
    assert weight_masks.mask_sparsity(masks)["total"] == pytest.approx(0.999, abs=1e-3)


@pytest.mark.slow
def test_snip_beats_random_at_high_sparsity_on_fashion_mnist() -> None:
    train = tfc.data.load("fashion_mnist", "train", batch_size=64, limit=2048, shuffle=True, seed=0)
    test = tfc.data.load("fashion_mnist", "test", batch_size=1000, limit=2000)
    accuracy = {}
    for method in ("snip", "random"):
        keras.utils.set_random_seed(0)
        model = tfc.zoo.build("lenet_300_100", (28, 28, 1), 10)
        if method == "snip":
            pruned = snip.prune(model, train, 0.98, num_batches=2, seed=0).model
        else:
            pruned = weight_masks.apply_masks(model, magnitude.random_masks(model, 0.98, prune_biases=True, seed=0))
        tfc.training.compile_classifier(pruned, tfc.training.sgd(0.1, 3 * 32, "cosine", 0.9, 5e-4))
        pruned.fit(train, epochs=3, verbose=0)
        accuracy[method] = tfc.training.evaluate(pruned, test)["accuracy"]
    # measured: SNIP ≈ 0.69, random ≈ 0.21 (at 98 % random keeps ~2 of 100 inputs per unit and barely learns)
    assert accuracy["snip"] > 0.55, accuracy
    assert accuracy["snip"] > accuracy["random"] + 0.2, accuracy


@pytest.mark.slow
def test_script_prints_layer_sparsity_and_error(tmp_path) -> None:
    output = tmp_path / "lenet.keras"
    process = run_script("snip", "--model=lenet_300_100", "--target_sparsity=0.9", "--epochs=1",
                         "--train_limit=600", f"--output={output}")
    assert "fc1" in process.stdout and "test error" in process.stdout
    sidecar = json.loads((tmp_path / "lenet.keras.json").read_text())
    assert sidecar["layer_sparsity"]["total"]["sparsity"] == pytest.approx(0.9, abs=1e-4)
    masked = tfc.export.load_keras_model(output)  # WeightMask layers kept: the next program keeps the zeros
    assert sorted(weight_masks.get_masks(masked)) == sorted(sidecar["weight_masks"]) == ["fc1", "fc2", "logits"]
    kept = sum(int(m.sum()) for per in weight_masks.get_masks(masked).values() for m in per.values())
    assert kept == weight_masks.weight_sparsity(masked, prune_biases=True)["total"]["nonzero"] == round(266_610 * 0.1)
    stripped = tmp_path / "lenet_plain.keras"
    run_script("snip", "--model=lenet_300_100", "--target_sparsity=0.9", "--epochs=1", "--train_limit=200",
               "--strip", f"--output={stripped}")
    plain = tfc.export.load_keras_model(stripped)
    assert {type(layer) for layer in plain.layers} >= {keras.layers.Dense} and not weight_masks.get_masks(plain)
    assert weight_masks.weight_sparsity(plain, prune_biases=True)["total"]["nonzero"] == round(266_610 * 0.1)
    bad = run_script("snip", "--model=lenet_300_100", "--target_sparsity=0.99999", "--epochs=1",
                     f"--output={tmp_path / 'bad.keras'}", check=False, fresh=True)  # snip.py's fresh interpreter
    assert bad.returncode != 0 and "disconnects the network" in bad.stderr
    assert not (tmp_path / "bad.keras").exists()
