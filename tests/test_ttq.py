"""TTQ baseline: the threshold rule by hand, scale initialization, the official recipe (schedule, L2 SGD),
the former EC2T-optimizer recipe, and errors."""

import keras
import numpy as np
import pytest

from tests.conftest import REPO
from tests.test_ec2t import _data, _small_model
from tfcompress import export
from tfcompress.quantization import ternary, ttq


def test_threshold_assignment_and_initial_scales_by_hand():
    W = np.array([-0.8, -0.03, 0.04, 0.06, 1.0], np.float32)
    A = ttq.ttq_assignment(W, threshold=0.05)  # Δ = 0.05·1.0
    np.testing.assert_array_equal(A, [-1, 0, 0, 1, 1])
    w_p, w_n = ttq.initial_scales(W, A)
    assert float(w_p) == pytest.approx((0.06 + 1.0) / 2) and float(w_n) == pytest.approx(0.8)
    np.testing.assert_array_equal(ttq.ttq_assignment(W, threshold=0.5), [-1, 0, 0, 0, 1])


def test_scales_start_at_one_as_the_official_code_or_at_the_mean_magnitudes():
    official = ttq.ternarize(_small_model(), threshold=0.05)
    mean = ttq.ternarize(_small_model(), threshold=0.05, scale_init="mean")
    for layer in ternary.ternary_layers(official):
        assert layer.w_p.numpy() == 1.0 and layer.w_n.numpy() == 1.0
        W = layer.kernel.numpy()
        np.testing.assert_array_equal(layer.assignment.numpy(), ttq.ttq_assignment(W, 0.05))
        other, A = mean.get_layer(layer.name), layer.assignment.numpy()
        assert float(other.w_p.numpy()) == pytest.approx(W[A > 0].mean())
        assert float(other.w_n.numpy()) == pytest.approx(-W[A < 0].mean())


def test_layers_the_official_scales_would_rescale():
    assert ttq.layers_without_batch_norm(ttq.ternarize(_small_model())) == ["conv2"]  # conv1 → bn1; conv2 → pool
    resnet20 = keras.models.load_model(REPO / "models" / "resnet20_fashion_mnist.keras")
    assert ttq.layers_without_batch_norm(ttq.ternarize(resnet20)) == []  # as the official ResNets


def test_official_schedule_by_hand():
    assert ttq.official_decay_epochs(164) == (82, 123, 150)  # the official steps
    assert ttq.official_decay_epochs(20) == (10, 15, 18)
    assert ttq.official_decay_epochs(1) == (1, 1, 1)  # a one-epoch run stays at the full rate
    rates = [ttq.stepped_learning_rate(epoch, 0.1, (10, 15, 18)) for epoch in (0, 9, 10, 14, 15, 18, 19)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.01, 1e-3, 1e-4, 1e-4])


def test_l2_sgd_adds_l2_times_w_to_kernel_and_scale_gradients_only():
    layer = ternary.TernaryDense(2, name="t")
    layer.build((None, 2))
    layer.kernel.assign([[1.0, -2.0], [0.5, 0.0]])
    layer.bias.assign([3.0, 3.0])
    layer.w_p.assign(2.0)
    optimizer = ttq.L2SGD(learning_rate=0.1, momentum=0.9, l2=0.01)
    variables = [layer.kernel, layer.bias, layer.w_p]
    optimizer.apply([np.zeros(v.shape, np.float32) for v in variables], variables)
    # First momentum step: Δw = −lr·(g + l2·w) = −0.001·w for the kernel and w_p; the bias is not regularized.
    np.testing.assert_allclose(layer.kernel.numpy(), 0.999 * np.array([[1.0, -2.0], [0.5, 0.0]]), rtol=1e-6)
    np.testing.assert_array_equal(layer.bias.numpy(), [3.0, 3.0])
    assert float(layer.w_p.numpy()) == pytest.approx(2.0 * 0.999)
    with pytest.raises(ValueError, match="l2 must be"):
        ttq.L2SGD(l2=-1.0)


def test_ttq_training_follows_the_threshold_rule_and_exports_three_values():
    model = ttq.ternarize(_small_model(), threshold=0.05)
    history = ttq.train(model, _data(), epochs=3, learning_rate=1e-2, decay_epochs=(1, 2), verbose=0)
    assert "ternary_sparsity" in history
    np.testing.assert_allclose(history["learning_rate"], [1e-2, 1e-3, 1e-4], rtol=1e-6)  # stepped, per epoch
    assert type(model.optimizer) is ttq.L2SGD and float(model.optimizer.momentum) == 0.9
    for layer in ternary.ternary_layers(model):
        np.testing.assert_array_equal(layer.assignment.numpy(), ttq.ttq_assignment(layer.kernel.numpy(), 0.05))
        assert float(layer.quantization_steps.numpy()) == 18
        assert layer.w_p.numpy() != 1.0  # the scales train with the same optimizer
        assert np.unique(export.strip(model).get_layer(layer.name).kernel.numpy()).size == 3


def test_former_recipe_uses_the_ec2t_optimizer():
    model = ttq.ternarize(_small_model(), scale_init="mean")
    ttq.train(model, _data(), epochs=1, recipe="ec2t", verbose=0)
    assert type(model.optimizer) is ternary.CentroidAdam
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-4)
    assert model.optimizer.centroid_learning_rate == pytest.approx(1e-5)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        ttq.ternarize(_small_model(), threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        ttq.TTQ(threshold=1.5)
    with pytest.raises(ValueError, match="scale_init must be one of"):
        ttq.ternarize(_small_model(), scale_init="zeros")
    model = ttq.ternarize(_small_model())
    with pytest.raises(ValueError, match="recipe must be one of"):
        ttq.train(model, _data(), epochs=1, recipe="adam")
    with pytest.raises(ValueError, match="learning_rate must be > 0"):
        ttq.train(model, _data(), epochs=1, learning_rate=-0.1)
