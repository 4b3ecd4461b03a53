"""TensorBoard summaries of the compression callbacks (tfcompress.summaries): fit tiny models for two epochs with a
``keras.callbacks.TensorBoard``, our ``log_dir`` or a ``tf.summary`` default writer, read the event files back and
check the tags and their values."""

from __future__ import annotations

import math
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.test_fisher_netadapt import plain_net
from tfcompress import summaries, training
from tfcompress.pruning import insert_channel_masks, magnitude, weight_masks
from tfcompress.pruning.fisher import FisherPruning
from tfcompress.pruning.morphnet import MorphNetCallback, MorphNetModel, MorphNetRegularizer
from tfcompress.quantization import ec2t, ternary, ttq


def read_events(folder: Path) -> dict[str, dict[int, np.ndarray]]:
    """tag → {step: value} of every summary in the event files under ``folder``; also checks the plugin."""
    found: dict[str, dict[int, np.ndarray]] = {}
    for path in sorted(Path(folder).rglob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                plugin = value.metadata.plugin_data.plugin_name
                assert plugin in ("", "scalars", "histograms", "graph_keras_model"), (value.tag, plugin)
                if value.HasField("tensor"):
                    found.setdefault(value.tag, {})[event.step] = tf.make_ndarray(value.tensor)
    return found


def series(events: dict[str, dict[int, np.ndarray]], tag: str) -> list[float]:
    """A scalar tag's values in step order."""
    assert tag in events, f"{tag} not among {sorted(events)}"
    return [float(events[tag][step]) for step in sorted(events[tag])]


def masked_conv_net(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Dense(8, activation="relu", name="fc")(keras.layers.Flatten()(x))
    return keras.Model(inputs, keras.layers.Dense(3, name="out")(x))


def ternary_net(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, padding="same", name="stem")(inputs)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(x)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(name="bn1")(x))
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="fc")(x))


def images(shape: tuple[int, ...], count: int = 64, classes: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, *shape)).astype("float32"), rng.integers(0, classes, count)


def test_gradual_magnitude_pruning_logs_sparsity_into_the_tensorboard_callbacks_run(tmp_path):
    pytest.importorskip("tensorboard")  # keras.callbacks.TensorBoard writes its own scalars with it
    model = weight_masks.wrap(masked_conv_net())
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss=keras.losses.SparseCategoricalCrossentropy(True))
    schedule = magnitude.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=7, power=1, frequency=2)
    x, y = images((6, 6, 1))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0,  # 4 steps per epoch
              callbacks=[magnitude.GradualMagnitudePruning(schedule), keras.callbacks.TensorBoard(tmp_path)])
    events = read_events(tmp_path / "train")  # next to Keras's own epoch_loss
    assert len(series(events, "epoch_loss")) == 2
    overall = series(events, "magnitude_pruning/sparsity")
    assert len(overall) == 2 and 0 < overall[0] < overall[1] <= 0.8 + 1e-6  # pruned at steps 0, 2 | 4, 6
    for name in ("conv", "fc", "out"):
        per_layer = series(events, f"magnitude_pruning/sparsity/{name}")
        assert per_layer[0] < per_layer[1] and per_layer[1] == pytest.approx(schedule.sparsity(6), abs=0.02)
    assert series(events, "magnitude_pruning/scheduled_sparsity") == pytest.approx(
        [schedule.sparsity(2), schedule.sparsity(6)])


def test_ec2t_logs_sparsity_entropy_lambda_and_centroids(tmp_path):
    pytest.importorskip("tensorboard")
    model = ec2t.ternarize(ternary_net(), ini_c_divr=0.3)
    x, y = images((8, 8, 1))
    callback = ec2t.EC2T(lambda_max_divr=0.5)
    ternary.fit(model, tf.data.Dataset.from_tensor_slices((x, y)).batch(16), 2, callback, verbose=0,
                callbacks=[keras.callbacks.TensorBoard(tmp_path, write_graph=False)])
    events = read_events(tmp_path / "train")
    layer = ternary.ternary_layers(model)[0]
    assert layer.name == "conv1"
    sparsity = series(events, "ec2t/sparsity/conv1")
    assert len(sparsity) == 2 and sparsity[-1] == pytest.approx(ternary.sparsity(model))
    entropy = series(events, "ec2t/entropy_bits/conv1")
    assert all(math.isfinite(h) and 0 < h <= math.log2(3) for h in entropy)
    codes = layer.assignment.numpy().ravel()
    P = np.array([np.mean(codes == c) for c in (-1, 0, 1)])
    assert entropy[-1] == pytest.approx(-(P[P > 0] * np.log2(P[P > 0])).sum())
    assert series(events, "ec2t/entropy_bits") == pytest.approx(entropy)  # one ternary layer
    assert series(events, "ec2t/w_p/conv1")[-1] == pytest.approx(float(layer.w_p.numpy()))
    assert min(series(events, "ec2t/w_n/conv1")) > 0
    lambdas = series(events, "ec2t/lambda/conv1")
    assert all(math.isfinite(v) and v > 0 for v in lambdas)
    assert lambdas[-1] == pytest.approx(callback.lambdas()["conv1"], rel=1e-5)
    buckets = events["ec2t/shadow_kernel/conv1"][1]
    assert buckets.shape == (summaries.HISTOGRAM_BUCKETS, 3) and buckets[:, 2].sum() == layer.kernel.numpy().size
    assert "ternary_sparsity" not in events  # an epoch log for Keras: it is there as epoch_ternary_sparsity
    assert series(events, "epoch_ternary_sparsity")[-1] == pytest.approx(sparsity[-1])


def test_ttq_logs_into_its_own_log_dir_without_tensorboard_installed(tmp_path):
    model = ttq.ternarize(ternary_net())
    x, y = images((8, 8, 1))
    training.compile_classifier(model, keras.optimizers.SGD(0.01))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[ttq.TTQ(log_dir=str(tmp_path / "ttq"))])
    events = read_events(tmp_path / "ttq")
    assert len(series(events, "ttq/sparsity/conv1")) == 2
    assert series(events, "ttq/sparsity")[-1] == pytest.approx(ternary.sparsity(model))
    assert series(events, "ttq/w_p/conv1")[-1] == pytest.approx(float(model.get_layer("conv1").w_p.numpy()))
    assert not any(tag.startswith("ec2t/") or "lambda" in tag for tag in events)


def test_fisher_pruning_logs_channels_per_group_into_a_default_writer(tmp_path):
    keras.utils.set_random_seed(0)
    masked = insert_channel_masks(plain_net(), track_fisher=True)
    training.compile_classifier(masked, keras.optimizers.SGD(0.01))
    pruner = FisherPruning(prune_every=2, channels_per_prune=2, target_channels=0.5, stop_at_target=False)
    x, y = images((8, 8, 3), count=32, classes=4)
    with tf.summary.create_file_writer(str(tmp_path)).as_default():  # the caller's writer, around fit
        masked.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruner])  # 4 steps: 2 prunes per epoch
    events = read_events(tmp_path)
    names = {pruner.graph.groups[g].name: n for g, n in pruner.counts().items()}
    channels = {name: series(events, f"fisher/channels/{name}") for name in names}
    assert {name: values[-1] for name, values in channels.items()} == names
    removed = [sum(pruner.graph.groups[g].size for g in pruner.counts()) - sum(v[i] for v in channels.values())
               for i in range(2)]
    assert removed == [4, 8]  # 2 channels at each of the 4 prunes
    assert series(events, "fisher/prunes") == [2, 4]
    assert series(events, "fisher/channels_left")[-1] == pytest.approx(pruner.history[-1]["channels_left"])
    assert 0 < series(events, "fisher/macs_left")[1] < series(events, "fisher/macs_left")[0] < 1


def test_morphnet_logs_alive_channels_regularizer_and_cost(tmp_path):
    pytest.importorskip("tensorboard")
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same", name="c1")(inputs))
    x = keras.layers.ReLU()(keras.layers.Conv2D(6, 3, padding="same", name="c2")(x))
    model = keras.Model(inputs, keras.layers.Dense(10, name="logits")(keras.layers.GlobalAveragePooling2D()(x)))
    regularizer = MorphNetRegularizer(model, strength=1e-4)
    wrapped = MorphNetModel(model, regularizer)
    wrapped.compile(keras.optimizers.SGD(0.05))
    callback = MorphNetCallback()
    x, y = images((8, 8, 3), count=32, classes=10)
    wrapped.fit(x, y, batch_size=8, epochs=2, verbose=0,
                callbacks=[callback, keras.callbacks.TensorBoard(tmp_path, write_graph=False)])
    events = read_events(tmp_path / "train")
    last = callback.history[-1]
    assert {name: series(events, f"morphnet/channels/{name}")[-1] for name in ("c1", "c2")} == last["kept"]
    regularizer_values = series(events, "morphnet/regularizer")
    assert len(regularizer_values) == 2 and all(v > 0 for v in regularizer_values)
    assert regularizer_values[-1] == pytest.approx(last["regularizer"], rel=1e-5)
    assert series(events, "morphnet/flops")[-1] == pytest.approx(last["flops"])
    assert series(events, "morphnet/macs_left")[-1] == pytest.approx(last["macs_left"])
    buckets = events["morphnet/channel_values/c2"][1]
    assert buckets[:, 2].sum() == 6 and buckets[0, 0] >= 0  # one r_c per channel, all ≥ 0
    assert series(events, "epoch_morphnet_regularizer")[-1] == pytest.approx(last["regularizer"], rel=1e-5)


def test_nothing_is_written_without_a_writer_and_histograms_bucket_as_tensorboard(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    quiet = summaries.Summaries()
    quiet.begin()
    assert not quiet.active and not quiet.write(0, {"a": 1.0})
    assert list(tmp_path.iterdir()) == []

    values = np.array([0.0, 0.1, 0.1, 0.5, 1.0])
    buckets = summaries.histogram_buckets(values, buckets=4)
    np.testing.assert_allclose(buckets, [[0, 0.25, 3], [0.25, 0.5, 0], [0.5, 0.75, 1], [0.75, 1.0, 1]])
    constant = summaries.histogram_buckets(np.full(3, 2.0), buckets=4)
    assert constant[:, 2].tolist() == [0, 0, 0, 3] and (constant[:, :2] == 2.0).all()

    own = summaries.Summaries(tmp_path / "run")  # outside fit: a step of anything, e.g. a NetAdapt iteration
    assert own.active and own.write(3, {"netadapt/holdout_error": 0.25}, {"w": values})
    own.end()
    events = read_events(tmp_path / "run")
    assert events["netadapt/holdout_error"] == {3: pytest.approx(0.25)}
    np.testing.assert_allclose(events["w"][3], summaries.histogram_buckets(values))
