"""ShuffleNetV2 (Ma et al. 2018), the CIFAR variant of the NetAdapt thesis (``training_from_scratch/models/
shufflenetv2.py``): stem conv3×3(16); three stages of ``depth / 3`` blocks with ``width``, 2·``width`` and
4·``width`` channels (stride 2 in the first block of stages 2 and 3); global average pooling and a dense layer.

A block either **splits** its input in two halves (stride 1, same width: the second half is the shortcut) or
feeds all of it to both branches (the first block of a stage: the shortcut branch is depthwise 3×3 → BN →
1×1 → BN → ReLU). The main branch is 1×1 (half its output width, the thesis's bottleneck) → BN → ReLU →
depthwise 3×3 → BN → 1×1 → BN → ReLU, optionally followed by squeeze-and-excitation (stride-1 blocks) and a
residual sum. The branches are concatenated and **shuffled** with 2 groups (:class:`ChannelShuffle`).

Pruning: the shuffle couples channel j of the main branch with channel j of the shortcut (so both keep the
same count and the interleaving stays valid); the split that follows cuts through those coupled channels, so
the channels crossing a split are kept (the channel graph says so). The bottleneck channels inside every
branch, the stem and the squeeze-excitation's inner channels are prunable.
"""

from __future__ import annotations

import math

import keras
from keras import layers

from tfcompress.zoo.blocks import (
    KERNEL_INIT,
    batch_norm,
    check_se_reduction,
    classifier_head,
    conv_bn_relu,
    squeeze_excite,
)
from tfcompress.zoo.layers import ChannelShuffle

STEM_FILTERS = 16


def shufflenet_v2(
    depth: int = 12,
    width: int = 64,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    se_reduction: int = 0,
    residual: bool = False,
    dropout: float = 0.0,
) -> keras.Model:
    """ShuffleNetV2 for CIFAR as the thesis parametrized it (``shufflenetv2_d12_w64`` is ``depth=12, width=64``).

    Args:
        depth: number of blocks, a multiple of 3 (``depth / 3`` per stage).
        width: channels of the first stage (even: the shuffle interleaves two equal halves); ×2 per stage.
        se_reduction: r > 0 adds squeeze-and-excitation (C → C/r → C) to the main branch of stride-1 blocks.
        residual: adds the main branch's input to its output in stride-1 blocks of unchanged width (the
            thesis's ``add_skip``).
        dropout: dropout rate before the classifier (the thesis's ``use_dropout`` was 0.2).
    """
    if depth < 3 or depth % 3:
        raise ValueError(f"ShuffleNetV2 depth must be a positive multiple of 3 (blocks, 3 stages), got {depth}")
    if width < 2 or width % 2:
        raise ValueError(f"ShuffleNetV2 width must be an even integer ≥ 2, got {width}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    check_se_reduction(se_reduction)
    inputs = keras.Input(input_shape, name="image")
    x = conv_bn_relu(inputs, STEM_FILTERS, 3, name="stem")
    for stage in range(3):
        for block in range(depth // 3):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _block(x, width * 2**stage, strides, se_reduction, residual, name=f"stage{stage + 1}_block{block}")
    if dropout:
        x = layers.GlobalAveragePooling2D(name="global_pool")(x)
        x = layers.Dropout(dropout, name="dropout")(x)
        outputs = layers.Dense(num_classes, name="logits")(x)
    else:
        outputs = classifier_head(x, num_classes)
    return keras.Model(inputs, outputs, name=f"shufflenet_v2_d{depth}_w{width}"
                       + (f"_se{se_reduction}" if se_reduction else ""))


def _depthwise_bn(x, strides: int, name: str):
    x = layers.DepthwiseConv2D(3, strides=strides, padding="same", use_bias=False,
                               depthwise_initializer=KERNEL_INIT, name=name)(x)
    return batch_norm(name=f"{name}_bn")(x)


def _block(x, filters: int, strides: int, se_reduction: int, residual: bool, name: str):
    in_channels = int(x.shape[-1])
    if strides == 1 and in_channels == filters:  # channel split: the second half is the shortcut
        branch_channels = math.ceil(in_channels / 2)
        branch_input, shortcut = x[..., :branch_channels], x[..., branch_channels:]
    else:  # a first block: both branches read the whole input
        # stride 2 doubles the width (each branch keeps the input's); stride 1 splits `filters` between them
        branch_channels = in_channels if strides != 1 else math.ceil(filters / 2)
        branch_input = x
        shortcut = _depthwise_bn(x, strides, name=f"{name}_shortcut_dw")
        shortcut = conv_bn_relu(shortcut, in_channels if strides != 1 else filters - branch_channels, 1,
                                name=f"{name}_shortcut_pw")
    y = conv_bn_relu(branch_input, branch_channels // 2, 1, name=f"{name}_reduce")
    y = _depthwise_bn(y, strides, name=f"{name}_dw")
    y = conv_bn_relu(y, branch_channels, 1, name=f"{name}_expand")
    if strides == 1:
        if se_reduction:
            y = squeeze_excite(y, se_reduction, name=f"{name}_se")
        if residual and in_channels == filters:
            y = layers.Add(name=f"{name}_add")([y, branch_input])
    y = layers.Concatenate(name=f"{name}_concat")([y, shortcut])
    return ChannelShuffle(2, name=f"{name}_shuffle")(y)
