"""Tucker / SVD decomposition with a sparse residual: the maths, the blocks, the search, composition, the script."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.conftest import REPO, run_script
from tfcompress.decomposition import Structure, decompose, factored_block, sparse_partial_tucker

LENET = REPO / "models" / "lenet5_fashion_mnist.keras"


def _low_rank_kernel(rng, spatial=(3, 3), c_in=24, c_out=32, ranks=(6, 5)) -> np.ndarray:
    core = rng.normal(size=(*spatial, *ranks))
    u_in = np.linalg.qr(rng.normal(size=(c_in, ranks[0])))[0]
    u_out = np.linalg.qr(rng.normal(size=(c_out, ranks[1])))[0]
    return np.einsum("...ab,ia,jb->...ij", core, u_in, u_out)


def test_tucker_recovers_a_low_rank_kernel_and_a_planted_sparse_residual_exactly():
    rng = np.random.default_rng(0)
    kernel = _low_rank_kernel(rng)
    assert np.abs(sparse_partial_tucker(kernel, (6, 5)).kernel() - kernel).max() < 1e-10
    planted = kernel.copy()
    spikes = rng.choice(kernel.size, 60, replace=False)
    planted.flat[spikes] += rng.choice([-1, 1], 60) * (3 + rng.random(60))
    factors = sparse_partial_tucker(planted, (6, 5), 100 * 60 / kernel.size)
    assert set(np.flatnonzero(factors.sparse)) == set(spikes)  # the residual found exactly the planted entries
    assert np.linalg.norm(factors.kernel() - planted) < 1e-3 * np.linalg.norm(planted)  # to the sweeps' tol
    # a lower rank cannot be exact, and a sparse residual of 5 % makes the fit strictly better
    plain = np.linalg.norm(sparse_partial_tucker(kernel, (3, 3)).kernel() - kernel)
    hybrid = np.linalg.norm(sparse_partial_tucker(kernel, (3, 3), 5.0).kernel() - kernel)
    assert 0 < hybrid < 0.9 * plain


@pytest.mark.parametrize("name", ["unstructured", "filter", "channel", "block_4x8"])
def test_sparse_residual_follows_its_structure_and_density(name):
    rng = np.random.default_rng(1)
    kernel = rng.normal(size=(3, 3, 16, 32))
    factors = sparse_partial_tucker(kernel, (4, 4), 5.0, Structure.parse(name), n_iter_max=20)
    support = factors.sparse != 0
    assert abs(support.mean() - 0.05) < 0.01
    if name == "filter":  # one decision per (kh, kw, c_in) for every output channel
        assert np.all(support == support[..., :1])
    if name == "channel":
        assert np.all(support == support[..., :1, :])
    if name == "block_4x8":
        blocks = support.reshape(3, 3, 4, 4, 4, 8)
        assert np.all(blocks == blocks[:, :, :, :1, :, :1])


@pytest.mark.parametrize("layer, shape", [
    (lambda: keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"), (15, 15, 24)),
    (lambda: keras.layers.Conv2D(32, 1, strides=2), (16, 16, 24)),
    (lambda: keras.layers.Dense(20, activation="tanh"), (7, 24)),
    (lambda: keras.layers.Conv1D(8, 5, dilation_rate=2), (30, 12)),
])
@pytest.mark.parametrize("density", [0.0, 3.0])
def test_a_block_computes_exactly_the_reconstructed_kernel(layer, shape, density):
    rng = np.random.default_rng(2)
    original = layer()
    inputs = keras.Input(shape)
    model = keras.Model(inputs, original(inputs))
    original.set_weights([rng.normal(size=w.shape).astype("float32") for w in original.get_weights()])
    factors = sparse_partial_tucker(original.kernel.numpy(), (min(6, shape[-1]), 6), density)
    reference = keras.models.clone_model(model)
    reference.set_weights([factors.kernel().astype("float32"), original.bias.numpy()])
    block_inputs = keras.Input(shape)
    block = keras.Model(block_inputs, factored_block(original, factors, original.bias.numpy())(block_inputs))
    x = rng.random((4, *shape)).astype("float32")
    expected = np.asarray(reference(x))
    assert np.abs(np.asarray(block(x)) - expected).max() <= 1e-5 * np.abs(expected).max()
    kinds = [type(sub).__name__ for sub in block.layers[1:]]
    pointwise = np.prod(original.kernel.shape[:-2]) == 1
    assert kinds.count(type(original).__name__) == (2 if pointwise else 3) + (density > 0)


def _small_cnn(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    y = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv")(keras.layers.ReLU()(x))
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.Conv2D(16, 1, name="pw")(y)
    x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


def test_data_free_meets_its_budget_and_the_litert_model_matches():
    model = _small_cnn()
    result = decompose(model, compression_factor=0.5)
    by_name = {choice.name: choice for choice in result.layers}
    assert "depthwise" in by_name["dw"].reason and by_name["dw"].ranks is None
    split = result.split
    assert len(split) >= 2
    # budgets from the kernels' spread average the factor (less where clipped at 1); each split fits its own
    budgets = [c.budget for c in result.layers if c.budget is not None]
    assert len(budgets) == 4 and np.mean(budgets) <= 0.5 + 1e-9 and len(set(budgets)) == 4
    assert all(c.score <= c.budget + 1e-9 for c in split)
    assert sum(c.macs_after for c in split) < sum(c.macs_before for c in split)
    # the decomposed model is plain Keras: it converts and LiteRT matches it to 1e-4 of the logit range
    x = np.random.default_rng(3).random((16, 12, 12, 3)).astype("float32")
    keras_logits = np.asarray(result.model(x))
    tflite = tfc.runtime.TFLiteModel(tfc.export.to_tflite(result.model, "float32"))
    litert_logits = tflite.predict(x)
    assert np.abs(litert_logits - keras_logits).max() <= 1e-4 * np.ptp(keras_logits)


def test_evaluation_led_keeps_the_holdout_accuracy_within_its_budget():
    model = tfc.export.load_keras_model(LENET)
    holdout = tfc.data.load("fashion_mnist", "train", batch_size=400, shuffle=True, seed=3).take(1)
    images, labels = (part.numpy() for part in next(iter(holdout)))
    base = float(np.mean(np.argmax(model.predict(images, verbose=0), -1) == labels))
    result = decompose(model, method="evaluation", max_acc_loss=0.03, holdout=(images, labels), n_iter_max=15,
                       layers=["conv1", "conv2", "logits"])  # fc1 (800×500) takes 20 s more: the benchmark has it
    after = float(np.mean(np.argmax(result.model.predict(images, verbose=0), -1) == labels))
    assert after >= base - 0.03 - 1e-9
    assert result.split, "LeNet-5's conv2 has room to split within 3 points"
    assert after == pytest.approx(result.split[-1].accuracy)  # the search's last measurement is the model's
    assert sum(c.params_after for c in result.split) < 0.8 * sum(c.params_before for c in result.split)
    assert next(c for c in result.layers if c.name == "fc1").reason == "not in layers=[...]"


def test_decomposition_composes_with_masks_pruning_ternary_and_back():
    model = _small_cnn(1)
    x = np.random.default_rng(4).random((8, 12, 12, 3)).astype("float32")
    # a weight-masked model is split as it computes: its zeros are in the kernel the factors approximate
    masked = tfc.pruning.magnitude.prune_magnitude(model, 0.6)
    dense_view = tfc.export.strip(masked)
    decomposed = decompose(masked, compression_factor=0.9, layers=["conv"]).model
    masks_before, masks_after = (set(tfc.pruning.weight_masks.get_masks(m)) for m in (masked, decomposed))
    assert "conv" in masks_before and masks_after == masks_before - {"conv"}  # the others keep their masks
    # a decomposed model channel-prunes (graph over the new convolutions), ternarizes and exports
    pruned = tfc.pruning.prune_channels(decomposed, "l1", target_macs=0.7).model
    ternary = tfc.quantization.ternary.ternarize(decomposed)
    for variant in (decomposed, pruned, ternary):
        logits = np.asarray(variant(x))
        litert = tfc.runtime.TFLiteModel(tfc.export.to_tflite(variant, "float32")).predict(x)
        assert np.abs(litert - logits).max() <= 1e-4 * max(np.ptp(logits), 1e-6)
    assert np.asarray(dense_view(x)).shape == (8, 10)
    # a decomposed model decomposes again (its new pointwise layers are Conv2D) without touching the original
    weights = [w.copy() for w in decomposed.get_weights()]
    again = decompose(decomposed, compression_factor=0.5)
    assert all(np.array_equal(a, b) for a, b in zip(weights, decomposed.get_weights(), strict=True))
    assert again.split


@pytest.mark.parametrize("kwargs, message", [
    ({"layers": ["nope"]}, "not in model"),
    ({"layers": ["dw"]}, "depthwise convolution has one filter per channel"),
    ({"layers": ["bn"]}, "has no kernel to split"),
    ({"structure": "block_5x5", "layers": ["conv"]}, "divisible by the block"),
    ({"structure": "rows"}, "unknown structure 'rows'"),
    ({"compression_factor": 1.0}, "compression_factor must be in (0, 1)"),
    ({"method": "evaluation"}, "needs holdout=(images, labels)"),
    ({"cost": "latency"}, "give device="),
    ({"sparsity_weight": 0.0}, "sparsity_weight must be > 0"),
])
def test_bad_settings_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        decompose(_small_cnn(), **kwargs)


def test_latency_cost_measures_blocks_on_the_device():
    model = _small_cnn()
    result = decompose(model, compression_factor=0.6, cost="latency", device="litert", layers=["conv"])
    choice = next(c for c in result.layers if c.name == "conv")
    assert choice.budget == pytest.approx(0.6)  # one layer: its budget is the factor
    if choice.ranks is not None:  # a measured ratio of two latencies, within the budget, not the MAC ratio
        assert choice.cost <= 0.6 and choice.cost != pytest.approx(choice.macs_after / choice.macs_before, rel=1e-3)
    else:
        assert "below the cheapest rank's cost" in choice.reason


def test_decompose_script_writes_the_model_and_its_report(tmp_path):
    output = tmp_path / "lenet5_tucker.keras"
    process = run_script("decompose", f"--model={LENET}", "--data_free", "--compression_factor=0.4",
                         "--sparsity_weight=inf", "--finetune_epochs=1", "--train_limit=2048", f"--output={output}")
    report = json.loads(output.with_name(output.name + ".json").read_text())
    assert report["after"]["params"] < report["before"]["params"]
    assert report["after"]["macs"] < report["before"]["macs"]
    after = report["after"]
    assert after["accuracy_fine_tuned"] > max(0.6, after["accuracy"] + 0.2)  # one short epoch recovers much
    conv2 = next(layer for layer in report["decomposition"]["layers"] if layer["name"] == "conv2")
    saved = {layer.name for layer in keras.saving.load_model(output).layers}
    assert conv2["ranks"] is not None and {"conv2_first", "conv2_core", "conv2_last"} <= saved
    assert "conv2_sparse" not in saved  # --sparsity_weight=inf: no sparse residual
    assert "conv2" in process.stdout and "budget" in process.stdout
    assert "smaller and cheaper" in process.stdout and "NOT smaller" not in process.stdout


def test_the_decompose_headline_is_what_the_deployed_tflite_stores_and_runs(tmp_path):
    from tfcompress import export

    output = tmp_path / "lenet5_residual.keras"  # the reference's default: sparse residuals, priced as sparse
    process = run_script("decompose", f"--model={LENET}", "--data_free", "--compression_factor=0.5",
                         f"--output={output}")
    before, after = (json.loads(output.with_name(output.name + ".json").read_text())[key] for key in ("before",
                                                                                                      "after"))
    params, macs = after["params"] / before["params"], after["macs"] / before["macs"]
    assert f"deployed: params ×{params:.3f}, MACs ×{macs:.3f}" in process.stdout
    assert "reference's accounting" in process.stdout  # the search's own totals say what they count
    deployed = export.size_report(export.to_tflite(keras.saving.load_model(output)))
    assert after["tflite_bytes"] == pytest.approx(deployed.tflite_bytes, rel=0.01)
    assert ("NOT smaller or cheaper as deployed" in process.stdout) == (params >= 1 or macs >= 1)
