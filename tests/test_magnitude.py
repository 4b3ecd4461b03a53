"""Baselines: random and magnitude masks, the polynomial-decay schedule and the gradual pruning callback."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tfcompress.pruning import magnitude, weight_masks


def _model() -> keras.Model:
    return keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(),
                             keras.layers.Dense(12, name="fc"), keras.layers.Dense(3, name="out")])


def test_polynomial_decay_matches_tfmot_semantics() -> None:
    schedule = magnitude.PolynomialDecay(0.2, 0.8, begin_step=10, end_step=110, power=3, frequency=25)
    assert schedule.sparsity(10) == pytest.approx(0.2)
    assert schedule.sparsity(60) == pytest.approx(0.8 + (0.2 - 0.8) * 0.5**3)
    assert schedule.sparsity(110) == pytest.approx(0.8) and schedule.sparsity(500) == pytest.approx(0.8)
    assert [t for t in range(200) if schedule.should_prune(t)] == [10, 35, 60, 85, 110]
    assert schedule(35) == (True, pytest.approx(0.8 - 0.6 * 0.75**3))
    with pytest.raises(ValueError, match="final_sparsity must be in"):
        magnitude.PolynomialDecay(0.0, 1.0, 0, 10)
    with pytest.raises(ValueError, match="end_step must be > begin_step"):
        magnitude.PolynomialDecay(0.0, 0.5, 10, 10)
    with pytest.raises(ValueError, match="frequency must be ≥ 1"):
        magnitude.PolynomialDecay(0.0, 0.5, 0, 10, frequency=0)


def test_random_masks_exact_counts_per_layer_and_global() -> None:
    model = _model()
    per_layer = magnitude.random_masks(model, 0.75, scope="local", seed=0)
    sizes = {"conv": 36, "fc": 64 * 12, "out": 36}
    assert {k: int(v["kernel"].sum()) for k, v in per_layer.items()} == {k: round(n / 4) for k, n in sizes.items()}
    global_masks = magnitude.random_masks(model, 0.75, scope="global", prune_biases=True, seed=0)
    total = sum(sizes.values()) + 4 + 12 + 3
    assert sum(int(m.sum()) for per in global_masks.values() for m in per.values()) == round(total / 4)
    other = magnitude.random_masks(model, 0.75, scope="local", seed=1)
    assert not np.array_equal(other["fc"]["kernel"], per_layer["fc"]["kernel"])


def test_magnitude_pruning_keeps_the_largest_weights() -> None:
    model = _model()
    masks = magnitude.magnitude_masks(model, 0.5, scope="local")
    kernel = np.abs(model.get_layer("fc").kernel.numpy())
    assert kernel[masks["fc"]["kernel"]].min() >= kernel[~masks["fc"]["kernel"]].max()
    pruned = magnitude.prune_magnitude(model, 0.9, scope="global")
    rows = weight_masks.weight_sparsity(pruned)
    assert rows["total"]["nonzero"] == round(rows["total"]["params"] * 0.1)
    assert weight_masks.weight_sparsity(model)["total"]["sparsity"] == 0.0  # the original is left dense


def test_gradual_pruning_callback_reaches_the_schedule() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(160, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 160)
    model = weight_masks.wrap(_model())
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    schedule = magnitude.PolynomialDecay(0.0, 0.8, begin_step=2, end_step=12, power=3, frequency=5)
    callback = magnitude.GradualMagnitudePruning(schedule)
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])  # 20 steps
    assert [step for step, _ in callback.history] == [2, 7, 12]
    assert callback.history[-1][1] == pytest.approx(0.8)
    rows = weight_masks.weight_sparsity(model)
    for name, size in {"conv": 36, "fc": 768, "out": 36}.items():  # per layer, exactly, after 8 more steps
        assert rows[name]["params"] - rows[name]["nonzero"] == size - round(size * 0.2)

    plain = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    plain.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ValueError, match="needs WeightMask layers"):
        plain.fit(np.zeros((4, 3)), np.zeros((4, 2)), verbose=0,
                  callbacks=[magnitude.GradualMagnitudePruning(schedule)])


def test_gradual_pruning_masks_only_grow() -> None:
    """Each update prunes the smallest of the weights still kept; a pruned weight never comes back, even when its
    variable holds a large value (tfmot, which ranks every raw |w|, would revive it: see the class docstring)."""
    keras.utils.set_random_seed(0)
    model = weight_masks.wrap(_model())
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    callback = magnitude.GradualMagnitudePruning(
        magnitude.PolynomialDecay(0.5, 0.75, begin_step=0, end_step=1, power=1, frequency=1))
    callback.set_model(model)
    fc = model.get_layer("fc")
    magnitudes = np.abs(fc.layer.kernel.numpy())

    callback.on_train_batch_begin(0)  # step 0: half of each layer
    first = fc.get_masks()["kernel"]
    assert first.sum() == 768 // 2 and magnitudes[first].min() >= magnitudes[~first].max()

    revived = np.unravel_index(np.argmax(np.where(first, -np.inf, magnitudes)), first.shape)
    kernel = fc.layer.kernel.numpy()
    kernel[revived] = 10.0  # the largest value of the layer, in a pruned position
    fc.layer.kernel.assign(kernel)
    model.optimizer.iterations.assign(1)
    callback.on_train_batch_begin(1)  # step 1: three quarters
    second = fc.get_masks()["kernel"]
    assert second.sum() == 768 // 4
    assert not second[revived] and not (second & ~first).any()  # nothing pruned comes back
    newly_pruned = first & ~second
    assert np.abs(kernel[second]).min() >= np.abs(kernel[newly_pruned]).max()
    assert [step for step, _ in callback.history] == [0, 1]
