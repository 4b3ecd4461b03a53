"""MobileNetV1 (Howard et al. 2017) and MobileNetV2 (Sandler et al. 2018), CIFAR variants.

The CIFAR variants keep the ImageNet layer sequence but start at stride 1 (32×32 inputs would otherwise be
1×1 before the last stage), as in the widely used pytorch-cifar versions. ``width_multiplier`` scales every
layer's filters (rounded to a multiple of 8); ``depth_multiplier`` scales the number of repeated blocks per
stage (rounded up), so a user can trade accuracy for latency along both axes, as the NetAdapt thesis did.
``se_reduction`` adds the thesis's squeeze-and-excitation after the projection of every stride-1 block.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from tfcompress.zoo.blocks import (
    KERNEL_INIT,
    batch_norm,
    check_positive,
    check_se_reduction,
    classifier_head,
    conv,
    conv_bn_relu,
    make_divisible,
    squeeze_excite,
)

# (filters, stride of the first block, repeats)
_V1_STAGES = ((64, 1, 1), (128, 2, 2), (256, 2, 2), (512, 2, 6), (1024, 2, 2))
# (expansion, filters, repeats, stride of the first block); the ImageNet table with the first strides at 1.
_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def _repeats(count: int, depth_multiplier: float) -> int:
    return max(1, math.ceil(count * depth_multiplier))


def _depthwise(strides: int, name: str) -> layers.DepthwiseConv2D:
    return layers.DepthwiseConv2D(
        3, strides=strides, padding="same", use_bias=False, depthwise_initializer=KERNEL_INIT, name=name
    )


def mobilenet_v1(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
) -> keras.Model:
    """MobileNetV1 for CIFAR: conv3×3(32) then 13 depthwise-separable blocks (at multipliers 1.0); 3.2 M params."""
    check_positive("width_multiplier", width_multiplier)
    check_positive("depth_multiplier", depth_multiplier)
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, make_divisible(32 * width_multiplier), 3, name="stem")
    for stage, (filters, first_stride, repeats) in enumerate(_V1_STAGES, start=1):
        for block in range(_repeats(repeats, depth_multiplier)):
            name = f"stage{stage}_block{block}"
            x = _depthwise(first_stride if block == 0 else 1, name=f"{name}_dw")(x)
            x = batch_norm(name=f"{name}_dw_bn")(x)
            x = layers.ReLU(name=f"{name}_dw_relu")(x)
            x = conv_bn_relu(x, make_divisible(filters * width_multiplier), 1, name=f"{name}_pw")
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name="mobilenet_v1")


def mobilenet_v2(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    width_multiplier: float = 1.0,
    depth_multiplier: float = 1.0,
    expansion: int | None = None,
    se_reduction: int = 0,
) -> keras.Model:
    """MobileNetV2 for CIFAR: inverted residual blocks with linear bottlenecks and ReLU6; 2.2 M params at 1.0.

    Args:
        expansion: overrides the expansion ratio 6 of every expanding block (the thesis grid used 4 and 6).
        se_reduction: r > 0 adds a squeeze-and-excitation block (C → C/r → C) after the projection of every
            stride-1 block, before its residual sum (the thesis's placement; its best r was 2).
    """
    check_positive("width_multiplier", width_multiplier)
    check_positive("depth_multiplier", depth_multiplier)
    if expansion is not None and expansion < 1:
        raise ValueError(f"expansion must be ≥ 1, got {expansion}")
    check_se_reduction(se_reduction)
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, make_divisible(32 * width_multiplier), 3, name="stem", relu6=True)
    for stage, (ratio, filters, repeats, first_stride) in enumerate(_V2_STAGES, start=1):
        ratio = expansion if expansion is not None and ratio > 1 else ratio
        for block in range(_repeats(repeats, depth_multiplier)):
            x = _inverted_residual(
                x, ratio, make_divisible(filters * width_multiplier), first_stride if block == 0 else 1,
                se_reduction, name=f"stage{stage}_block{block}",
            )
    last = make_divisible(1280 * max(1.0, width_multiplier))
    x = conv_bn_relu(x, last, 1, name="head", relu6=True)
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name="mobilenet_v2")


def _inverted_residual(x, expansion: int, filters: int, strides: int, se_reduction: int, name: str):
    in_channels = x.shape[-1]
    y = x
    if expansion != 1:
        y = conv_bn_relu(y, in_channels * expansion, 1, name=f"{name}_expand", relu6=True)
    y = _depthwise(strides, name=f"{name}_dw")(y)
    y = batch_norm(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(max_value=6.0, name=f"{name}_dw_relu")(y)
    y = conv(filters, 1, name=f"{name}_project")(y)
    y = batch_norm(name=f"{name}_project_bn")(y)
    if se_reduction and strides == 1:
        y = squeeze_excite(y, se_reduction, name=f"{name}_se")
    if strides == 1 and in_channels == filters:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y
