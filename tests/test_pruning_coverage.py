"""Coverage: every zoo model and keras.applications MobileNetV2, ResNet50, DenseNet121 (depthwise, residual,
concatenation) lose 30 % of the channels of every prunable group; the masked and shrunk models agree, the
MACs fall as planned, and the shrunk model runs in LiteRT with the same outputs."""

import keras
import numpy as np
import pytest

from tfcompress import export, runtime, training, zoo
from tfcompress.graph import ChannelGraph
from tfcompress.profile import profile
from tfcompress.pruning import get_importance, insert_channel_masks, plan_channels, shrink

ZOO = [
    ("lenet_300_100", (28, 28, 1)), ("lenet5", (28, 28, 1)), ("resnet20", (32, 32, 3)), ("resnet56", (32, 32, 3)),
    ("wrn-16-2", (32, 32, 3)), ("mobilenet_v1", (32, 32, 3)), ("mobilenet_v2", (32, 32, 3)), ("micronet", (32, 32, 3)),
]
APPLICATIONS = ["MobileNetV2", "ResNet50", "DenseNet121"]


def _build(name):
    if name in APPLICATIONS:
        model = getattr(keras.applications, name)(weights=None, input_shape=(32, 32, 3), classes=10,
                                                  classifier_activation=None)
        return model, (32, 32, 3)
    shape = dict(ZOO)[name]
    return zoo.build(name, shape, 10), shape


def _relative_diff(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / max(1.0, np.ptp(a)))


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name, _ in ZOO] + APPLICATIONS)
def test_prune_30_percent_of_every_group(name):
    model, shape = _build(name)
    x = np.random.default_rng(0).normal(size=(16, *shape)).astype("float32")
    training.recalibrate_batch_norm(model, [x])  # realistic activations: random-init BN statistics vanish
    graph = ChannelGraph(model)
    assert graph.prunable_groups, name
    plan = plan_channels(graph, get_importance("l1").scores(graph), target_channels=0.7, scope="local")
    assert set(plan.masks) == {g.id for g in graph.prunable_groups if round(0.3 * g.size) > 0}

    masked = insert_channel_masks(model, plan.masks, graph=graph)
    small = shrink(model, plan.masks, graph=graph)
    reference = masked(x[:4], training=False)
    assert np.ptp(reference) > 1e-3, "degenerate outputs would make parity meaningless"
    assert _relative_diff(reference, small(x[:4], training=False)) <= 1e-5

    macs = profile(small).total.macs
    assert macs == plan.macs_after < plan.macs_before
    assert small.count_params() == plan.params_after

    lite = runtime.TFLiteModel(export.to_tflite(small))
    assert _relative_diff(small(x[:4], training=False), lite.predict(x[:4])) <= 1e-4
