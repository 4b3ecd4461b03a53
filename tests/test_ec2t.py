"""EC2T: the assignment rule and Λ against hand-computed values, the two phases (retrain from the best
validation epoch), ECP, layer selection on the reference ResNet-20, errors, MirroredStrategy, the script."""

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, run_json_program, run_script
from tfcompress.quantization import ec2t, ternary

# Hand-worked example (see test_assignment_and_lambda_by_hand): mean 0.075, Σ(W−mean)² = 1.995.
W = np.array([-0.8, -0.3, -0.1, 0.0, 0.1, 0.2, 0.5, 1.0], np.float32)
STD = np.sqrt(1.995 / 7)  # Bessel-corrected, as torch.std


def test_initial_centroids_and_floor_by_hand():
    w_p, w_n = ec2t.initial_centroids(W, ini_c_divr=0.5)
    assert float(w_p) == pytest.approx(0.5) and float(w_n) == pytest.approx(0.4)  # |max|·½, |min|·½; above floor
    w_p, w_n = ec2t.initial_centroids(W, ini_c_divr=0.1)  # 0.1 and 0.08 are below 0.675·std = 0.3604
    assert float(w_p) == pytest.approx(0.675 * STD, rel=1e-5) and float(w_n) == pytest.approx(0.675 * STD, rel=1e-5)
    assert pytest.approx(0.36035, abs=1e-5) == 0.675 * STD


def test_assignment_and_lambda_by_hand():
    # Centroids (−0.4, 0, 0.5): midpoints −0.2 and 0.25 → nearest A = [−,−,0,0,0,0,+,+].
    A0 = ec2t.nearest_assignment(W, 0.5, 0.4)
    np.testing.assert_array_equal(A0, [-1, -1, 0, 0, 0, 0, 1, 1])
    P = ec2t.assignment_probabilities(A0)
    np.testing.assert_allclose(P, [0.25, 0.5, 0.25])
    I_c = ec2t.information_content(P)
    np.testing.assert_allclose(I_c, [2.0, 1.0, 2.0])
    # Λ_+,max = (1.0² − (0.5 − 1.0)²)/(2 − 1) = 0.75;  Λ_−,max = (0.8² − (0.4 − 0.8)²)/(2 − 1) = 0.48.
    Lambda_p_max, Lambda_n_max = ec2t.lambda_max(W, 0.5, 0.4, I_c)
    assert float(Lambda_p_max) == pytest.approx(0.75) and float(Lambda_n_max) == pytest.approx(0.48)
    # Λ = 0.48 · γ 0.5 · δ 1 = 0.24; costs (w−c)² + 0.24·I: −0.3 → 0 (0.33 < 0.49); 0.5 → + (0.48 < 0.49).
    A, Lambda = ec2t.entropy_constrained_assignment(W, 0.5, 0.4, lambda_max_divr=0.5, delta_l=1.0)
    assert float(Lambda) == pytest.approx(0.24)
    np.testing.assert_array_equal(A, [-1, 0, 0, 0, 0, 0, 1, 1])
    # δ = 0.5 halves Λ to 0.12: −0.3 costs 0.01 + 0.24 at −w_n vs 0.09 + 0.12 at 0 → 0.
    A, Lambda = ec2t.entropy_constrained_assignment(W, 0.5, 0.4, lambda_max_divr=0.5, delta_l=0.5)
    assert float(Lambda) == pytest.approx(0.12)
    np.testing.assert_array_equal(A, [-1, 0, 0, 0, 0, 0, 1, 1])
    # γ = 0 is the nearest-centroid assignment.
    A, Lambda = ec2t.entropy_constrained_assignment(W, 0.5, 0.4, lambda_max_divr=0.0)
    assert float(Lambda) == 0.0
    np.testing.assert_array_equal(A, A0)


def test_zero_probability_is_forced_to_one_half():
    # Counts (3, 1, 4) of 8 → P_0 = 0.125 raised to 0.5; P_− and P_+ lose 0.375 in proportion 3:4.
    P = ec2t.assignment_probabilities(np.array([-1, -1, -1, 0, 1, 1, 1, 1], np.float32))
    np.testing.assert_allclose(P, [3 / 14, 0.5, 4 / 14], rtol=1e-6)
    # A centroid without weights counts as one weight (finite information content), as in the reference.
    P = ec2t.assignment_probabilities(np.array([0, 0, 0, 1], np.float32))
    np.testing.assert_allclose(P, [0.25, 0.75, 0.25])


def test_lambda_decay_by_hand():
    assert ec2t.lambda_decay(100, 400) == pytest.approx((0.25 + 0.05) / 1.05)
    assert ec2t.lambda_decay(400, 400) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="n_l"):
        ec2t.lambda_decay(500, 400)


def test_sparsity_rises_with_lambda_max_divr():
    weights = np.random.default_rng(0).normal(0, 0.1, 5000).astype(np.float32)
    w_p, w_n = ec2t.initial_centroids(weights, 0.3)
    sparsities = [
        float(np.mean(ec2t.entropy_constrained_assignment(weights, w_p, w_n, divr)[0].numpy() == 0))
        for divr in (0.0, 0.1, 0.2, 0.4, 0.8)
    ]
    assert sparsities == sorted(sparsities) and sparsities[-1] > sparsities[0] + 0.15, sparsities


def _small_model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def _data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 12, 12, 1)).astype(np.float32)
    y = (x[:, :6].mean(axis=(1, 2, 3)) > 0).astype(np.int64) + (x[:, :, :6].mean(axis=(1, 2, 3)) > 0)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(16)


@pytest.mark.slow
def test_training_sparsity_rises_with_lambda_and_assignment_follows_the_rule():
    sparsities = []
    for divr in (0.05, 1.0):
        model = ec2t.ternarize(_small_model(), ini_c_divr=0.3)
        ec2t.train(model, _data(), epochs=1, lambda_max_divr=divr, verbose=0)
        sparsities.append(ternary.sparsity(model))
        layers = ternary.ternary_layers(model)
        assert [layer.name for layer in layers] == ["conv1", "conv2"]  # default: no stem, no classifier
        n_max = max(layer.kernel.numpy().size for layer in layers)
        for layer in layers:
            assert float(layer.quantization_steps.numpy()) == 6  # one update per step
            W = layer.kernel.numpy()
            A, _ = ec2t.entropy_constrained_assignment(
                W, layer.w_p.numpy(), layer.w_n.numpy(), divr, ec2t.lambda_decay(W.size, n_max))
            np.testing.assert_array_equal(layer.assignment.numpy(), A)  # the last update used the final weights
            floor = 0.675 * np.std(W, ddof=1)
            assert layer.w_p.numpy() >= floor - 1e-7 and layer.w_n.numpy() >= floor - 1e-7
    assert sparsities[1] > sparsities[0] + 0.1, sparsities


@pytest.mark.slow
def test_retrain_phase_freezes_assignment_and_shadow_kernel():
    model = ec2t.ternarize(_small_model(), ini_c_divr=0.8)  # centroids well above the 0.675·std floor
    ec2t.train(model, _data(), epochs=1, lambda_max_divr=0.2, verbose=0)
    before = {layer.name: (layer.assignment.numpy(), layer.kernel.numpy(), layer.w_p.numpy())
              for layer in ternary.ternary_layers(model)}
    stem_before = model.get_layer("stem").kernel.numpy()
    ec2t.train(model, _data(), epochs=0, retrain_epochs=1, lambda_max_divr=0.2, verbose=0)
    for layer in ternary.ternary_layers(model):
        assignment, kernel, w_p = before[layer.name]
        assert layer.assignment_frozen
        np.testing.assert_array_equal(layer.assignment.numpy(), assignment)
        np.testing.assert_array_equal(layer.kernel.numpy(), kernel)
        assert layer.w_p.numpy() != w_p  # centroids still train
        assert float(layer.quantization_steps.numpy()) == 6  # retrain steps do not count as quantization
    assert not np.array_equal(model.get_layer("stem").kernel.numpy(), stem_before)  # full-precision layers train


def test_ecp_keeps_full_precision_nonzeros_and_trains_the_centroids():
    model = ec2t.ternarize(_small_model(), ini_c_divr=0.8, mode="prune")  # centroids above the 0.675·std floor
    initial = {layer.name: (layer.w_p.numpy(), layer.w_n.numpy()) for layer in ternary.ternary_layers(model)}
    ec2t.train(model, _data(), epochs=1, lambda_max_divr=0.5, verbose=0)
    for layer in ternary.ternary_layers(model):
        kernel, W, A = layer.ternary_kernel().numpy(), layer.kernel.numpy(), layer.assignment.numpy()
        np.testing.assert_array_equal(kernel, np.where(A != 0, W, 0))
        assert np.unique(kernel).size > 3 and np.mean(kernel == 0) > 0.3
        # As in the reference, the centroids get the ternary mode's gradients and move (Adam, lr 1e-5).
        w_p, w_n = initial[layer.name]
        assert layer.w_p.numpy() != w_p and layer.w_n.numpy() != w_n


def test_projection_shortcuts_of_the_reference_resnet20_stay_float():
    model = keras.models.load_model(REPO / "models" / "resnet20_fashion_mnist.keras")
    tern = ec2t.ternarize(model, ini_c_divr=0.3)
    shortcuts = ["stage2_block0_proj", "stage3_block0_proj"]
    for name in shortcuts:
        assert type(tern.get_layer(name)) is keras.layers.Conv2D
        np.testing.assert_array_equal(tern.get_layer(name).kernel.numpy(), model.get_layer(name).kernel.numpy())
    names = [layer.name for layer in ternary.ternary_layers(tern)]
    assert len(names) == 18 and all(name.endswith(("_conv1", "_conv2")) for name in names)  # 9 blocks × 2
    assert type(tern.get_layer("stem")) is keras.layers.Conv2D
    with_shortcuts = ec2t.ternarize(model, ini_c_divr=0.3, ternarize_shortcuts=True)
    assert {layer.name for layer in ternary.ternary_layers(with_shortcuts)} == {*names, *shortcuts}


def test_best_state_restores_the_best_epoch():
    model = _small_model()
    best = ec2t.BestState()
    best.set_model(model)
    kernels = []
    for epoch, accuracy in enumerate([0.5, 0.8, 0.8, 0.6]):  # ties keep the first
        model.get_layer("conv1").kernel.assign(np.full(model.get_layer("conv1").kernel.shape, float(epoch)))
        kernels.append(model.get_weights())
        best.on_epoch_end(epoch, {"val_accuracy": accuracy})
    assert best.best_epoch == 1
    best.restore()
    for restored, expected in zip(model.get_weights(), kernels[1], strict=True):
        np.testing.assert_array_equal(restored, expected)
    with pytest.raises(ValueError, match="no epoch logged"):
        ec2t.BestState().restore()


class _RecordAssignments(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.assignments = []

    def on_epoch_end(self, epoch, logs=None):
        layers = ternary.ternary_layers(self.model)
        if not layers[0].assignment_frozen:  # quantization epochs only
            self.assignments.append([layer.assignment.numpy() for layer in layers])


@pytest.mark.slow
def test_retrain_phase_starts_from_the_best_validation_epoch():
    model = ec2t.ternarize(_small_model(), ini_c_divr=0.3)
    record = _RecordAssignments()
    history = ec2t.train(model, _data(), epochs=4, retrain_epochs=1, lambda_max_divr=1.0,
                         validation_data=_data(48, seed=1), callbacks=[record], verbose=0)
    accuracies = history["val_accuracy"][:4]
    best = int(np.argmax(accuracies))  # the first best, as the reference (is_best = accuracy > best_acc)
    assert history["best_quantization_epoch"] == [best + 1]
    assert len(record.assignments) == 4
    for layer, assignment in zip(ternary.ternary_layers(model), record.assignments[best], strict=True):
        np.testing.assert_array_equal(layer.assignment.numpy(), assignment)  # frozen at the best epoch's
    # Here the best epoch is not the last, and the assignment changed since: the restore is visible.
    assert best < 3
    assert not all(np.array_equal(a, b) for a, b in zip(record.assignments[best], record.assignments[-1],
                                                        strict=True))


def test_bad_input_errors():
    with pytest.raises(ValueError, match="ini_c_divr must be > 0"):
        ec2t.ternarize(_small_model(), ini_c_divr=0.0)
    with pytest.raises(ValueError, match="lambda_max_divr must be > 0"):
        ec2t.EC2T(lambda_max_divr=-0.1)
    with pytest.raises(ValueError, match="phase"):
        ec2t.EC2T(phase="finetune")
    model = ec2t.ternarize(_small_model(), ini_c_divr=0.3)
    with pytest.raises(ValueError, match="retrain phase before any quantization"):
        ec2t.train(model, _data(), epochs=0, retrain_epochs=1, verbose=0)
    with pytest.raises(ValueError, match="retrain phase before any quantization"):
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(_data(), epochs=1, verbose=0, callbacks=[ec2t.EC2T(0.15, phase="retrain")])
    with pytest.raises(ValueError, match="no ternary layer"):
        plain = _small_model()
        plain.compile("adam", "sparse_categorical_crossentropy")
        plain.fit(_data(), epochs=1, verbose=0, callbacks=[ec2t.EC2T(0.15)])


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tfcompress import training
    from tfcompress.quantization import ec2t, ternary
    from tests.test_ec2t import _data, _small_model
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        model = ec2t.ternarize(_small_model(), ini_c_divr=0.3)
        training.compile_classifier(model, ternary.CentroidAdam(1e-3, 1e-4))
    model.fit(_data(), epochs=1, verbose=0, callbacks=[ec2t.EC2T(0.5)])
    layers = ternary.ternary_layers(model)
    n_max = max(l.kernel.numpy().size for l in layers)
    consistent = all(np.array_equal(l.assignment.numpy(), ec2t.entropy_constrained_assignment(
        l.kernel.numpy(), l.w_p.numpy(), l.w_n.numpy(), 0.5, ec2t.lambda_decay(l.kernel.numpy().size, n_max))[0])
        for l in layers)
    replicas_agree = all(np.array_equal(*[v.numpy() for v in l.assignment.value.values]) for l in layers)
    print(json.dumps({"replicas": strategy.num_replicas_in_sync, "consistent": consistent,
                      "replicas_agree": replicas_agree, "sparsity": ternary.sparsity(model),
                      "steps": [float(l.quantization_steps.numpy()) for l in layers]}))
""")


@pytest.mark.slow
def test_mirrored_strategy_over_two_logical_cpus():
    result = run_json_program(MIRRORED_SCRIPT)
    assert result["replicas"] == 2
    assert result["consistent"] and result["replicas_agree"], result
    assert result["steps"] == [6.0, 6.0]
    assert result["sparsity"] > 0.3


@pytest.mark.slow
def test_ternarize_script_end_to_end(tmp_path):
    output = tmp_path / "lenet5_ec2t.keras"
    process = run_script(
        "ternarize", f"--model={REPO / 'models' / 'lenet5_fashion_mnist.keras'}", "--method=ec2t", "--epochs=1",
        "--retrain_epochs=1", "--train_limit=256", "--lambda_max_divr=0.15", "--wn_gradient=reference",
        f"--output={output}",
    )
    assert "conv2" in process.stdout and "MicroNet score (cifar100)" in process.stdout
    report = json.loads(output.with_name(output.name + ".json").read_text())
    assert report["method"] == "ec2t" and report["float_test_accuracy"] == pytest.approx(0.8984)
    # The retrain phase started from the best epoch on the 10 % holdout (the only one here).
    assert report["history"]["best_quantization_epoch"] == [1] and "val_accuracy" in report["history"]
    assert report["flags"]["wn_gradient"] == "reference" and report["flags"]["holdout_fraction"] == 0.1
    assert [row["name"] for row in report["codes"]["layers"]] == ["conv2"]  # LeNet-5: not the stem, not the FCs
    assert report["micronet"]["score"] < report["micronet"]["float_score"]
    assert report["compression_layers"] == {"TernaryConv2D": ["conv2"]}
    kept = keras.models.load_model(output)  # ternary layers kept (registered when tfcompress is imported)
    conv2 = kept.get_layer("conv2")
    assert isinstance(conv2, ternary.TernaryConv2D) and conv2.assignment_frozen
    assert conv2.wn_gradient == "reference"  # --wn_gradient reached the layers
    assert np.unique(keras.ops.convert_to_numpy(conv2.ternary_kernel())).size == 3

    plain_output = tmp_path / "lenet5_ec2t_plain.keras"
    run_script("ternarize", f"--model={REPO / 'models' / 'lenet5_fashion_mnist.keras'}", "--epochs=1",
               "--retrain_epochs=0", "--train_limit=128", "--strip", f"--output={plain_output}")
    stripped = keras.models.load_model(plain_output)  # plain Keras: loads without the ternary classes
    assert type(stripped.get_layer("conv2")) is keras.layers.Conv2D
    assert np.unique(stripped.get_layer("conv2").kernel.numpy()).size == 3


@pytest.mark.slow
@pytest.mark.parametrize(("flag", "message"), [
    ("--lambda_max_divr=0", "--lambda_max_divr must be > 0"),
    ("--epochs=0", "--epochs must be ≥ 1"),
])
def test_ternarize_script_bad_input(tmp_path, flag, message):
    output = tmp_path / "out.keras"
    process = run_script("ternarize", f"--model={REPO / 'models' / 'lenet5_fashion_mnist.keras'}", flag,
                         f"--output={output}", check=False, fresh=flag == "--epochs=0")  # one in a new interpreter
    assert process.returncode != 0 and message in process.stderr
    assert not output.exists()
