"""Wide residual networks, pre-activation (Zagoruyko & Komodakis 2016): WRN-depth-width.

Stem conv3×3(16); three groups of n = (depth−4)/6 blocks with 16k, 32k, 64k filters (strides 1, 2, 2);
block = BN → ReLU → conv3×3 → BN → ReLU → dropout → conv3×3, plus the identity or, where the shape changes,
a 1×1 convolution of the pre-activated input; head BN → ReLU → global pool → dense. WRN-40-2 has 2.2 M
parameters and WRN-28-10 36.5 M (the MicroNet CIFAR-100 reference).

``se_reduction`` adds squeeze-and-excitation where the NetAdapt thesis put it (``models/wideresnet.py``): on
the *shortcut* of every stride-1 block (the identity, or the 1×1 projection of group 1's first block) rather
than on the residual branch as in SENet; WRN-40-4 with r = 2 was the thesis's distillation teacher (95.7 %).
"""

from __future__ import annotations

import keras
from keras import layers

from tfcompress.zoo.blocks import batch_norm, check_se_reduction, classifier_head, conv, squeeze_excite


def wide_resnet(
    depth: int = 40,
    width: int = 2,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    dropout: float = 0.0,
    se_reduction: int = 0,
) -> keras.Model:
    """WRN-``depth``-``width``; ``depth`` must be 6n+4 (16, 22, 28, 40, …); ``se_reduction`` r > 0 adds
    squeeze-and-excitation blocks (C → C/r → C) on the shortcuts of stride-1 blocks."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(f"WideResNet depth must be 6n+4 with n ≥ 1 (16, 22, 28, 40), got {depth}")
    if width < 1:
        raise ValueError(f"WideResNet width must be an integer ≥ 1, got {width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    check_se_reduction(se_reduction)
    blocks_per_group = (depth - 4) // 6
    inputs = keras.Input(input_shape, name="image")
    x = conv(16, 3, name="stem")(inputs)
    for group, filters in enumerate((16 * width, 32 * width, 64 * width), start=1):
        for block in range(blocks_per_group):
            strides = 2 if group > 1 and block == 0 else 1
            x = _preact_block(x, filters, strides, dropout, se_reduction, name=f"group{group}_block{block}")
    x = batch_norm(name="head_bn")(x)
    x = layers.ReLU(name="head_relu")(x)
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=f"wrn{depth}_{width}" + (f"_se{se_reduction}" if se_reduction else ""))


def _preact_block(x, filters: int, strides: int, dropout: float, se_reduction: int, name: str):
    preact = batch_norm(name=f"{name}_bn1")(x)
    preact = layers.ReLU(name=f"{name}_relu1")(preact)
    needs_projection = strides != 1 or x.shape[-1] != filters
    shortcut = conv(filters, 1, strides, name=f"{name}_proj")(preact) if needs_projection else x
    y = conv(filters, 3, strides, name=f"{name}_conv1")(preact)
    y = batch_norm(name=f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = conv(filters, 3, name=f"{name}_conv2")(y)
    if se_reduction and strides == 1:
        shortcut = squeeze_excite(shortcut, se_reduction, name=f"{name}_se")
    return layers.Add(name=f"{name}_add")([y, shortcut])
