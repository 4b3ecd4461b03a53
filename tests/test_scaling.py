"""Compound scaling: the multipliers and rounding by hand, and the φ search on a tiny budget."""

import keras
import pytest

import tfcompress as tfc
from tfcompress import scaling


def test_scaled_config_by_hand():
    base = scaling.scaled_config(0.0)
    assert (base.blocks_per_stage, base.filters) == (7, (16, 32, 64))
    one = scaling.scaled_config(1.0)  # d = 1.4, w = 1.2
    assert one.depth_multiplier == pytest.approx(1.4) and one.width_multiplier == pytest.approx(1.2)
    # ⌈7·1.4⌉ = 10; 16·1.2 = 19.2 → 16, < 0.9·19.2 so 24; 38.4 → 40; 76.8 → 80.
    assert (one.blocks_per_stage, one.filters) == (10, (24, 40, 80))
    published = scaling.scaled_config(3.5)  # the C100-MicroNet: 23 blocks per stage, widths 32/64/120
    assert (published.blocks_per_stage, published.filters) == (23, (32, 64, 120))
    model = scaling.build(1.0, (32, 32, 1), 10, base_blocks=1)
    assert model.get_layer("stage3_block0_conv1").filters == 80
    with pytest.raises(ValueError, match="phi"):
        scaling.scaled_config(-1.0)


@pytest.fixture(scope="module")
def tiny_data():
    # 16×16 images and one block per stage keep each candidate to a few seconds.
    options = {"image_size": 16, "resize": "bilinear", "limit": 192}
    train = tfc.data.load("fashion_mnist", "train", batch_size=64, **options)
    holdout = tfc.data.load("fashion_mnist", "test", batch_size=192, **options)
    return train, holdout


def _builder(phi):
    keras.utils.set_random_seed(0)
    return scaling.build(phi, (16, 16, 1), 10, base_blocks=1, dropout=0.0)


@pytest.mark.slow
def test_search_stops_at_the_first_phi_reaching_the_target(tiny_data):
    train, holdout = tiny_data
    result = scaling.search(train, holdout, 0.05, input_shape=(16, 16, 1), num_classes=10, phis=(0.0, 1.0),
                            epochs_per_candidate=1, builder=_builder)
    assert result.reached and [c.phi for c in result.candidates] == [0.0]
    # An unreachable target tries every φ within max_phi and returns the most accurate.
    result = scaling.search(train, holdout, 1.0, input_shape=(16, 16, 1), num_classes=10, phis=(0.0, 1.0, 2.0),
                            max_phi=1.0, epochs_per_candidate=1, builder=_builder)
    assert not result.reached and [c.phi for c in result.candidates] == [0.0, 1.0]
    assert result.candidates[1].params > result.candidates[0].params
    assert result.chosen.accuracy == max(c.accuracy for c in result.candidates)
    assert result.model.count_params() == result.chosen.params
    assert result.to_dict()["chosen"]["phi"] == result.chosen.phi


def test_search_bad_input(tiny_data):
    train, holdout = tiny_data
    with pytest.raises(ValueError, match="max_phi"):
        scaling.search(train, holdout, 0.5, input_shape=(32, 32, 1), num_classes=10, phis=(2.0,), max_phi=1.0)
    with pytest.raises(ValueError, match="target_accuracy"):
        scaling.search(train, holdout, 1.5, input_shape=(32, 32, 1), num_classes=10)
