"""Spec conformance: every class registered in ``tfcompress.specs.SPECS`` has a tiny example model, and on it

* the spec's MACs (Σ positions · numel over ``spec.dot_products``) = ``profile`` MACs = ``ChannelGraph.cost()``;
* ``ChannelGraph.cost(metric="params")`` = ``model.count_params()``;
* ``micronet.score`` counts it (a spec without a MicroNet rule fails here);
* ``export.strip`` leaves plain Keras computing the same outputs;
* a ``.keras`` save/load round trip computes the same outputs;
* masking some channels of every prunable group and shrinking gives the masked model's outputs, at the MACs
  and parameters the channel graph predicts.

A new spec without an example fails :func:`test_every_registered_class_has_an_example` (and its own cases), so
no layer type skips conformance. Operation-node classes (:mod:`tfcompress.specs.keras_ops`) share builders by
arity.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers
from keras.src.ops import nn as ops_nn
from keras.src.ops import numpy as ops_np

import tfcompress  # noqa: F401  (imports every module that registers specs)
from tfcompress import export, micronet, profile
from tfcompress.graph import ChannelGraph, ChannelMask
from tfcompress.keras_graph import GraphWalk, iter_layers
from tfcompress.pruning import insert_channel_masks, shrink
from tfcompress.pruning.masks import WeightMask
from tfcompress.pruning.shrink import fold_channel_masks
from tfcompress.quantization import ec2t
from tfcompress.quantization.ternary import TernaryConv2D, TernaryDense, TernaryDepthwiseConv2D
from tfcompress.specs import SPECS, class_path, spec_for

Example = Callable[[], tuple[keras.Model, np.ndarray]]
EXAMPLES: dict[type, Example] = {}


def example(*classes: type) -> Callable[[Example], Example]:
    def register(builder: Example) -> Example:
        for cls in classes:
            EXAMPLES[cls] = builder
        return builder

    return register


def _inputs(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(3, *shape)).astype("float32")


def _producer(rank: int, channels: int, name: str) -> keras.layers.Layer:
    """A layer making ``channels`` channels at a tensor of ``rank`` (batch included): Dense or ConvND."""
    init = dict(bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=1), name=name)
    if rank == 2:
        return layers.Dense(channels, **init)
    return {3: layers.Conv1D, 4: layers.Conv2D, 5: layers.Conv3D}[rank](channels, 1, **init)


def sandwich(make: Callable[[], Any], shape: tuple[int, ...], *, channels: int = 6, outputs: int = 5,
             positive: bool = False) -> Example:
    """``Input → producer(channels) → layer → consumer(outputs)``: the layer between two channel-counting
    layers, so that its channel rule is exercised on both sides (producer and consumer per rank)."""

    def build() -> tuple[keras.Model, np.ndarray]:
        inputs = keras.Input(shape)
        x = _producer(len(inputs.shape), channels, "producer")(inputs)
        if positive:
            x = layers.Activation("sigmoid")(x)
            x = layers.Rescaling(1.0, offset=0.5)(x)
        x = make()(x)
        x = _producer(len(x.shape), outputs, "consumer")(x)
        return keras.Model(inputs, x), _inputs(shape)

    return build


def two_branches(make: Callable[[], Any], shape: tuple[int, ...] = (5, 5, 3), channels: int = 6) -> Example:
    """Two producers merged by the layer (an element-wise merge or a concatenation), then a consumer."""

    def build() -> tuple[keras.Model, np.ndarray]:
        inputs = keras.Input(shape)
        a = _producer(len(inputs.shape), channels, "left")(inputs)
        b = _producer(len(inputs.shape), channels, "right")(inputs)
        x = make()([a, b])
        x = _producer(len(x.shape), 4, "consumer")(x)
        return keras.Model(inputs, x), _inputs(shape)

    return build


# -------------------------------------------------------------------------------------------- Keras layers

_SEED = dict(kernel_initializer=keras.initializers.GlorotUniform(seed=2),
             bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=3))
_DW_SEED = dict(depthwise_initializer=keras.initializers.GlorotUniform(seed=2),
                bias_initializer=keras.initializers.RandomNormal(stddev=0.1, seed=3))

EXAMPLES[layers.Conv1D] = sandwich(lambda: layers.Conv1D(4, 3, padding="same", **_SEED), (7, 3))
EXAMPLES[layers.Conv2D] = sandwich(lambda: layers.Conv2D(4, 3, strides=2, padding="same", **_SEED), (6, 6, 3))
EXAMPLES[layers.Conv3D] = sandwich(lambda: layers.Conv3D(4, 2, **_SEED), (4, 4, 4, 2))
EXAMPLES[layers.Dense] = sandwich(lambda: layers.Dense(4, activation="relu", **_SEED), (5,))
EXAMPLES[layers.Conv1DTranspose] = sandwich(lambda: layers.Conv1DTranspose(4, 3, strides=2, **_SEED), (5, 3))
EXAMPLES[layers.Conv2DTranspose] = sandwich(lambda: layers.Conv2DTranspose(4, 3, strides=2, **_SEED), (4, 4, 3))
EXAMPLES[layers.Conv3DTranspose] = sandwich(lambda: layers.Conv3DTranspose(4, 2, **_SEED), (3, 3, 3, 2))
EXAMPLES[layers.DepthwiseConv1D] = sandwich(lambda: layers.DepthwiseConv1D(3, depth_multiplier=2, **_DW_SEED), (7, 3))
EXAMPLES[layers.DepthwiseConv2D] = sandwich(
    lambda: layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", **_DW_SEED), (6, 6, 3))
EXAMPLES[layers.SeparableConv1D] = sandwich(lambda: layers.SeparableConv1D(4, 3, depth_multiplier=2), (7, 3))
EXAMPLES[layers.SeparableConv2D] = sandwich(lambda: layers.SeparableConv2D(4, 3, depth_multiplier=2), (6, 6, 3))


def _batch_norm() -> layers.BatchNormalization:
    random = keras.initializers.RandomUniform(0.5, 1.5, seed=4)
    return layers.BatchNormalization(gamma_initializer=random, beta_initializer=random,
                                     moving_mean_initializer=keras.initializers.RandomNormal(seed=5),
                                     moving_variance_initializer=random)


EXAMPLES[layers.BatchNormalization] = sandwich(_batch_norm, (5, 5, 3))
EXAMPLES[layers.LayerNormalization] = sandwich(layers.LayerNormalization, (5, 5, 3))
EXAMPLES[layers.GroupNormalization] = sandwich(lambda: layers.GroupNormalization(groups=2), (5, 5, 3))
EXAMPLES[layers.Normalization] = sandwich(
    lambda: layers.Normalization(mean=np.arange(6.0), variance=np.arange(1.0, 7.0)), (5, 5, 3))
EXAMPLES[layers.ReLU] = sandwich(lambda: layers.ReLU(max_value=6.0), (5, 5, 3))
EXAMPLES[layers.LeakyReLU] = sandwich(layers.LeakyReLU, (5, 5, 3))
EXAMPLES[layers.ELU] = sandwich(layers.ELU, (5, 5, 3))
EXAMPLES[layers.PReLU] = sandwich(
    lambda: layers.PReLU(alpha_initializer=keras.initializers.RandomUniform(0.1, 0.3, seed=6)), (5, 5, 3))
EXAMPLES[layers.Activation] = sandwich(lambda: layers.Activation("swish"), (5, 5, 3))
EXAMPLES[layers.Softmax] = sandwich(layers.Softmax, (5, 5, 3))
for _rank, _classes in {
    1: (layers.GlobalAveragePooling1D, layers.GlobalMaxPooling1D, layers.AveragePooling1D, layers.MaxPooling1D,
        layers.UpSampling1D, layers.ZeroPadding1D, layers.Cropping1D, layers.SpatialDropout1D),
    2: (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D, layers.AveragePooling2D, layers.MaxPooling2D,
        layers.UpSampling2D, layers.ZeroPadding2D, layers.Cropping2D, layers.SpatialDropout2D),
    3: (layers.GlobalAveragePooling3D, layers.GlobalMaxPooling3D, layers.AveragePooling3D, layers.MaxPooling3D,
        layers.UpSampling3D, layers.ZeroPadding3D, layers.Cropping3D, layers.SpatialDropout3D),
}.items():
    for _cls in _classes:
        _args = (0.5,) if "Dropout" in _cls.__name__ else (2,) if _cls.__name__.startswith("AveragePooling") else ()
        EXAMPLES[_cls] = sandwich(lambda cls=_cls, args=_args: cls(*args), (4,) * _rank + (2,))
EXAMPLES[layers.Resizing] = sandwich(lambda: layers.Resizing(3, 4, interpolation="bilinear"), (5, 5, 3))
EXAMPLES[layers.CenterCrop] = sandwich(lambda: layers.CenterCrop(3, 3), (5, 5, 3))
for _cls in (layers.Add, layers.Subtract, layers.Multiply, layers.Maximum, layers.Minimum, layers.Average,
             layers.Concatenate):
    EXAMPLES[_cls] = two_branches(_cls)
EXAMPLES[layers.Flatten] = sandwich(layers.Flatten, (3, 3, 2))
EXAMPLES[layers.Reshape] = sandwich(lambda: layers.Reshape((1, 1, 6)), (6,))
EXAMPLES[layers.Identity] = sandwich(layers.Identity, (5, 5, 3))
EXAMPLES[layers.Permute] = sandwich(lambda: layers.Permute((2, 1, 3)), (4, 5, 3))
EXAMPLES[layers.RepeatVector] = sandwich(lambda: layers.RepeatVector(3), (5,))
EXAMPLES[layers.Rescaling] = sandwich(lambda: layers.Rescaling(0.5, offset=0.1), (5, 5, 3))
for _cls, _args in {
    layers.Dropout: (0.5,), layers.GaussianNoise: (0.3,), layers.GaussianDropout: (0.3,),
    layers.AlphaDropout: (0.3,), layers.ActivityRegularization: (), layers.RandomFlip: (),
    layers.RandomRotation: (0.2,), layers.RandomZoom: (0.2,), layers.RandomTranslation: (0.2, 0.2),
    layers.RandomContrast: (0.2,), layers.RandomBrightness: (0.2,),
}.items():
    EXAMPLES[_cls] = sandwich(lambda cls=_cls, args=_args: cls(*args), (5, 5, 3))


@example(layers.InputLayer)
def _input_layer() -> tuple[keras.Model, np.ndarray]:
    model = keras.Sequential([layers.InputLayer((5, 5, 3)), layers.Conv2D(4, 1), layers.GlobalAveragePooling2D()])
    return model, _inputs((5, 5, 3))


# ---------------------------------------------------------------------------------------- operation nodes

# Constructor arguments of operations that need some (the rest take none).
_OP_ARGS: dict[type, dict[str, Any]] = {
    ops_np.Clip: dict(x_min=0.7, x_max=1.2), ops_np.Mean: dict(axis=(1, 2)), ops_np.Sum: dict(axis=(1, 2)),
    ops_np.Max: dict(axis=(1, 2)), ops_np.Min: dict(axis=(1, 2)), ops_np.ExpandDims: dict(axis=1),
    ops_np.Squeeze: dict(axis=1), ops_np.Transpose: dict(axes=(0, 2, 1, 3)), ops_np.Reshape: dict(newshape=(-1, 16, 6)),
    ops_np.Concatenate: dict(axis=-1),
}
_OP_SHAPES: dict[type, tuple[int, ...]] = {ops_np.Squeeze: (1, 4, 3)}


def _arity(cls: type) -> int:
    if cls is ops_np.Concatenate:
        return 2  # takes a list of tensors
    return len([p for p in inspect.signature(cls.call).parameters.values()
                if p.name != "self" and p.default is inspect.Parameter.empty])


def _operation_example(cls: type) -> Example:
    """One op node between two producers (positive inputs, so that sqrt, log, power and division are finite)."""
    operation = lambda: cls(**_OP_ARGS.get(cls, {}))  # noqa: E731
    shape = _OP_SHAPES.get(cls, (4, 4, 3))
    if _arity(cls) == 1:
        return sandwich(operation, shape, positive=True)

    def build() -> tuple[keras.Model, np.ndarray]:
        inputs = keras.Input(shape)
        a = layers.Activation("sigmoid")(_producer(4, 6, "left")(inputs))
        b = layers.Activation("sigmoid")(_producer(4, 6, "right")(inputs))
        x = operation()([a, b + 0.5]) if cls is ops_np.Concatenate else operation()(a, b + 0.5)
        return keras.Model(inputs, _producer(4, 4, "consumer")(x)), _inputs(shape)

    return build


for _cls in SPECS.registered():
    if _cls.__module__ in (ops_nn.__name__, ops_np.__name__):
        EXAMPLES[_cls] = _operation_example(_cls)


# ------------------------------------------------------------------------------------ tfcompress wrappers


@example(ChannelMask)
def _channel_mask() -> tuple[keras.Model, np.ndarray]:
    model = sandwich(lambda: layers.Conv2D(4, 3, **_SEED), (5, 5, 3))()[0]
    graph = ChannelGraph(model)
    group = graph.group_of_layer("producer")
    masked = insert_channel_masks(model, {group.id: np.arange(group.size) % 3 != 1}, graph=graph)
    return masked, _inputs((5, 5, 3))


@example(WeightMask)
def _weight_mask() -> tuple[keras.Model, np.ndarray]:
    from tfcompress.pruning import masks as masks_lib

    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(6, 3, padding="same", name="conv", **_SEED)(inputs)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise", **_DW_SEED)(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(4, name="dense", **_SEED)(x))
    rng = np.random.default_rng(7)
    masks = {name: {w: rng.random(v.shape) > 0.5 for w, v in per.items()}
             for name, per in masks_lib.prunable_weights(model, prune_biases=True).items()}
    return masks_lib.apply_masks(model, masks), _inputs((6, 6, 3))


@example(TernaryConv2D, TernaryDepthwiseConv2D, TernaryDense)
def _ternary() -> tuple[keras.Model, np.ndarray]:
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(6, 3, padding="same", name="conv", **_SEED)(inputs)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise", **_DW_SEED)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(4, name="dense", **_SEED)(x))
    return ec2t.ternarize(model, 0.3, layers=["conv", "depthwise", "dense"]), _inputs((6, 6, 3))


# ------------------------------------------------------------------------------------------------- checks

CLASSES = list(SPECS.registered())
_BUILT: dict[type, tuple[keras.Model, np.ndarray]] = {}


def _built(cls: type) -> tuple[keras.Model, np.ndarray]:
    if cls not in EXAMPLES:
        pytest.fail(f"{class_path(cls)} has a spec but no example model in tests/test_conformance.py: add one")
    if cls not in _BUILT:
        model, x = EXAMPLES[cls]()
        present = {type(op) for op in GraphWalk(model).model.operations}
        present |= {type(call.layer) for call in GraphWalk(model).calls}
        assert cls in present, f"the example of {cls.__name__} does not contain one"
        _BUILT[cls] = model, x
    return _BUILT[cls]


def _outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def _assert_close(expected: np.ndarray, actual: np.ndarray, what: str) -> None:
    assert expected.shape == actual.shape, what
    scale = max(1.0, float(np.ptp(expected)))
    assert np.max(np.abs(expected - actual)) <= 1e-5 * scale, what


def _ids(cls: type) -> str:
    module = cls.__module__
    return cls.__name__ if module.startswith("keras.src.layers") else f"{module.split('.')[-1]}.{cls.__name__}"


def test_every_registered_class_has_an_example():
    missing = [class_path(cls) for cls in SPECS.registered() if cls not in EXAMPLES]
    assert not missing, f"spec(s) without a conformance example: {missing}"


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_one_mac_rule(cls):
    model, _ = _built(cls)
    spec_macs = sum(dot.positions * math.prod(dot.variable.shape)
                    for call in GraphWalk(model).calls for dot in spec_for(call.layer).dot_products(call))
    assert spec_macs == profile.profile(model).total.macs == ChannelGraph(model).cost()
    assert ChannelGraph(model).cost(metric="params") == model.count_params()


# MACs of the example's calls of the class, by the textbook formulas (module docstring of specs.keras_layers):
# k·C_in·C_out per output position, depthwise k·C_in·m, transposed convolutions the kernel per input position.
FRAME = ("producer", "consumer", "left", "right")  # the layers examples put around the one they exercise
EXPECTED_MACS = {
    layers.Conv1D: 3 * 6 * 4 * 7, layers.Conv2D: 9 * 6 * 4 * 3 * 3, layers.Conv3D: 8 * 6 * 4 * 27, layers.Dense: 6 * 4,
    layers.Conv1DTranspose: 5 * 3 * 4 * 6, layers.Conv2DTranspose: 16 * 9 * 4 * 6,
    layers.Conv3DTranspose: 27 * 8 * 4 * 6, layers.DepthwiseConv1D: 3 * 12 * 5, layers.DepthwiseConv2D: 9 * 12 * 36,
    layers.SeparableConv1D: 3 * 12 * 5 + 12 * 4 * 5, layers.SeparableConv2D: 9 * 12 * 16 + 12 * 4 * 16,
    TernaryConv2D: 9 * 3 * 6 * 36, TernaryDepthwiseConv2D: 9 * 12 * 16, TernaryDense: 192 * 4,
    WeightMask: 9 * 3 * 6 * 36 + 9 * 12 * 16 + 192 * 4,
}


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_macs_follow_the_formulas(cls):
    model, _ = _built(cls)
    calls = [call for call in GraphWalk(model).calls if type(call.layer) is cls and call.name not in FRAME]
    own = sum(dot.positions * math.prod(dot.variable.shape) for call in calls
              for dot in spec_for(call.layer).dot_products(call))
    assert own == EXPECTED_MACS.get(cls, 0), "a class with dot products needs its expected MACs in EXPECTED_MACS"


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_micronet_counts_it(cls):
    model, _ = _built(cls)
    result = micronet.score(model)
    assert np.isfinite(result.score) and result.total.ops > 0


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_strip_keeps_outputs(cls):
    model, x = _built(cls)
    plain = export.strip(model)
    leftovers = [layer.name for layer in iter_layers(plain) if getattr(spec_for(layer), "strip", None) is not None]
    assert not leftovers, f"strip left {leftovers}"
    _assert_close(_outputs(model, x), _outputs(plain, x), f"strip changed the outputs of {cls.__name__}")


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_keras_save_load(cls, tmp_path):
    model, x = _built(cls)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert sorted(type(layer).__name__ for layer in iter_layers(loaded)) == sorted(
        type(layer).__name__ for layer in iter_layers(model))
    _assert_close(_outputs(model, x), _outputs(loaded, x), f".keras round trip changed {cls.__name__}")


@pytest.mark.parametrize("cls", CLASSES, ids=_ids)
def test_shrink_matches_masks_and_predicted_cost(cls):
    model, x = _built(cls)
    graph = ChannelGraph(model)
    masks = {}
    for group in graph.prunable_groups:
        if group.size > 1:
            masks[group.id] = np.arange(group.size) % 2 == 0
    masked = insert_channel_masks(model, masks, graph=graph)
    small = shrink(model, masks, graph=graph)
    _assert_close(_outputs(masked, x), _outputs(small, x), f"shrinking changed the outputs of {cls.__name__}")
    keep = {g: int(m.sum()) for g, m in fold_channel_masks(graph, masks).items()}
    assert profile.profile(small).total.macs == graph.cost(keep)
    removed = sum(graph.numel(v, keep) for layer in graph.layers.values() if isinstance(layer, ChannelMask)
                  for v in layer.weights)  # shrink takes the channel masks out
    assert small.count_params() == graph.cost(keep, metric="params") - removed
