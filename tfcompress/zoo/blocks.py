"""Small building blocks shared by the zoo's convolutional networks."""

from __future__ import annotations

from keras import layers

# He et al. 2015 initialisation, as every reference implementation uses for ReLU networks.
KERNEL_INIT = "he_normal"


def conv(filters: int, kernel_size: int, strides: int = 1, name: str | None = None) -> layers.Conv2D:
    """A bias-free 'same' convolution, to be followed by BatchNormalization."""
    return layers.Conv2D(
        filters, kernel_size, strides=strides, padding="same", use_bias=False,
        kernel_initializer=KERNEL_INIT, name=name,
    )


def batch_norm(name: str | None = None) -> layers.BatchNormalization:
    # PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5), which the reference recipes were tuned with.
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def conv_bn_relu(x, filters: int, kernel_size: int, strides: int = 1, name: str = "conv", relu6: bool = False):
    """conv → BN → ReLU (or ReLU6), the unit of CIFAR ResNets and MobileNets."""
    x = conv(filters, kernel_size, strides, name=name)(x)
    x = batch_norm(name=f"{name}_bn")(x)
    return layers.ReLU(max_value=6.0 if relu6 else None, name=f"{name}_relu")(x)


def classifier_head(x, num_classes: int, name: str = "logits"):
    """Global average pooling then a dense layer giving logits (no softmax: losses take logits)."""
    x = layers.GlobalAveragePooling2D(name="global_pool")(x)
    return layers.Dense(num_classes, name=name)(x)


def make_divisible(value: float, divisor: int = 8) -> int:
    """Rounds a channel count to the nearest multiple of ``divisor``, adding one step if that lost > 10 %.

    The rule of the MobileNetV2 and EfficientNet code, which the EC2T MicroNet (`rounding_filters`) reuses.
    """
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def squeeze_excite(x, reduction: int, name: str):
    """Squeeze-and-excitation (Hu et al. 2018): global average → dense(C/r, ReLU) → dense(C, sigmoid) → scale.

    Bias-free dense layers, as in the NetAdapt thesis (its best reduction was r = 2). The final Multiply
    couples the excitation's C outputs with x's channels, so both are pruned together.
    """
    channels = int(x.shape[-1])
    if reduction < 1 or channels // reduction < 1:
        raise ValueError(f"se_reduction must be in [1, {channels}] for {channels} channels, got {reduction}")
    se = layers.GlobalAveragePooling2D(name=f"{name}_squeeze")(x)
    se = layers.Dense(channels // reduction, activation="relu", use_bias=False, kernel_initializer=KERNEL_INIT,
                      name=f"{name}_reduce")(se)
    se = layers.Dense(channels, activation="sigmoid", use_bias=False, name=f"{name}_excite")(se)
    # dense layers on (batch, C), not on (batch, 1, 1, C): TFLite then needs no run-time shape arithmetic
    se = layers.Reshape((1, 1, channels), name=f"{name}_expand_dims")(se)
    return layers.Multiply(name=f"{name}_scale")([x, se])


def check_se_reduction(se_reduction: int) -> None:
    if isinstance(se_reduction, bool) or not isinstance(se_reduction, int) or se_reduction < 0:
        raise ValueError(f"se_reduction must be an integer ≥ 0 (0: no squeeze-excitation), got {se_reduction!r}")
