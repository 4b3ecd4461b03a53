"""The composition matrix: every compressed form of a model × every operation tfcompress offers on it.

Forms: plain; weight masks from SNIP and from magnitude pruning; EC2T and TTQ ternary layers (after a few
training steps with their callbacks, so assignments are non-trivial); channel masks with some channels off.

Operations: the channel graph and ``prune_channels(target_channels=0.7)`` (the shrunk model computes what the
channel-masked model computes; weight masks and ternary assignments are sliced with their kernels, a sparse model
keeps its zeros and a ternary model stays ternary, also through more training steps with its callback); strip and
export to float32 (LiteRT parity) and int8 (top-1 agreement); ``profile``; MicroNet scoring; ``.keras`` save/load.

* Fast lane: the trained ResNet-20 of ``models/`` (Fashion-MNIST) × every form × every operation but int8; and a
  face net with three outputs (class scores, box, refined box; BatchNorm, PReLU) × every form SNIP can take (its
  loss is a classifier's on one output: a model with several is refused in one line).
* ``slow``: int8 of every ResNet-20 form, and :func:`test_pipeline` — form → prune → train → profile, MicroNet →
  export → save/load in one chain — on zoo MobileNetV2, keras.applications MobileNetV3Small and EfficientNetB0
  (random weights, BatchNorm statistics from real images), a few forms each so that the file stays within ~5 min
  on 2 cores. int8 is not checked on the random-weight models: their top-1 is a near-tie on most inputs.

Training steps run eagerly with SGD at batch 4: a few such steps cost far less than tracing a training step.
"""

from __future__ import annotations

import functools
from collections import Counter

import keras
import numpy as np
import pytest

import tfcompress as tfc
from tests.conftest import REPO
from tfcompress import export, micronet, profile, runtime, training, zoo
from tfcompress.graph import ChannelGraph, ChannelMask
from tfcompress.keras_graph import iter_layers
from tfcompress.pruning import insert_channel_masks, magnitude, prune_channels, snip, weight_masks
from tfcompress.pruning.shrink import fold_channel_masks
from tfcompress.quantization import ec2t, scoring, ternary, ttq
from tfcompress.specs import spec_for

FORMS = ("plain", "snip", "magnitude", "ec2t", "ttq", "channel_masks")
SPARSE, TERNARY = ("snip", "magnitude"), ("ec2t", "ttq")
SPARSITY = 0.7
BATCH = 4
FAST = [pytest.param("resnet20", form, id=f"resnet20-{form}") for form in FORMS]
MULTI_OUTPUT = [pytest.param("face3", form, id=f"face3-{form}") for form in FORMS if form != "snip"]
# (model, form) chains of the slow lane: each wrapper type on each architecture family, within the time budget.
PIPELINES = [("mobilenet_v2", "snip"), ("mobilenet_v2", "ec2t"), ("mobilenet_v3_small", "ttq"),
             ("mobilenet_v3_small", "channel_masks"), ("efficientnet_b0", "magnitude")]


# ------------------------------------------------------------------------------------------------- models


@functools.cache
def _data(channels: int, limit: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST test images at 32×32 (normalized), or Gaussian noise where the data is not installed."""
    try:
        dataset = tfc.data.load("fashion_mnist", "test", image_size=32, channels=channels, limit=limit,
                                batch_size=256, download=False)
        batches = [(np.asarray(images), np.asarray(labels)) for images, labels in dataset]
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches]).astype("int64")
    except tfc.data.DatasetNotFoundError:
        rng = np.random.default_rng(0)
        return rng.normal(size=(limit, 32, 32, channels)).astype("float32"), rng.integers(0, 10, limit)


def _input_channels(name: str) -> int:
    return 1 if name == "resnet20" else 3


@functools.cache
def _base(name: str) -> keras.Model:
    if name == "resnet20":
        return export.load_keras_model(REPO / "models" / "resnet20_fashion_mnist.keras")
    keras.utils.set_random_seed(0)  # the same random weights at every run
    if name == "face3":
        model = _face3()
    elif name == "mobilenet_v2":
        model = zoo.build("mobilenet_v2", (32, 32, 3), 10, width_multiplier=0.35)
    elif name == "mobilenet_v3_small":
        model = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=10,
                                                    classifier_activation=None)
    else:
        model = keras.applications.EfficientNetB0(input_shape=(32, 32, 3), weights=None, classes=10,
                                                  classifier_activation=None)
    _recalibrate(model, name)  # random-init statistics make activations vanish; real ones keep logits spread
    return model


def _face3() -> keras.Model:
    """A detector-style net with three heads: 10 class scores, a box and a refined box (equal widths: an output
    order mixed up anywhere shows)."""
    inputs = keras.Input((32, 32, 3))
    x = inputs
    for index, filters in enumerate((16, 32), start=1):
        x = keras.layers.Conv2D(filters, 3, name=f"conv{index}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{index}")(x)
        x = keras.layers.PReLU(shared_axes=[1, 2], name=f"prelu{index}")(x)
        x = keras.layers.MaxPooling2D(name=f"pool{index}")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, [keras.layers.Dense(10, name="classes")(x), keras.layers.Dense(4, name="box")(x),
                                keras.layers.Dense(4, name="box_refined")(x)])


def _multi_output(model: keras.Model) -> bool:
    return isinstance(model.output_shape, list) and len(model.output_shape) > 1


def _recalibrate(model: keras.Model, name: str) -> None:
    x, _ = _data(_input_channels(name))
    training.recalibrate_batch_norm(model, [x[:32], x[32:64]])


def _compile(model: keras.Model, form: str) -> None:
    # Plain SGD: an eager Adam step updates ~200 variables with ~10 operations each, SGD with one.
    optimizer = keras.optimizers.SGD(1e-3)
    classes = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer, [classes, "mse", "mse"] if _multi_output(model) else classes, run_eagerly=True)


def _fit(model: keras.Model, name: str, form: str, steps: int = 2) -> None:
    """A few training steps, with the assignment callback of a ternary form."""
    x, y = _data(_input_channels(name))
    callbacks = {"ec2t": [ec2t.EC2T(lambda_max_divr=0.3)], "ttq": [ttq.TTQ()]}.get(form, [])
    _compile(model, form)
    y = y[-steps * BATCH:]
    targets = [y, np.zeros((len(y), 4), "float32"), np.ones((len(y), 4), "float32")] if _multi_output(model) else y
    model.fit(x[-steps * BATCH:], targets, batch_size=BATCH, epochs=1, verbose=0, callbacks=callbacks,
              shuffle=False)  # the same batches at every run


@functools.cache
def _form(name: str, form: str) -> keras.Model:
    base = _base(name)
    x, y = _data(_input_channels(name))
    if form == "plain":
        return base
    if form == "snip":
        model = snip.prune(base, (x[:64], y[:64]), SPARSITY, init="model").model
    elif form == "magnitude":
        model = magnitude.prune_magnitude(base, SPARSITY, scope="local")  # global would empty layers of random nets
    elif form == "ec2t":
        model = ec2t.ternarize(base, ini_c_divr=0.3, layers=_ternary_selection(base))
        _fit(model, name, form)
    elif form == "ttq":
        model = ttq.ternarize(base, scale_init="mean")  # trained by _fit's SGD, not TTQ's recipe: mean start
        _fit(model, name, form)
    else:
        graph = ChannelGraph(base)
        masks = {g.id: np.arange(g.size) % 8 != 1 for g in graph.prunable_groups if g.size >= 8}
        model = insert_channel_masks(base, masks, graph=graph)
    _recalibrate(model, name)
    return model


def _ternary_selection(model: keras.Model) -> list[str]:
    """EC2T's layers: the default convolutions, plus the classifier (a TernaryDense whose input channels are
    pruned) and, in MobileNetV2, the depthwise convolutions (TernaryDepthwiseConv2D, pruned with their input)."""
    selection = ternary.default_selection(model)
    for layer in iter_layers(model):
        if type(layer) is keras.layers.Dense or (model.name == "mobilenet_v2"
                                                 and type(layer) is keras.layers.DepthwiseConv2D):
            selection.append(layer.name)
    return selection


# ------------------------------------------------------------------------------------------------ helpers


def _outputs(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """The outputs, several heads side by side (in the model's order)."""
    return _side_by_side(model(x, training=False))


def _side_by_side(outputs) -> np.ndarray:
    heads = outputs if isinstance(outputs, list | tuple) else [outputs]
    return np.concatenate([keras.ops.convert_to_numpy(head) for head in heads], axis=-1)


def _relative_diff(expected: np.ndarray, actual: np.ndarray) -> float:
    return float(np.max(np.abs(expected - actual)) / max(1.0, float(np.ptp(expected))))


def _wrappers(model: keras.Model) -> Counter:
    """How many layers of each tfcompress training class the model holds."""
    kinds = (weight_masks.WeightMask, ChannelMask, *ternary.TERNARY_LAYER_TYPES)
    return Counter(type(layer).__name__ for layer in iter_layers(model) if isinstance(layer, kinds))


def _weight_masks(model: keras.Model) -> list[weight_masks.WeightMask]:
    return [layer for layer in iter_layers(model) if isinstance(layer, weight_masks.WeightMask)]


def _assert_zeros_held(model: keras.Model) -> None:
    """Every weight a mask prunes is exactly 0, and the masks do prune."""
    pruned = 0
    for layer in _weight_masks(model):
        for name, mask in layer.get_masks().items():
            assert not np.any(layer.target(name).numpy()[~mask]), f"{layer.name}/{name}: a pruned weight is not 0"
            pruned += int((~mask).sum())
    assert pruned > 0


def _assert_ternary(model: keras.Model) -> None:
    """Assignments in {−1, 0, +1}, ≤ 3 distinct kernel values per layer, zeros and non-zeros in the model."""
    layers = ternary.ternary_layers(model)
    assert layers
    zeros = nonzeros = 0
    for layer in layers:
        assignment = layer.assignment.numpy()
        assert set(np.unique(assignment)) <= {-1.0, 0.0, 1.0}, layer.name
        kernel = keras.ops.convert_to_numpy(layer.ternary_kernel())
        assert np.unique(kernel).size <= 3, f"{layer.name} computes with {np.unique(kernel).size} values"
        zeros += int(np.sum(assignment == 0))
        nonzeros += int(np.sum(assignment != 0))
    assert zeros and nonzeros


def _sliced(graph: ChannelGraph, base_variable, value: np.ndarray, masks: dict) -> np.ndarray:
    """``value`` (shaped like ``base_variable``) sliced along the channel axes the graph binds the base to."""
    for binding in graph.bindings_of(base_variable):
        value = np.take(value, np.flatnonzero(binding.layout.mask(masks)), axis=binding.axis)
    return value


def _companions(model: keras.Model) -> dict[tuple[str, str], tuple]:
    """{(layer, what): (base variable, value)} for every weight mask and ternary assignment."""
    found = {}
    for layer in iter_layers(model):
        if isinstance(layer, weight_masks.WeightMask):
            for name, mask in layer.get_masks().items():
                found[layer.name, name] = layer.target(name), mask
        elif isinstance(layer, ternary.TernaryMixin):
            found[layer.name, "assignment"] = layer.kernel, layer.assignment.numpy()
    return found


# ------------------------------------------------------------------------------------------------- checks


def check_prune_channels(name: str, form: str, model: keras.Model) -> keras.Model:
    """prune_channels on a form: parity with the channel-masked model, the cost the graph predicts, wrappers and
    their state sliced, and a training step afterwards that keeps zeros at zero and ternary layers ternary."""
    x, _ = _data(_input_channels(name))
    graph = ChannelGraph(model)
    assert graph.prunable_groups
    assert graph.cost() == profile.profile(model).total.macs
    result = prune_channels(model, "l1", target_channels=0.7, graph=graph)
    small, plan = result.model, result.plan
    masks = fold_channel_masks(graph, plan.masks)
    keep = {g: int(mask.sum()) for g, mask in masks.items()}

    # the shrunk model computes what the masked model computes, at the cost the graph predicts
    reference = _outputs(insert_channel_masks(model, plan.masks, graph=graph), x[:16])
    assert np.ptp(reference) > 1e-3, "degenerate outputs would make parity meaningless"
    assert _relative_diff(reference, _outputs(small, x[:16])) <= 1e-5
    assert profile.profile(small).total.macs == ChannelGraph(small).cost() == graph.cost(keep) < plan.macs_before
    assert plan.macs_after == graph.cost(keep) and plan.params_after == small.count_params()

    # wrappers survive (channel masks are folded in), their state sliced with the kernels
    before = _wrappers(model)
    before.pop("ChannelMask", None)
    assert _wrappers(small) == before
    new = _companions(small)
    for key, (variable, value) in _companions(model).items():
        expected = _sliced(graph, variable, value, masks)
        assert np.array_equal(new[key][1], expected), f"{key} was not sliced with its kernel"
    if form in SPARSE:
        _assert_zeros_held(small)
    if form in TERNARY:
        _assert_ternary(small)

    # training goes on with the sliced state: zeros stay zero, ternary stays ternary
    _fit(small, name, form, steps=1)
    if form in SPARSE:
        _assert_zeros_held(small)
        for layer in _weight_masks(small):
            for what, mask in layer.get_masks().items():
                assert np.array_equal(mask, new[layer.name, what][1]), f"{layer.name}/{what} mask changed"
    if form in TERNARY:
        _assert_ternary(small)
    return small


def check_export_float32(name: str, model: keras.Model) -> None:
    """strip leaves no training layer; the float32 flatbuffer gives the Keras logits: within 1e-4 of their range
    for the trained model, 1e-3 for the random-weight ones, whose rounding errors grow through the network (there
    Keras' own float32 logits differ from float64 by ~1e-4 of the range, and LiteRT's by as much)."""
    x, _ = _data(_input_channels(name))
    plain = export.strip(model)
    assert not [layer.name for layer in iter_layers(plain) if getattr(spec_for(layer), "strip", None)]
    lite = runtime.TFLiteModel(export.to_tflite(model))
    tolerance = 1e-4 if name == "resnet20" else 1e-3
    assert _relative_diff(_outputs(model, x[:64]), _side_by_side(lite.predict(x[:64]))) <= tolerance


def check_profile(name: str, form: str, model: keras.Model) -> None:
    """The profile's MACs and parameters are the channel graph's; sparsity and distinct values show the form."""
    report = profile.profile(model)
    graph = ChannelGraph(model)
    assert report.total.macs == graph.cost()
    assert report.total.params == model.count_params() == graph.cost(metric="params")
    rows = {row.name: row for row in report.layers}
    if form in SPARSE:
        for layer in _weight_masks(model):
            assert rows[layer.name].sparsity == pytest.approx(1 - layer.get_masks()["kernel"].mean(), abs=1e-9)
        assert report.total.sparsity > 0.3
    if form in TERNARY:
        for layer in ternary.ternary_layers(model):
            assert rows[layer.name].distinct_values <= 3, layer.name
    if form == "plain":
        assert report.total.sparsity < 0.01


def check_micronet(name: str, form: str, model: keras.Model) -> None:
    """MicroNet scoring counts every form (sparse and ternary kernels for less); a stripped ternary model, its
    kernels plain but holding three values, scores as the ternary model does."""
    result = micronet.score(model)
    ternary_counted = scoring.micronet_score(model)
    assert np.isfinite(result.score) and result.total.ops > 0
    assert ternary_counted.total.params == pytest.approx(result.total.params)
    dense = micronet.score(_base(name)).total.params
    if form in SPARSE:
        assert result.total.params < 0.6 * dense
    if form in TERNARY:
        assert result.total.params < dense
        stripped = scoring.micronet_score(export.strip(model))
        assert stripped.total.params == pytest.approx(result.total.params)
        assert stripped.total.ops == pytest.approx(result.total.ops)


def check_save_load(name: str, model: keras.Model, folder) -> None:
    """A .keras round trip keeps the outputs, the wrappers and their masks / assignments."""
    x, _ = _data(_input_channels(name))
    path = folder / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert _wrappers(loaded) == _wrappers(model)
    assert _relative_diff(_outputs(model, x[:16]), _outputs(loaded, x[:16])) <= 1e-6
    saved, restored = _companions(model), _companions(loaded)
    assert saved.keys() == restored.keys()
    for key, (_, value) in saved.items():
        assert np.array_equal(value, restored[key][1]), key


# -------------------------------------------------------------------------------------- fast lane: ResNet-20


@pytest.mark.parametrize(("name", "form"), FAST + MULTI_OUTPUT)
def test_prune_channels(name, form):
    check_prune_channels(name, form, _form(name, form))


def test_snip_refuses_a_model_with_several_outputs_in_one_line():
    x, y = _data(3)
    with pytest.raises(ValueError, match=r"has 3 outputs: .*by weights"):
        snip.prune(_base("face3"), (x[:64], y[:64]), SPARSITY, init="model")


def test_plan_counts_channels_already_masked():
    model = _form("resnet20", "channel_masks")
    result = prune_channels(model, "l1", target_channels=0.7)
    assert profile.profile(result.model).total.macs == result.plan.macs_after
    assert result.model.count_params() == result.plan.params_after
    masked_off = sum(int((~m).sum()) for m in fold_channel_masks(ChannelGraph(model), {}).values())
    removed = sum(before - result.plan.channels_after[g] for g, before in result.plan.channels_before.items())
    assert masked_off > 0 and removed >= masked_off  # the channels masks switched off are counted as removed


@pytest.mark.parametrize(("name", "form"), FAST + MULTI_OUTPUT)
def test_export_float32(name, form):
    check_export_float32(name, _form(name, form))


@pytest.mark.parametrize(("name", "form"), FAST + MULTI_OUTPUT)
def test_profile(name, form):
    check_profile(name, form, _form(name, form))


@pytest.mark.parametrize(("name", "form"), FAST + MULTI_OUTPUT)
def test_micronet(name, form):
    check_micronet(name, form, _form(name, form))


@pytest.mark.parametrize(("name", "form"), FAST + MULTI_OUTPUT)
def test_keras_save_load(name, form, tmp_path):
    check_save_load(name, _form(name, form), tmp_path)


# ---------------------------------------------------------------------------------------------- slow lane


@pytest.mark.slow
@pytest.mark.parametrize(("name", "form"), FAST)
def test_export_int8(name, form):
    """The trained model agrees with its int8 flatbuffer on ≥ 99 % of the test images. The compressed forms are not
    fine-tuned, so their logit margins are small and int8 flips near-ties: they must agree on ≥ 99 % of the images
    the float model decides clearly (top-2 margin ≥ 3 % of the logit range: int8 moves logits by ~1 % of it), and
    on ≥ 90 % overall."""
    model = _form(name, form)
    x, _ = _data(_input_channels(name))
    lite = runtime.TFLiteModel(export.to_tflite(model, "int8", representative_data=x[:100],
                                                num_calibration_samples=100))
    reference = _outputs(model, x[100:])
    agree = np.argmax(reference, -1) == np.argmax(lite.predict(x[100:]), -1)
    top2 = np.sort(reference, -1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= 0.03 * np.ptp(reference)
    stats = f"agreement {agree.mean():.3f}, on {clear.sum()} clear decisions {agree[clear].mean():.3f}"
    if form == "plain":
        assert agree.mean() >= 0.99, stats
        return
    assert clear.sum() >= 100, f"too few clear decisions for the check to mean anything: {stats}"
    assert agree[clear].mean() >= 0.99 and agree.mean() >= 0.9, stats


@pytest.mark.slow
@pytest.mark.parametrize(("name", "form"), [pytest.param(*case, id="-".join(case)) for case in PIPELINES])
def test_pipeline(name, form, tmp_path):
    model = _form(name, form)
    check_profile(name, form, model)
    check_micronet(name, form, model)
    small = check_prune_channels(name, form, model)
    _recalibrate(small, name)  # after surgery and a step at batch 4, as one would before exporting
    pruned = "plain" if form == "channel_masks" else form  # the channel masks are gone
    check_profile(name, pruned, small)
    check_export_float32(name, small)
    check_save_load(name, small, tmp_path)


def test_stripped_ternary_layer_without_zeros_scores_as_ternary():
    """A ternary layer whose assignment has no zero (a small squeeze-excite convolution) exports {−w_n, +w_p}:
    scoring the stripped model must still count it as ternary."""
    inputs = keras.Input((4, 4, 8))
    model = keras.Model(inputs, keras.layers.Conv2D(16, 1, name="conv")(inputs))
    model = ttq.ternarize(model, layers=["conv"])
    layer = ternary.ternary_layers(model)[0]
    layer.assignment.assign(np.where(layer.kernel.numpy() >= 0, 1.0, -1.0))
    stripped = scoring.micronet_score(export.strip(model))
    assert stripped.total.params == pytest.approx(micronet.score(model).total.params)
