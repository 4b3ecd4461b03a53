"""scripts/train.py end to end: outputs, sidecar, resume after a kill, refusal to overwrite its input."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from tests.conftest import REPO, run_script
from tfcompress import data, training


@pytest.mark.slow
def test_train_writes_model_and_sidecar_that_agree(tmp_path):
    output = tmp_path / "lenet5.keras"
    run_script("train", "--model=lenet5", "--epochs=2", "--train_limit=4096", "--lr=0.05", f"--output={output}")
    sidecar = json.loads((tmp_path / "lenet5.keras.json").read_text())
    assert sidecar["params"] == 431_080
    assert sidecar["test_accuracy"] > 0.6  # 10 classes: chance is 0.1
    assert len(sidecar["history"]["loss"]) == 2 and sidecar["history"]["loss"][1] < sidecar["history"]["loss"][0]
    assert not (tmp_path / "lenet5.keras.ckpt").exists()
    model = keras.models.load_model(output)
    accuracy = training.evaluate(model, data.load("fashion_mnist", "test", batch_size=1000))["accuracy"]
    assert abs(accuracy - sidecar["test_accuracy"]) < 1e-6


@pytest.mark.slow
def test_refuses_to_overwrite_its_input_and_changes_nothing(tmp_path):
    source = tmp_path / "in.keras"
    keras.Model.save(__import__("tfcompress").zoo.lenet5(), source)
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    process = run_script("train", f"--init_model={source}", "--epochs=1", f"--output={source}", check=False)
    assert process.returncode != 0
    assert "same file as the input" in process.stderr
    assert hashlib.sha256(source.read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.keras"]


@pytest.mark.slow
def test_unknown_model_fails_cleanly_and_writes_nothing(tmp_path):
    process = run_script("train", "--model=resnet19", f"--output={tmp_path / 'x.keras'}", check=False)
    assert process.returncode != 0
    assert "6n+2" in process.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_resume_after_kill_continues_from_the_checkpoint(tmp_path):
    output = tmp_path / "m.keras"
    args = ["--model=lenet_300_100", "--epochs=12", "--train_limit=512", "--batch_size=128", f"--output={output}"]
    metadata = tmp_path / "m.keras.ckpt" / "training_metadata.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, str(REPO / "scripts/train.py"), *args], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if metadata.exists() and json.loads(metadata.read_text() or "{}").get("epoch", 0) >= 3:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not output.exists(), "killed before finishing: no final model may exist"

    refused = run_script("train", *args, check=False)
    assert refused.returncode != 0 and "--resume" in refused.stderr

    run_script("train", *args, "--resume")
    sidecar = json.loads((tmp_path / "m.keras.json").read_text())
    resumed = sidecar["resumed_from_epoch"]
    assert 3 <= resumed < 12
    assert len(sidecar["history"]["loss"]) == 12 - resumed
    weights = keras.models.load_model(output).get_weights()
    assert all(np.all(np.isfinite(w)) for w in weights)
