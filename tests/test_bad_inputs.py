"""Bad inputs, program by program and in the library: each is one clear line (exit 1, no traceback, no flag
help), it comes before any work, and no input file changes.

:data:`CASES` is the table: a program, its arguments and a fragment of the one-line error. Add a program's
bad inputs here when you add the program. ``{in}`` is a folder of inputs built once (:func:`_build_inputs`:
empty, random, truncated and NaN models, a file where a folder should be, ...); ``{out}`` is a folder that
must hold no file afterwards (nothing written). All cases run in ONE subprocess (``python -m
tests.test_bad_inputs``), which calls each program's ``main`` through ``tfcompress.cli.app.run`` in-process and
catches its exit, because a process per case would pay TensorFlow's import every time; the scenarios that need
a program to train (kill after ``fit``, resume from a truncated checkpoint, dynamic inputs) run there too.
Library refusals are tested in-process below.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, built_once


@dataclasses.dataclass(frozen=True)
class Case:
    program: str  # tfcompress/cli/PROGRAM.py
    args: tuple[str, ...]
    message: str  # a fragment of the one-line error

    @property
    def id(self) -> str:
        return f"{self.program}:{' '.join(self.args)}"


def _case(program: str, *args_then_message: str) -> Case:
    *args, message = args_then_message
    return Case(program, tuple(args), message)


LENET = "--model={in}/lenet5.keras"
CASES = [
    # train: flags, outputs, model files, resume, offline data, divergence
    _case("train", "--model=lenet5", "--image_size=0", "--output={out}/m.keras", "--image_size=0: 0 is not a positive"),
    _case("train", "--model=lenet5", "--train_limit=0", "--output={out}/m.keras", "--train_limit=0"),
    _case("train", "lenet5", "--model=lenet5", "--output={out}/m.keras", "unexpected arguments 'lenet5'"),
    _case("train", "--model=lenet5", "--output={in}/afile/m.keras", "'{in}/afile' is a file, not a folder"),
    _case("train", "--model=lenet5", "--output=/sys/m.keras", "cannot write output '/sys/m.keras'"),
    _case("train", "--model=lenet5", "--output={in}/adir.keras", "is a directory"),
    _case("train", "--model=lenet5", "--output={in}/side.keras", "side.keras.json' is a directory"),
    _case("train", "--init_model={in}/lenet5.keras", "--output={in}/lenet5.keras", "same file as the input"),
    _case("train", "--init_model={in}/empty.keras", "--output={out}/m.keras", "it is an empty file, not a .keras"),
    _case("train", "--init_model={in}/random.keras", "--output={out}/m.keras", "it is binary data, not a .keras"),
    _case("train", "--init_model={in}/truncated.keras", "--output={out}/m.keras", "damaged (truncated?) zip"),
    _case("train", "--init_model={in}/nan.keras", "--output={out}/m.keras", "non-finite weights: fc1/kernel (1 NaN"),
    _case("train", "--model=lenet5", "--resume", "--output={out}/m.keras", "no checkpoint at"),
    _case("train", "--model=resnet19", "--output={out}/m.keras", "6n+2"),
    _case("train", "--model=lenet5", "--dataset=mnist", "--output={out}/m.keras", "offline? cannot reach"),
    _case("train", "--model=lenet_300_100", "--lr=1e30", "--momentum=0", "--epochs=1", "--data_dir={in}/tiny",
          "--output={out}/m.keras", "training diverged: the loss is"),
    # distill: train.py with a teacher
    _case("morphnet", LENET, "--regularizer=gamma", "--output={out}/m.keras", "use regularizer='group_lasso'"),
    _case("morphnet", LENET, "--cost=latency", "--output={out}/m.keras", "--cost=latency needs --table"),
    _case("morphnet", LENET, "--target_flops=0.5", "--target_params=0.5", "--output={out}/m.keras",
          "give one target"),
    _case("morphnet", LENET, "--latency_fraction=0.5", "--output={out}/m.keras", "a latency target needs --table"),
    _case("morphnet", LENET, "--target_flops=1.5", "--output={out}/m.keras", "--target_flops is a fraction in (0, 1)"),
    _case("distill", "--model=lenet5", "--output={out}/m.keras", "--teacher"),
    _case("distill", "--model=lenet5", "--teacher={in}/random.keras", "--output={out}/m.keras", "it is binary data"),
    _case("distill", "--model=lenet5", "--teacher={in}/lenet5.keras", "--alpha=2", "--output={out}/m.keras",
          "--alpha must be in [0, 1]"),
    _case("distill", "--model=lenet5", f"--teacher={REPO / 'models' / 'resnet20_fashion_mnist.keras'}",
          "--output={out}/m.keras", "has input shape (32, 32, 1) but the student"),
    _case("distill", "--init_model={in}/lenet5.keras", "--teacher={in}/lenet5.keras", "--output={in}/lenet5.keras",
          "same file as the input"),
    # compress: budget or recipe, checked before any work
    _case("compress", LENET, "--output_dir={out}/c", "give exactly one of --recipe"),
    _case("compress", LENET, "--output_dir={out}/c", "--latency_fraction=1.5", "--latency_fraction is a fraction"),
    _case("compress", LENET, "--output_dir={out}/c", "--latency_ms=1", "--recipe={in}/recipe_typo.json",
          "give exactly one of --recipe"),
    _case("compress", LENET, "--output_dir={out}/c", "--recipe={in}/recipe_typo.json",
          "unknown argument(s) target_mac; prune takes"),
    _case("compress", LENET, "--output_dir={out}/c", "--recipe={in}/random.keras", "is not JSON"),
    _case("compress", LENET, "--output_dir={out}/c", "--recipe={in}/none.json", "cannot read recipe"),
    _case("compress", LENET, "--output_dir={in}/afile", "--latency_ms=1", "is a file"),
    _case("compress", "--model={in}/random.keras", "--output_dir={out}/c", "--latency_ms=1", "it is binary data"),
    _case("compress", LENET, "--output_dir={out}/c", "--latency_ms=1", "--device=binary:/nowhere/benchmark_model",
          "/nowhere/benchmark_model"),
    # evaluate: --json never destroys another kind of file; what a bad model file is
    _case("evaluate", LENET, "--json={in}/victim.keras", "exists and is a Keras model (.keras), not a JSON file"),
    _case("evaluate", LENET, "--json={in}/notes.txt", "exists and is a text file, not a JSON file"),
    _case("evaluate", LENET, "--json={in}/lenet5.keras", "same file as the input"),
    _case("evaluate", LENET, "--json={in}/adir.json", "is a directory"),
    _case("evaluate", LENET, "--holdout=2", "--holdout must be in (0, 1)"),
    _case("evaluate", LENET, "--dataset=cifar10", "cannot take cifar10"),
    _case("evaluate", "--model={in}/random.tflite", "not a TFLite flatbuffer (no 'TFL3' identifier) but binary data"),
    _case("evaluate", "--model={in}/random.keras", "it is binary data"),
    _case("evaluate", "--model={in}/nan.keras", "non-finite weights"),
    _case("evaluate", "--model={in}/nope.keras", "does not exist"),
    _case("evaluate", "--model={in}/adir.keras", "is a folder, not a model file"),
    # export
    _case("export", "--model={in}/random.tflite", "--output={out}/m.tflite", "it is binary data, not a .keras"),
    _case("export", "--model={in}/nan.keras", "--output={out}/m.tflite", "non-finite weights: fc1/kernel"),
    _case("export", LENET, "--output={in}/afile/m.tflite", "is a file, not a folder"),
    _case("export", LENET, "--output={in}/victim.tflite", "exists and is a Keras model (.keras), not a TFLite"),
    _case("export", LENET, "--output={out}/m.tflite", "--num_calibration=0", "--num_calibration=0"),
    # benchmark
    _case("benchmark", "--tflite={in}/random.tflite", "is not a TFLite model"),
    _case("benchmark", "--tflite={in}/random.tflite", "--json={in}/victim.keras", "exists and is a Keras model"),
    _case("benchmark", "--tflite={in}/random.tflite", "--runs=0", "--runs=0"),
    # score
    _case("score", "--model={in}/truncated.keras", "damaged (truncated?) zip"),
    _case("score", "--model={in}/nan.keras", "non-finite weights"),
    _case("score", LENET, "--json={in}/afile/s.json", "is a file, not a folder"),
    # prune
    _case("prune", LENET, "--target_channels=0.5", "--output={in}/afile/p.keras", "is a file, not a folder"),
    _case("prune", LENET, "--target_channels=0.5", "--output={in}/side.keras", "side.keras.json' is a directory"),
    _case("prune", "--model={in}/nan.keras", "--target_channels=0.5", "--output={out}/p.keras", "non-finite weights"),
    _case("prune", "--model={in}/softmax.keras", "--importance=snip", "--target_channels=0.5",
          "--output={out}/p.keras", "ends in a softmax ('probabilities') but the 'snip' importance takes logits"),
    # snip
    # decompose: settings, outputs, model files, layers
    _case("decompose", LENET, "--output={out}/d.keras", "--compression_factor=1.5", "--compression_factor is the mean"),
    _case("decompose", LENET, "--output={out}/d.keras", "--max_acc_loss=2", "--max_acc_loss is a fraction"),
    _case("decompose", LENET, "--output={out}/d.keras", "--structure=rows", "unknown structure 'rows'"),
    _case("decompose", LENET, "--output={in}/lenet5.keras", "same file as the input"),
    _case("decompose", LENET, "--output={in}/afile/d.keras", "'{in}/afile' is a file, not a folder"),
    _case("decompose", "--model={in}/random.keras", "--output={out}/d.keras", "it is binary data"),
    _case("decompose", LENET, "--data_free", "--layers=pool1", "--output={out}/d.keras", "has no kernel to split"),
    _case("decompose", LENET, "--data_free", "--layers=conv9", "--output={out}/d.keras", "are not in model"),
    _case("decompose", LENET, "--data_free", "--structure=block_3x3", "--layers=conv2", "--output={out}/d.keras",
          "divisible by the block"),
    _case("snip", "--model=lenet5", "--image_size=0", "--output={out}/s.keras", "--image_size=0"),
    _case("snip", LENET, "--init=model", "--output={in}/side.keras", "side.keras.json' is a directory"),
    _case("snip", "--model={in}/random.keras", "--output={out}/s.keras", "it is binary data"),
    # ternarize
    _case("ternarize", LENET, "--output=/sys/t.keras", "cannot write output '/sys/t.keras'"),
    _case("ternarize", LENET, "--output={in}/side.keras", "side.keras.json' is a directory"),
    _case("ternarize", "--model={in}/random.tflite", "--output={out}/t.keras", "it is binary data"),
    # demo
    _case("demo", "--output_dir={in}/afile", "is a file; give a folder"),
    _case("demo", "--model={in}/empty.keras", "--output_dir={out}", "it is an empty file"),
    # latency tables, NetAdapt, Fisher pruning
    _case("latency_table", LENET, "--output={in}/afile/t.npz", "is a file, not a folder"),
    _case("latency_table", LENET, "--output={out}/t.npz", "extra", "unexpected arguments 'extra'"),
    _case("latency_table", "--predict={in}/lenet5.keras", "--table={in}/random.tflite", "--json={in}/victim.keras",
          "exists and is a Keras model"),
    _case("netadapt", LENET, "--table={out}/t.npz", "--latency_fraction=0.5", "--output={out}/n.keras",
          "--tensorboard_dir={in}/afile", "output folder '{in}/afile' is a file"),
    _case("netadapt", LENET, "--table={out}/t.npz", "--latency_fraction=0.5", "--output={in}/side.keras",
          "side.keras.json' is a directory"),
    _case("fisher_prune", "--model={in}/nan.keras", "--target_channels=0.5", "--output={out}/f.keras",
          "non-finite weights"),
]


# --------------------------------------------------------------------------------------- the table's tests


@pytest.fixture(scope="session")
def driven(tmp_path_factory) -> dict:
    """The driver's results for every case and scenario: run once per test run (shared by xdist workers)."""

    def build(folder: Path) -> None:
        env = {key: value for key, value in os.environ.items() if "proxy" not in key.lower()}
        env.update(TF_CPP_MIN_LOG_LEVEL="2", TFDS_DATA_DIR=str(folder / "tfds"), CUDA_VISIBLE_DEVICES="")
        process = subprocess.run([sys.executable, "-m", "tests.test_bad_inputs", str(folder)], cwd=REPO, env=env,
                                 capture_output=True, text=True, timeout=900)
        if process.returncode != 0:
            raise AssertionError(f"driver failed ({process.returncode}):\n{process.stdout[-3000:]}\n"
                                 f"{process.stderr[-5000:]}")

    return json.loads((built_once(tmp_path_factory, "bad_inputs", build) / "results.json").read_text())


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_clear_line_and_changes_nothing(driven, case):
    result = driven["cases"][case.id]
    assert result["exception"] is None, result["exception"]
    message = case.message.replace("{in}", driven["inputs"])
    lines = [line for line in result["stderr"].splitlines() if line.strip()]
    assert result["code"] == 1, result
    assert len(lines) == 1 and lines[0].startswith(f"{case.program}.py: error: "), result["stderr"]
    assert message in lines[0], lines[0]
    assert result["changed_inputs"] == [], "input files changed"
    assert result["written"] == [], "a refused run wrote files"
    assert result["seconds"] < 30, "refused after the work instead of before it"


def test_offline_dataset_fails_fast_and_leaves_no_partial_download(driven):
    offline = driven["cases"][_case("train", "--model=lenet5", "--dataset=mnist", "--output={out}/m.keras", "").id]
    assert offline["seconds"] < 10
    assert driven["tfds_left"] == [], "a failed download left files in the tensorflow-datasets folder"


@pytest.mark.parametrize("scenario", ["train_killed_after_fit_loses_nothing", "dynamic_input_taken_at_dataset_size"])
def test_scenario(driven, scenario):
    result = driven["scenarios"][scenario]
    assert result["error"] is None, result["error"]


def test_every_program_has_bad_input_cases():
    programs = {path.stem for path in (REPO / "tfcompress" / "cli").glob("*.py")} - _NOT_PROGRAMS
    missing = programs - {case.program for case in CASES}
    assert not missing, f"add rows to CASES for {sorted(missing)}"


# Modules of tfcompress/cli that are not programs, and programs whose rows are still to come.
_NOT_PROGRAMS = {"__init__", "app", "compression", "flags", "latency_aim"}


# ------------------------------------------------------------------------------------ library, in-process


def test_check_output_refuses_what_it_would_destroy_or_cannot_write(tmp_path):
    from tfcompress import files, zoo

    model = files.save_model(zoo.lenet_300_100(), tmp_path / "m.keras")
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "old.json").write_text('{"accuracy": 0.9}\n')
    refusals = {
        tmp_path / "report.json": None,  # new: fine
        tmp_path / "old.json": None,  # a JSON report replaced by another: fine
        model: None,  # a model replaced by a model: fine
        tmp_path / "deep" / "new" / "m.keras": None,  # folders to create: fine (created, as the write will)
        tmp_path / "a_file" / "m.keras": "is a file, not a folder",
        tmp_path / "a_file": "exists and is a text file, not a Keras model",  # suffixless: kind given below
    }
    for path, message in refusals.items():
        kind = "keras" if path.name == "a_file" else None
        if message is None:
            assert files.check_output(path, kind=kind) == path.resolve()
        else:
            with pytest.raises(files.OutputPathError, match=message.replace("(", r"\(")):
                files.check_output(path, kind=kind)
    with pytest.raises(files.OutputPathError, match="exists and is a Keras model"):
        files.check_output(model, kind="json")
    assert files.file_kind(model) == "keras" and files.file_kind(tmp_path / "old.json") == "json"


def test_write_json_refuses_nan_and_says_where(tmp_path):
    from tfcompress import files

    with pytest.raises(ValueError, match=r"history\.loss\[1\] is nan"):
        files.write_json(tmp_path / "r.json", {"history": {"loss": [2.3, np.float32("nan")]}, "ok": 1})
    assert not (tmp_path / "r.json").exists()


def test_nan_weights_are_refused_by_export_and_evaluation_naming_the_weight():
    import keras
    import tensorflow as tf

    from tfcompress import export, training, zoo

    model = zoo.lenet_300_100()
    kernel = model.get_layer("fc2").kernel
    kernel.assign(np.where(np.arange(kernel.numpy().size).reshape(kernel.shape) == 7, np.nan, kernel.numpy()))
    for refuse in (lambda: export.to_tflite(model), lambda: training.check_finite(model, "m")):
        with pytest.raises(training.NonFiniteError, match=r"fc2/kernel \(1 NaN, 0 inf"):
            refuse()
    # finite weights, NaN outputs (a negative BatchNorm variance): evaluate says so instead of "accuracy 0.1"
    inputs = keras.Input((28, 28, 1))
    norm = keras.layers.BatchNormalization()
    outputs = keras.layers.Dense(10)(keras.layers.Flatten()(norm(inputs)))
    bad_norm = keras.Model(inputs, outputs)
    norm.moving_variance.assign(-np.ones(1))
    images = np.random.default_rng(0).normal(size=(64, 28, 28, 1)).astype(np.float32)
    test = tf.data.Dataset.from_tensor_slices((images, np.arange(64) % 10)).batch(32)
    with pytest.raises(training.NonFiniteError, match="outputs NaN or infinity for 64 of 64 examples"):
        training.evaluate(bad_norm, test)


def test_diverging_fit_stops_at_the_batch_with_the_epoch_and_weights():
    import keras

    from tfcompress import training, zoo

    model = zoo.lenet_300_100()
    training.compile_classifier(model, keras.optimizers.SGD(1e30))
    x = np.random.default_rng(0).normal(size=(64, 28, 28, 1)).astype(np.float32)
    y = np.arange(64) % 10
    with pytest.raises(training.NonFiniteError, match=r"training diverged: the loss is (nan|inf) at epoch 1, batch "
                                                      r"\d+; non-finite weights: \w+/(kernel|bias)"):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[training.StopOnNonFinite()])


def test_models_the_api_does_not_take_are_refused_by_name():
    import keras
    import tensorflow as tf

    from tfcompress import export, zoo
    from tfcompress.pruning import snip

    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.flatten, self.dense = keras.layers.Flatten(), keras.layers.Dense(10)

        def call(self, x):
            return self.dense(self.flatten(x))

    x = np.random.default_rng(0).normal(size=(8, 28, 28, 1)).astype(np.float32)
    y = np.arange(8) % 10
    subclassed = Subclassed()
    subclassed(x)
    for refuse in (lambda: export.to_tflite(subclassed), lambda: snip.prune(subclassed, (x, y), 0.5)):
        with pytest.raises(ValueError, match="Subclassed 'subclassed' is a subclassed model"):
            refuse()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        mirrored = zoo.lenet_300_100()
        with pytest.raises(ValueError, match=r"SNIP runs outside tf\.distribute, but it was called inside the "
                                             r"scope of a MirroredStrategy"):
            snip.prune(mirrored, (x, y), 0.5)
    with pytest.raises(ValueError, match=r"variables of model 'lenet_300_100' were created in a tf\.distribute"):
        snip.prune(mirrored, (x, y), 0.5)


def test_a_softmax_output_is_detected_handled_where_ours_and_refused_where_a_loss_wants_logits():
    import keras

    from tfcompress import training, zoo
    from tfcompress.pruning import snip

    logits_model = zoo.lenet_300_100()
    inputs = keras.Input((28, 28, 1))
    probabilities = keras.layers.Softmax(name="probabilities")(logits_model(inputs))
    softmax_model = keras.Model(inputs, probabilities)
    dense_softmax = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax", name="d")])
    assert (training.softmax_output(softmax_model), training.softmax_output(dense_softmax)) == ("probabilities", "d")
    assert training.softmax_output(logits_model) is None
    x = np.random.default_rng(0).normal(size=(16, 28, 28, 1)).astype(np.float32)
    y = np.arange(16) % 10
    # the same cross-entropy whichever output the model gives
    training.compile_classifier(softmax_model)
    training.compile_classifier(logits_model)
    loss_of = {name: float(m.evaluate(x, y, verbose=0)[0]) for name, m in (("p", softmax_model), ("l", logits_model))}
    assert loss_of["p"] == pytest.approx(loss_of["l"], rel=1e-4)
    with pytest.raises(ValueError, match="ends in a softmax \\('probabilities'\\) but this score's loss takes logits"):
        training.as_batches((x, y), softmax_model)
    # SNIP takes the probabilities as they are: the same saliency as on the logits
    on_logits = snip.connection_sensitivity(logits_model, (x, y))
    on_probabilities = snip.connection_sensitivity(softmax_model, (x, y))
    np.testing.assert_allclose(on_probabilities["fc1"]["kernel"], on_logits["fc1"]["kernel"], rtol=1e-3, atol=1e-9)


def test_dataset_options_refuse_zero_and_take_dynamic_inputs_at_the_dataset_size():
    from tfcompress import data

    assert data.pipeline_options_for((None, None, None, 1), "fashion_mnist") == {"image_size": 28, "channels": 1}
    assert data.pipeline_options_for((None, 32, None, 3), "fashion_mnist") == {"image_size": 32, "channels": 3}
    for bad, message in (((None, 28, 32, 1), "not square"), ((None, None, None, None), "no fixed channel count")):
        with pytest.raises(ValueError, match=message):
            data.pipeline_options_for(bad, "fashion_mnist")
    for options, message in (({"image_size": 0}, "image_size must be ≥ 1"), ({"limit": 0}, "limit must be ≥ 1"),
                             ({"channels": 0}, "channels must be ≥ 1")):
        with pytest.raises(ValueError, match=message):
            data.load("fashion_mnist", "test", **options)


def test_a_failed_download_removes_its_partial_folders(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    from tfcompress import data

    (tmp_path / "other_dataset").mkdir()  # someone else's: kept

    class Builder:
        data_dir_root = str(tmp_path)

        def is_prepared(self) -> bool:
            return False

    def interrupted_download(name, **kwargs):
        (tmp_path / name / "incomplete.ABC").mkdir(parents=True)
        (tmp_path / "downloads" / name).mkdir(parents=True)
        (tmp_path / "downloads" / name / "train.gz.tmp").write_bytes(b"partial")
        raise ConnectionError("connection reset")

    start = time.perf_counter()
    with pytest.raises(ConnectionError, match=r"offline\? cannot reach the download host nowhere\.invalid"):
        data.builtin._check_online("nowhere.invalid")
    assert time.perf_counter() - start < 6
    monkeypatch.setattr(tfds, "builder", lambda name: Builder())
    monkeypatch.setattr(tfds, "load", interrupted_download)
    monkeypatch.setattr(data.builtin, "_check_online", lambda host: None)
    with pytest.raises(data.DatasetNotFoundError, match="ConnectionError: connection reset"):
        data.load_arrays("kmnist", "test")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other_dataset"]


# ----------------------------------------------------------------------------------------------- the driver


def _write_idx(path: Path, array: np.ndarray) -> None:
    """An IDX file of uint8 values (the MNIST format: magic 0x0000 08 ndim, big-endian int32 dims, data)."""
    header = bytes([0, 0, 0x08, array.ndim]) + np.asarray(array.shape, ">i4").tobytes()
    path.write_bytes(header + np.ascontiguousarray(array, np.uint8).tobytes())


def _build_inputs(folder: Path) -> None:
    """Every input the cases read: good ones, each kind of bad one, and ``tiny/``, a 512 + 256 image slice of
    Fashion-MNIST for ``--data_dir`` (the programs that get to train or evaluate do it in a second)."""
    import keras

    from tfcompress import data, files, zoo

    folder.mkdir(parents=True)
    (folder / "tiny").mkdir()
    for split, stems, count in (("train", ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), 512),
                                ("test", ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"), 256)):
        images, labels = data.load_arrays("fashion_mnist", split)
        _write_idx(folder / "tiny" / stems[0], images[:count, ..., 0])
        _write_idx(folder / "tiny" / stems[1], labels[:count])
    lenet = REPO / "models" / "lenet5_fashion_mnist.keras"
    shutil.copyfile(lenet, folder / "lenet5.keras")
    shutil.copyfile(lenet, folder / "victim.keras")  # a model that an output path must not destroy
    shutil.copyfile(lenet, folder / "victim.tflite")  # a model under a misleading name
    (folder / "empty.keras").write_bytes(b"")
    random_bytes = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    (folder / "random.keras").write_bytes(random_bytes)
    (folder / "random.tflite").write_bytes(random_bytes)
    (folder / "truncated.keras").write_bytes(lenet.read_bytes()[:20_000])
    (folder / "notes.txt").write_text("my notes\n")
    (folder / "recipe_typo.json").write_text('[{"stage": "prune", "method": "l1", "target_mac": 0.5}]')
    (folder / "afile").write_text("a file where a folder should be\n")
    (folder / "adir.keras").mkdir()
    (folder / "adir.json").mkdir()
    (folder / "side.keras.json").mkdir()  # blocks the sidecar of --output={in}/side.keras
    nan = keras.models.load_model(lenet, compile=False)
    kernel = nan.get_layer("fc1").kernel
    kernel.assign(np.where(np.arange(kernel.numpy().size).reshape(kernel.shape) == 0, np.nan, kernel.numpy()))
    files.save_model(nan, folder / "nan.keras")
    inputs = keras.Input((28, 28, 1))
    probabilities = keras.layers.Softmax(name="probabilities")(zoo.lenet_300_100()(inputs))
    files.save_model(keras.Model(inputs, probabilities, name="softmax_lenet5"), folder / "softmax.keras")
    inputs = keras.Input((None, None, 1), name="image")
    hidden = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs))
    files.save_model(keras.Model(inputs, keras.layers.Dense(10, name="logits")(hidden), name="fcn"),
                     folder / "dynamic.keras")


def _digests(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _program(name: str):
    """The module of program ``name``, with only its own tfcompress flags defined (programs share flag names:
    the previous program's are removed, and the modules that define them imported afresh)."""
    from absl import flags

    for flag in list(flags.FLAGS):
        module = flags.FLAGS.find_module_defining_flag(flag)
        if module and module.startswith("tfcompress.cli"):
            delattr(flags.FLAGS, flag)
    package = importlib.import_module("tfcompress.cli")
    for module in [m for m in sys.modules if m.startswith("tfcompress.cli.")]:
        short = module.rsplit(".", 1)[1]
        if short not in ("app", "compression"):  # these define no flag
            del sys.modules[module]
            vars(package).pop(short, None)  # else `from tfcompress.cli import train` finds the old module
    return importlib.import_module(f"tfcompress.cli.{name}")


def _run(program: str, args: list[str]) -> dict:
    """Runs a program in this process as its script would; returns its exit code, stderr and stdout."""
    from absl import flags

    from tfcompress.cli import app

    module = _program(program)
    flags.FLAGS.unparse_flags()
    stderr, stdout = io.StringIO(), io.StringIO()
    code, exception = 0, None
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            app.run(module.main, [f"{program}.py", *args])
        except SystemExit as error:
            code = 0 if error.code is None else error.code
        except Exception:
            exception = traceback.format_exc()[-3000:]
    return {"code": code, "stderr": stderr.getvalue(), "stdout": stdout.getvalue()[-2000:], "exception": exception}


def _run_case(case: Case, inputs: Path, out: Path) -> dict:
    args = [arg.replace("{in}", str(inputs)).replace("{out}", str(out)) for arg in case.args]
    before = _digests(inputs)
    start = time.perf_counter()
    result = _run(case.program, args)
    result["seconds"] = time.perf_counter() - start
    after = _digests(inputs)
    result["changed_inputs"] = sorted(name for name in before.keys() | after.keys()
                                      if before.get(name) != after.get(name))
    result["written"] = [str(p) for p in out.rglob("*") if not p.is_dir()] if out.exists() else []
    return result


def _scenario_train_killed_after_fit_loses_nothing(folder: Path, inputs: Path) -> None:
    """Killed between the end of fit and the save, a run resumes with nothing lost, also from a checkpoint whose
    latest copy a kill truncated; both copies truncated: a one-line error."""
    import keras

    from tfcompress import files

    output = folder / "m.keras"
    checkpoint = folder / "m.keras.ckpt"
    args = ["--model=lenet_300_100", "--epochs=2", f"--data_dir={inputs}/tiny", "--lr=0.05", f"--output={output}"]

    class Killed(BaseException):
        pass

    trained = {}

    def killed_before_saving(model, path, **kwargs):
        trained["weights"] = model.get_weights()
        raise Killed

    save_model = files.save_model
    files.save_model = killed_before_saving
    try:
        with contextlib.suppress(Killed):
            _run("train", args)
    finally:
        files.save_model = save_model
    assert "weights" in trained and not output.exists()
    assert json.loads((checkpoint / "training_metadata.json").read_text())["epoch"] == 2
    shutil.copytree(checkpoint, folder / "ckpt_copy")

    refused = _run("train", args)
    assert refused["code"] == 1 and "pass --resume" in refused["stderr"], refused
    resumed = _run("train", [*args, "--resume"])
    assert resumed["code"] == 0, resumed
    sidecar = json.loads(files.sidecar_path(output).read_text())
    assert sidecar["resumed_from_epoch"] == 2 and not checkpoint.exists()
    for saved, before_kill in zip(keras.models.load_model(output).get_weights(), trained["weights"], strict=True):
        np.testing.assert_array_equal(saved, before_kill)

    # the latest copy truncated by a kill during the save: the previous epoch's copy is used
    output.unlink()
    files.sidecar_path(output).unlink()
    shutil.copytree(folder / "ckpt_copy", checkpoint)
    latest = checkpoint / "latest.weights.h5"
    latest.write_bytes(latest.read_bytes()[:2000])
    resumed = _run("train", [*args, "--resume"])
    assert resumed["code"] == 0, resumed
    sidecar = json.loads(files.sidecar_path(output).read_text())
    assert sidecar["resumed_from_epoch"] == 1 and len(sidecar["history"]["loss"]) == 1

    # both copies truncated: refused in one line, nothing written
    output.unlink()
    files.sidecar_path(output).unlink()
    shutil.copytree(folder / "ckpt_copy", checkpoint)
    for name in ("latest.weights.h5", "latest.weights.h5.bkp"):
        (checkpoint / name).write_bytes((checkpoint / name).read_bytes()[:2000])
    damaged = _run("train", [*args, "--resume"])
    assert damaged["code"] == 1 and "is damaged" in damaged["stderr"] and len(damaged["stderr"].splitlines()) == 1
    assert not output.exists()


def _scenario_dynamic_input_taken_at_dataset_size(folder: Path, inputs: Path) -> None:
    """A (None, None, 1) model is evaluated and exported at the dataset's 28×28 (LiteRT gets a fixed shape)."""
    from tfcompress import runtime

    tiny = f"--data_dir={inputs}/tiny"  # a model without a report gets data only from a flag
    evaluated = _run("evaluate", [f"--model={inputs}/dynamic.keras", tiny, "--dataset=fashion_mnist", "--limit=200",
                                  f"--json={folder}/e.json"])
    assert evaluated["code"] == 0, evaluated
    assert json.loads((folder / "e.json").read_text())["examples"] == 200
    exported = _run("export", [f"--model={inputs}/dynamic.keras", tiny, "--dataset=fashion_mnist",
                               f"--output={folder}/d.tflite",
                               "--parity_examples=200"])
    assert exported["code"] == 0, exported
    assert "taken at fashion_mnist's size (28, 28, 1)" in exported["stdout"]
    assert runtime.TFLiteModel(folder / "d.tflite").input_shape == (28, 28, 1)
    parity = json.loads((folder / "d.tflite.json").read_text())["parity"]
    assert parity["top1_agreement"] == 1.0 and parity["max_abs_diff"] < 1e-4


SCENARIOS: dict[str, Callable[[Path, Path], None]] = {
    "train_killed_after_fit_loses_nothing": _scenario_train_killed_after_fit_loses_nothing,
    "dynamic_input_taken_at_dataset_size": _scenario_dynamic_input_taken_at_dataset_size,
}


def _drive(folder: Path) -> None:
    """Runs every case and scenario in this process; writes ``folder/results.json``."""
    import dataclasses as dc

    from tfcompress import data

    # Offline, whatever this machine is: the host of mnist does not resolve (RFC 2606 reserves .invalid).
    data.DATASETS["mnist"] = dc.replace(data.DATASETS["mnist"], download_host="mnist.invalid")
    inputs = folder / "inputs"
    _build_inputs(inputs)
    results = {"inputs": str(inputs), "cases": {}, "scenarios": {}}
    for index, case in enumerate(sorted(CASES, key=lambda c: c.program)):  # grouped: fewer flag swaps
        results["cases"][case.id] = _run_case(case, inputs, folder / "out" / str(index))
    for name, scenario in SCENARIOS.items():
        (folder / name).mkdir()
        start = time.perf_counter()
        try:
            scenario(folder / name, inputs)
            error = None
        except BaseException:
            error = traceback.format_exc()[-4000:]
        results["scenarios"][name] = {"error": error, "seconds": time.perf_counter() - start}
    tfds = Path(os.environ.get("TFDS_DATA_DIR", folder / "tfds"))
    results["tfds_left"] = [str(p) for p in tfds.rglob("*")] if tfds.exists() else []
    (folder / "results.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    _drive(Path(sys.argv[1]))
