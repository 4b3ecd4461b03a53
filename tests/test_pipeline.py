"""Compression pipelines: recipes checked before work, stages chained and measured, runs resumed stage by stage."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from tests.conftest import REPO
from tfcompress import data, pipeline, runtime
from tfcompress.pipeline import Context, Measurement, Recipe, RecipeError
from tfcompress.quantization import ternary

LENET = REPO / "models" / "lenet5_fashion_mnist.keras"


@pytest.fixture(scope="module")
def context():
    options = {"batch_size": 128}
    return Context(
        original=keras.models.load_model(LENET),
        train=data.load("fashion_mnist", "train", augment=True, shuffle=True, seed=0, limit=2048, **options),
        test=data.load("fashion_mnist", "test", limit=1000, **options),
    )


@pytest.mark.parametrize(("entries", "message"), [
    ([{"stage": "prun"}], "unknown stage 'prun'; stages: prune, sparsify"),
    ([{"stage": "prune", "target_macs": 0.5, "ratio": 2}], "unknown argument(s) ratio; prune takes"),
    ([{"stage": "prune", "method": "l7", "target_macs": 0.5}], "unknown method 'l7'"),
    ([{"stage": "prune", "target_macs": 0.5, "target_channels": 0.5}], "give exactly one of"),
    ([{"stage": "prune", "method": "netadapt", "target_macs": 0.5}], "netadapt prunes to a target_latency"),
    ([{"stage": "quantize", "precision": "int4"}], "precision is one of float32"),
    ([{"stage": "distill", "teacher": "/nowhere.keras"}], "'/nowhere.keras' is neither"),
    ([{"stage": "ternarize", "epochs": 0}], "need epochs ≥ 1"),
    ([{"stage": "decompose", "structure": "rows"}], "unknown structure 'rows'"),
    ([{"method": "l1"}], "entry 1 must be an object with a \"stage\" name"),
    ([], "the recipe has no stage"),
    ({"stage": "prune"}, "a recipe is a list of stages"),
])
def test_bad_recipes_are_refused_before_any_work(entries, message):
    with pytest.raises(RecipeError) as error:
        Recipe.parse(entries)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_the_precision_in_force_follows_the_last_quantize_stage(tmp_path):
    recipe = Recipe.parse([{"stage": "evaluate"}, {"stage": "quantize", "precision": "float16"},
                           {"stage": "finetune"}, {"stage": "quantize"}])
    assert [recipe.precision_after(i) for i in range(4)] == ["float32", "float16", "float16", "int8"]
    path = tmp_path / "r.json"
    path.write_text(json.dumps({"stages": recipe.to_list()}))
    assert Recipe.load(path) == recipe
    path.write_text("[{")
    with pytest.raises(RecipeError, match="is not JSON"):
        Recipe.load(path)


@pytest.mark.slow
def test_prune_distill_ternarize_int8_chain_measures_every_stage_and_resumes(context, tmp_path):
    recipe = [{"stage": "prune", "method": "l1", "target_macs": 0.5},
              {"stage": "distill", "epochs": 1, "lr": 0.01, "alpha": 0.2, "temperature": 2.0},
              {"stage": "ternarize", "method": "ec2t", "epochs": 1},
              {"stage": "quantize", "precision": "int8"}]
    measurement = Measurement(runs=10, eval_limit=500)
    lines = []
    context.progress = lines.append
    result = pipeline.run_recipe(context.original, recipe, context, tmp_path / "run", measurement)
    rows = result.rows
    assert [row["step"] for row in rows] == ["00_original", "01_prune", "02_distill", "03_ternarize", "04_quantize"]
    assert [row["precision"] for row in rows] == ["float32"] * 4 + ["int8"]
    original, pruned, distilled, ternarized, quantized = rows
    assert pruned["macs"] <= 0.5 * original["macs"] * 1.01 and pruned["params"] < original["params"]
    assert distilled["keras_accuracy"] > pruned["keras_accuracy"] and distilled["keras_accuracy"] > 0.75
    assert ternarized["macs"] == pruned["macs"] and quantized["keras_accuracy"] == ternarized["keras_accuracy"]
    assert quantized["tflite_bytes"] < 0.4 * ternarized["tflite_bytes"]  # int8 weights
    assert abs(quantized["litert_accuracy"] - ternarized["litert_accuracy"]) < 0.05
    assert all(row["latency_ms"] > 0 and row["host"]["isa"] for row in rows)
    # the final model is the ternary one (three values per ternarized layer); its .tflite is the int8 export
    layers = ternary.ternary_layers(result.model)
    assert layers and all(np.unique(keras.ops.convert_to_numpy(layer.ternary_kernel())).size <= 3 for layer in layers)
    lite = runtime.TFLiteModel(result.tflite)
    assert tuple(lite.input_shape) == (28, 28, 1) and lite.input_dtype == np.float32  # int8 inside, float I/O
    assert (result.tflite.read_bytes() == (tmp_path / "run" / "04_quantize" / "model.tflite").read_bytes())
    summary = (tmp_path / "run" / "summary.md").read_text()
    assert "| 03_ternarize |" in summary and "ISA" in summary and (tmp_path / "run" / "summary.png").stat().st_size
    # resumed: nothing is run again; a changed last stage runs again alone
    lines.clear()
    again = pipeline.run_recipe(context.original, recipe, context, tmp_path / "run", measurement)
    assert sum("done before" in line for line in lines) == 4 and again.rows == rows
    lines.clear()
    recipe[-1] = {"stage": "quantize", "precision": "float16"}
    changed = pipeline.run_recipe(context.original, recipe, context, tmp_path / "run", measurement)
    assert sum("done before" in line for line in lines) == 3
    assert changed.rows[-1]["precision"] == "float16" and changed.rows[:4] == rows[:4]


@pytest.mark.slow
def test_sparsify_then_decompose_then_finetune_keeps_the_chain_honest(context, tmp_path):
    recipe = [{"stage": "sparsify", "method": "magnitude", "sparsity": 0.6},
              {"stage": "finetune", "epochs": 1, "lr": 0.005},
              {"stage": "decompose", "compression_factor": 0.6}]
    result = pipeline.run_recipe(context.original, recipe, context, tmp_path / "run",
                                 Measurement(runs=5, eval_limit=300))
    original, sparse, tuned, decomposed = result.rows
    assert sparse["nonzero_params"] <= 0.45 * original["nonzero_params"]
    assert tuned["nonzero_params"] == sparse["nonzero_params"]  # the masks held through fine-tuning
    assert decomposed["macs"] < tuned["macs"]
    assert all(abs(row["litert_accuracy"] - row["keras_accuracy"]) < 0.05 for row in result.rows)
