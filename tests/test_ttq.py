"""TTQ baseline: the threshold rule by hand, scale initialization, training with model.fit, and errors."""

import numpy as np
import pytest

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


def test_ttq_training_follows_the_threshold_rule_and_exports_three_values():
    model = ttq.ternarize(_small_model(), threshold=0.05)
    history = ttq.train(model, _data(), epochs=1, learning_rate=1e-3, verbose=0)
    assert "ternary_sparsity" in history
    for layer in ternary.ternary_layers(model):
        np.testing.assert_array_equal(layer.assignment.numpy(), ttq.ttq_assignment(layer.kernel.numpy(), 0.05))
        assert float(layer.quantization_steps.numpy()) == 6
        assert np.unique(export.strip(model).get_layer(layer.name).kernel.numpy()).size == 3


def test_bad_threshold():
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\)"):
        ttq.ternarize(_small_model(), threshold=0.0)
    with pytest.raises(ValueError, match="threshold"):
        ttq.TTQ(threshold=1.5)
