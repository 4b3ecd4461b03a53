"""MorphNet: the regularizer's value against morph-net's FLOP formula by hand, its gradient, latency weights from a
table, channels dying in training, shrinking with parity, plans re-applied, refusals — and the script."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_script
from tfcompress import data, training
from tfcompress.pruning import apply_plan, insert_channel_masks
from tfcompress.pruning.morphnet import MorphNetCallback, MorphNetModel, MorphNetRegularizer, expand, shrink


def two_convs(in_channels: int = 3, bn: bool = True, size: int = 8) -> keras.Model:
    """c1 (4 ch) → [BN] → ReLU → c2 (6 ch) → [BN] → ReLU → pooling → logits (10): two prunable groups."""
    inputs = keras.Input((size, size, in_channels))
    x = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x) if bn else x)
    x = keras.layers.Conv2D(6, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn2")(x) if bn else x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="two_convs")


def morphnet_flops_regularization(model, r1: np.ndarray, r2: np.ndarray, threshold: float, size: int = 8) -> float:
    """morph-net's FLOP regularizer written out per op: coeff · (alive_in · reg_out + alive_out · reg_in), coeff =
    2 · output positions · kernel positions (a MatMul: 2); the model input has no regularizer (reg 0)."""
    in_channels = model.input_shape[-1]
    alive1, alive2 = int((r1 > threshold).sum()), int((r2 > threshold).sum())
    conv = 2.0 * size * size * 9
    return (conv * (in_channels * r1.sum() + 4 * 0.0)  # c1: alive_in = inputs, reg_in = 0
            + conv * (alive1 * r2.sum() + alive2 * r1.sum())  # c2
            + 2.0 * (alive2 * 0.0 + 10 * r2.sum()))  # logits: reg_out = 0 (the output), alive_out = 10


def rms_per_output(kernel: np.ndarray) -> np.ndarray:
    return np.sqrt(np.mean(np.square(kernel.reshape(-1, kernel.shape[-1])), axis=0))


@pytest.mark.parametrize("kind", ["group_lasso", "gamma"])
def test_flop_regularizer_equals_morphnets_formula_by_hand(kind):
    keras.utils.set_random_seed(0)
    model = two_convs()
    kernel = model.get_layer("c1").kernel.numpy()
    kernel[..., 0] = 1e-5  # one dead channel: the alive counts enter the formula
    model.get_layer("c1").kernel.assign(kernel)
    bn2 = model.get_layer("bn2")
    bn2.gamma.assign(np.linspace(-0.5, 1.0, 6).astype("float32"))
    bn2.gamma.assign(np.where(np.arange(6) == 2, 1e-4, bn2.gamma.numpy()).astype("float32"))  # dead
    strength, threshold = 3e-7, 1e-3
    regularizer = MorphNetRegularizer(model, kind, strength=strength, threshold=threshold)
    if kind == "group_lasso":
        r1, r2 = rms_per_output(kernel), rms_per_output(model.get_layer("c2").kernel.numpy())
    else:
        r1, r2 = np.abs(model.get_layer("bn1").gamma.numpy()), np.abs(bn2.gamma.numpy())
    expected = strength * morphnet_flops_regularization(model, r1, r2, threshold)
    assert float(regularizer()) == pytest.approx(expected, rel=1e-5)
    assert list(regularizer.alive_counts().values()) == [int((r1 > threshold).sum()), int((r2 > threshold).sum())]
    assert regularizer.alive_counts() == ({1: 3, 2: 6} if kind == "group_lasso" else {1: 4, 2: 5})
    # the full model's FLOPs are the specs' MACs twice (morph-net counts a multiply-add as 2 FLOPs)
    assert regularizer.flops_full == 2 * (64 * 9 * 3 * 4 + 64 * 9 * 4 * 6 + 6 * 10)


def test_gradient_pushes_the_costliest_channels_down_faster():
    keras.utils.set_random_seed(0)
    model = two_convs(in_channels=4)  # c1 and c2 both have 36 weights per output channel
    regularizer = MorphNetRegularizer(model, strength=1e-6)
    weights = regularizer.cost_weights()
    assert weights[1] == 2 * 64 * 9 * (4 + 6) and weights[2] == 2 * 64 * 9 * 4 + 2 * 10  # c1's channels cost more
    kernels = [model.get_layer(name).kernel for name in ("c1", "c2")]
    before = [rms_per_output(k.numpy()) for k in kernels]
    with tf.GradientTape() as tape:
        loss = regularizer()
    gradients = tape.gradient(loss, [k.value for k in kernels])
    lr = 1.0
    after = [rms_per_output(k.numpy() - lr * g.numpy()) for k, g in zip(kernels, gradients, strict=True)]
    # r shrinks by lr · strength · w_g / (weights per channel) per step: in proportion to the channel's cost
    drop = [b - a for b, a in zip(before, after, strict=True)]
    np.testing.assert_allclose(drop[0], lr * 1e-6 * weights[1] / 36, rtol=1e-3)
    np.testing.assert_allclose(drop[1], lr * 1e-6 * weights[2] / 36, rtol=1e-3)
    assert drop[0].min() > 2 * drop[1].max()


class StaircaseTable:
    """A latency table stand-in: µs = 5 + Σ_g a_g · (the count rounded up to even), as a grid of step 2 with
    ``ceil`` interpolation reads."""

    def __init__(self, per_channel_us: dict[int, float]) -> None:
        self.per_channel_us, self.meta = per_channel_us, {"step": 2}

    def cost_fn(self, model, precision="float32", graph=None):
        def cost(counts):
            return 5.0 + sum(a * -(-counts[g] // 2) * 2 for g, a in self.per_channel_us.items())

        return cost


def test_latency_weights_follow_the_table_per_step_of_its_grid():
    keras.utils.set_random_seed(0)
    model = two_convs()  # groups of 4 and 6 channels
    table = StaircaseTable({1: 3.0, 2: 0.5})
    regularizer = MorphNetRegularizer(model, cost="latency", table=table, strength=1e-3)
    # one channel less saves nothing on a staircase: the two channels to the next step save 2 · a_g
    assert regularizer.cost_weights() == {1: 3.0, 2: 0.5}
    # from an odd count one channel reaches the step below (2 · a_g saved), and a last channel stays
    assert regularizer.cost_weights({1: 3, 2: 1}) == {1: 6.0, 2: 0.0}
    values = regularizer.values()
    assert float(regularizer()) == pytest.approx(1e-3 * (3.0 * values[1].sum() + 0.5 * values[2].sum()), rel=1e-5)
    full_us = 5 + 3 * 4 + 0.5 * 6
    assert regularizer.predicted()["latency_ms"] == pytest.approx(full_us / 1000)
    # default strength: the FLOP default's pressure per µs of this model
    default = MorphNetRegularizer(model, cost="latency", table=table)
    assert default.strength == pytest.approx(5e-8 * default.flops_full / full_us)


def test_gamma_refuses_a_group_without_batchnorm_and_bad_arguments_are_refused():
    model = two_convs(bn=False)
    with pytest.raises(ValueError, match=r"group \d+ \(c1\).*group_lasso"):
        MorphNetRegularizer(model, "gamma")
    with pytest.raises(ValueError, match="table="):
        MorphNetRegularizer(model, cost="latency")
    with pytest.raises(ValueError, match="regularizer must be"):
        MorphNetRegularizer(model, "l1")
    assert MorphNetRegularizer(model).alive_counts() == {1: 4, 2: 6}  # group lasso needs no BN


def small_net() -> keras.Model:
    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(inputs)
    x = keras.layers.MaxPooling2D()(keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x)))
    x = keras.layers.Conv2D(16, 3, padding="same", name="c2")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn2")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x), name="small_net")


def test_expand_widens_every_prunable_group_with_a_fresh_initialization():
    keras.utils.set_random_seed(0)
    model = small_net()
    wide = expand(model, 1.8)
    widths = {layer.name: layer.weights[0].shape[-1] for layer in wide.layers if layer.weights}
    assert widths == {"c1": 15, "bn1": 15, "c2": 29, "bn2": 29, "logits": 10}  # ⌈8·1.8⌉, ⌈16·1.8⌉; logits kept
    assert wide.output_shape == model.output_shape and wide(np.zeros((2, 28, 28, 1))).shape == (2, 10)
    assert not np.allclose(wide.get_layer("c1").kernel.numpy()[..., :8], model.get_layer("c1").kernel.numpy())
    assert MorphNetRegularizer(wide).full == {1: 15, 2: 29}
    with pytest.raises(ValueError, match="factor must be ≥ 1"):
        expand(model, 0.5)


def test_morphnet_inside_a_distiller_adds_its_term_to_the_distillation_loss(tmp_path):
    """Distiller(MorphNetModel(student), teacher): the loss is the distillation loss + the MorphNet term exactly,
    the callback finds the regularizer through the distiller, the callbacks' model is the inner student, and the
    student alone is saved."""
    from tfcompress.distill import Distiller

    keras.utils.set_random_seed(0)
    student, teacher = two_convs(), two_convs()
    regularizer = MorphNetRegularizer(student, strength=1e-3)
    plain, regularized = Distiller(student, teacher), Distiller(MorphNetModel(student, regularizer), teacher)
    x = np.random.default_rng(0).normal(size=(16, 8, 8, 3)).astype("float32")
    y = np.arange(16) % 10
    for distiller in (plain, regularized):
        distiller.compile(training.sgd(0.01, 4, "constant", momentum=0.0, weight_decay=0.0, nesterov=False))
    penalty = float(regularizer())
    assert penalty > 0
    losses = [float(d.compute_loss(x, y, student(x), training=True)) for d in (plain, regularized)]
    assert losses[1] - losses[0] == pytest.approx(penalty, rel=1e-5)
    assert training.student_of(regularized) is student

    before = {name: rms_per_output(student.get_layer(name).kernel.numpy()) for name in ("c1", "c2")}
    teacher_before = [w.copy() for w in teacher.get_weights()]
    progress = MorphNetCallback()
    regularized.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[progress])
    assert progress.history and "kept" in progress.history[-1]
    assert any(not np.allclose(rms_per_output(student.get_layer(name).kernel.numpy()), before[name])
               for name in before)  # the student trained, the teacher did not
    for value, expected in zip(teacher.get_weights(), teacher_before, strict=True):
        np.testing.assert_array_equal(value, expected)
    regularized.save(tmp_path / "student.keras")
    assert keras.models.load_model(tmp_path / "student.keras").name == "two_convs"
    with pytest.raises(ValueError, match="MorphNetCallback trains a"):
        plain.fit(x, y, epochs=1, verbose=0, callbacks=[MorphNetCallback()])


@pytest.mark.slow
def test_training_kills_channels_and_shrink_matches_the_masked_model(tmp_path):
    keras.utils.set_random_seed(0)
    model = small_net()
    train = data.load("fashion_mnist", "train", batch_size=64, limit=512)
    regularizer = MorphNetRegularizer(model, strength=1e-4)
    wrapped = MorphNetModel(model, regularizer)
    epochs = 10
    # no momentum and a cosine to 0: group-lasso values settle near 0 instead of oscillating around it
    wrapped.compile(training.sgd(0.05, epochs * 8, "cosine", momentum=0.0, weight_decay=0.0, nesterov=False))
    progress = MorphNetCallback()
    history = wrapped.fit(train, epochs=epochs, callbacks=[progress], verbose=0)
    assert history.history["channels_left"][-1] < 1.0 and history.history["macs_left"][-1] < 0.9
    kept = regularizer.kept_counts()
    assert progress.history[-1]["kept"] == {"c1": kept[1], "c2": kept[2]}
    assert all(kept[g] == max(1, n) for g, n in regularizer.alive_counts().items())

    result = shrink(model, 1e-3)
    assert result.model.count_params() < model.count_params()
    assert result.plan.macs_after == regularizer.flops(kept) / 2
    masked = insert_channel_masks(model, result.plan.masks)
    x = next(iter(train))[0]
    np.testing.assert_allclose(result.model(x).numpy(), masked(x).numpy(), atol=1e-5)

    wrapped.save(tmp_path / "trained.keras")  # the wrapped model alone
    assert keras.models.load_model(tmp_path / "trained.keras").name == "small_net"
    result.plan.save(tmp_path / "plan.json")
    fresh = apply_plan(small_net(), json.loads((tmp_path / "plan.json").read_text()))
    assert [w.shape for w in fresh.weights] == [w.shape for w in result.model.weights]


@pytest.mark.slow
def test_script_shrinks_and_writes_plan_and_refuses_bad_input(tmp_path):
    keras.utils.set_random_seed(0)
    source = tmp_path / "small.keras"
    small_net().save(source)
    output = tmp_path / "morph.keras"
    # momentum SGD leaves group-lasso values oscillating around 0 by about lr·strength·w_g/(1 − 0.9) per weight:
    # a short run needs a threshold above that
    result = run_script("morphnet", f"--model={source}", "--dataset=fashion_mnist", "--strength=1e-5", "--epochs=5",
                        "--lr=0.01", "--threshold=0.03", "--train_limit=512", "--batch_size=64", "--runs=3",
                        f"--output={output}")
    report = json.loads(output.with_name("morph.keras.json").read_text())
    assert "c1" in result.stdout and "c2" in result.stdout and "FLOPs 564,800 →" in result.stdout
    assert report["macs_after"] < report["macs_before"] and len(report["history"]) == 5
    shrunk = keras.models.load_model(output)
    assert shrunk.count_params() == report["params_after"]
    fresh = apply_plan(small_net(), report)  # the structure, retrainable from scratch
    assert [w.shape for w in fresh.weights] == [w.shape for w in shrunk.weights]
    no_bn = tmp_path / "no_bn.keras"
    two_convs(in_channels=1, bn=False, size=28).save(no_bn)
    bad = run_script("morphnet", f"--model={no_bn}", "--dataset=fashion_mnist",
                     "--regularizer=gamma", f"--output={tmp_path / 'x.keras'}",
                     check=False, fresh=True)
    assert bad.returncode == 1 and "group_lasso" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    no_table = run_script("morphnet", f"--model={source}", "--cost=latency", f"--output={tmp_path / 'y.keras'}",
                          check=False)
    assert no_table.returncode == 1 and "--table" in no_table.stderr


# ------------------------------------------------------------------------------------------- to a target


def test_the_width_multiplier_narrows_the_found_structure_uniformly_to_the_target():
    from tfcompress.pruning import morphnet

    rng = np.random.default_rng(0)
    values = {1: rng.uniform(0.1, 1, 16), 2: rng.uniform(0.1, 1, 32), 3: rng.uniform(0.1, 1, 64)}
    masks = {1: np.arange(16) < 12, 2: np.arange(32) < 32, 3: np.arange(64) < 20}  # the structure a run found
    weight = {1: 4.0, 2: 2.0, 3: 1.0}  # FLOPs per channel: the early group costs most

    def cost(counts):
        return sum(weight[g] * n for g, n in counts.items()) / sum(weight[g] * m.size for g, m in values.items())

    scaled, omega = morphnet.width_multiplier(values, masks, cost, 0.3)
    counts = {g: int(m.sum()) for g, m in scaled.items()}
    assert cost(counts) <= 0.3 < cost({g: n + 1 for g, n in counts.items()})  # the widest that fits
    assert counts == {g: int(np.ceil(omega * masks[g].sum() - 1e-9)) for g in masks}  # the same ω everywhere
    for g, mask in scaled.items():  # inside the found structure, the largest values
        assert not (mask & ~masks[g]).any()
        assert values[g][mask].min() >= values[g][masks[g] & ~mask].max(initial=0)
    with pytest.raises(ValueError, match="one channel per group costs"):
        morphnet.width_multiplier(values, masks, cost, 0.01)


def test_the_proximal_step_shrinks_each_channel_by_its_push_and_zeroes_the_ones_it_outweighs():
    keras.utils.set_random_seed(0)
    model = small_net()
    regularizer = MorphNetRegularizer(model, strength=1e-6)
    before = regularizer.values()
    weights = dict(zip([g.id for g in regularizer.groups], regularizer.weight_vector.numpy(), strict=True))
    # rows per channel: the kernel slice (+ its bias) of each producer; RMS values r = ‖W_c‖ / √n_c
    sizes = {g: sum(part.row_size for part in regularizer.slices[g]) for g in weights}
    lr = float(np.median(before[2])) * sizes[2] / (1e-6 * weights[2])  # push = the median: kills half of c2
    regularizer.proximal_step(lr)
    after = regularizer.values()
    for g, values in before.items():
        expected = np.maximum(0.0, values - lr * 1e-6 * weights[g] / sizes[g])  # r − push / n, or 0
        np.testing.assert_allclose(after[g], expected, atol=2e-6)
    dead = after[2] < 1e-9
    assert 3 <= dead.sum() <= 13  # exactly zero, not just small: the alive threshold needs no tuning
    kernel = model.get_layer("c2").kernel.numpy()
    assert np.all(kernel[..., dead] == 0) and np.all(np.abs(kernel[..., ~dead]).sum(axis=(0, 1, 2)) > 0)
    # the loss carries the term only when no proximal step applies it
    wrapped = MorphNetModel(model, regularizer)
    assert float(wrapped.training_penalty()) > 0
    regularizer.proximal = True
    assert float(wrapped.training_penalty()) == 0.0


@pytest.fixture(scope="module")
def lenet():
    from tests.conftest import REPO

    return keras.models.load_model(REPO / "models" / "lenet5_fashion_mnist.keras")


def test_the_guard_stops_a_collapsing_run_and_keeps_the_last_weights_within_the_limit(lenet):
    from tfcompress.pruning import morphnet

    keras.utils.set_random_seed(0)
    train = data.load("fashion_mnist", "train", batch_size=64, limit=1024)
    holdout = data.load("fashion_mnist", "test", batch_size=256, limit=512)
    start = training.evaluate(lenet, holdout)["accuracy"]
    # a strength far past any sense: the accuracy collapses within the first quarter epoch
    result = morphnet.morphnet_prune(lenet, train, strength=1e-2, epochs=3, holdout=holdout, max_accuracy_drop=5.0,
                                     optimizer=keras.optimizers.SGD(0.05))
    guard = result.guard
    assert guard.collapsed and guard.scores[0] == pytest.approx(start)
    assert 100 * (start - guard.scores[-1]) > 5.0  # the check that stopped it
    assert len(guard.scores) < 3 * morphnet.GUARD_CHECKS + 1  # stopped early
    ended = training.evaluate(result.trained, holdout)["accuracy"]
    assert ended == pytest.approx(guard.final, abs=0.01) and 100 * (start - ended) <= 5.0 + 1.0
    assert result.report()["guard"]["stopped"] is True and guard.halved == []
    # with back-offs, a fall goes on from the last weights within the limit at half the strength first
    keras.utils.set_random_seed(0)
    backed = morphnet.morphnet_prune(lenet, train, strength=1e-2, epochs=3, holdout=holdout, max_accuracy_drop=5.0,
                                     optimizer=keras.optimizers.SGD(0.05), backoffs=2).guard
    assert backed.halved[:1] == [1e-2] and backed.halved == [1e-2 / 2**k for k in range(len(backed.halved))]
    assert len(backed.scores) > len(guard.scores) and backed.collapsed == (len(backed.halved) == 2)
    with pytest.raises(ValueError, match="needs both holdout"):
        morphnet.morphnet_prune(lenet, train, holdout=holdout)


@pytest.mark.slow
def test_morphnet_to_a_flops_target_searches_the_strength_and_lands_on_the_target(lenet):
    from tfcompress.pruning import morphnet

    keras.utils.set_random_seed(0)
    train = data.load("fashion_mnist", "train", batch_size=128, limit=8192, augment=False)
    holdout = data.load("fashion_mnist", "test", batch_size=256, limit=1024)
    lines: list[str] = []
    result = morphnet.morphnet_to_target(lenet, train, target=0.6, holdout=holdout, epochs=2, trials=4, seed=0,
                                         say=lines.append)
    search = result.search
    strengths = [trial["strength"] for trial in search["trials"]]
    assert len(strengths) == len(set(strengths)) <= 4 and len(lines) >= len(strengths)
    # the bracket moves the right way: after a trial that kept too much, a stronger one; too little, weaker
    for previous, following in zip(search["trials"], search["trials"][1:], strict=False):
        if not previous["stopped"] and previous["cost"] > 0.6 * 1.05:
            assert following["strength"] > previous["strength"] or any(
                t["strength"] > following["strength"] and (t["stopped"] or t["cost"] < 0.6 * 0.95)
                for t in search["trials"][:search["trials"].index(following)])
    kept = 2 * result.plan.macs_after / (2 * result.plan.macs_before)
    assert kept == pytest.approx(search["kept"])
    if search["threshold_moved"] or search["width_multiplier"]:
        assert kept <= 0.6 and kept > 0.3  # the most channels that fit, not a collapse
    else:
        assert 0.6 * 0.95 <= kept <= 0.6 * 1.05
    accuracy = training.evaluate(result.model, holdout)["accuracy"]
    assert accuracy > 0.3
    if not search["threshold_moved"]:  # dead channels are constants, those still shrinking near ones: mean
        # replacement removes them with little change
        assert accuracy == pytest.approx(training.evaluate(result.trained, holdout)["accuracy"], abs=0.02)
    with pytest.raises(ValueError, match="needs table="):
        morphnet.morphnet_to_target(lenet, train, target=0.5, measure="latency", holdout=holdout)
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        morphnet.morphnet_to_target(lenet, train, target=1.5, holdout=holdout)


@pytest.mark.slow
def test_script_refuses_to_write_a_model_at_chance_without_allow_worse(tmp_path):
    from tests.conftest import REPO

    lenet = REPO / "models" / "lenet5_fashion_mnist.keras"
    output = tmp_path / "m.keras"
    args = [f"--model={lenet}", "--dataset=fashion_mnist", "--strength=3e-2", "--epochs=1", "--lr=0.01",
            "--train_limit=512", "--runs=3", f"--output={output}"]
    unguarded = [*args, "--max_accuracy_drop=100"]
    refused = run_script("morphnet", *unguarded, check=False)
    assert refused.returncode == 1 and "at chance accuracy" in refused.stderr and "--allow_worse" in refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("morphnet.py: error:") and not output.exists()
    # the same strength under the default guard (10 points): stopped early, a model that still works, written
    guarded = run_script("morphnet", *args)
    report = json.loads(output.with_name("m.keras.json").read_text())
    assert report["guard"]["stopped"] is True and "stopped: holdout accuracy fell" in guarded.stdout
    assert report["accuracy_pruned"] > report["accuracy_before"] - 0.15
    output.unlink()
    run_script("morphnet", *unguarded, "--allow_worse")  # told to: written at chance
    report = json.loads(output.with_name("m.keras.json").read_text())
    assert report["accuracy_pruned"] < 0.2 and report["guard"]["stopped"] is False
