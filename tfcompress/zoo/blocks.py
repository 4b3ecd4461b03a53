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
