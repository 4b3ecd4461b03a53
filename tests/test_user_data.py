"""The user's world: their images (class folders, a flat unlabelled folder, .npz arrays), their model (7 classes,
32×32 RGB, [-1, 1] pixels, no report), through the data package and the scripts — and the one-line refusals of data
the model was not made for."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from PIL import Image

from tests.conftest import run_script
from tfcompress import data, training

CLASSES = 7


def _user_model(classes: int = CLASSES, size: int = 32, channels: int = 3) -> keras.Model:
    inputs = keras.Input((size, size, channels))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(keras.layers.MaxPooling2D()(x))
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x))


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict:
    """Fashion-MNIST images of classes 0–6 as 40×40 RGB JPEGs in class folders and as a flat folder of PNGs, and a
    7-class model trained briefly on them at 32×32 with [-1, 1] pixels (saved without a report)."""
    root = tmp_path_factory.mktemp("user_world")
    images, labels = data.load_arrays("fashion_mnist", "test")
    keep = np.flatnonzero(labels < CLASSES)[:420]
    for index in keep:
        rgb = Image.fromarray(np.repeat(images[index], 3, axis=-1)).resize((40, 40))
        folder = root / "photos" / f"class_{labels[index]}"
        folder.mkdir(parents=True, exist_ok=True)
        rgb.save(folder / f"{index}.jpg", quality=95)
        (root / "unlabelled").mkdir(exist_ok=True)
        rgb.save(root / "unlabelled" / f"{index}.png")
    keras.utils.set_random_seed(0)
    model = _user_model()
    photos = data.ModelData.for_model(model, str(root / "photos"), data.Preprocessing("tf"))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(photos.batches("train", batch_size=32), epochs=12, verbose=0)
    model.save(root / "user.keras")
    return {"root": root, "model": model, "photos": photos}


# ----------------------------------------------------------------------------------------------- data package


def test_a_folder_is_labelled_by_its_class_folders_and_a_flat_one_is_unlabelled(world):
    labelled = data.read_folder(world["root"] / "photos")
    assert labelled.class_names == tuple(f"class_{i}" for i in range(CLASSES))
    assert labelled.labelled and np.bincount(labelled.labels).size == CLASSES and len(labelled) == 420
    flat = data.read_folder(world["root"] / "unlabelled")
    assert not flat.labelled and len(flat) == 420
    split = world["photos"]
    assert len(split.train) + len(split.test) == 420 and abs(len(split.test) - 84) <= CLASSES  # 20 %, per class
    assert set(split.train.paths).isdisjoint(split.test.paths)


def test_arrays_and_the_mistakes_users_make_with_them(tmp_path):
    images, labels = data.load_arrays("fashion_mnist", "test")
    np.savez(tmp_path / "onehot.npz", x=images[:50, ..., 0], y=np.eye(10)[labels[:50]])
    source = data.read_arrays(tmp_path / "onehot.npz")
    np.testing.assert_array_equal(source.labels, labels[:50])
    assert source.images.shape == (50, 28, 28, 1)
    np.savez(tmp_path / "unit.npz", x=images[:10] / 255.0)
    with pytest.raises(ValueError, match="within 0–1; give raw 0–255 pixels"):
        data.read_arrays(tmp_path / "unit.npz")
    np.savez(tmp_path / "nox.npz", images=images[:10])
    with pytest.raises(ValueError, match="no 'x'"):
        data.read_arrays(tmp_path / "nox.npz")
    np.savez(tmp_path / "short.npz", x=images[:10], y=labels[:9])
    with pytest.raises(ValueError, match="10 images in x but 9 labels"):
        data.read_arrays(tmp_path / "short.npz")


def test_data_the_model_was_not_made_for_is_refused_in_one_line(world, tmp_path):
    root = world["root"]
    with pytest.raises(ValueError, match="has 7 classes but the model outputs 5"):
        data.ModelData.for_model(_user_model(classes=5), str(root / "photos"), data.Preprocessing("tf"))
    with pytest.raises(ValueError, match=r"smaller than the model's input 64×64 .*40×40"):
        data.ModelData.for_model(_user_model(size=64), str(root / "photos"), data.Preprocessing("tf"))
    with pytest.raises(ValueError, match="fashion_mnist has 28×28 px images but the model takes 160×160"):
        data.ModelData.for_model(_user_model(size=160), "fashion_mnist", None)
    with pytest.raises(ValueError, match="fashion_mnist has 10 classes but the model outputs 7"):
        data.ModelData.for_model(_user_model(size=28, channels=1), "fashion_mnist", None)
    with pytest.raises(ValueError, match="say how the model scales pixels: --scaling="):
        data.ModelData.for_model(world["model"], str(root / "photos"), None)
    np.savez(tmp_path / "rgb.npz", x=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ValueError, match="3-channel images but the model takes 1"):
        data.ModelData.for_model(_user_model(channels=1), str(tmp_path / "rgb.npz"), data.Preprocessing("unit"))
    (root / "photos_missing_class").mkdir()
    for index in range(CLASSES - 1):  # class_6 missing: labels 0–5 would still be right, but a 7-class model …
        (root / "photos_missing_class" / f"class_{index}").symlink_to(root / "photos" / f"class_{index}")
    with pytest.raises(ValueError, match="every class the model outputs needs a folder"):
        data.ModelData.for_model(world["model"], str(root / "photos_missing_class"), data.Preprocessing("tf"))


def test_the_models_own_scaling(world):
    pixels = np.array([[[[0.0, 128.0, 255.0]]]], np.float32)
    np.testing.assert_allclose(data.Preprocessing("tf")(pixels), [[[[-1.0, 128 / 127.5 - 1, 1.0]]]], atol=1e-6)
    np.testing.assert_allclose(data.Preprocessing("unit")(pixels), pixels / 255, atol=1e-6)
    np.testing.assert_allclose(data.Preprocessing("caffe")(pixels), [[[[255 - 103.939, 128 - 116.779, -123.68]]]],
                               atol=1e-4)  # BGR: blue (255) first
    np.testing.assert_allclose(data.Preprocessing("torch")(pixels),
                               [[[[(0 - 0.485) / 0.229, (128 / 255 - 0.456) / 0.224, (1 - 0.406) / 0.225]]]], atol=1e-5)
    inputs = keras.Input((32, 32, 3))
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255, name="scale")(inputs)))
    outer_in = keras.Input((32, 32, 3))
    nested = keras.Model(outer_in, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(backbone(outer_in))))
    assert data.scales_itself(nested) == "scale"
    assert data.preprocessing.for_model(nested) == data.Preprocessing("raw")
    assert data.preprocessing.for_model(world["model"]) is None  # nothing says: the user is asked
    with pytest.raises(ValueError, match="mean_std needs --mean and --std"):
        data.Preprocessing("mean_std")


def test_unlabelled_images_are_labelled_by_the_original_so_accuracy_is_agreement(world):
    model = world["model"]
    unlabelled = data.ModelData.for_model(model, str(world["root"] / "unlabelled"), data.Preprocessing("tf"))
    assert unlabelled.labels is None
    judged = unlabelled.labelled_by(model)
    assert judged.metric_name == "agreement"
    assert training.evaluate(model, judged.batches("test"))["accuracy"] == 1.0  # the original agrees with itself
    other = _user_model()
    agreement = training.evaluate(other, judged.batches("test"))["accuracy"]
    decisions = [np.argmax(model.predict(x, verbose=0), -1) == np.argmax(other.predict(x, verbose=0), -1)
                 for x in unlabelled.batches("test")]
    assert agreement == pytest.approx(np.mean(np.concatenate(decisions)))


def test_fine_tuning_keeps_the_starting_weights_when_no_epoch_beats_them(world):
    model = keras.models.clone_model(world["model"])
    model.set_weights(world["model"].get_weights())
    photos = world["photos"]
    wrong = photos.batches("train", batch_size=32).map(lambda x, y: (x, (y + 1) % CLASSES))  # harmful training
    start = training.evaluate(model, photos.batches("test"))["accuracy"]
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    best = training.KeepBestEpoch(photos.batches("test"))
    model.fit(wrong, epochs=2, verbose=0, callbacks=[best])
    assert best.best_epoch == 0 and not best.helped and "did not help" in best.summary()
    assert best.scores[1] < start
    assert training.evaluate(model, photos.batches("test"))["accuracy"] == start
    for kept, original in zip(model.get_weights(), world["model"].get_weights(), strict=True):
        np.testing.assert_array_equal(kept, original)


# ---------------------------------------------------------------------------------------------------- scripts


def test_npz_images_with_the_builtin_scaling_score_exactly_as_the_builtin_pipeline(repo, tmp_path):
    images, labels = data.load_arrays("fashion_mnist", "test")
    np.savez(tmp_path / "test.npz", x=images[:300], y=labels[:300])
    mean, std = data.channel_stats("fashion_mnist")
    lenet = repo / "models" / "lenet5_fashion_mnist.keras"
    run_script("evaluate", f"--model={lenet}", f"--dataset={tmp_path / 'test.npz'}",
               f"--test_data={tmp_path / 'test.npz'}", "--scaling=mean_std", f"--mean={mean[0]}", f"--std={std[0]}",
               f"--json={tmp_path / 'e.json'}")
    result = json.loads((tmp_path / "e.json").read_text())
    builtin = training.evaluate(keras.models.load_model(lenet), data.load("fashion_mnist", "test", limit=300))
    assert result["examples"] == 300 and result["accuracy"] == pytest.approx(builtin["accuracy"], abs=1e-9)
    assert result["metric"] == "accuracy" and result["preprocessing"]["scaling"] == "mean_std"


def test_scripts_on_a_users_model_and_unlabelled_photos(world, tmp_path):
    root, model_path = world["root"], world["root"] / "user.keras"
    nothing = run_script("evaluate", f"--model={model_path}", check=False)
    assert nothing.returncode == 1 and "records no dataset: give --dataset=" in nothing.stderr
    assert len(nothing.stderr.strip().splitlines()) == 1
    wrong = run_script("prune", f"--model={model_path}", "--dataset=fashion_mnist", "--target_channels=0.5",
                       f"--output={tmp_path / 'x.keras'}", check=False)
    assert wrong.returncode == 1 and "fashion_mnist has 10 classes but the model outputs 7" in wrong.stderr
    assert not (tmp_path / "x.keras").exists()

    # labelled photos: the script's accuracy is the model's on the same deterministic test split
    run_script("evaluate", f"--model={model_path}", f"--dataset={root / 'photos'}", "--scaling=tf",
               f"--json={tmp_path / 'photos.json'}")
    scored = json.loads((tmp_path / "photos.json").read_text())
    direct = training.evaluate(world["model"], world["photos"].batches("test"))
    assert scored["accuracy"] == pytest.approx(direct["accuracy"]) and scored["examples"] == direct["examples"]
    assert direct["accuracy"] > 0.6  # trained: the checks below compare decisions that mean something

    # unlabelled photos: prune + fine-tune by agreement; the report records the data for the next program
    pruned = tmp_path / "pruned.keras"
    out = run_script("prune", f"--model={model_path}", f"--dataset={root / 'unlabelled'}", "--scaling=tf",
                     "--target_channels=0.75", "--finetune_epochs=1", "--lr=0.002", f"--output={pruned}").stdout
    report = json.loads((tmp_path / "pruned.keras.json").read_text())
    assert report["metric"] == "agreement" and report["accuracy_before"] == 1.0
    assert report["dataset"] == str(root / "unlabelled") and report["preprocessing"] == {"scaling": "tf"}
    assert report["accuracy_finetuned"] >= report["accuracy_pruned"]  # the best holdout epoch, never worse
    assert "agreement 1.0000 → pruned" in out

    # int8 export without a data flag: calibrated and checked on the photos the lineage records
    tflite = tmp_path / "pruned_int8.tflite"
    run_script("export", f"--model={pruned}", "--quantization=int8", f"--output={tflite}")
    exported = json.loads((tmp_path / "pruned_int8.tflite.json").read_text())
    assert str(root / "unlabelled") in exported["parity"]["inputs"]
    assert exported["parity"]["top1_agreement"] >= 0.9
    run_script("evaluate", f"--model={tflite}", f"--json={tmp_path / 'lite.json'}")
    lite = json.loads((tmp_path / "lite.json").read_text())
    assert lite["metric"] == "agreement" and lite["examples"] == 84  # 20 % of the 420 unlabelled photos
    assert abs(lite["accuracy"] - report["accuracy_finetuned"]) <= 0.1  # int8 of the pruned model vs the original


CUSTOM_LAYERS = '''
import keras


class Scale(keras.layers.Layer):
    """A custom layer, as users' old models have: multiplies by a learned scalar."""

    def build(self, input_shape):
        self.factor = self.add_weight(shape=(), initializer="ones", name="factor")

    def call(self, x):
        return x * self.factor
'''


def test_model_files_users_have_hdf5_custom_layers_savedmodel_subclassed(world, tmp_path):
    import importlib.util

    (tmp_path / "my_layers.py").write_text(CUSTOM_LAYERS)
    spec = importlib.util.spec_from_file_location("my_layers", tmp_path / "my_layers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    inputs = keras.Input((32, 32, 3))
    x = module.Scale(name="scale")(keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(tmp_path / "legacy.h5")  # HDF5, the format of Keras 2 files
    photos = f"--dataset={world['root'] / 'photos'}"
    missing = run_script("evaluate", f"--model={tmp_path / 'legacy.h5'}", photos, "--scaling=tf", check=False)
    assert missing.returncode == 1 and "--custom_objects" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1
    run_script("evaluate", f"--model={tmp_path / 'legacy.h5'}", photos, "--scaling=tf",
               f"--custom_objects={tmp_path / 'my_layers.py'}", f"--json={tmp_path / 'e.json'}")
    expected = training.evaluate(model, world["photos"].batches("test"))["accuracy"]
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == pytest.approx(expected)

    model.export(tmp_path / "saved", verbose=False)  # a SavedModel folder
    saved = run_script("evaluate", f"--model={tmp_path / 'saved'}", photos, check=False)
    assert saved.returncode == 1 and "is a TensorFlow SavedModel" in saved.stderr and "model.save(" in saved.stderr

    class Subclassed(keras.Model):
        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.dense = keras.layers.Dense(CLASSES)

        def call(self, x):
            return self.dense(keras.ops.mean(x, axis=(1, 2)))

    from tfcompress import export

    subclassed = Subclassed()
    subclassed(np.zeros((1, 32, 32, 3), np.float32))
    subclassed.save(tmp_path / "sub.keras")
    with pytest.raises(ValueError, match=r"subclassed model .*rebuild it as a functional model"):
        export.load_keras_model(tmp_path / "sub.keras", custom_objects={"Subclassed": Subclassed})


def _face_net() -> keras.Model:
    """A 24×24 face/non-face net with three heads (class, box, refined box), PReLU as in MTCNN's R-Net."""
    inputs = keras.Input((24, 24, 3))
    x = keras.layers.Conv2D(8, 3, name="conv1")(inputs)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu1")(x)
    x = keras.layers.MaxPooling2D(name="pool1")(x)
    x = keras.layers.Conv2D(16, 3, name="conv2")(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], name="prelu2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    return keras.Model(inputs, [keras.layers.Dense(2, name="face")(x), keras.layers.Dense(4, name="box")(x),
                                keras.layers.Dense(4, name="box_refined")(x)])


def test_a_model_with_three_outputs_through_data_prune_export_and_litert(world, tmp_path):
    from tfcompress import export, runtime

    keras.utils.set_random_seed(1)
    model = _face_net()
    model.save(tmp_path / "face.keras")
    unlabelled = f"--dataset={world['root'] / 'unlabelled'}"
    with pytest.raises(ValueError, match="has class labels but the model has 3 outputs"):
        data.ModelData.for_model(model, str(world["root"] / "photos"), data.Preprocessing("unit"))
    judged = data.ModelData.for_model(model, str(world["root"] / "unlabelled"), data.Preprocessing("unit")) \
        .labelled_by(model)
    assert judged.metric_name == "output error"
    own = training.evaluate(model, judged.batches("test"))
    assert own["output_error"] == 0.0 and own["per_output_error"] == [0.0, 0.0, 0.0] and own["agreement"] == 1.0

    # LiteRT returns every output, in the Keras model's order (two heads of equal width would swap unnoticed)
    x = next(iter(judged.batches("test", batch_size=16)))[0].numpy()
    lite = runtime.TFLiteModel(export.to_tflite(model))
    assert lite.num_outputs == 3
    for expected, got in zip(model(x), lite.predict(x), strict=True):
        np.testing.assert_allclose(got, np.asarray(expected), atol=1e-5)

    pruned = tmp_path / "face_pruned.keras"
    out = run_script("prune", f"--model={tmp_path / 'face.keras'}", unlabelled, "--scaling=unit",
                     "--target_channels=0.75", "--finetune_epochs=1", "--lr=0.001", f"--output={pruned}").stdout
    report = json.loads((tmp_path / "face_pruned.keras.json").read_text())
    assert report["metric"] == "output error" and report["accuracy_before"] == 0.0
    # a random net's heads vary little, so 25 % fewer channels move them by about their spread (1.4 measured);
    # one epoch of matching the original's outputs brings them back (1.26), and never makes them worse
    assert report["accuracy_pruned"] > 0.0 and report["accuracy_finetuned"] < report["accuracy_pruned"]
    assert "outputs are the targets of every head" in out
    tflite = tmp_path / "face_int8.tflite"
    run_script("export", f"--model={pruned}", "--quantization=int8", f"--output={tflite}")
    parity = json.loads((tmp_path / "face_int8.tflite.json").read_text())["parity"]
    assert len(parity["per_output_relative_diff"]) == 3 and parity["keras_accuracy"] is None
    run_script("export", f"--model={pruned}", f"--output={tmp_path / 'face.tflite'}")
    float_parity = json.loads((tmp_path / "face.tflite.json").read_text())["parity"]
    assert max(float_parity["per_output_relative_diff"]) <= 1e-4
    printed = run_script("evaluate", f"--model={tflite}", f"--json={tmp_path / 'lite.json'}").stdout
    lite_report = json.loads((tmp_path / "lite.json").read_text())
    assert lite_report["metric"] == "output error" and len(lite_report["per_output_error"]) == 3
    assert "per output:" in printed  # int8 in LiteRT as far from the original as the pruned Keras model is
    assert abs(lite_report["output_error"] - report["accuracy_finetuned"]) < 0.1


@pytest.mark.slow
def test_budget_mode_from_an_unlabelled_folder_by_agreement(world, tmp_path):
    out = tmp_path / "budget"
    process = run_script("compress", f"--model={world['root'] / 'user.keras'}",
                         f"--dataset={world['root'] / 'unlabelled'}", "--scaling=tf", "--latency_fraction=0.7",
                         "--min_agreement=0.9", "--method=l1", "--max_rounds=2", "--finetune_epochs=2", "--runs=20",
                         "--eval_limit=0", f"--output_dir={out}", check=False)
    assert process.returncode in (0, 3), process.stderr  # 3: not met, said plainly (a 2-conv net's tiny latency)
    assert "limit on agreement" in process.stdout and "labelled by the original model's top-1" in process.stdout
    summary = json.loads((out / "summary.json").read_text())
    original, *_, last = summary["rows"]
    assert original["litert_accuracy"] == pytest.approx(1.0, abs=0.02)  # the original agrees with itself in LiteRT
    budget = json.loads((out / "budget.json").read_text())
    if budget["met"]:
        assert last["litert_accuracy"] >= 0.9 - 1e-9 and last["latency_ms"] <= budget["target_ms"]
    recorded = json.loads((out / "model.keras.json").read_text())
    assert recorded["metric"] == "agreement" and recorded["preprocessing"] == {"scaling": "tf"}
    # the result's export finds the images and the scaling through its report
    run_script("export", f"--model={out / 'model.keras'}", f"--output={tmp_path / 'm.tflite'}")
    assert str(world["root"] / "unlabelled") in json.loads((tmp_path / "m.tflite.json").read_text())["parity"][
        "inputs"]


@pytest.mark.slow
def test_budget_mode_on_a_model_with_three_outputs_by_the_output_error_of_its_worst_head(world, tmp_path):
    keras.utils.set_random_seed(0)
    _face_net().save(tmp_path / "face.keras")
    face = [f"--model={tmp_path / 'face.keras'}", f"--dataset={world['root'] / 'unlabelled'}", "--scaling=unit",
            "--latency_fraction=0.7"]
    # limits that do not fit the targets are refused in one line, before any work
    for wrong, says in (("--max_accuracy_drop=1", "limit it with --max_output_error"),
                        ("--min_agreement=0.9", "limit it with --max_output_error"),
                        ("--runs=5", "give --max_output_error")):
        refused = run_script("compress", *face, wrong, f"--output_dir={tmp_path / 'refused'}", check=False)
        assert refused.returncode == 1 and says in refused.stderr.strip().splitlines()[-1]
    classifier = run_script("compress", f"--model={world['root'] / 'user.keras'}", "--max_output_error=0.1",
                            f"--dataset={world['root'] / 'photos'}", "--scaling=tf", "--latency_fraction=0.7",
                            f"--output_dir={tmp_path / 'refused'}", check=False)
    assert classifier.returncode == 1 and "give --max_accuracy_drop or --min_agreement" in classifier.stderr
    assert not (tmp_path / "refused" / "base").exists()

    out = tmp_path / "face_budget"
    process = run_script("compress", *face, "--max_output_error=0.5", "--max_rounds=1", "--finetune_epochs=1",
                         "--lr=0.001", "--runs=20", "--eval_limit=0", f"--output_dir={out}", check=False)
    assert process.returncode in (0, 3), process.stderr  # 3: not met, said plainly (a tiny net's tiny latency)
    rows = json.loads((out / "summary.json").read_text())["rows"]
    original, *_, last = rows
    assert all(row["litert_accuracy"] is None for row in rows)  # judged by its heads' outputs, not accuracy
    assert original["litert_output_error"] < 1e-3  # the float32 original reproduces its own outputs in LiteRT
    for row in rows[2:]:  # the loss in points is the output error's increase, ×100
        assert row["round_drop_points"] == pytest.approx(
            100 * (row["litert_output_error"] - original["litert_output_error"]), abs=1e-3)
        assert row["params"] < original["params"]
    budget = json.loads((out / "budget.json").read_text())
    assert "output error" in budget["message"] and "LiteRT output error" in (out / "summary.md").read_text()
    assert budget["met"] == (last["litert_output_error"] <= 0.5 and last["latency_ms"] <= budget["target_ms"])
    # the written .tflite is the one judged: evaluated again through its report, the same worst-head error
    lite = run_script("evaluate", f"--model={out / 'model.tflite'}", f"--json={tmp_path / 'lite.json'}")
    assert "per output:" in lite.stdout
    best = min(rows[2:], key=lambda row: (row["round_drop_points"] > 50, row["latency_ms"]))
    assert json.loads((tmp_path / "lite.json").read_text())["output_error"] == pytest.approx(
        best["litert_output_error"], abs=1e-4)


def test_a_recipe_on_a_model_with_three_outputs_distils_every_head(world, tmp_path):
    """prune → distil → int8 on a three-headed net from unlabelled images: every row is judged by the output error
    of the worst head, and distillation (matching the original's outputs) brings the pruned heads back."""
    from tfcompress import pipeline

    keras.utils.set_random_seed(2)
    model = _face_net()
    judged = data.ModelData.for_model(model, str(world["root"] / "unlabelled"), data.Preprocessing("unit")) \
        .labelled_by(model)
    context = pipeline.Context.of_data(model, judged, batch_size=32, holdout_fraction=0.2)
    result = pipeline.run_recipe(model, [{"stage": "prune", "method": "uniform", "target_channels": 0.75},
                                         {"stage": "distill", "epochs": 2, "lr": 0.001},
                                         {"stage": "quantize", "precision": "int8"}], context, tmp_path / "run",
                                 pipeline.Measurement(runs=5, eval_limit=None))
    original, pruned, distilled, int8 = result.rows
    assert all(row["keras_accuracy"] is None and row["litert_accuracy"] is None for row in result.rows)
    assert original["litert_output_error"] < 1e-3 and original["litert_score"] > 0.999
    assert pruned["litert_output_error"] > 0.1  # a quarter of the channels gone moves the heads
    assert distilled["litert_output_error"] < pruned["litert_output_error"]
    assert distilled["keras_output_error"] == pytest.approx(distilled["litert_output_error"], abs=1e-3)
    assert int8["litert_output_error"] < distilled["litert_output_error"] + 0.1
    table = result.table()
    assert "output error" in table and "acc." not in table  # the columns that have values, only
    with pytest.raises(ValueError, match="cannot teach without class labels"):
        pipeline.stages.finetune(model, context, teacher=str(tmp_path / "run" / "01_prune" / "model.keras"))


def test_a_recipe_fine_tune_that_does_not_help_keeps_the_starting_weights_and_says_so(world):
    from tfcompress import pipeline

    photos, said = world["photos"], []
    wrong = photos.batches("train", batch_size=32).map(lambda x, y: (x, (y + 3) % CLASSES))
    context = pipeline.Context(original=world["model"], train=wrong, test=photos.batches("test"),
                               holdout=photos.batches("test"), progress=said.append)
    model = keras.models.clone_model(world["model"])
    model.set_weights(world["model"].get_weights())
    pipeline.stages.finetune(model, context, epochs=1, lr=0.05)
    for kept, original in zip(model.get_weights(), world["model"].get_weights(), strict=True):
        np.testing.assert_array_equal(kept, original)
    assert any("fine-tuning did not help" in line for line in said)


def test_pruning_re_estimates_batch_norm_statistics_a_short_fine_tune_would_leave_stale(world):
    """keras.applications' BatchNorm momentum is 0.999: after pruning (and a short fine-tune) its moving statistics
    are not the pruned model's. The prune stage re-estimates them on training batches."""
    from tfcompress import pipeline

    photos = world["photos"]
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(16, 3, name="conv")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn")(x)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(x))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(x))
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(photos.batches("train", batch_size=32), epochs=1, verbose=0)
    train = photos.batches("train", batch_size=32, shuffle=False)
    context = pipeline.Context(original=model, train=train, test=photos.batches("test"))
    pruned = pipeline.stages.prune(model, context, method="uniform", target_channels=0.75)
    conv = keras.Model(pruned.input, pruned.get_layer("conv").output)
    batches = list(train.take(pipeline.stages.BATCH_NORM_BATCHES))
    expected = np.mean([np.mean(np.asarray(conv(x)), axis=(0, 1, 2)) for x, _ in batches], axis=0)
    moving = np.asarray(pruned.get_layer("bn").moving_mean)
    np.testing.assert_allclose(moving, expected, rtol=1e-4, atol=1e-5)
    assert moving.shape == (12,)  # 16 channels × 0.75
    stale = np.asarray(model.get_layer("bn").moving_mean)  # one epoch at 0.999 moves them ~1 % of the way
    assert np.max(np.abs(stale)) < 0.5 * np.max(np.abs(expected))
