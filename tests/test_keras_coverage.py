"""Coverage of what users build: small functional models written with Python operators on tensors, keras.ops
functions (activations, gates, squeeze-excite means, reshapes, slices, concatenations) and preprocessing layers,
plus a few keras.applications models.

For each model the channel graph builds with the expected number of prunable groups, 30 % of every prunable
group can be pruned with the masked and the shrunk model agreeing, MACs equal the channel graph's cost before
and after, MicroNet counts it, its float32 export agrees in LiteRT, and it cuts into latency-table units that
build alone and that its pruned version shares. What cannot be traced is kept, with a
reason naming the call, or refused with the class's full path.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from keras import layers, ops
from keras.src.applications.convnext import LayerScale  # application layers have no public alias
from keras.src.applications.inception_resnet_v2 import CustomScaleLayer
from keras.src.ops import nn as ops_nn  # operation classes have no public alias
from keras.src.ops import numpy as ops_np

from tfcompress import export, micronet, runtime, training
from tfcompress.graph import ChannelGraph
from tfcompress.graph.channel_graph import UnsupportedLayerError
from tfcompress.keras_graph import GraphWalk
from tfcompress.latency.units import find_units
from tfcompress.profile import profile
from tfcompress.pruning import get_importance, insert_channel_masks, plan_channels, shrink

SHAPE = (8, 8, 3)


@pytest.fixture(autouse=True)
def _seeded():
    keras.utils.set_random_seed(0)  # random-init models: a fixed draw, so no test depends on a lucky one


def _relative(reference, other) -> float:
    reference, other = np.asarray(reference, np.float64), np.asarray(other, np.float64)
    return float(np.max(np.abs(reference - other)) / np.ptp(reference))


def check_pruning(model: keras.Model, prunable: int, shape: tuple[int, ...] = SHAPE
                  ) -> tuple[ChannelGraph, keras.Model]:
    """Asserts the whole path on ``model`` (``prunable`` groups expected); returns its graph and shrunk copy."""
    x = np.random.default_rng(0).normal(size=(8, *shape)).astype("float32")
    training.recalibrate_batch_norm(model, [x])  # random-init BN statistics make outputs degenerate
    graph = ChannelGraph(model)
    assert len(graph.prunable_groups) == prunable, graph.summary()
    assert profile(model).total.macs == graph.cost()
    micronet.score(model)

    plan = plan_channels(graph, get_importance("l1").scores(graph), target_channels=0.7, scope="local")
    assert set(plan.masks) == {g.id for g in graph.prunable_groups if round(0.3 * g.size) > 0}
    masked = insert_channel_masks(model, plan.masks, graph=graph)
    small = shrink(model, plan.masks, graph=graph)
    reference = np.asarray(masked(x, training=False))
    assert np.ptp(reference) > 1e-3, "degenerate outputs would make parity meaningless"
    if plan.masks:  # the masks change the outputs, so that parity below says something
        assert _relative(np.asarray(model(x, training=False)), reference) > 1e-4
    assert _relative(reference, small(x, training=False)) <= 1e-5

    assert profile(small).total.macs == plan.macs_after == ChannelGraph(small).cost()
    assert small.count_params() == plan.params_after
    micronet.score(small)

    lite = runtime.TFLiteModel(export.to_tflite(small))
    assert _relative(small(x, training=False), lite.predict(x)) <= 1e-4
    check_latency_units(model, small)
    return graph, small


def check_latency_units(model: keras.Model, small: keras.Model) -> None:
    """A latency table of ``model`` covers its pruned ``small`` (same unit keys), and every unit builds alone, as
    a table build measures it."""
    if any("#" in call.name and "/" in call.name for call in GraphWalk(model).calls):
        return  # a nested model called twice shares its inner tensors between the calls: not cut into units
    units = find_units(export.strip(model))
    assert [u.key for u in units] == [u.key for u in find_units(export.strip(small))]
    for unit in units:
        built = unit.build()
        outputs = built.outputs if isinstance(built.outputs, list) else [built.outputs]
        assert [tuple(o.shape[1:]) for o in outputs] == [tuple(t.shape[1:]) for t in unit.outputs]


def _conv(x, filters: int, name: str | None = None, **kwargs):
    return layers.Conv2D(filters, 3, padding="same", name=name, **kwargs)(x)


def _head(x):
    return layers.Dense(4, name="logits")(layers.GlobalAveragePooling2D()(x))


def _functional(body, shape: tuple[int, ...] = SHAPE) -> keras.Model:
    inputs = keras.Input(shape)
    return keras.Model(inputs, body(inputs))


def _culprit(graph: ChannelGraph, layer_class: type) -> str:
    """The name of the call of ``layer_class`` that keeps channels (not the test's own ``kept``/``after``)."""
    return next(call.name for call in graph.walk.calls if isinstance(call.layer, layer_class)
                and call.name not in ("kept", "after", "logits"))


# -------------------------------------------------------------------------------------- traced and prunable


def python_operators(i):
    a, b = _conv(i, 8, "a"), _conv(i, 8, "b")
    x = a + 3.0
    x = x * b  # two full tensors: a and b are coupled
    x = x - a
    x = x / 2
    x = 1.0 - x
    x = -(x ** 2)
    return _head(_conv(x, 6, "c"))


def activation_functions(i):
    x = ops.relu(_conv(i, 8))
    x = _conv(x, 8)
    x = x * ops.sigmoid(x)  # swish written by hand
    x = _conv(x, 8)
    x = x * ops.hard_sigmoid(x)  # hard-swish written by hand
    x = ops.silu(_conv(x, 8))
    x = ops.hard_silu(_conv(x, 8))
    x = ops.relu6(_conv(x, 8))
    x = ops.clip(ops.gelu(_conv(x, 8)), -3.0, 3.0)
    x = ops.tanh(ops.leaky_relu(_conv(x, 8)))
    x = ops.where(x > 0.0, x, 0.1 * x)  # a leaky ReLU written with a comparison
    return _head(x)


def squeeze_excite_mean(i):
    x = ops.relu(_conv(i, 8, "features"))
    s = ops.mean(x, axis=(1, 2), keepdims=True)
    s = layers.Conv2D(4, 1, activation="relu", name="reduce")(s)
    s = layers.Conv2D(8, 1, name="expand")(s)
    x = x * ops.sigmoid(s)
    return _head(_conv(x, 6))


def squeeze_excite_dense(i):
    x = ops.relu(_conv(i, 8, "features"))
    s = layers.Dense(4, activation="relu")(ops.mean(x, axis=(1, 2)))
    s = layers.Dense(8, name="expand")(s)
    x = x * ops.hard_sigmoid(s[:, None, None, :])  # the channels of `expand` follow the slice
    y = _conv(x, 8, "features2")
    t = ops.expand_dims(ops.expand_dims(layers.Dense(8)(ops.max(y, axis=(1, 2))), 1), 1)
    return _head(y * ops.sigmoid(t))


def reshape_and_transpose(i):
    x = _conv(i, 8)
    x = ops.reshape(x, (-1, 64, 8))  # positions flattened, channels last
    x = ops.transpose(x, (0, 1, 2))
    x = ops.reshape(x, (-1, 8, 8, 8))
    x = ops.transpose(x, (0, 2, 1, 3))  # H ↔ W
    x = layers.Permute((2, 1, 3))(x)  # and back
    x = _conv(x, 6)
    x = ops.reshape(x, (-1, 8 * 8 * 6))  # a flatten before the classifier
    x = layers.Dense(5)(x)
    return layers.Dense(4)(x)


def concatenate_channels(i):
    a, b = _conv(i, 8), _conv(i, 4)
    x = _conv(ops.concatenate([a, b], axis=-1), 6)
    y = ops.concatenate([x, _conv(i, 6)], axis=1)  # along rows: the two convolutions are coupled
    return _head(y)


def spatial_ops(i):
    x = ops.image.resize(_conv(i, 8), (12, 12))
    x = ops.pad(_conv(x, 8), [[0, 0], [1, 1], [1, 1], [0, 0]])
    x = _conv(x[:, 1:, 1:, :], 8)
    x = ops.max_pool(x, 2)
    x = ops.average_pool(_conv(x, 8), 3, strides=1, padding="same")
    x = ops.cast(ops.softmax(_conv(x, 8), axis=1), "float32")  # a softmax over rows keeps channels apart
    top, bottom = ops.split(x, 2, axis=1)
    return _head(top + bottom)


def preprocessing(i):
    x = layers.Normalization(mean=[0.5, 0.4, 0.3], variance=[0.1, 0.2, 0.3])(i)
    x = layers.Rescaling(1 / 127.5, offset=-1.0)(x)
    x = layers.RandomFlip()(x)  # an identity at inference, stripped at export
    x = layers.Normalization(axis=None, mean=0.1, variance=2.0)(_conv(x, 8))  # one mean for all channels
    return _head(layers.Rescaling(0.5)(_conv(x, 8)))


def depthwise_as_grouped_conv(i):
    x = _conv(i, 8, "pointwise")
    x = layers.Conv2D(16, 3, padding="same", groups=8, name="grouped_dw")(x)  # ConvNeXt's depthwise convolution
    return _head(_conv(ops.gelu(x), 6))


def application_layers(i):
    a = _conv(i, 8, "a")
    b = LayerScale(0.5, 8, name="layer_scale")(_conv(a, 8, "b"))  # ConvNeXt's scale of a residual branch
    x = CustomScaleLayer(0.2)([a, b])  # Inception-ResNet's a + 0.2 · b: a and b are coupled
    x = x * layers.Softmax(axis=(1, 2))(x)  # spatial attention: a softmax over positions
    return _head(_conv(x, 6))


TRACED = {
    python_operators: 2, activation_functions: 8, squeeze_excite_mean: 3, squeeze_excite_dense: 3,
    reshape_and_transpose: 3, concatenate_channels: 3, spatial_ops: 5, preprocessing: 2,
    depthwise_as_grouped_conv: 2, application_layers: 2,
}


@pytest.mark.parametrize("body", list(TRACED), ids=lambda body: body.__name__)
def test_traced_models_prune_with_parity(body):
    check_pruning(_functional(body), TRACED[body])


def test_coupled_channels_share_a_group():
    graph, small = check_pruning(_functional(python_operators), 2)
    assert graph.group_of_layer("a").id == graph.group_of_layer("b").id
    assert small.get_layer("a").filters == small.get_layer("b").filters == 6

    graph, _ = check_pruning(_functional(squeeze_excite_dense), 3)
    assert graph.group_of_layer("features").id == graph.group_of_layer("expand").id


def test_layer_scale_is_resized_with_its_channels():
    graph, small = check_pruning(_functional(application_layers), 2)
    assert graph.group_of_layer("a").id == graph.group_of_layer("b").id
    assert small.get_layer("layer_scale").projection_dim == small.get_layer("a").filters == 6


def test_depthwise_grouped_conv_is_resized_with_its_input():
    _, small = check_pruning(_functional(depthwise_as_grouped_conv), 2)
    grouped = small.get_layer("grouped_dw")
    assert (grouped.filters, grouped.groups) == (12, 6)  # 8 → 6 input channels, multiplier 2


def test_operations_inside_a_shared_nested_model():
    inner_input = keras.Input((8, 8, 8))
    inner_output = ops.relu(_conv(inner_input, 8, "inner")) * 0.5 + inner_input
    block = keras.Model(inner_input, inner_output, name="block")
    inputs = keras.Input(SHAPE)
    x = layers.Conv2D(8, 1, name="stem")(inputs * 2.0 - 1.0)
    x = block(block(x))  # called twice: both calls' channels are the stem's
    x = ops.where(condition=x > 0, x1=x, x2=ops.zeros_like(x))
    graph, _ = check_pruning(keras.Model(inputs, layers.Dense(4)(ops.mean(x, axis=(1, 2)))), 1)
    assert graph.group_of_layer("stem").id == graph.group_of_layer("inner").id


def test_sequential_with_preprocessing():
    model = keras.Sequential([
        keras.Input(SHAPE), layers.Rescaling(1 / 255.0), layers.RandomFlip("horizontal"),
        layers.RandomGrayscale(), layers.RandomErasing(),  # augmentation: identities at inference
        layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(), layers.Flatten(), layers.Dense(4),
    ])
    check_pruning(model, 1)


# -------------------------------------------------------------------------- traced, but these channels stay


def reshape_across_channels(i):
    return ops.reshape(_conv(i, 8, "kept"), (-1, 8, 16, 4))


def per_channel_constant(i):
    return _conv(i, 8, "kept") * np.arange(1, 9, dtype="float32")


def softmax_over_channels(i):
    return ops.softmax(_conv(i, 8, "kept"), axis=-1)


def channel_slice(i):
    return _conv(i, 8, "kept")[..., :4]


def mean_over_channels(i):
    x = _conv(i, 8, "kept")
    return x * ops.sigmoid(ops.mean(x, axis=-1, keepdims=True))  # a per-pixel gate reads every channel


def per_channel_normalization(i):
    return layers.Normalization(mean=np.arange(8.0), variance=np.ones(8))(_conv(i, 8, "kept"))


def per_channel_rescaling(i):
    return layers.Rescaling(np.linspace(0.5, 1.5, 8))(_conv(i, 8, "kept"))


def grouped_conv(i):
    return layers.Conv2D(8, 3, padding="same", groups=2)(_conv(i, 8, "kept"))


KEPT = {
    reshape_across_channels: ops_np.Reshape, per_channel_constant: ops_np.Multiply,
    softmax_over_channels: ops_nn.Softmax, channel_slice: ops_np.GetItem,
    mean_over_channels: ops_np.Mean, per_channel_normalization: layers.Normalization,
    per_channel_rescaling: layers.Rescaling, grouped_conv: layers.Conv2D,
}


@pytest.mark.parametrize("body", list(KEPT), ids=lambda body: body.__name__)
def test_untraceable_channels_are_kept_with_a_reason(body):
    def model_body(i):
        x = _conv(body(i), 6, "after")
        return _head(x)

    graph, _ = check_pruning(_functional(model_body), 1)  # only `after` is prunable
    kept = graph.group_of_layer("kept")
    assert not kept.prunable
    culprit = _culprit(graph, KEPT[body])
    assert any(reason.startswith(f"{culprit} ") for reason in kept.reasons), (culprit, kept.reasons)


# ------------------------------------------------------------------------------------------------- refused


def einsum_product(i):
    x = _conv(i, 8)
    return _head(ops.einsum("bhwc,bhwc->bhwc", x, x))


def matmul_product(i):
    x = ops.reshape(_conv(i, 8), (-1, 64, 8))
    return layers.Dense(4)(ops.reshape(ops.matmul(ops.transpose(x, (0, 2, 1)), x), (-1, 64)))


def lambda_layer(i):
    return _head(layers.Lambda(lambda t: t * 2.0)(_conv(i, 8)))


@pytest.mark.parametrize("body, path", [(einsum_product, "keras.src.ops.numpy.Einsum"),
                                        (matmul_product, "keras.src.ops.numpy.Matmul"),
                                        (lambda_layer, "keras.layers.Lambda")], ids=["einsum", "matmul", "lambda"])
def test_ops_without_a_spec_are_refused_by_class_path(body, path):
    with pytest.raises(UnsupportedLayerError, match=path.replace(".", r"\.")):
        ChannelGraph(_functional(body))


def test_a_refused_op_can_be_declared_a_barrier():
    model = _functional(lambda i: _head(_conv(ops.einsum("bhwc,bhwc->bhwc", *[_conv(i, 8, "kept")] * 2), 6)))
    graph = ChannelGraph(model, barriers=[ops_np.Einsum])
    assert not graph.group_of_layer("kept").prunable
    assert len(graph.prunable_groups) == 1
    plan = plan_channels(graph, get_importance("l1").scores(graph), target_channels=0.7, scope="local")
    x = np.random.default_rng(0).normal(size=(4, *SHAPE)).astype("float32")
    masked = insert_channel_masks(model, plan.masks, graph=graph)
    assert _relative(masked(x), shrink(model, plan.masks, graph=graph)(x)) <= 1e-5


# --------------------------------------------------------------------------------------- keras.applications


@pytest.mark.slow
@pytest.mark.parametrize("name", ["MobileNetV3Small", "EfficientNetB0"])
def test_applications(name):
    model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                              classifier_activation=None)
    graph, _ = check_pruning(model, {"MobileNetV3Small": 27, "EfficientNetB0": 40}[name], (32, 32, 3))
    assert len(graph.groups) - len(graph.prunable_groups) == 2  # only the model's input and output are kept
