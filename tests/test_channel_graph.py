"""Channel graph: groups and couplings on real architectures, exact cost model, clear errors."""

import keras
import numpy as np
import pytest
from keras import layers

from tfcompress import specs, zoo
from tfcompress.graph import ChannelGraph, UnsupportedLayerError
from tfcompress.profile import profile


def _group_of(graph, producer):
    return next(g for g in graph.groups.values() if producer in g.producers)


def test_resnet20_groups_follow_the_residual_streams():
    graph = ChannelGraph(zoo.resnet_cifar(20, (32, 32, 3), 10))
    assert len(graph.groups) == 14 and len(graph.prunable_groups) == 12  # 9 block convs + 3 streams
    stream1 = _group_of(graph, "stem")
    assert set(stream1.producers) == {"stem", "stage1_block0_conv2", "stage1_block1_conv2", "stage1_block2_conv2"}
    stream2 = _group_of(graph, "stage2_block0_proj")
    assert set(stream2.producers) == {"stage2_block0_proj", *(f"stage2_block{i}_conv2" for i in range(3))}
    assert not _group_of(graph, "logits").prunable and not _group_of(graph, "input").prunable
    # every BatchNorm on the stream is a member: its γ is what the "bn" criterion reads
    norms = {name for name, b in stream1.members if b.role == "norm"}
    assert norms == {"stem_bn", *(f"stage1_block{i}_conv2_bn" for i in range(3))}


def test_depthwise_channels_belong_to_the_expanding_convolution():
    graph = ChannelGraph(zoo.mobilenet_v2((32, 32, 3), 10))
    group = _group_of(graph, "stage2_block0_expand")
    members = {(name, b.variable.name, b.role) for name, b in group.members}
    assert ("stage2_block0_dw", "kernel", "out") in members
    assert ("stage2_block0_project", "kernel", "in") in members
    assert group.size == 16 * 6


def test_flatten_maps_one_channel_to_a_block_of_dense_rows():
    graph = ChannelGraph(zoo.lenet5())
    group = _group_of(graph, "conv2")
    dense = next(b for name, b in group.members if name == "fc1")
    assert dense.axis == 0 and dense.layout.tile == 16 and dense.layout.channels == 800


@pytest.mark.parametrize(("name", "shape"), [
    ("lenet5", (28, 28, 1)), ("resnet20", (32, 32, 3)), ("wrn-16-2", (32, 32, 3)), ("mobilenet_v1", (32, 32, 3)),
    ("mobilenet_v2", (32, 32, 3)), ("micronet", (32, 32, 3)),
])
def test_cost_model_equals_profile_at_full_size_and_after_pruning(name, shape):
    from tfcompress.pruning import shrink

    model = zoo.build(name, shape, 10)
    graph = ChannelGraph(model)
    assert graph.cost(metric="macs") == profile(model).total.macs
    assert graph.cost(metric="params") == model.count_params()
    masks = {g.id: np.arange(g.size) % 3 != 0 for g in graph.prunable_groups}
    small = shrink(model, masks, graph=graph)
    counts = {g: int(m.sum()) for g, m in masks.items()}
    assert graph.cost(counts, "macs") == profile(small).total.macs
    assert graph.cost(counts, "params") == small.count_params()


def _squeeze_excite_model():
    inputs = keras.Input((8, 8, 4))
    x = layers.Conv2D(12, 3, padding="same", name="c1")(inputs)
    s = layers.GlobalAveragePooling2D(name="gap")(x)
    s = layers.Dense(3, activation="relu", name="se_reduce")(s)
    s = layers.Dense(12, activation="sigmoid", name="se_expand")(s)
    s = layers.Reshape((1, 1, 12), name="se_reshape")(s)
    x = layers.Multiply(name="se_scale")([x, s])
    y = layers.Conv2D(6, 1, name="c2a")(x)
    z = layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, name="dw")(x)
    x = layers.Concatenate(name="cat")([y, z])
    x = layers.Conv2D(5, 1, name="c3")(x)
    x = layers.Flatten(name="flat")(x)
    return keras.Model(inputs, layers.Dense(3, name="out")(x))


def test_squeeze_excite_concat_and_depthwise_multiplier_couplings():
    graph = ChannelGraph(_squeeze_excite_model())
    c1 = _group_of(graph, "c1")
    assert "se_expand" in c1.producers  # the SE gate scales c1's channels one to one
    members = {(name, b.variable.name) for name, b in c1.members}
    assert {("se_reduce", "kernel"), ("dw", "kernel"), ("c2a", "kernel"), ("c3", "kernel")} <= members
    assert _group_of(graph, "se_reduce").prunable
    c3_in = next(b for name, b in _group_of(graph, "c2a").members if name == "c3")
    assert [s.repeat for s in c3_in.layout.segments] == [1, 2]  # [c2a | dw (×2)] along c3's input


class Unknown(keras.layers.Layer):
    def call(self, inputs):
        return inputs * 2.0


def test_unknown_layer_error_names_it_and_says_how_to_register():
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(8, 1, name="c")(inputs)
    model = keras.Model(inputs, layers.Conv2D(2, 1)(Unknown(name="mystery")(x)))
    with pytest.raises(UnsupportedLayerError) as error:
        ChannelGraph(model)
    assert "'mystery'" in str(error.value) and "Unknown" in str(error.value)
    assert "tfcompress.specs.register" in str(error.value) and "barriers=" in str(error.value)
    graph = ChannelGraph(model, barriers=[Unknown])
    assert not _group_of(graph, "c").prunable


def test_registered_barrier_spec_keeps_channels_and_overrides_stay_per_call():
    class Opaque(Unknown):
        pass

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, layers.Conv2D(2, 1)(Opaque()(layers.Conv2D(8, 1, name="c")(inputs))))
    overrides = {Opaque: specs.LayerSpec(channels=specs.barrier)}
    assert any("barrier" in reason for reason in _group_of(ChannelGraph(model, specs=overrides), "c").reasons)
    with pytest.raises(UnsupportedLayerError):  # the override did not leak into the registry
        ChannelGraph(model)
    with specs.SPECS.scoped():
        specs.register(Opaque, spec=specs.LayerSpec(channels=specs.barrier))
        assert not _group_of(ChannelGraph(model), "c").prunable
    assert specs.spec_for(Opaque) is None  # the scoped registration is gone


def test_layer_normalization_over_channels_is_not_prunable():
    inputs = keras.Input((4, 4, 3))
    x = layers.Conv2D(8, 1, name="c")(inputs)
    model = keras.Model(inputs, layers.Conv2D(2, 1)(layers.LayerNormalization()(x)))
    assert not _group_of(ChannelGraph(model), "c").prunable


def test_subclassed_model_is_refused_with_a_way_out():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.Conv2D(4, 3)

        def call(self, inputs):
            return self.conv(inputs)

    net = Net()
    net(np.zeros((1, 8, 8, 3), "float32"))
    with pytest.raises(ValueError, match="functional API"):
        ChannelGraph(net)


def test_channels_first_is_refused_by_the_graph_and_counted_by_the_profile():
    inputs = keras.Input((3, 8, 8))
    x = layers.Conv2D(4, 3, padding="same", data_format="channels_first", name="cf")(inputs)
    model = keras.Model(inputs, layers.Flatten()(x))
    assert profile(model).total.macs == 3 * 3 * 3 * 4 * 8 * 8  # positions are H·W, not C·H
    with pytest.raises(UnsupportedLayerError, match=r"'cf'.*channels_first.*channels_last"):
        ChannelGraph(model)
