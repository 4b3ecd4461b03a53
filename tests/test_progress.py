"""Progress bars (tfcompress.progress): drawn where someone watches, silent under CI, never changing a result."""

from __future__ import annotations

import io
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfcompress import latency, progress, runtime


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def environment(monkeypatch):
    """No TFC_PROGRESS and no CI unless a test sets them (CI runs the suite with CI=true)."""
    monkeypatch.delenv(progress.ENV_VAR, raising=False)
    monkeypatch.delenv("CI", raising=False)
    return monkeypatch


def _count(stream: io.StringIO, desc: str, done: int, total: int) -> bool:
    return re.search(rf"{re.escape(desc)}:.*\b{done}/{total}\b", stream.getvalue()) is not None


def test_forced_on_a_bar_shows_its_description_and_count(environment):
    environment.setenv(progress.ENV_VAR, "1")
    stream = io.StringIO()  # not a terminal: TFC_PROGRESS=1 draws anyway
    with progress.bar(3, "LiteRT evaluation", unit="batch", file=stream) as bar:
        for _ in range(3):
            bar.update(1)
    assert bar.shown and bar.n == 3
    assert _count(stream, "LiteRT evaluation", 3, 3)
    assert "batch" in stream.getvalue()


def test_a_terminal_gets_a_bar_unless_ci_or_tfc_progress_0(environment):
    terminal = Terminal()
    assert list(progress.iterate(range(4), "latency table", file=terminal)) == [0, 1, 2, 3]
    assert _count(terminal, "latency table", 4, 4)

    for variable, value in (("CI", "1"), (progress.ENV_VAR, "0")):
        environment.setenv(variable, value)
        quiet = Terminal()
        assert list(progress.iterate(range(4), "latency table", file=quiet)) == [0, 1, 2, 3]
        assert quiet.getvalue() == ""
        environment.delenv(variable)


def test_silent_when_not_a_terminal_under_ci_or_turned_off(environment, capsys):
    with progress.bar(2, "not a terminal") as bar:  # pytest's captured stderr is no terminal
        bar.update(2)
    environment.setenv("CI", "1")
    with progress.bar(2, "under CI", file=Terminal()) as bar:
        bar.update(2)
    environment.setenv(progress.ENV_VAR, "1")
    off = io.StringIO()
    with progress.bar(2, "turned off by the caller", enable=False, file=off) as bar:
        bar.update(2)
    assert not bar.shown and bar.n == 2 and off.getvalue() == ""
    assert capsys.readouterr().err == ""


def test_tfc_progress_takes_only_on_or_off(environment):
    environment.setenv(progress.ENV_VAR, "maybe")
    with pytest.raises(ValueError, match="TFC_PROGRESS must be 1"):
        progress.enabled()


def test_lines_printed_around_bars_arrive_whole(environment, capsys):
    environment.setenv(progress.ENV_VAR, "1")
    lines = []
    say = progress.around_bars(lines.append)
    for item in progress.iterate(["a", "b"], "stages"):
        say(f"stage {item}")
    assert lines == ["stage a", "stage b"]
    assert "stages" in capsys.readouterr().err
    progress.around_bars(None)("dropped")  # None: no callback, nothing to print


@pytest.fixture(scope="module")
def lenet_tflite(tmp_path_factory):
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    path = tmp_path_factory.mktemp("progress") / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


def _dataset(examples: int = 50, batch: int = 8) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    images = rng.random((examples, 8, 8, 1), dtype=np.float32)
    labels = rng.integers(0, 3, examples)
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch)


def test_evaluate_tflite_is_the_same_with_and_without_the_bar(environment, capsys, lenet_tflite):
    environment.setenv("CI", "1")
    quiet = runtime.evaluate_tflite(lenet_tflite, _dataset())
    assert capsys.readouterr().err == ""
    environment.setenv(progress.ENV_VAR, "1")
    shown = runtime.evaluate_tflite(lenet_tflite, _dataset())
    drawn = capsys.readouterr().err
    assert shown == quiet and quiet["examples"] == 50
    assert re.search(r"LiteRT evaluation:.*\b7/7\b", drawn), drawn  # 50 images in batches of 8
    limited = runtime.evaluate_tflite(lenet_tflite, _dataset(), limit=20)
    assert limited["examples"] == 20
    assert re.search(r"LiteRT evaluation:.*\b3/3\b", capsys.readouterr().err)  # the limit leaves 3 batches
    assert runtime.evaluate_tflite(lenet_tflite, _dataset(), progress=False) == quiet
    assert capsys.readouterr().err == ""


def test_side_by_side_counts_every_model_of_every_pass(environment, capsys, lenet_tflite):
    class Scripted(latency.Device):
        name = "scripted"

        def measure(self, models, *, threads, runs, warmup):
            return [latency.LatencyResult.from_times([1.0] * runs, runtime="scripted", model_path=lenet_tflite,
                                                     threads=threads, warmup=warmup) for _ in models]

        def fingerprint(self, threads):
            return {}

    environment.setenv(progress.ENV_VAR, "1")
    assert Scripted().side_by_side([lenet_tflite] * 2, threads=1, runs=2, passes=3) == [1.0, 1.0]
    assert re.search(r"latency side by side on scripted:.*\b6/6\b", capsys.readouterr().err)
    results = Scripted().measure_in_batches([lenet_tflite] * 5, threads=1, runs=2, warmup=0, batch_size=2,
                                            desc="candidates")
    assert len(results) == 5
    assert re.search(r"candidates:.*\b5/5\b", capsys.readouterr().err)
