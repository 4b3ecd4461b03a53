"""Channel importances and targets (fractions kept), plans saved and re-applied, and scripts/prune.py."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import REPO, run_script
from tfcompress import zoo
from tfcompress.graph import ChannelGraph
from tfcompress.profile import profile
from tfcompress.pruning import PruningPlan, apply_plan, get_importance, plan_channels, prune_channels, shrink


def test_l1_scores_are_filter_norms_summed_over_the_group():
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    graph = ChannelGraph(model)
    scores = get_importance("l1").scores(graph)
    conv1 = model.get_layer("stage1_block0_conv1").kernel.numpy()
    group = next(g for g in graph.groups.values() if g.producers == ["stage1_block0_conv1"])
    np.testing.assert_allclose(scores[group.id], np.abs(conv1).sum(axis=(0, 1, 2)), rtol=1e-6)
    stream = next(g for g in graph.groups.values() if "stem" in g.producers)
    expected = sum(np.abs(model.get_layer(name).kernel.numpy()).sum(axis=(0, 1, 2)) for name in stream.producers)
    np.testing.assert_allclose(scores[stream.id], expected, rtol=1e-6)
    bn = get_importance("bn").scores(graph)
    gamma = model.get_layer("stage1_block0_conv1_bn").gamma.numpy()
    np.testing.assert_allclose(bn[group.id], np.abs(gamma))


@pytest.mark.parametrize("importance", ["l1", "l2", "bn", "random", "uniform"])
@pytest.mark.parametrize(("target", "metric"), [("target_macs", "macs"), ("target_params", "params")])
def test_targets_are_met_and_measured_exactly(importance, target, metric):
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    result = prune_channels(model, importance, **{target: 0.5})
    small, plan = result.model, result.plan
    after = profile(small).total.macs if metric == "macs" else small.count_params()
    before = plan.macs_before if metric == "macs" else plan.params_before
    assert after == (plan.macs_after if metric == "macs" else plan.params_after)
    assert 0.40 * before < after <= 0.5 * before


def test_uniform_removes_the_same_fraction_everywhere():
    plan = prune_channels(zoo.resnet_cifar(20, (32, 32, 1), 10), "uniform", target_channels=0.75).plan
    for group, before in plan.channels_before.items():
        if group in plan.masks:
            assert plan.channels_after[group] == before - round(0.25 * before)


def test_a_caller_cost_function_drives_the_plan():
    graph = ChannelGraph(zoo.lenet5())
    scores = get_importance("l1").scores(graph)
    conv_groups = {g.id for g in graph.prunable_groups if g.producers[0].startswith("conv")}

    def conv_channels(counts):  # a "latency" that only the convolutions' widths drive
        return sum(counts.get(g, graph.groups[g].size) for g in conv_groups)

    plan = plan_channels(graph, scores, cost_fn=conv_channels, target_cost=0.5)
    assert conv_channels(plan.channels_after) <= 0.5 * conv_channels({})

    def noisy(counts):  # a table measured under load: the smallest widths timed slower than the full model
        full = conv_channels({})
        return full if conv_channels(counts) == full else 1.01 * full
    assert not plan_channels(graph, scores, cost_fn=noisy, target_cost=1.0).masks  # met as it is


def test_bad_targets_are_refused():
    model = zoo.lenet5()
    with pytest.raises(ValueError, match="cannot be reached without emptying a group"):
        prune_channels(model, "l1", target_macs=0.001)
    with pytest.raises(ValueError, match=r"fraction of the original kept\) must be in \(0, 1\]"):
        prune_channels(model, "l1", target_channels=0.0)
    with pytest.raises(ValueError, match="exactly one target"):
        prune_channels(model, "l1", target_channels=0.8, target_macs=0.5)
    with pytest.raises(ValueError, match=r"unknown importance 'hessian'; known: .*taylor, uniform"):
        prune_channels(model, "hessian", target_channels=0.8)
    with pytest.raises(ValueError, match="needs data="):
        prune_channels(model, "fisher", target_channels=0.8)


@pytest.mark.slow
def test_prune_script_writes_model_and_kept_channels(lenet5_macs50, tmp_path):
    # lenet5_macs50 (tests/conftest.py): scripts/prune.py --importance=l1 --target_macs=0.5 --finetune_epochs=1
    # --train_limit=3000 on the reference LeNet-5, run once for this test and tests/test_script_composition.py
    source = REPO / "models" / "lenet5_fashion_mnist.keras"
    report = json.loads(lenet5_macs50.with_name(lenet5_macs50.name + ".json").read_text())
    conv1 = next(g for g in report["groups"] if g["name"] == "conv1")
    assert conv1["layers"] == ["conv1"]  # keyed by layer names: re-appliable with --plan
    assert conv1["channels_before"] == 20 and conv1["channels_after"] == len(conv1["keep"]) < 20
    assert report["macs_after"] <= 0.5 * report["macs_before"]
    assert report["accuracy_finetuned"] > report["accuracy_pruned"] - 0.02 and report["accuracy_finetuned"] > 0.8
    assert report["flags"]["importance"] == "l1" and report["flags"]["target_macs"] == 0.5
    assert PruningPlan.load(lenet5_macs50.with_name(lenet5_macs50.name + ".json"))["groups"] == report["groups"]
    # OUTPUT and OUTPUT.json, nothing else (`built` is the marker of tests/conftest.py's built_once)
    assert sorted(p.name for p in lenet5_macs50.parent.iterdir()) == [
        "built", "lenet5_macs50.keras", "lenet5_macs50.keras.json"]
    refused = run_script("prune", f"--model={source}", "--target_channels=0.8", f"--output={source}", check=False)
    assert refused.returncode != 0 and "same file as the input" in refused.stderr
    both = run_script("prune", f"--model={source}", "--target_channels=0.8", "--target_macs=0.5",
                      f"--output={tmp_path / 'both.keras'}", check=False, fresh=True)  # prune.py's fresh process
    assert both.returncode != 0 and "give exactly one of --target_channels" in both.stderr
    removed = run_script("prune", f"--model={source}", "--target_channels=0", f"--output={tmp_path / 'x.keras'}",
                         check=False)
    assert removed.returncode != 0 and "fraction of the original kept" in removed.stderr
    assert list(tmp_path.iterdir()) == []  # the refused runs wrote nothing


def test_channel_multiple_keeps_simd_friendly_counts_and_meets_the_target():
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    result = prune_channels(model, "l1", target_macs=0.5, channel_multiple=8)
    small, plan = result.model, result.plan
    for group, after in plan.channels_after.items():
        if group in plan.masks:
            assert after % 8 == 0 and after == int(plan.masks[group].sum())
    assert profile(small).total.macs == plan.macs_after <= 0.5 * plan.macs_before
    with pytest.raises(ValueError, match="channel_multiple"):
        prune_channels(model, "l1", target_channels=0.8, channel_multiple=0)


def test_a_saved_plan_reapplies_to_a_fresh_model_by_layer_names(tmp_path):
    trained = zoo.resnet_cifar(20, (32, 32, 1), 10)
    plan = prune_channels(trained, "l1", target_macs=0.5).plan
    plan.save(tmp_path / "plan.json")
    fresh = zoo.resnet_cifar(20, (32, 32, 1), 10)  # same architecture, new weights: retrain from scratch
    small = apply_plan(fresh, PruningPlan.load(tmp_path / "plan.json"))
    assert profile(small).total.macs == plan.macs_after
    pruned = prune_channels(trained, "l1", target_macs=0.5).model
    assert [w.shape for w in small.weights] == [w.shape for w in pruned.weights]
    # the same channels of the fresh model: what masking them in the fresh model computes
    reference = shrink(fresh, plan.masks)
    x = np.random.default_rng(0).normal(size=(4, 32, 32, 1)).astype("float32")
    np.testing.assert_allclose(small(x), reference(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="not the same architecture"):
        apply_plan(zoo.resnet_cifar(20, (32, 32, 3), 100), {"groups": [
            {**entry, "channels_before": entry["channels_before"] + 1} for entry in plan.to_dict()["groups"]]})
    (tmp_path / "other.json").write_text('{"groups": []}')
    with pytest.raises(ValueError, match="not a tfcompress channel plan"):
        PruningPlan.load(tmp_path / "other.json")


def _labelled_batch(model, n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *model.input_shape[1:])).astype("float32"), rng.integers(0, 10, n)


def test_data_driven_importances_follow_their_formulas():
    model = zoo.lenet5()
    x, y = _labelled_batch(model)
    graph = ChannelGraph(model)
    conv1 = next(g for g in graph.groups.values() if g.producers == ["conv1"])
    kernel = model.get_layer("conv1").kernel
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x, training=False))
    g = tape.gradient(loss, kernel.value).numpy()
    w = kernel.numpy()
    taylor = get_importance("taylor").fit(graph, (x, y))(graph, conv1)
    np.testing.assert_allclose(taylor, np.square((g * w).sum(axis=(0, 1, 2))), rtol=1e-4)
    snip = get_importance("snip").fit(graph, (x, y))
    raw = np.abs(g * w).sum(axis=(0, 1, 2))
    assert np.argsort(snip(graph, conv1)).tolist() == np.argsort(raw).tolist()
    assert sum(snip(graph, group).sum() for group in graph.prunable_groups) <= 1.0 + 1e-9

    # Fisher: Δ_c = 1/(2N) Σ_n (Σ_hw a·g)², a = what conv2 reads (pool1's output), g its per-example gradient.
    fisher = get_importance("fisher").fit(graph, (x, y))(graph, conv1)
    reader = keras.Model(model.inputs, [model.get_layer("pool1").output, model.output])
    with tf.GradientTape() as tape:
        a, logits = reader(x, training=False)
        total = keras.ops.sum(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
    gate = (a * tape.gradient(total, a)).numpy().sum(axis=(1, 2))
    np.testing.assert_allclose(fisher, np.square(gate).sum(axis=0) / (2 * len(x)), rtol=1e-4)
    result = prune_channels(model, "fisher", target_channels=0.5, scope="local", data=(x, y))
    assert result.model.get_layer("conv1").filters == 10
    kept = np.flatnonzero(result.plan.masks[conv1.id])
    assert set(kept) == set(np.argsort(fisher, kind="stable")[10:])  # the 10 channels with the largest Δ

