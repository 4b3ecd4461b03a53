"""Weight masks: pruned weights stay exactly zero through training, save/load, strip and TFLite export."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

from tfcompress import export, runtime
from tfcompress.pruning import magnitude, weight_masks


def _small_model(batchnorm: bool = True) -> keras.Model:
    """Conv2D, DepthwiseConv2D and Dense, with non-zero biases so every kept weight is non-zero."""
    nonzero = keras.initializers.RandomNormal(stddev=0.1, seed=3)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", bias_initializer=nonzero, name="conv")(inputs)
    if batchnorm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, activation="relu", bias_initializer=nonzero,
                                     name="depthwise")(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, bias_initializer=nonzero, name="dense")(x)
    return keras.Model(inputs, outputs)


def _data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 3)).astype("float32"), rng.integers(0, 4, n)


def _pruned_entries_nonzero(model: keras.Model) -> int:
    count = 0
    for layer in model.layers:
        if isinstance(layer, weight_masks.WeightMask):
            for name, mask in layer.get_masks().items():
                count += int(np.count_nonzero(layer.target(name).numpy()[~mask]))
    return count


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=5e-4),
    "adamw": lambda: keras.optimizers.AdamW(1e-2, weight_decay=0.05),
}


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pruned_weights_stay_zero_under_momentum_and_weight_decay(optimizer: str) -> None:
    x, y = _data()
    model = weight_masks.wrap(_small_model(), prune_biases=True)
    model.compile(optimizer=OPTIMIZERS[optimizer](), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)  # the optimizer now holds momentum / Adam moments
    masks = magnitude.random_masks(model, 0.7, scope="local", prune_biases=True, seed=1)
    for layer in model.layers:
        if isinstance(layer, weight_masks.WeightMask):
            layer.set_masks(masks[layer.name])
    kept_before = {layer.name: layer.target("kernel").numpy().copy()
                   for layer in model.layers if isinstance(layer, weight_masks.WeightMask)}

    model.fit(x, y, epochs=2, batch_size=16, verbose=0)

    assert _pruned_entries_nonzero(model) == 0
    for layer in model.layers:  # kept weights did train
        if isinstance(layer, weight_masks.WeightMask):
            kept = layer.get_masks()["kernel"]
            assert not np.allclose(layer.target("kernel").numpy()[kept], kept_before[layer.name][kept])
    assert weight_masks.weight_sparsity(model, prune_biases=True)["total"]["sparsity"] == pytest.approx(0.7, abs=2e-3)


def test_without_the_constraint_momentum_revives_pruned_weights() -> None:
    """The control of the test above: the forward mask alone is not enough once momentum is non-zero."""
    x, y = _data()
    model = weight_masks.wrap(_small_model())
    model.compile(optimizer=OPTIMIZERS["sgd_momentum"](),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    masks = magnitude.random_masks(model, 0.7, seed=1)
    for layer in model.layers:
        if isinstance(layer, weight_masks.WeightMask):
            layer.set_masks(masks[layer.name])
            layer.target("kernel").constraint = None
    model.train_function = None  # retrace: the compiled step had the constraint baked in
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert _pruned_entries_nonzero(model) > 100


def test_save_load_round_trip_keeps_masks_and_constraint(tmp_path) -> None:
    x, y = _data()
    model = _small_model()
    masked = weight_masks.apply_masks(model, magnitude.random_masks(model, 0.6, prune_biases=True, seed=2))
    path = tmp_path / "masked.keras"
    masked.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), masked.predict(x, verbose=0))
    for name, per in weight_masks.get_masks(masked).items():
        for weight, mask in per.items():
            np.testing.assert_array_equal(weight_masks.get_masks(loaded)[name][weight], mask)
    loaded.compile(optimizer=OPTIMIZERS["adamw"](), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loaded.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert _pruned_entries_nonzero(loaded) == 0


def _tflite_constant_nonzeros(flatbuffer: bytes) -> int:
    """Non-zeros in the float32 weight tensors of a flatbuffer: tensors that no op produces and that are not
    the model input (TFLite transposes Dense kernels, so count values, not positions)."""
    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    produced = {index for op in interpreter._get_ops_details() for index in op["outputs"]}
    produced |= {detail["index"] for detail in interpreter.get_input_details()}
    return sum(
        int(np.count_nonzero(interpreter.get_tensor(detail["index"])))
        for detail in interpreter.get_tensor_details()
        if detail["index"] not in produced and detail["dtype"] == np.float32
    )


def test_strip_and_tflite_hold_exactly_the_kept_weights() -> None:
    x, _ = _data(16)
    model = _small_model(batchnorm=False)  # TFLite folds BatchNorm into neighbouring kernels: counts would mix
    masks = magnitude.random_masks(model, 0.8, scope="global", seed=4)  # kernels only; biases all kept, non-zero
    masked = weight_masks.apply_masks(model, masks)
    plain = export.strip(masked)
    assert [type(layer).__name__ for layer in plain.layers if layer.weights] == [
        "Conv2D", "DepthwiseConv2D", "Dense"]
    np.testing.assert_allclose(plain.predict(x, verbose=0), masked.predict(x, verbose=0), atol=1e-6)

    kept_kernels = sum(int(m.sum()) for per in masks.values() for m in per.values())
    biases = sum(int(weight_masks.prunable_weights(model, True)[name]["bias"].shape[0]) for name in masks)
    assert weight_masks.weight_sparsity(plain)["total"]["nonzero"] == kept_kernels

    flatbuffer = export.to_tflite(masked, "float32")
    assert _tflite_constant_nonzeros(flatbuffer) == kept_kernels + biases
    np.testing.assert_allclose(runtime.TFLiteModel(flatbuffer).predict(x), masked.predict(x, verbose=0), atol=1e-4)


def test_sparse_and_int8_exports_are_smaller() -> None:
    model = keras.Sequential([keras.Input((16, 16, 1)), keras.layers.Flatten(), keras.layers.Dense(256),
                              keras.layers.Dense(10)])
    dense_blob = export.to_tflite(model, "float32")
    masked = weight_masks.apply_masks(model, magnitude.magnitude_masks(model, 0.9, scope="local"))
    sparse_blob = export.to_tflite(masked, "float32", sparse=True)
    plain_blob = export.to_tflite(masked, "float32")
    dense_size, masked_size = export.size_report(dense_blob), export.size_report(plain_blob)
    assert len(sparse_blob) < 0.4 * len(dense_blob)  # sparse encoding stores ~10 % of the weights plus indices
    assert masked_size.gzip_bytes < 0.3 * dense_size.gzip_bytes  # zeros compress
    x = np.random.default_rng(0).normal(size=(8, 16, 16, 1)).astype("float32")
    np.testing.assert_allclose(runtime.TFLiteModel(sparse_blob).predict(x), masked.predict(x, verbose=0), atol=1e-4)
    int8_blob = export.to_tflite(masked, "int8", representative_data=x)
    assert len(int8_blob) < 0.3 * len(plain_blob)


def test_masks_from_scores_keeps_exactly_kappa() -> None:
    rng = np.random.default_rng(0)
    scores = {"a": {"kernel": rng.random((10, 10))}, "b": {"kernel": rng.random((50,)) + 0.2}}
    masks = weight_masks.masks_from_scores(scores, 0.9)  # κ = 15 of 150, the highest scores wherever they are
    assert sum(int(m.sum()) for per in masks.values() for m in per.values()) == 15
    kept = np.concatenate([scores[n]["kernel"][masks[n]["kernel"]] for n in scores])
    pruned = np.concatenate([scores[n]["kernel"][~masks[n]["kernel"]] for n in scores])
    assert kept.min() >= pruned.max()
    per_layer = weight_masks.masks_from_scores(scores, 0.9, scope="local")
    assert per_layer["a"]["kernel"].sum() == 10 and per_layer["b"]["kernel"].sum() == 5
    assert weight_masks.mask_sparsity(per_layer)["total"] == pytest.approx(0.9)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5, float("nan"), "most"])
def test_sparsity_outside_unit_interval_is_refused(bad) -> None:
    with pytest.raises(ValueError, match=r"sparsity must be .*\[0, 1\)"):
        weight_masks.masks_from_scores({"a": {"kernel": np.ones(4)}}, bad)


def test_emptying_a_layer_is_refused_unless_allowed() -> None:
    scores = {"small": {"kernel": np.full(10, 1e-6), "bias": np.ones(2)}, "big": {"kernel": np.ones(1000)}}
    with pytest.raises(ValueError, match=r"'small'.*disconnects the network"):
        weight_masks.masks_from_scores(scores, 0.5)
    masks = weight_masks.masks_from_scores(scores, 0.5, allow_empty_layers=True)
    assert not masks["small"]["kernel"].any()


def test_bad_masks_and_layers_are_refused() -> None:
    model = _small_model()
    with pytest.raises(ValueError, match="'nope', which is not in model"):
        weight_masks.apply_masks(model, {"nope": {"kernel": np.ones(3, bool)}})
    with pytest.raises(ValueError, match=r"'bn'.*not prunable"):
        weight_masks.apply_masks(model, {"bn": {"gamma": np.ones(8, bool)}})
    with pytest.raises(ValueError, match="shape"):
        weight_masks.apply_masks(model, {"dense": {"kernel": np.ones((3, 4), bool)}})
    with pytest.raises(ValueError, match="cannot wrap BatchNormalization"):
        weight_masks.WeightMask(keras.layers.BatchNormalization())
