"""EffNet (Freeman et al. 2018), the 32×32 variant of the NetAdapt thesis (``training_from_scratch/models/
effnet.py``): spatially separable blocks.

Stem 1×1 conv(``width``) → BN → ReLU; three stages with bottleneck b = max(⌊c_s · expansion / 2⌋, 6) for
c_s = ``width``·2^s; a block is 1×1 conv(b) → BN → LeakyReLU → depthwise 1×3 → BN → ReLU → [max-pool 1×2,
stride 1×2] → depthwise 3×1 → BN → ReLU → [conv 2×1, stride 2×1 (c_{s+1} filters) → BN → LeakyReLU], the
bracketed layers only in the last, strided block of a stage; then Flatten → dense. No residual sums.

Depth: the thesis's ``--depth`` never reached its builder (its loop ``range(i - 1)`` adds 0, 0 and 1 stride-1
blocks before the strided one), so every thesis EffNet had 1, 1 and 2 blocks per stage whatever its name
said. ``blocks_per_stage=(1, 1, 2)`` (the default) is that network; ``(d/3,) * 3`` is what the depth meant.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from tfcompress.zoo.blocks import KERNEL_INIT, batch_norm, check_positive, conv

THESIS_BLOCKS = (1, 1, 2)


def effnet(
    width: int = 32,
    expansion: float = 2.0,
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    blocks_per_stage: Sequence[int] = THESIS_BLOCKS,
) -> keras.Model:
    """EffNet for CIFAR (``effnet_d12_w32_e4`` of the thesis is ``width=32, expansion=4``).

    Args:
        width: channels of the stem; stage s outputs ``width · 2^(s+1)``.
        expansion: bottleneck channels are ``max(⌊channels · expansion / 2⌋, 6)``.
        blocks_per_stage: blocks of each of the 3 stages, the last one strided (see the module docstring).
    """
    check_positive("width", width)
    check_positive("expansion", expansion)
    blocks_per_stage = tuple(blocks_per_stage)
    if len(blocks_per_stage) != 3 or any(not isinstance(n, int) or n < 1 for n in blocks_per_stage):
        raise ValueError(f"blocks_per_stage must be 3 integers ≥ 1, got {blocks_per_stage}")
    inputs = keras.Input(input_shape, name="image")
    x = conv(width, 1, name="stem")(inputs)
    x = batch_norm(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for stage, blocks in enumerate(blocks_per_stage):
        channels = width * 2**stage
        bottleneck = max(int(channels * expansion / 2), 6)
        for block in range(blocks):
            strided_to = 2 * channels if block == blocks - 1 else None
            x = _block(x, bottleneck, strided_to, name=f"stage{stage + 1}_block{block}")
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=f"effnet_w{width}_e{expansion:g}")


def _depthwise(kernel_size: tuple[int, int], name: str) -> layers.DepthwiseConv2D:
    return layers.DepthwiseConv2D(kernel_size, padding="same", use_bias=False, depthwise_initializer=KERNEL_INIT,
                                  name=name)


def _block(x, bottleneck: int, strided_to: int | None, name: str):
    """One EffNet block; ``strided_to`` = output channels of a strided block (None: stride 1, ``bottleneck`` out)."""
    x = conv(bottleneck, 1, name=f"{name}_pw")(x)
    x = batch_norm(name=f"{name}_pw_bn")(x)
    x = layers.LeakyReLU(name=f"{name}_pw_relu")(x)
    x = _depthwise((1, 3), name=f"{name}_dw1x3")(x)
    x = batch_norm(name=f"{name}_dw1x3_bn")(x)
    x = layers.ReLU(name=f"{name}_dw1x3_relu")(x)
    if strided_to is not None:  # separable downsampling: width by pooling, height by the strided 2×1 conv
        x = layers.MaxPooling2D((1, 2), strides=(1, 2), padding="same", name=f"{name}_pool")(x)
    x = _depthwise((3, 1), name=f"{name}_dw3x1")(x)
    x = batch_norm(name=f"{name}_dw3x1_bn")(x)
    x = layers.ReLU(name=f"{name}_dw3x1_relu")(x)
    if strided_to is not None:
        x = layers.Conv2D(strided_to, (2, 1), strides=(2, 1), padding="same", use_bias=False,
                          kernel_initializer=KERNEL_INIT, name=f"{name}_down")(x)
        x = batch_norm(name=f"{name}_down_bn")(x)
        x = layers.LeakyReLU(name=f"{name}_down_relu")(x)
    return x
