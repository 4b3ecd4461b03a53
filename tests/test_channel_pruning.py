"""Channel criteria and targets, and scripts/prune.py end to end."""

import json

import numpy as np
import pytest

from tests.conftest import REPO, run_script
from tfcompress import zoo
from tfcompress.graph import ChannelGraph
from tfcompress.profile import profile
from tfcompress.pruning import get_criterion, plan_channels, prune_channels

RNG = np.random.default_rng(0)


def test_l1_scores_are_filter_norms_summed_over_the_group():
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    graph = ChannelGraph(model)
    scores = get_criterion("l1")(graph, RNG)
    conv1 = model.get_layer("stage1_block0_conv1").kernel.numpy()
    group = next(g for g in graph.groups.values() if g.producers == ["stage1_block0_conv1"])
    np.testing.assert_allclose(scores[group.id], np.abs(conv1).sum(axis=(0, 1, 2)), rtol=1e-6)
    stream = next(g for g in graph.groups.values() if "stem" in g.producers)
    expected = sum(np.abs(model.get_layer(name).kernel.numpy()).sum(axis=(0, 1, 2)) for name in stream.producers)
    np.testing.assert_allclose(scores[stream.id], expected, rtol=1e-6)
    bn = get_criterion("bn")(graph, RNG)
    gamma = model.get_layer("stage1_block0_conv1_bn").gamma.numpy()
    np.testing.assert_allclose(bn[group.id], np.abs(gamma))


@pytest.mark.parametrize("criterion", ["l1", "l2", "bn", "random", "uniform"])
@pytest.mark.parametrize(("target", "metric"), [("target_macs", "macs"), ("target_params", "params")])
def test_targets_are_met_and_measured_exactly(criterion, target, metric):
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    small, plan = prune_channels(model, criterion, **{target: 0.5})
    after = profile(small).total.macs if metric == "macs" else small.count_params()
    before = plan.macs_before if metric == "macs" else plan.params_before
    assert after == (plan.macs_after if metric == "macs" else plan.params_after)
    assert 0.40 * before < after <= 0.5 * before


def test_uniform_removes_the_same_fraction_everywhere():
    _, plan = prune_channels(zoo.resnet_cifar(20, (32, 32, 1), 10), "uniform", ratio=0.25)
    for group, before in plan.channels_before.items():
        if group in plan.masks:
            assert plan.channels_after[group] == before - round(0.25 * before)


def test_a_caller_cost_function_drives_the_plan():
    graph = ChannelGraph(zoo.lenet5())
    scores = get_criterion("l1")(graph, RNG)
    conv_groups = {g.id for g in graph.prunable_groups if g.producers[0].startswith("conv")}

    def conv_channels(counts):  # a "latency" that only the convolutions' widths drive
        return sum(counts.get(g, graph.groups[g].size) for g in conv_groups)

    plan = plan_channels(graph, scores, cost_fn=conv_channels, target_cost=0.5)
    assert conv_channels(plan.channels_after) <= 0.5 * conv_channels({})


def test_bad_targets_are_refused():
    model = zoo.lenet5()
    with pytest.raises(ValueError, match="cannot be reached without emptying a group"):
        prune_channels(model, "l1", target_macs=0.001)
    with pytest.raises(ValueError, match=r"must be in \[0, 1\)"):
        prune_channels(model, "l1", ratio=1.0)
    with pytest.raises(ValueError, match="exactly one target"):
        prune_channels(model, "l1", ratio=0.2, target_macs=0.5)
    with pytest.raises(ValueError, match="unknown criterion"):
        prune_channels(model, "taylor", ratio=0.2)


def test_prune_script_writes_model_and_kept_channels(tmp_path):
    output = tmp_path / "lenet5_pruned.keras"
    source = REPO / "models" / "lenet5_fashion_mnist.keras"
    run_script("prune", f"--model={source}", "--criterion=l1", "--target_macs=0.5", "--finetune_epochs=1",
               "--train_limit=3000", f"--output={output}")
    report = json.loads((tmp_path / "lenet5_pruned.keras.json").read_text())
    conv1 = next(g for g in report["groups"] if g["name"] == "conv1")
    assert conv1["channels_before"] == 20 and conv1["channels_after"] == len(conv1["keep"]) < 20
    assert report["macs_after"] <= 0.5 * report["macs_before"]
    assert report["accuracy_finetuned"] > report["accuracy_pruned"] - 0.02 and report["accuracy_finetuned"] > 0.8
    refused = run_script("prune", f"--model={source}", "--ratio=0.2", f"--output={source}", check=False)
    assert refused.returncode != 0 and "same file as the input" in refused.stderr


def test_channel_multiple_keeps_simd_friendly_counts_and_meets_the_target():
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    small, plan = prune_channels(model, "l1", target_macs=0.5, channel_multiple=8)
    for group, after in plan.channels_after.items():
        if group in plan.masks:
            assert after % 8 == 0 and after == int(plan.masks[group].sum())
    assert profile(small).total.macs == plan.macs_after <= 0.5 * plan.macs_before
    with pytest.raises(ValueError, match="channel_multiple"):
        prune_channels(model, "l1", ratio=0.2, channel_multiple=0)
