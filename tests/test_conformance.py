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

import dataclasses
import inspect
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
from keras import layers

import tfcompress  # noqa: F401  (imports every module that registers specs)
from tfcompress import export, micronet, profile
from tfcompress.graph import ChannelGraph, ChannelMask
from tfcompress.keras_graph import GraphWalk, iter_layers
from tfcompress.pruning import insert_channel_masks, shrink
from tfcompress.pruning.shrink import fold_channel_masks
from tfcompress.pruning.weight_masks import WeightMask
from tfcompress.quantization import ec2t
from tfcompress.quantization.ternary import TernaryConv2D, TernaryDense, TernaryDepthwiseConv2D
from tfcompress.specs import SPECS, class_path, spec_for
from tfcompress.zoo import ChannelShuffle

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


for _name, _args in {
    "RandomElasticTransform": (), "RandomErasing": (), "RandomGaussianBlur": (), "RandomInvert": (),
    "RandomPerspective": (), "RandomPosterization": (4,), "RandomSharpness": (0.5,), "MixUp": (), "CutMix": (),
}.items():
    if hasattr(layers, _name):  # newer than Keras 3.0
        _cls = getattr(layers, _name)
        EXAMPLES[_cls] = sandwich(lambda cls=_cls, args=_args: cls(*args), (5, 5, 3))
for _name, _args in {
    "RandomColorDegeneration": (0.5,), "RandomColorJitter": (), "RandomGrayscale": (), "RandomHue": (0.5,),
    "RandomSaturation": (0.5,), "AugMix": (), "RandAugment": (),
}.items():  # RGB images only
    if hasattr(layers, _name):
        _cls = getattr(layers, _name)
        EXAMPLES[_cls] = sandwich(lambda cls=_cls, args=_args: cls(*args), (5, 5, 3), channels=3)
EXAMPLES[layers.UnitNormalization] = sandwich(layers.UnitNormalization, (5, 5, 3))
try:  # layers of keras.applications without a public alias
    from keras.src.applications.convnext import LayerScale
    from keras.src.applications.inception_resnet_v2 import CustomScaleLayer

    EXAMPLES[LayerScale] = sandwich(lambda: LayerScale(0.5, 6), (5, 5, 3))
    EXAMPLES[CustomScaleLayer] = two_branches(lambda: CustomScaleLayer(0.3))
except ImportError:  # pragma: no cover
    pass


# two producers concatenated, then shuffled: the chunks are coupled, so both producers lose the same channels
EXAMPLES[ChannelShuffle] = two_branches(lambda: lambda tensors: ChannelShuffle(2)(layers.Concatenate()(tensors)))


@example(layers.InputLayer)
def _input_layer() -> tuple[keras.Model, np.ndarray]:
    model = keras.Sequential([layers.InputLayer((5, 5, 3)), layers.Conv2D(4, 1), layers.GlobalAveragePooling2D()])
    return model, _inputs((5, 5, 3))


# ---------------------------------------------------------------------------------------- operation nodes

# Constructor arguments of operations that need some (the rest take none). keras.ops functions standardize
# data_format before they build the operation; built directly, a pooling op with None computes a wrong shape.
_OP_ARGS: dict[str, dict[str, Any]] = {
    "Clip": dict(x_min=0.7, x_max=1.2), "ExpandDims": dict(axis=1), "Squeeze": dict(axis=1),
    "Transpose": dict(axes=(0, 2, 1, 3)), "Reshape": dict(newshape=(-1, 16, 6)), "Concatenate": dict(axis=-1),
    "Split": dict(indices_or_sections=2, axis=1), "Pad": dict(pad_width=((0, 0), (1, 1), (0, 1), (0, 0))),
    "Threshold": dict(threshold=1.0, default_value=0.0), "Resize": dict(size=(3, 5)), "Cast": dict(dtype="float16"),
    "MaxPool": dict(pool_size=2, data_format="channels_last"),
    "AveragePool": dict(pool_size=2, data_format="channels_last"),
    **{name: dict(axis=(1, 2)) for name in ("Mean", "Sum", "Max", "Min", "Amax", "Amin", "Var", "Std")},
}
_OP_SHAPES: dict[str, tuple[int, ...]] = {"Squeeze": (1, 4, 3)}
# How an operation is called on two positive tensors a, b of shape (batch, 4, 4, 6), when not op(a) / op(a, b).
_OP_CALLS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "Concatenate": lambda op, a, b: op([a, b]),
    "Where": lambda op, a, b: op(a > 1.0, a, b),
    "LogicalNot": lambda op, a, b: op(a > 1.0),
    "LogicalAnd": lambda op, a, b: op(a > 1.0, b > 1.0),
    "LogicalOr": lambda op, a, b: op(a > 1.0, b > 1.0),
    "FullLike": lambda op, a, b: op(a, 2.0),
    "GetItem": lambda op, a, b: a[:, 1:, ::2],
}


def _arity(cls: type) -> int:
    return len([p for p in inspect.signature(cls.call).parameters.values()
                if p.name != "self" and p.default is inspect.Parameter.empty])


def _operation_example(cls: type) -> Example:
    """One op node after producers with positive outputs (so that sqrt, log, power, division are finite); a
    list output is summed and a non-float one cast back, for the consumer."""
    name = cls.__name__
    shape = _OP_SHAPES.get(name, (4, 4, 3))

    def build() -> tuple[keras.Model, np.ndarray]:
        inputs = keras.Input(shape)
        a = layers.Rescaling(1.0, offset=0.5)(layers.Activation("sigmoid")(_producer(len(inputs.shape), 6, "left")(
            inputs)))
        b = layers.Rescaling(1.0, offset=0.5)(layers.Activation("sigmoid")(_producer(len(inputs.shape), 6, "right")(
            inputs)))
        op = cls(**_OP_ARGS.get(name, {}))
        call = _OP_CALLS.get(name, (lambda op, a, b: op(a)) if _arity(cls) == 1 else (lambda op, a, b: op(a, b)))
        x = call(op, a, b)
        if isinstance(x, list | tuple):
            x = layers.Add()(list(x))
        if x.dtype != "float32":
            x = keras.ops.cast(x, "float32")
        return keras.Model(inputs, _producer(len(x.shape), 4, "consumer")(x)), _inputs(shape)

    return build


for _cls in SPECS.registered():
    if _cls.__module__.startswith("keras.src.ops."):
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
    from tfcompress.pruning import weight_masks

    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(6, 3, padding="same", name="conv", **_SEED)(inputs)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise", **_DW_SEED)(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(4, name="dense", **_SEED)(x))
    rng = np.random.default_rng(7)
    masks = {name: {w: rng.random(v.shape) > 0.5 for w, v in per.items()}
             for name, per in weight_masks.prunable_weights(model, prune_biases=True).items()}
    return weight_masks.apply_masks(model, masks), _inputs((6, 6, 3))


@example(TernaryConv2D, TernaryDepthwiseConv2D, TernaryDense)
def _ternary() -> tuple[keras.Model, np.ndarray]:
    inputs = keras.Input((6, 6, 3))
    x = layers.Conv2D(6, 3, padding="same", name="conv", **_SEED)(inputs)
    x = layers.DepthwiseConv2D(3, depth_multiplier=2, name="depthwise", **_DW_SEED)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Flatten()(x)
    model = keras.Model(inputs, layers.Dense(4, name="dense", **_SEED)(x))
    return ec2t.ternarize(model, 0.3, layers=["conv", "depthwise", "dense"]), _inputs((6, 6, 3))


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


# ------------------------------------------------------------------------------------------------ variants

# Rules with branches the class examples do not take: (class, builder, MACs of its calls).
VARIANTS: dict[str, tuple[type, Example, int]] = {
    "Conv2D-groups-depthwise": (layers.Conv2D, sandwich(  # groups = C_in: a depthwise convolution, multiplier 2
        lambda: layers.Conv2D(12, 3, groups=6, padding="same", **_SEED), (5, 5, 3)), 9 * 12 * 25),
    "Conv2D-groups-2": (layers.Conv2D, sandwich(
        lambda: layers.Conv2D(4, 3, groups=2, padding="same", **_SEED), (5, 5, 3)), 9 * 3 * 4 * 25),
    "Softmax-over-positions": (layers.Softmax, sandwich(lambda: layers.Softmax(axis=1), (5, 5, 3)), 0),
    "Permute-moving-channels": (layers.Permute, sandwich(lambda: layers.Permute((1, 3, 2)), (4, 5, 3)), 0),
    "Normalization-scalar": (layers.Normalization, sandwich(
        lambda: layers.Normalization(mean=0.5, variance=2.0), (5, 5, 3)), 0),
    "Normalization-per-channel": (layers.Normalization, sandwich(
        lambda: layers.Normalization(axis=-1, mean=np.arange(6.0), variance=np.arange(1.0, 7.0)), (5, 5, 3)), 0),
}


# ------------------------------------------------------------------------------------------------- checks


def _ids(cls: type) -> str:
    module = cls.__module__
    return cls.__name__ if module.startswith("keras.src.layers") else f"{module.split('.')[-1]}.{cls.__name__}"


@dataclasses.dataclass(frozen=True)
class Case:
    id: str
    cls: type
    build: Example | None
    macs: int


CASES = [Case(_ids(cls), cls, EXAMPLES.get(cls), EXPECTED_MACS.get(cls, 0)) for cls in SPECS.registered()]
CASES += [Case(name, cls, build, macs) for name, (cls, build, macs) in VARIANTS.items()]
_BUILT: dict[str, tuple[keras.Model, np.ndarray]] = {}
cases = pytest.mark.parametrize("case", CASES, ids=lambda case: case.id)


def _built(case: Case) -> tuple[keras.Model, np.ndarray]:
    if case.build is None:
        pytest.fail(f"{class_path(case.cls)} has a spec but no example model in tests/test_conformance.py: add one")
    if case.id not in _BUILT:
        model, x = case.build()
        present = {type(op) for op in GraphWalk(model).model.operations}
        present |= {type(call.layer) for call in GraphWalk(model).calls}
        assert case.cls in present, f"the example of {case.cls.__name__} does not contain one"
        _BUILT[case.id] = model, x
    return _BUILT[case.id]


def _outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(x, training=False))


def _assert_close(expected: np.ndarray, actual: np.ndarray, what: str) -> None:
    assert expected.shape == actual.shape, what
    scale = max(1.0, float(np.ptp(expected)))
    assert np.max(np.abs(expected - actual)) <= 1e-5 * scale, what


def test_every_registered_class_has_an_example():
    missing = [class_path(cls) for cls in SPECS.registered() if cls not in EXAMPLES]
    assert not missing, f"spec(s) without a conformance example: {missing}"


@cases
def test_one_mac_rule(case):
    model, _ = _built(case)
    spec_macs = sum(dot.positions * math.prod(dot.variable.shape)
                    for call in GraphWalk(model).calls for dot in spec_for(call.layer).dot_products(call))
    assert spec_macs == profile.profile(model).total.macs == ChannelGraph(model).cost()
    assert ChannelGraph(model).cost(metric="params") == model.count_params()


@cases
def test_macs_follow_the_formulas(case):
    model, _ = _built(case)
    calls = [call for call in GraphWalk(model).calls if type(call.layer) is case.cls and call.name not in FRAME]
    own = sum(dot.positions * math.prod(dot.variable.shape) for call in calls
              for dot in spec_for(call.layer).dot_products(call))
    assert own == case.macs, "a class with dot products needs its expected MACs in EXPECTED_MACS"


@cases
def test_micronet_counts_it(case):
    model, _ = _built(case)
    result = micronet.score(model)
    assert np.isfinite(result.score) and result.total.ops > 0


@cases
def test_strip_keeps_outputs(case):
    model, x = _built(case)
    plain = export.strip(model)
    leftovers = [layer.name for layer in iter_layers(plain) if getattr(spec_for(layer), "strip", None) is not None]
    assert not leftovers, f"strip left {leftovers}"
    _assert_close(_outputs(model, x), _outputs(plain, x), f"strip changed the outputs of {case.id}")


@cases
def test_keras_save_load(case, tmp_path):
    model, x = _built(case)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert sorted(type(layer).__name__ for layer in iter_layers(loaded)) == sorted(
        type(layer).__name__ for layer in iter_layers(model))
    _assert_close(_outputs(model, x), _outputs(loaded, x), f".keras round trip changed {case.id}")


@cases
def test_shrink_matches_masks_and_predicted_cost(case):
    model, x = _built(case)
    graph = ChannelGraph(model)
    masks = {}
    for group in graph.prunable_groups:
        if group.size > 1:
            masks[group.id] = np.arange(group.size) % 2 == 0
    masked = insert_channel_masks(model, masks, graph=graph)
    small = shrink(model, masks, graph=graph)
    _assert_close(_outputs(masked, x), _outputs(small, x), f"shrinking changed the outputs of {case.id}")
    keep = {g: int(m.sum()) for g, m in fold_channel_masks(graph, masks).items()}
    assert profile.profile(small).total.macs == graph.cost(keep)
    removed = sum(graph.numel(v, keep) for layer in graph.layers.values() if isinstance(layer, ChannelMask)
                  for v in layer.weights)  # shrink takes the channel masks out
    assert small.count_params() == graph.cost(keep, metric="params") - removed
