"""Ternary layers: gradient rules, serialization, strip and TFLite export, layer selection, ternary scoring."""

import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter

from tfcompress import export, micronet, runtime
from tfcompress.quantization import ec2t, scoring, ternary, ternary_counting, ttq


def _dense(mode="ternary", wn_gradient="exact"):
    # W_t = [[−w_n, 0], [w_p, w_p]] with w_p = 0.5, w_n = 0.4.
    layer = ternary.TernaryDense(2, use_bias=False, mode=mode, wn_gradient=wn_gradient)
    layer.build((None, 2))
    layer.kernel.assign([[-0.8, 0.1], [0.6, 1.0]])
    layer.assignment.assign([[-1, 0], [1, 1]])
    layer.w_p.assign(0.5)
    layer.w_n.assign(0.4)
    return layer


def _gradients(layer):
    # L = y·c with y = x W_t, x = (1, 2), c = (3, 5): ∂L/∂W_t = xᵀc = [[3, 5], [6, 10]].
    x, c = tf.constant([[1.0, 2.0]]), tf.constant([3.0, 5.0])
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x) * c)
    return [g.numpy() for g in tape.gradient(loss, [layer.kernel.value, layer.w_p.value, layer.w_n.value])]


def test_forward_uses_three_values():
    layer = _dense()
    np.testing.assert_allclose(layer.ternary_kernel(), [[-0.4, 0.0], [0.5, 0.5]])
    np.testing.assert_allclose(layer(tf.constant([[1.0, 2.0]])), [[0.6, 1.0]])


def test_gradient_rules_by_hand():
    d_shadow, d_w_p, d_w_n = _gradients(_dense())
    # shadow: ×w_n on −, ×1 on 0, ×w_p on +;  w_p: Σ over + = 6 + 10;  w_n: −Σ over − = −3 (w_t = −w_n).
    np.testing.assert_allclose(d_shadow, [[0.4 * 3, 5], [0.5 * 6, 0.5 * 10]])
    assert d_w_p == pytest.approx(16.0) and d_w_n == pytest.approx(-3.0)
    # ECP as the reference: W_t = [A ≠ 0]·W, but the gradients of the ternary mode (scaled, centroids train).
    layer = _dense(mode="prune")
    np.testing.assert_allclose(layer.ternary_kernel(), [[-0.8, 0.0], [0.6, 1.0]])
    d_shadow, d_w_p, d_w_n = _gradients(layer)
    np.testing.assert_allclose(d_shadow, [[0.4 * 3, 5], [0.5 * 6, 0.5 * 10]])
    assert d_w_p == pytest.approx(16.0) and d_w_n == pytest.approx(-3.0)


@pytest.mark.parametrize("mode", ["ternary", "prune"])
def test_reference_wn_gradient_differs_only_in_the_sign_of_the_w_n_gradient(mode):
    exact, reference = _gradients(_dense(mode)), _gradients(_dense(mode, wn_gradient="reference"))
    np.testing.assert_array_equal(reference[0], exact[0])  # shadow kernel
    assert reference[1] == exact[1]  # w_p
    assert exact[2] == pytest.approx(-3.0) and reference[2] == -exact[2]  # w_n: −Σ g (exact) vs +Σ g (reference)
    # The forward pass is the same.
    np.testing.assert_array_equal(_dense(mode, "reference").ternary_kernel(), _dense(mode).ternary_kernel())
    with pytest.raises(ValueError, match="wn_gradient must be one of"):
        _dense(mode, wn_gradient="ttq")


def test_layers_saved_with_the_former_boolean_option_load():
    config = _dense().get_config()
    del config["wn_gradient"]
    for flag, expected in ((True, "reference"), (False, "exact")):
        layer = ternary.TernaryDense.from_config({**config, "reference_wn_gradient": flag})
        assert layer.wn_gradient == expected


def test_centroid_adam_uses_the_centroid_learning_rate():
    layer = _dense()
    optimizer = ternary.CentroidAdam(1e-2, 1e-3)
    grads = _gradients(layer)
    kernel, w_p, w_n = layer.kernel.numpy(), float(layer.w_p.numpy()), float(layer.w_n.numpy())
    optimizer.apply(grads, [layer.kernel, layer.w_p, layer.w_n])
    # Adam's first step moves every variable by ≈ its learning rate against the gradient's sign.
    np.testing.assert_allclose(layer.kernel.numpy() - kernel, -1e-2 * np.sign(grads[0]), rtol=1e-3)
    assert float(layer.w_p.numpy()) - w_p == pytest.approx(-1e-3, rel=1e-3)
    assert float(layer.w_n.numpy()) - w_n == pytest.approx(1e-3, rel=1e-3)


def _model():
    keras.utils.set_random_seed(1)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(12, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.BatchNormalization(name="conv1_bn")(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="conv2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="fc")(x))
    for layer in model.layers:  # non-trivial BatchNorm statistics, so folding rescales channels
        if isinstance(layer, keras.layers.BatchNormalization):
            channels = layer.gamma.shape[0]
            layer.gamma.assign(np.linspace(0.5, 2.0, channels))
            layer.moving_variance.assign(np.linspace(0.3, 3.0, channels))
            layer.moving_mean.assign(np.linspace(-0.2, 0.2, channels))
    return model


TERNARY_NAMES = ["conv1", "dw", "conv2", "fc"]


def _residual_model():
    # A projection block (1×1 shortcut conv → BN → Add) and a MobileNetV2-style block whose 1×1 projection
    # ends the main path (its input does not reach the Add's other side): only the first is a shortcut.
    inputs = keras.Input((8, 8, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    main = keras.layers.Conv2D(16, 3, strides=2, padding="same", name="block_conv")(x)
    shortcut = keras.layers.BatchNormalization(name="proj_bn")(keras.layers.Conv2D(16, 1, strides=2, name="proj")(x))
    x = keras.layers.Add()([main, shortcut])
    y = keras.layers.Conv2D(32, 1, name="expand")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(y)
    y = keras.layers.BatchNormalization(name="project_bn")(keras.layers.Conv2D(16, 1, name="project")(y))
    x = keras.layers.Add()([x, y])
    return keras.Model(inputs, keras.layers.Dense(2, name="fc")(keras.layers.GlobalAveragePooling2D()(x)))


def test_projection_shortcuts_stay_full_precision_by_default():
    model = _residual_model()
    assert ternary.projection_shortcuts(model) == ["proj"]
    assert ternary.default_selection(model) == ["block_conv", "expand", "project"]
    assert ternary.default_selection(model, shortcuts=True) == ["proj", "block_conv", "expand", "project"]
    assert type(ternary.ternarize(model).get_layer("proj")) is keras.layers.Conv2D
    tern = ternary.ternarize(model, ternarize_shortcuts=True)
    assert type(tern.get_layer("proj")) is ternary.TernaryConv2D


def test_default_selection_and_replacement():
    model = _model()
    assert ternary.default_selection(model) == ["conv1", "conv2"]  # not the stem, not depthwise, not the classifier
    tern = ec2t.ternarize(model, 0.3, layers=TERNARY_NAMES)
    assert [type(tern.get_layer(n)).__name__ for n in TERNARY_NAMES] == [
        "TernaryConv2D", "TernaryDepthwiseConv2D", "TernaryConv2D", "TernaryDense"]
    for name in TERNARY_NAMES:
        np.testing.assert_array_equal(tern.get_layer(name).kernel.numpy(), model.get_layer(name).kernel.numpy())
    assert tern.get_layer("conv2").activation is keras.activations.relu


def test_keras_save_load_round_trip(tmp_path):
    model = ec2t.ternarize(_model(), 0.3, layers=TERNARY_NAMES, mode="ternary")
    model.get_layer("conv1").quantization_steps.assign(3.0)
    path = tmp_path / "ternary.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 12, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)
    for name in TERNARY_NAMES:
        original, restored = model.get_layer(name), loaded.get_layer(name)
        assert type(restored) is type(original) and restored.get_config() == original.get_config()
        for a, b in zip(original.weights, restored.weights, strict=True):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert float(loaded.get_layer("conv1").quantization_steps.numpy()) == 3.0


def test_strip_and_tflite_keep_three_values_per_output_channel():
    model = ttq.ternarize(_model(), layers=TERNARY_NAMES)
    plain = export.strip(model)
    assert not ternary.ternary_layers(plain)
    for name in TERNARY_NAMES:
        assert ternary.ternary_class_for(plain.get_layer(name)) is not None  # a plain Conv2D/Dense again
        kernel = plain.get_layer(name).kernel.numpy()
        assert np.unique(kernel).size == 3
    x = np.random.default_rng(0).normal(size=(64, 12, 12, 1)).astype(np.float32)
    # float32: the stripped model and its .tflite compute what the ternary model computes.
    dataset = tf.data.Dataset.from_tensor_slices((x, np.zeros(64))).batch(16)
    report = runtime.parity(model, export.to_tflite(model), dataset)
    assert report.relative_max_abs_diff <= 1e-4, report

    flatbuffer = export.to_tflite(model, "int8", representative_data=x, num_calibration_samples=64)
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    checked = {}
    for detail in interpreter.get_tensor_details():
        quantization = detail["quantization_parameters"]
        if detail["dtype"] != np.int8 or len(quantization["scales"]) == 0 or len(detail["shape"]) not in (2, 4):
            continue
        try:
            weights = interpreter.get_tensor(detail["index"])
        except ValueError:  # activations have no data before invoke
            continue
        # Tensor names hold the layer scope, "model/<layer>[_N]/op", BatchNorm-folded ones several joined by ";".
        owner = [name for name in [*TERNARY_NAMES, "stem"] if re.search(rf"/{name}(?:_\d+)?/", detail["name"])]
        if not owner:
            continue
        axis = quantization["quantized_dimension"]
        per_channel = np.moveaxis(weights, axis, 0).reshape(weights.shape[axis], -1)
        checked[owner[0]] = max(np.unique(row).size for row in per_channel)
    assert set(checked) == {*TERNARY_NAMES, "stem"}, checked
    assert all(checked[name] <= 3 for name in TERNARY_NAMES), checked
    assert checked["stem"] > 3  # the full-precision stem is not ternary: the check can tell


def test_layer_type_that_cannot_be_ternarized():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)
    model = keras.Model(inputs, keras.layers.Conv2D(2, 1, name="conv")(x))
    with pytest.raises(ValueError, match=r"'sep' is a SeparableConv2D, which cannot be ternarized"):
        ternary.ternarize(model, ["sep"])
    with pytest.raises(ValueError, match="not in model"):
        ternary.ternarize(model, ["nope"])
    with pytest.raises(ValueError, match="no layer to ternarize"):
        ternary.ternarize(model)  # one Conv2D only: it is the stem
    tern = ternary.ternarize(model, ["conv"])
    with pytest.raises(ValueError, match="already ternary"):
        ternary.ternarize(tern, ["conv"])
    with pytest.raises(ValueError, match="mode"):
        ternary.TernaryConv2D(2, 1, mode="binary")


# ------------------------------------------------------------------------------------------------ scoring


def test_tree_adder_by_hand():
    assert ternary_counting.tree_adder(5) == (4, 2 * 16 + 17 + 18)
    assert ternary_counting.tree_adder(1) == (0, 0) and ternary_counting.tree_adder(0) == (0, 0)
    assert ternary_counting.tree_adder(2) == (1, 16)
    assert ternary_counting.tree_adder(8, start_bits=31) == (7, 4 * 31 + 2 * 32 + 1 * 32)  # width capped at 32


def test_param_formats_by_hand():
    formats = ternary_counting.ternary_param_formats(numel=100, nonzero=30, rows=4, param_bits=16)
    assert formats == {
        "masked": (30 * 16 + 100) / 32,  # 18.125
        "2-bit codes": 8,  # ⌈(200 + 32)/32⌉
        "mask + sign": 6,  # ⌈(100 + 30 + 32)/32⌉
        "CSR": 20,  # ⌈(30·17 + 5·16 + 32)/32⌉ = ⌈19.44⌉
        "CER": 21,  # (30·16 + 2·5·16 + 32)/32
    }


def test_micronet_ternary_counting_by_hand():
    inputs = keras.Input((4, 4, 2))
    layer = ternary.TernaryConv2D(3, 1, use_bias=False, name="t")
    model = keras.Model(inputs, layer(inputs))
    layer.kernel.assign(np.full((1, 1, 2, 3), 0.3))
    layer.assignment.assign(np.array([[1, 0, -1], [1, -1, 0]], np.float32).reshape(1, 1, 2, 3))
    row = micronet.score(model).layers[-1]
    # numel 6, nnz 4, 3 channels: 2-bit codes ⌈(12 + 32)/32⌉ = 2 beats masked 70/32, mask+sign 2, CSR 6, CER 7.
    assert row.params == 2
    # 48 outputs: 2 mults each; channel 0 sums 2 inputs (one 16-bit add), channels 1 and 2 one input (none).
    assert row.mults == 96 and row.adds == 16
    assert row.ops == 96 * 16 / 32 + 16 * 16 / 32
    # The stripped model, scored with micronet_score, is counted the same way.
    stripped = scoring.micronet_score(export.strip(model)).layers[-1]
    assert (stripped.params, stripped.mults, stripped.adds, stripped.ops) == (row.params, row.mults, row.adds, row.ops)


def test_code_report_entropy_by_hand():
    inputs = keras.Input((4, 4, 2))
    layer = ternary.TernaryConv2D(4, 1, use_bias=False, name="t")
    model = keras.Model(inputs, layer(inputs))
    layer.assignment.assign(np.array([[1, 0, 0, 0], [-1, 0, 0, 1]], np.float32).reshape(1, 1, 2, 4))
    report = scoring.code_report(model)
    (codes,) = report["layers"]
    assert codes["probabilities"] == (0.125, 0.625, 0.25)
    entropy = -(0.125 * np.log2(0.125) + 0.625 * np.log2(0.625) + 0.25 * np.log2(0.25))
    assert codes["entropy_bits_per_weight"] == pytest.approx(entropy)
    assert codes["entropy_coded_bits"] == pytest.approx(8 * entropy + 64)
    assert report["model_float32_bits"] == 8 * 32


def test_ternarized_copy_shares_nothing_with_the_original():
    model = _model()
    weights = [w.copy() for w in model.get_weights()]
    tern = ec2t.ternarize(model, 0.3)
    assert not {id(layer) for layer in tern.layers} & {id(layer) for layer in model.layers}
    for variable in tern.weights:  # training the copy must not move the original
        variable.assign(variable.numpy() + 1.0)
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
