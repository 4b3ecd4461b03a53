"""Input resolution as a compression knob: the same weights on fewer pixels, behind a Resizing layer that keeps the
model's input; composes with pruning and export; refused where the weights depend on the input size."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress import export, profile, resolution, runtime
from tfcompress.pruning import channels


def _mobilenet(size: int = 64) -> keras.Model:
    """keras.applications MobileNetV2 nested in a functional model that scales its own pixels (as users build)."""
    backbone = keras.applications.MobileNetV2(input_shape=(size, size, 3), alpha=0.35, include_top=False,
                                              weights=None)
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(backbone(x))
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x), name="dogs")


def test_the_rescaled_model_is_the_same_network_on_resized_images():
    keras.utils.set_random_seed(0)
    model = _mobilenet(64)
    small = resolution.rescale_input(model, 48)
    assert small.input_shape == model.input_shape  # the user's application feeds what it fed
    x = np.random.default_rng(0).uniform(0, 255, (4, 64, 64, 3)).astype("float32")
    resized = tf.image.resize(x, (48, 48), method="bilinear").numpy()
    network = small.layers[-1]  # the original network, at 48 px, with the original's weights
    assert network.input_shape == (None, 48, 48, 3) and network.name == "dogs_at_48px"
    # training=False: Keras 3.15's Resizing declares call(training=True), and a call without it runs every
    # BatchNormalization after it in training mode (the toolkit always passes it; export traces with it)
    np.testing.assert_allclose(small(x, training=False), network(resized, training=False), rtol=1e-5, atol=1e-5)
    for before, after in zip(model.weights, network.weights, strict=True):
        np.testing.assert_array_equal(before.numpy(), after.numpy())
    # the cost follows the pixels: 48² / 64² of the convolutions' MACs (the Dense head and the resize aside)
    ratio = profile.profile(small).total.macs / profile.profile(model).total.macs
    assert 0.45 < ratio < 0.6  # (48/64)² = 0.5625, less where strides round 3 px down to 2


def test_a_rescaled_model_prunes_and_exports_with_litert_parity():
    keras.utils.set_random_seed(1)
    small = resolution.rescale_input(_mobilenet(64), 40)
    pruned = channels.prune_channels(small, "l1", target_channels=0.7).model
    assert profile.profile(pruned).total.params < profile.profile(small).total.params
    x = np.random.default_rng(1).uniform(0, 255, (3, 64, 64, 3)).astype("float32")
    lite = runtime.TFLiteModel(export.to_tflite(pruned))
    np.testing.assert_allclose(lite.predict(x), pruned(x, training=False), rtol=1e-4, atol=1e-4)


def test_sizes_and_networks_that_cannot_be_rescaled_are_refused_in_one_line():
    model = _mobilenet(64)
    for size in (64, 80, 0):
        with pytest.raises(ValueError, match="smaller than the model's 64×64 px"):
            resolution.rescale_input(model, size)
    flat = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, name="conv"),
                             keras.layers.Flatten(), keras.layers.Dense(10, name="classifier")])
    with pytest.raises(ValueError, match=r"layer 'classifier' of .* weights depend on the input size"):
        resolution.rescale_input(flat, 20)
    vector = keras.Sequential([keras.Input((16,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match="not fixed-size images"):
        resolution.rescale_input(vector, 8)
