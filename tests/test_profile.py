"""Per-layer profile: MACs against hand formulas and published counts, weight statistics, graph walking."""

import json

import keras
import numpy as np
import pytest
from keras import layers

from tfcompress import specs, zoo
from tfcompress.keras_graph import Call, GraphWalk
from tfcompress.profile import profile


def rows_by_name(report):
    return {row.name: row for row in report.layers}


def test_lenet5_macs_and_params_match_caffe_lenet():
    report = profile(zoo.lenet5((28, 28, 1), 10))
    rows = rows_by_name(report)
    # k·k·C_in·C_out·H_out·W_out; 28 −5+1 = 24, pooled 12, −5+1 = 8, pooled 4
    assert rows["conv1"].macs == 5 * 5 * 1 * 20 * 24 * 24 == 288_000
    assert rows["conv2"].macs == 5 * 5 * 20 * 50 * 8 * 8 == 1_600_000
    assert rows["fc1"].macs == 4 * 4 * 50 * 500 == 400_000
    assert rows["logits"].macs == 500 * 10
    assert report.total.macs == 2_293_000
    assert rows["pool1"].macs == rows["flatten"].macs == 0
    expected_params = (25 * 20 + 20) + (25 * 20 * 50 + 50) + (800 * 500 + 500) + (500 * 10 + 10)
    assert report.total.params == expected_params == 431_080
    assert report.total.size_bytes == 4 * expected_params


def test_resnet20_macs_match_he_et_al():
    report = profile(zoo.resnet_cifar(20, (32, 32, 3), 10))

    def conv(k, c_in, c_out, hw):
        return k * k * c_in * c_out * hw * hw

    expected = (
        conv(3, 3, 16, 32)
        + 6 * conv(3, 16, 16, 32)
        + conv(3, 16, 32, 16) + 5 * conv(3, 32, 32, 16) + conv(1, 16, 32, 16)  # option-B projection
        + conv(3, 32, 64, 8) + 5 * conv(3, 64, 64, 8) + conv(1, 32, 64, 8)
        + 64 * 10
    )
    assert report.total.macs == expected == 40_813_184
    assert report.total.macs == pytest.approx(41e6, rel=0.02)  # He et al. 2016: ≈ 41 M multiply-adds
    assert report.total.params == zoo.resnet_cifar(20, (32, 32, 3), 10).count_params()
    assert all(row.note == "" for row in report.layers)


def test_zeroing_weights_changes_sparsity_nonzeros_and_distinct_values():
    model = zoo.lenet5((28, 28, 1), 10)
    conv1 = model.get_layer("conv1")
    kernel = (np.arange(1, 501, dtype=np.float32) / 1000).reshape(5, 5, 1, 20)
    conv1.set_weights([kernel, np.ones(20, np.float32)])
    before = rows_by_name(profile(model))["conv1"]
    assert (before.params, before.nonzero_params, before.distinct_values, before.sparsity) == (520, 520, 500, 0.0)

    pruned = kernel.copy().reshape(-1)
    pruned[:250] = 0.0
    conv1.set_weights([pruned.reshape(kernel.shape), np.ones(20, np.float32)])
    report = profile(model)
    after = rows_by_name(report)["conv1"]
    assert after.params == 520
    assert after.nonzero_params == 520 - 250
    assert after.sparsity == 0.5
    assert after.distinct_values == 250 + 1  # the surviving values and 0
    assert after.macs == before.macs  # MACs count the dense layer; sparsity is reported separately
    zeros_elsewhere = sum(round(r.sparsity * r.kernel_params) for r in report.layers if r.name != "conv1")
    assert report.total.sparsity == pytest.approx((250 + zeros_elsewhere) / report.total.kernel_params)


def test_depthwise_concatenate_add_model():
    inputs = keras.Input((8, 8, 4))
    depthwise = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(inputs)  # 8×8×8
    pointwise = layers.Conv2D(8, 1, name="pw")(inputs)
    merged = layers.Concatenate(name="concat")([depthwise, pointwise])  # 8×8×16
    shortcut = layers.Conv2D(16, 1, use_bias=False, name="proj")(inputs)
    x = layers.Add(name="add")([merged, shortcut])
    x = layers.BatchNormalization(name="bn")(x)
    x = layers.ReLU(name="relu")(x)
    x = layers.Conv2D(16, 3, strides=2, padding="same", name="down")(x)  # 4×4×16
    x = layers.SeparableConv2D(12, 3, padding="same", depth_multiplier=1, name="sep")(x)  # 4×4×12
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(10, name="logits")(x)
    model = keras.Model(inputs, outputs)

    rows = rows_by_name(profile(model))
    assert rows["dw"].macs == 3 * 3 * 4 * 2 * 8 * 8  # k·k·C_in·multiplier·H_out·W_out
    assert rows["pw"].macs == 4 * 8 * 8 * 8
    assert rows["proj"].macs == 4 * 16 * 8 * 8
    assert rows["down"].macs == 3 * 3 * 16 * 16 * 4 * 4
    assert rows["sep"].macs == (3 * 3 * 16 + 16 * 12) * 4 * 4  # depthwise, then 1×1 at the output size
    assert rows["logits"].macs == 12 * 10
    for name in ("concat", "add", "bn", "relu", "gap"):
        assert rows[name].macs == 0
    assert rows["dw"].params == 3 * 3 * 4 * 2 + 8
    assert rows["bn"].params == 4 * 16 and rows["bn"].kernel_params == 0
    assert rows["concat"].output_shape == [8, 8, 16]
    assert sum(r.params for r in rows.values()) == model.count_params()


def test_conv_transpose_grouped_conv_and_dense_on_a_sequence():
    inputs = keras.Input((4, 4, 6))
    x = layers.Conv2DTranspose(10, 3, strides=2, padding="same", name="up")(inputs)  # 8×8×10
    x = layers.Conv2D(10, 3, padding="same", groups=5, name="grouped")(x)  # kernel 3×3×2×10
    x = layers.Reshape((64, 10))(x)
    outputs = layers.Dense(3, name="per_position")(x)
    rows = rows_by_name(profile(keras.Model(inputs, outputs)))
    assert rows["up"].macs == 3 * 3 * 6 * 10 * 4 * 4  # every input pixel scatters the kernel
    assert rows["grouped"].macs == 3 * 3 * (10 // 5) * 10 * 8 * 8  # C_in/groups = 10/5
    assert rows["per_position"].macs == 64 * 10 * 3


def test_nested_model_and_shared_layer():
    inner_inputs = keras.Input((8, 8, 4))
    inner = keras.Model(inner_inputs, layers.Conv2D(4, 3, padding="same", name="inner_conv")(inner_inputs),
                        name="block")
    inputs = keras.Input((8, 8, 4))
    shared = layers.Conv2D(4, 1, name="shared")
    x = shared(inputs)
    x = inner(x)
    x = shared(x)
    model = keras.Model(inputs, x)

    report = profile(model)
    rows = rows_by_name(report)
    assert "block/inner_conv" in rows and "block" not in rows
    assert rows["block/inner_conv"].macs == 3 * 3 * 4 * 4 * 8 * 8
    assert rows["shared"].macs == rows["shared#1"].macs == 4 * 4 * 8 * 8
    assert rows["shared"].params == 4 * 4 + 4 and rows["shared#1"].params == 0
    assert "shared layer" in rows["shared#1"].note
    assert report.total.params == model.count_params()
    assert report.total.macs == 3 * 3 * 4 * 4 * 64 + 2 * 4 * 4 * 64


def test_sequential_model():
    model = keras.Sequential([keras.Input((10,)), layers.Dense(7, name="a"), layers.Dense(2, name="b")])
    report = profile(model)
    assert [r.name for r in report.layers][-2:] == ["a", "b"]
    assert report.total.macs == 10 * 7 + 7 * 2


class _ChannelScale(layers.Layer):
    """A layer no MAC rule knows: one weight per channel."""

    def build(self, input_shape):
        self.scale = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


def test_unknown_layer_keeps_its_params_and_is_flagged():
    inputs = keras.Input((4, 4, 3))
    outputs = _ChannelScale(name="mystery")(layers.Conv2D(3, 1)(inputs))
    rows = rows_by_name(profile(keras.Model(inputs, outputs)))
    assert rows["mystery"].params == 3
    assert rows["mystery"].macs == 0
    assert "no spec for _ChannelScale" in rows["mystery"].note


def test_a_spec_with_dot_products_counts_a_new_layer():
    def dot_products(call):  # the scale vector is used once per position
        return [specs.DotProduct(call.layer.scale, positions=16, outputs=48)]

    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, _ChannelScale(name="mystery")(inputs))
    with specs.SPECS.scoped():
        specs.register(_ChannelScale, spec=specs.LayerSpec(dot_products=dot_products))
        rows = rows_by_name(profile(model))
    assert rows["mystery"].macs == 4 * 4 * 3 and rows["mystery"].note == ""
    assert "no spec" in rows_by_name(profile(model))["mystery"].note  # the registration did not leak


def test_unknown_spatial_size_is_refused_with_the_layer_name():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layers.Conv2D(4, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match=r"'conv'.*fixed"):
        profile(model)


def test_to_dict_round_trips_through_json_and_table_lists_every_layer():
    report = profile(zoo.lenet5((28, 28, 1), 10))
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["total"]["macs"] == 2_293_000
    table = report.table()
    for row in report.layers:
        assert row.name in table
    assert "2,293,000" in table


def test_the_walker_gives_calls_in_topological_order_with_their_parents():
    calls = GraphWalk(zoo.resnet_cifar(20, (32, 32, 3), 10)).calls
    assert isinstance(calls[0], Call) and calls[0].name == "stem"
    position = {call.name: i for i, call in enumerate(calls)}
    assert position["stem"] < position["stage1_block0_conv1"] < position["stage1_block0_add"] < position["logits"]
    add = calls[position["stage1_block0_add"]]
    assert {parent.layer.name for parent in add.parents} == {"stage1_block0_conv2_bn", "stem_relu"}
