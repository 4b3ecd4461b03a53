"""The compound-scaled CIFAR "MicroNet" ResNet of the EC2T work (Marbán, Becking et al., CVPR-W 2020).

Baseline: a ResNet-44 macro structure — stem conv3×3(16w) + BN + ReLU; three stages of ⌈7·d⌉ blocks with
16w/32w/64w filters (strides 1, 2, 2); block = BN → conv3×3 → BN → ReLU → Dropout(0.2) → conv3×3 → BN plus the
shortcut (1×1 conv + BN where the shape changes), with **no ReLU after the add**; head ReLU → global pool →
dense. Compound scaling (Tan & Le 2019): depth d = α^φ, width w = β^φ with α = 1.4, β = 1.2; the published
C100-MicroNet is φ = 3.5 (23 blocks per stage, widths 32/64/120, ≈ 8.0 M parameters).
"""

from __future__ import annotations

import math

import keras
from keras import layers

from tfcompress.zoo.blocks import batch_norm, classifier_head, conv, make_divisible

ALPHA, BETA = 1.4, 1.2


def rounding_filters(filters: int, width: float) -> int:
    """Scales ``filters`` by ``width`` and rounds to a multiple of 8, never losing more than 10 %."""
    return make_divisible(filters * width)


def rounding_repeats(repeats: int, depth: float) -> int:
    """Scales a block count by ``depth``, rounding up."""
    return math.ceil(depth * repeats)


def compound_multipliers(phi: float, alpha: float = ALPHA, beta: float = BETA) -> tuple[float, float]:
    """(depth, width) multipliers d = α^φ, w = β^φ."""
    return alpha**phi, beta**phi


def micronet_resnet(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 100,
    phi: float = 0.0,
    alpha: float = ALPHA,
    beta: float = BETA,
    dropout: float = 0.2,
    base_blocks: int = 7,
) -> keras.Model:
    """MicroNet ResNet scaled by compound coefficient ``phi`` (0 gives the ResNet-44-like baseline)."""
    if phi < 0:
        raise ValueError(f"phi must be ≥ 0, got {phi}")
    if alpha < 1 or beta < 1:
        raise ValueError(f"alpha and beta must be ≥ 1 (they scale up), got alpha={alpha}, beta={beta}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    depth_mult, width_mult = compound_multipliers(phi, alpha, beta)
    blocks = rounding_repeats(base_blocks, depth_mult)
    inputs = keras.Input(input_shape, name="image")
    x = conv(rounding_filters(16, width_mult), 3, name="stem")(inputs)
    x = batch_norm(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, base_filters in enumerate((16, 32, 64), start=1):
        filters = rounding_filters(base_filters, width_mult)
        for block in range(blocks):
            strides = 2 if stage > 1 and block == 0 else 1
            x = _block(x, filters, strides, dropout, name=f"stage{stage}_block{block}")
    x = layers.ReLU(name="head_relu")(x)
    outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=f"micronet_phi{phi:g}")


def _block(x, filters: int, strides: int, dropout: float, name: str):
    shortcut = x
    if strides != 1 or x.shape[-1] != filters:
        shortcut = conv(filters, 1, strides, name=f"{name}_proj")(x)
        shortcut = batch_norm(name=f"{name}_proj_bn")(shortcut)
    y = batch_norm(name=f"{name}_bn1")(x)
    y = conv(filters, 3, strides, name=f"{name}_conv1")(y)
    y = batch_norm(name=f"{name}_bn2")(y)
    y = layers.ReLU(name=f"{name}_relu")(y)
    if dropout:
        y = layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = conv(filters, 3, name=f"{name}_conv2")(y)
    y = batch_norm(name=f"{name}_bn3")(y)
    return layers.Add(name=f"{name}_add")([y, shortcut])
