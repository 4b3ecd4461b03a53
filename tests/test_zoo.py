"""Zoo models: parameter counts against published values, shapes, and argument errors."""

import math
import re

import numpy as np
import pytest

from tfcompress import zoo


def trainable_params(model) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(
    ("name", "shape", "classes", "published"),
    [
        ("lenet_300_100", (28, 28, 1), 10, 266_610),  # 784·300+300 + 300·100+100 + 100·10+10
        ("lenet5", (28, 28, 1), 10, 431_080),  # Caffe LeNet-5: 520 + 25,050 + 400,500 + 5,010
        ("resnet20", (32, 32, 3), 10, 0.27e6),  # He et al. 2016, Table 6
        ("resnet32", (32, 32, 3), 10, 0.46e6),
        ("resnet44", (32, 32, 3), 10, 0.66e6),
        ("resnet56", (32, 32, 3), 10, 0.85e6),
        ("wrn-40-2", (32, 32, 3), 10, 2.2e6),  # Zagoruyko & Komodakis 2016, Table 1
        ("wrn-28-10", (32, 32, 3), 100, 36.5e6),  # the MicroNet CIFAR-100 reference
        ("micronet", (32, 32, 3), 100, 0.66e6),  # EC2T baseline (ResNet-44 macro), REFERENCE §2.4
    ],
)
def test_parameter_counts_match_published_values(name, shape, classes, published):
    model = zoo.build(name, shape, classes)
    count = trainable_params(model)
    tolerance = 0 if isinstance(published, int) else 0.02
    assert abs(count - published) <= tolerance * published, f"{name}: {count:,} vs published {published:,}"


@pytest.mark.slow
def test_micronet_phi_3_5_is_the_published_c100_micronet():
    model = zoo.micronet_resnet((32, 32, 3), 100, phi=3.5)
    convs = [layer for layer in model.layers if layer.name.endswith("_conv1")]
    assert len(convs) == 3 * 23  # ⌈7 · 1.4^3.5⌉ = 23 blocks per stage
    assert sorted({layer.filters for layer in convs}) == [32, 64, 120]
    assert abs(trainable_params(model) - 8.0e6) < 0.02 * 8.0e6


def test_compound_scaling_rules():
    depth, width = zoo.compound_multipliers(3.5)
    assert math.isclose(depth, 1.4**3.5) and math.isclose(width, 1.2**3.5)
    assert [zoo.rounding_filters(f, width) for f in (16, 32, 64)] == [32, 64, 120]
    assert zoo.rounding_repeats(7, depth) == 23
    assert zoo.rounding_filters(16, 1.0) == 16


@pytest.mark.parametrize(
    ("name", "kwargs", "shape"),
    [
        ("mobilenet_v1", {"width_multiplier": 0.5, "depth_multiplier": 0.5}, (32, 32, 3)),
        ("mobilenet_v2", {"width_multiplier": 0.5, "expansion": 4}, (32, 32, 1)),
        ("resnet20", {}, (32, 32, 1)),
        ("lenet5", {}, (32, 32, 1)),
        ("shufflenetv2_d6_w16_se2", {"residual": True}, (24, 24, 1)),
        ("effnet_w8_e4", {}, (20, 20, 3)),  # odd sizes on the way down: 'same' pooling and strides
        ("wrn-10-2-se", {}, (16, 16, 3)),
    ],
)
def test_models_run_and_output_logits(name, kwargs, shape):
    model = zoo.build(name, shape, 10, **kwargs)
    logits = model(np.random.default_rng(0).normal(size=(2, *shape)).astype("float32"), training=False)
    assert logits.shape == (2, 10)
    assert not np.allclose(np.sum(logits, axis=-1), 1.0)  # logits, not probabilities (no softmax layer)


@pytest.mark.slow
def test_width_multiplier_shrinks_mobilenets():
    full = trainable_params(zoo.mobilenet_v1((32, 32, 3), 10))
    half = trainable_params(zoo.mobilenet_v1((32, 32, 3), 10, width_multiplier=0.5))
    assert 3.0e6 < full < 3.4e6  # pytorch-cifar MobileNet: 3.2 M
    assert half < 0.3 * full  # pointwise convs dominate and scale with width²
    v2 = trainable_params(zoo.mobilenet_v2((32, 32, 3), 10))
    assert 2.1e6 < v2 < 2.4e6  # pytorch-cifar MobileNetV2: 2.2 M


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: zoo.wide_resnet(depth=41), "6n+4"),
        (lambda: zoo.resnet_cifar(depth=21), "6n+2"),
        (lambda: zoo.wide_resnet(depth=40, width=0), "width"),
        (lambda: zoo.mobilenet_v2(width_multiplier=0), "width_multiplier"),
        (lambda: zoo.micronet_resnet(phi=-1), "phi"),
        (lambda: zoo.shufflenet_v2(depth=4), "multiple of 3"),
        (lambda: zoo.effnet(expansion=0), "expansion"),
        (lambda: zoo.build("wrn-16-1-se", (32, 32, 3), 10, se_reduction=4), "se_reduction"),
        (lambda: zoo.mobilenet_v2(se_reduction=1000), "se_reduction"),
        (lambda: zoo.build("resnet-9000x", (32, 32, 3), 10), "unknown model"),
        (lambda: zoo.build("lenet5", (28, 28, 1), 10, depth=3), "unexpected keyword"),
    ],
)
def test_invalid_arguments_raise_clear_value_errors(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
