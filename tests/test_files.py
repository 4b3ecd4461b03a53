"""Outputs are written atomically and never over an input."""

import json

import pytest

from tfcompress import files, zoo


def test_output_equal_to_input_is_refused(tmp_path):
    source = tmp_path / "model.keras"
    source.write_bytes(b"original")
    with pytest.raises(files.OutputPathError, match="same file as the input"):
        files.check_output(tmp_path / "." / "model.keras", inputs=[source])
    assert source.read_bytes() == b"original"


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path):
    target = tmp_path / "report.json"
    files.write_json(target, {"version": 1})
    with pytest.raises(RuntimeError), files.atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("interrupted")
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_save_model_drops_optimizer_state(tmp_path):
    import keras

    model = zoo.lenet_300_100()
    model.compile(optimizer=keras.optimizers.SGD(momentum=0.9), loss="mse")
    model.optimizer.build(model.trainable_variables)
    path = files.save_model(model, tmp_path / "m.keras")
    # the weights alone are 266,610 float32 = 1.07 MB; momentum would double it
    assert path.stat().st_size < 1.2e6
    reloaded = keras.models.load_model(path)
    assert reloaded.count_params() == model.count_params()


def test_an_unwritable_output_is_refused_before_any_work(tmp_path):
    locked = tmp_path / "file_not_folder"
    locked.write_text("x")
    with pytest.raises(files.OutputPathError, match="cannot write output"):
        files.check_output(locked / "model.keras")  # its folder would be a file
