"""The scripts chained the way a user chains them, on the reference LeNet-5: each keeps what the previous made.

snip.py → prune.py: the WeightMask layers survive channel surgery and the fine-tune (zeros exactly zero);
a plain sparse model gets them from --keep_zeros. prune.py → ternarize.py → export.py (int8) → evaluate.py,
score.py: the pruned model ternarizes, exports with ≤ 3 values per output channel and scores the ternary way.
prune.py --plan: the saved plan re-applied to a freshly initialized LeNet-5 gives the same channels.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import tfcompress as tfc
from tests.conftest import REPO, run_script
from tfcompress.keras_graph import iter_layers
from tfcompress.pruning import weight_masks
from tfcompress.quantization import ternary

LENET5 = REPO / "models" / "lenet5_fashion_mnist.keras"  # 89.84 % on the Fashion-MNIST test split
LIMIT = "--train_limit=3000"  # every training step of these tests: one epoch of 3000 images


def sidecar(path) -> dict:
    return json.loads(path.with_name(path.name + ".json").read_text())


def channels_after(path, layer: str) -> int:
    return next(g["channels_after"] for g in sidecar(path)["groups"] if g["layers"] == [layer])


@pytest.fixture
def pruned(lenet5_macs50):
    """prune.py --target_macs=0.5 with one epoch of fine-tuning on the reference LeNet-5 (and its OUTPUT.json):
    ``lenet5_macs50`` of tests/conftest.py, shared with tests/test_channel_pruning.py (read only)."""
    return lenet5_macs50


def _masked_weights(model) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """{layer: {weight: (mask, value)}} of the model's WeightMask layers."""
    return {layer.name: {w: (mask, np.asarray(getattr(layer.layer, w).numpy())) for w, mask in
                         layer.get_masks().items()}
            for layer in iter_layers(model) if isinstance(layer, weight_masks.WeightMask)}


def _assert_zeros_kept(model, source_plain, plan) -> None:
    """Every WeightMask of ``model`` masks exactly the zeros of ``source_plain`` cut to ``plan``, and the masked
    weights are still exactly zero (after fine-tuning)."""
    expected = tfc.pruning.apply_plan(source_plain, plan)  # plain surgery: the source's zeros, sliced
    masked = _masked_weights(model)
    assert sorted(masked) == ["conv1", "conv2", "fc1", "logits"]
    for name, per in masked.items():
        for weight, (mask, value) in per.items():
            assert np.array_equal(mask, getattr(expected.get_layer(name), weight).numpy() != 0), (name, weight)
            assert not value[~mask].any(), (name, weight)


@pytest.mark.slow
def test_snip_then_prune_keeps_the_zeros_through_fine_tuning(tmp_path):
    snipped = tmp_path / "lenet5_snip90.keras"
    run_script("snip", f"--model={LENET5}", "--init=model", "--target_sparsity=0.9", "--epochs=1", LIMIT,
               f"--output={snipped}")
    assert sidecar(snipped)["layer_sparsity"]["total"]["sparsity"] == pytest.approx(0.9, abs=1e-4)
    output = tmp_path / "lenet5_snip90_macs60.keras"
    process = run_script("prune", f"--model={snipped}", "--target_macs=0.6", "--finetune_epochs=1", LIMIT,
                         f"--output={output}")
    assert "4 WeightMask (conv1, conv2, fc1, logits)" in process.stdout
    report = sidecar(output)
    assert report["macs_after"] <= 0.6 * report["macs_before"]
    model = tfc.export.load_keras_model(output)
    _assert_zeros_kept(model, tfc.export.strip(tfc.export.load_keras_model(snipped)), report)
    # Global L1 ranking removes the emptiest channels first (fc1 keeps 188 of 500 units), so what stays is denser
    # than 90 % (≈ 78 % here); the zeros that stay are exactly the source's.
    sparsity = weight_masks.weight_sparsity(model)["total"]["sparsity"]
    assert sparsity == pytest.approx(report["weight_mask_sparsity"]["sparsity"], abs=0.02) and sparsity >= 0.7
    assert report["accuracy_finetuned"] >= 0.80, report["accuracy_finetuned"]  # 82–84 % measured; reference 89.84 %


@pytest.mark.slow
def test_plain_sparse_model_keeps_its_zeros_by_default(tmp_path):
    reference = tfc.export.load_keras_model(LENET5)
    sparse = tfc.export.strip(tfc.pruning.magnitude.prune_magnitude(reference, 0.9))  # plain layers, 90 % zeros
    source = tfc.files.save_model(sparse, tmp_path / "lenet5_magnitude90_plain.keras")
    output = tmp_path / "lenet5_magnitude90_channels90.keras"
    process = run_script("prune", f"--model={source}", "--dataset=fashion_mnist", "--target_channels=0.9",
                         "--finetune_epochs=1", "--train_limit=1000", f"--output={output}")
    assert "keep_zeros on (default: ≥ 50% zeros; the plain prunable kernels are 90.0% zeros)" in process.stdout
    report = sidecar(output)
    assert report["keep_zeros"]["enabled"] and report["keep_zeros"]["wrapped"] == ["conv1", "conv2", "fc1", "logits"]
    _assert_zeros_kept(tfc.export.load_keras_model(output), sparse, report)
    evaluation = tmp_path / "eval.json"
    run_script("evaluate", f"--model={output}", "--limit=1000", f"--json={evaluation}")  # WeightMask layers load
    result = json.loads(evaluation.read_text())
    assert result["runtime"] == "keras" and result["examples"] == 1000 and result["accuracy"] > 0.7


@pytest.mark.slow
def test_prune_ternarize_export_int8_evaluate_and_score(pruned, tmp_path):
    ternarized = tmp_path / "lenet5_macs50_ec2t.keras"
    run_script("ternarize", f"--model={pruned}", "--epochs=1", "--retrain_epochs=1", LIMIT,
               f"--output={ternarized}")
    ternary_report = sidecar(ternarized)
    model = tfc.export.load_keras_model(ternarized)
    conv2 = model.get_layer("conv2")  # the pruned shape, ternary layer kept
    assert isinstance(conv2, ternary.TernaryConv2D)
    assert conv2.kernel.shape[2:] == (model.get_layer("conv1").filters, channels_after(pruned, "conv2"))

    tflite = tmp_path / "lenet5_macs50_ec2t_int8.tflite"
    process = run_script("export", f"--model={ternarized}", "--quantization=int8", "--num_calibration=300",
                         "--parity_examples=500", f"--output={tflite}")
    assert "stripping into plain layers: 1 TernaryConv2D (conv2)" in process.stdout
    distinct = _int8_distinct_values_per_output_channel(tflite, ["conv1", "conv2", "fc1"])
    assert distinct["conv2"] <= 3 and distinct["conv1"] > 3 and distinct["fc1"] > 3, distinct

    evaluation = tmp_path / "eval.json"
    run_script("evaluate", f"--model={tflite}", f"--json={evaluation}")
    litert = json.loads(evaluation.read_text())
    assert litert["runtime"] == "litert" and litert["examples"] == 10000
    # int8 follows the ternary Keras model (81–82 % measured); one short epoch of each technique on 3000 images costs
    # a few points against the reference's 89.84 %, a broken pipeline far more.
    assert abs(litert["accuracy"] - ternary_report["test_accuracy"]) <= 0.01, (litert, ternary_report)
    assert litert["accuracy"] >= 0.78, litert

    scored = tmp_path / "score.json"
    process = run_script("score", f"--model={ternarized}", f"--json={scored}")
    assert re.search(r"conv2\s+TernaryConv2D.*ternary", process.stdout)
    score = json.loads(scored.read_text())["score"]
    # the ternary layers' counting equals that of their stripped kernels (ternarize.py scores the stripped model)
    assert score == pytest.approx(ternary_report["micronet"]["score"], rel=1e-6)
    assert score < ternary_report["micronet"]["float_score"]


@pytest.mark.slow
def test_plan_reapplied_to_a_fresh_lenet5_gives_the_same_channels(pruned, tmp_path):
    fresh = tfc.files.save_model(tfc.zoo.build("lenet5", (28, 28, 1), 10), tmp_path / "lenet5_fresh.keras")
    plan = pruned.with_name(pruned.name + ".json")
    output = tmp_path / "lenet5_macs50_scratch.keras"
    run_script("prune", f"--model={fresh}", "--dataset=fashion_mnist", f"--plan={plan}", "--finetune_epochs=1", LIMIT,
               f"--output={output}")
    original, report = sidecar(pruned), sidecar(output)
    channels = [(g["layers"], g["channels_after"]) for g in report["groups"]]
    assert channels == [(g["layers"], g["channels_after"]) for g in original["groups"]]
    assert (report["macs_after"], report["params_after"]) == (original["macs_after"], original["params_after"])
    scratch, pruned_model = tfc.export.load_keras_model(output), tfc.export.load_keras_model(pruned)
    assert [w.shape for w in scratch.weights] == [w.shape for w in pruned_model.weights]
    assert report["accuracy_finetuned"] > 0.3  # one short epoch from scratch (≈ 0.45–0.52 measured): it learns

    # the plan is an input too: an OUTPUT.json beside --output must not overwrite it
    clash = run_script("prune", f"--model={fresh}", f"--plan={plan}", f"--output={pruned}", check=False)
    assert clash.returncode != 0 and "same file as the input" in clash.stderr
    assert sidecar(pruned) == original


def _int8_distinct_values_per_output_channel(path, names: list[str]) -> dict[str, int]:
    """The most distinct int8 values in one output channel of each named layer's weight tensor (BatchNorm folding
    and per-channel scales included)."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    found = {}
    for detail in interpreter.get_tensor_details():
        quantization = detail["quantization_parameters"]
        if detail["dtype"] != np.int8 or len(quantization["scales"]) < 2 or len(detail["shape"]) not in (2, 4):
            continue
        owner = [name for name in names if re.search(rf"/{name}(?:_\d+)?/", detail["name"])]
        if not owner:
            continue
        weights = interpreter.get_tensor(detail["index"])
        axis = quantization["quantized_dimension"]
        per_channel = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1)
        found[owner[0]] = max(int(np.unique(row).size) for row in per_channel)
    assert sorted(found) == sorted(names), found
    return found
