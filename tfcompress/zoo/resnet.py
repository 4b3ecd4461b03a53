"""CIFAR ResNets of He et al. 2016 (§4.2): depth 6n+2, three stages of 16/32/64 filters.

Shortcuts use option B of the paper: identity when shapes agree, a 1×1 strided convolution + BN
projection when they do not. Option A (zero-padded identity) needs a channel-padding op that is neither a
standard Keras layer nor prunable; option B adds 2,944 parameters to ResNet-20 (0.272 M → 0.275 M)
and is what keras.applications, torchvision and the NetAdapt reference use.
"""

from __future__ import annotations

import keras
from keras import layers

from tfcompress.zoo.blocks import batch_norm, classifier_head, conv, conv_bn_relu


def resnet_cifar(
    depth: int = 20, input_shape: tuple[int, int, int] = (32, 32, 3), num_classes: int = 10, width: int = 16
) -> keras.Model:
    """ResNet-``depth`` for 32×32 images; ``depth`` ∈ {20, 32, 44, 56, 110, …} (6n+2).

    Args:
        depth: total number of weighted layers, 6n+2 with n basic blocks per stage.
        input_shape: (height, width, channels).
        num_classes: size of the logits.
        width: filters of the first stage (16 in the paper); later stages use 2× and 4×.
    """
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 with n ≥ 1 (20, 32, 44, 56, 110), got {depth}")
    if width < 1:
        raise ValueError(f"width must be ≥ 1, got {width}")
    blocks_per_stage = (depth - 2) // 6
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, width, 3, name="stem")
    for stage, filters in enumerate((width, 2 * width, 4 * width), start=1):
        for block in range(blocks_per_stage):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _basic_block(x, filters, strides, name=f"stage{stage}_block{block}")
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=f"resnet{depth}")


def _basic_block(x, filters: int, strides: int, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, strides, name=f"{name}_proj")(x)
        shortcut = batch_norm(name=f"{name}_proj_bn")(shortcut)
    y = conv_bn_relu(x, filters, 3, strides, name=f"{name}_conv1")
    y = conv(filters, 3, name=f"{name}_conv2")(y)
    y = batch_norm(name=f"{name}_conv2_bn")(y)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)
