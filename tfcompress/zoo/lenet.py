"""LeNet-300-100 and LeNet-5 (Caffe variant), the SNIP paper's MNIST networks (Lee et al. 2019, §5)."""

from __future__ import annotations

import keras
from keras import layers


def lenet_300_100(input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """Fully connected 784-300-100-10 network (LeCun et al. 1998); 266,610 parameters at 28×28×1."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(300, activation="relu", name="fc1")(x)
    x = layers.Dense(100, activation="relu", name="fc2")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet_300_100")


def lenet5(input_shape: tuple[int, int, int] = (28, 28, 1), num_classes: int = 10) -> keras.Model:
    """LeNet-5 as in Caffe: conv5×5×20, max-pool, conv5×5×50, max-pool, fc500, fc; 431,080 params at 28×28×1."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(20, 5, padding="valid", name="conv1")(inputs)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(50, 5, padding="valid", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(500, activation="relu", name="fc1")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name="lenet5")
