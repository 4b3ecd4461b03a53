"""Channel surgery: masked model ≡ shrunk model, nested and shared layers, training, saving, export, errors."""

import keras
import numpy as np
import pytest
from keras import layers

from tfcompress import export, keras_graph, pruning, runtime, training, zoo
from tfcompress.graph import ChannelGraph, ChannelMask

RNG = np.random.default_rng(0)


def relative_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1.0, np.ptp(a)))


def random_masks(graph, keep_fraction=0.7, seed=0):
    rng = np.random.default_rng(seed)
    masks = {}
    for group in graph.prunable_groups:
        mask = np.zeros(group.size, bool)
        mask[rng.choice(group.size, max(1, round(keep_fraction * group.size)), replace=False)] = True
        masks[group.id] = mask
    return masks


def _nested_and_shared_model():
    inner_in = keras.Input((8, 8, 6))
    h = layers.Conv2D(10, 3, padding="same", name="inner_conv")(inner_in)
    h = layers.BatchNormalization(name="inner_bn")(h)
    inner = keras.Model(inner_in, layers.ReLU(name="inner_relu")(h), name="block")
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(6, 3, padding="same", name="stem")(inputs)
    x = inner(x)
    shared = layers.Conv2D(10, 1, name="shared")
    x = layers.Add(name="add")([shared(x), x])
    x = shared(x)  # the same kernel applied again
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, layers.Dense(4, name="out")(x))


def test_nested_models_and_shared_layers_keep_parity():
    model = _nested_and_shared_model()
    graph = ChannelGraph(model)
    merged = next(g for g in graph.groups.values() if "inner_conv" in g.producers)
    assert "shared" in merged.producers  # Add ties the shared conv's output to the nested block's output
    masks = random_masks(graph)
    masked = pruning.insert_channel_masks(model, masks, graph=graph)
    small = pruning.shrink(masked)
    x = RNG.normal(size=(3, 8, 8, 3)).astype("float32")
    assert relative_diff(masked(x), small(x)) <= 1e-5
    assert small.count_params() < model.count_params()


def test_shrink_leaves_its_input_untouched_and_validates_masks():
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    before = [w.copy() for w in model.get_weights()]
    graph = ChannelGraph(model)
    group = graph.prunable_groups[0]
    pruning.shrink(model, {group.id: np.arange(group.size) % 2 == 0}, graph=graph)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    with pytest.raises(ValueError, match="removes all"):
        pruning.shrink(model, {group.id: np.zeros(group.size, bool)}, graph=graph)
    with pytest.raises(ValueError, match=r"must be in \[0, 16\)"):
        pruning.shrink(model, keep={group.id: [0, 16]}, graph=graph)
    with pytest.raises(ValueError, match="channels, mask has"):
        pruning.shrink(model, {group.id: np.ones(3, bool)}, graph=graph)
    logits = next(g for g in graph.groups.values() if "logits" in g.producers)
    with pytest.raises(ValueError, match="not prunable: model output"):
        pruning.shrink(model, {logits.id: np.arange(10) > 0}, graph=graph)
    with pytest.raises(ValueError, match="unknown group"):
        pruning.shrink(model, {999: np.ones(1, bool)}, graph=graph)


def _constant_channels_model(padding: str) -> tuple[keras.Model, dict[str, list[int]]]:
    """Channels whose kernel is zero but whose bias (c1) or β (c2's BatchNormalization) is not: constants,
    what MorphNet leaves of a dead channel."""
    inputs = keras.Input((12, 12, 3))
    h = layers.ReLU()(layers.Conv2D(8, 3, padding=padding, name="c1")(inputs))
    h = layers.Conv2D(6, 3, padding=padding, use_bias=False, name="c2")(h)
    h = layers.ReLU()(layers.BatchNormalization(name="bn2")(h))
    model = keras.Model(inputs, layers.Dense(4, name="fc")(layers.Flatten()(h)))
    dead = {"c1": [1, 5], "c2": [2]}
    for name, channels in dead.items():
        kernel = model.get_layer(name).kernel.numpy()
        kernel[..., channels] = 0
        model.get_layer(name).kernel.assign(kernel)
    model.get_layer("c1").bias.assign(RNG.uniform(0.2, 1.0, 8).astype("float32"))
    model.get_layer("bn2").beta.assign(RNG.uniform(0.2, 1.0, 6).astype("float32"))
    model.get_layer("bn2").moving_mean.assign(RNG.uniform(-0.1, 0.1, 6).astype("float32"))
    return model, dead


@pytest.mark.parametrize("padding", ["valid", "same"])
def test_mean_replacement_folds_removed_constant_channels_into_their_readers(padding):
    model, dead = _constant_channels_model(padding)
    graph = ChannelGraph(model)
    masks = {}
    for group in graph.prunable_groups:
        (producer,) = group.producers
        masks[group.id] = ~np.isin(np.arange(group.size), dead[producer])
    x = RNG.uniform(0, 1, (16, 12, 12, 3)).astype("float32")
    reference = model(x).numpy()
    removed = relative_diff(reference, pruning.shrink(model, masks, graph=graph)(x))
    replaced = relative_diff(reference, pruning.shrink(model, masks, graph=graph, calibration=[x])(x))
    assert removed > 0.05  # the constants were part of the output
    if padding == "valid":  # c2 (no bias) takes c1's constants in bn2's moving mean, fc its own in its bias
        assert replaced < 1e-5
    else:  # a 'same' border reads the padding's zeros, not the constant
        assert replaced < removed / 2
    with pytest.raises(ValueError, match="calibration has no batch"):
        pruning.shrink(model, masks, graph=graph, calibration=iter([]))


@pytest.mark.slow
def test_shrunk_model_trains_saves_reloads_and_exports(tmp_path):
    model = zoo.resnet_cifar(20, (32, 32, 1), 10)
    x = RNG.normal(size=(64, 32, 32, 1)).astype("float32")
    training.recalibrate_batch_norm(model, [x[:32], x[32:]])
    graph = ChannelGraph(model)
    small = pruning.shrink(model, random_masks(graph, 0.5), graph=graph)
    training.compile_classifier(small, training.sgd(0.01, 2, "constant"))
    history = small.fit(x, RNG.integers(0, 10, 64), batch_size=32, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    path = tmp_path / "small.keras"
    small.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded(x[:4]), small(x[:4]), atol=1e-6)
    lite = runtime.TFLiteModel(export.to_tflite(reloaded))
    assert relative_diff(reloaded(x[:8]), lite.predict(x[:8])) <= 1e-5


@pytest.mark.slow
def test_masked_model_round_trips_and_shrinks_the_same(tmp_path):
    model = zoo.mobilenet_v2((32, 32, 3), 10, width_multiplier=0.5)
    x = RNG.normal(size=(16, 32, 32, 3)).astype("float32")
    training.recalibrate_batch_norm(model, [x])
    graph = ChannelGraph(model)
    masks = random_masks(graph, 0.6, seed=1)
    masked = pruning.insert_channel_masks(model, masks, graph=graph)
    assert sum(isinstance(layer, ChannelMask) for layer in masked.layers) > 20
    path = tmp_path / "masked.keras"
    masked.save(path)
    reloaded = keras.models.load_model(path)
    direct = pruning.shrink(model, masks, graph=graph)
    via_masks = pruning.shrink(reloaded)
    assert direct.count_params() == via_masks.count_params()
    assert relative_diff(direct(x[:4]), via_masks(x[:4])) <= 1e-5
    assert relative_diff(masked(x[:4]), direct(x[:4])) <= 1e-5
    # masks can be changed in place; all-ones masks give back the dense model's outputs
    pruning.set_channel_masks(masked, {})
    assert relative_diff(model(x[:4]), masked(x[:4])) <= 1e-5


def test_replace_layers_copies_kept_layers_unless_asked_to_share():
    model = zoo.lenet_300_100()
    replaced = keras_graph.replace_layers(model, lambda layer: None)
    x = RNG.normal(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(replaced(x), model(x), atol=1e-6)
    replaced.get_layer("fc1").kernel.assign(np.zeros((784, 300), "float32"))
    assert np.abs(model.get_layer("fc1").kernel.numpy()).sum() > 0  # the original is untouched
    shared = keras_graph.replace_layers(model, lambda layer: None, share_weights=True)
    assert shared.get_layer("fc1") is model.get_layer("fc1")
