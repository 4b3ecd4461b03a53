"""benchmarks/baselines.py (tfcompress vs tfmot): the weight transfer to tf_keras, the equal-accuracy verdict, and
the one-line error without tfmot.

Every test runs the benchmark's code in a fresh interpreter: its absl flags would clash with the programs other
tests load in this process, and tfmot may only ever be imported in a process of its own.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_json_program

BENCHMARK = REPO / "benchmarks" / "baselines.py"
WORKER = REPO / "benchmarks" / "baselines_tfmot.py"
LOAD = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("baselines", {str(BENCHMARK)!r})
baselines = importlib.util.module_from_spec(spec)
sys.modules["baselines"] = baselines
spec.loader.exec_module(baselines)
"""
TFMOT_MISSING = [m for m in ("tensorflow_model_optimization", "tf_keras") if importlib.util.find_spec(m) is None]
needs_tfmot = pytest.mark.skipif(bool(TFMOT_MISSING), reason=f"{' and '.join(TFMOT_MISSING)} not installed: the "
                                 "tfmot + tf-keras (make baselines) are needed for the tf_keras rebuild")


def _row(model: str, side: str, variant: str, latency_ms: float, gzip_bytes: int, drop_points: float,
         equal_budget: bool = True) -> dict:
    return {"model": model, "side": side, "variant": variant, "precision": "float32", "latency_ms": latency_ms,
            "gzip_bytes": gzip_bytes, "drop_points": drop_points, "equal_budget": equal_budget}


def _verdicts(rows: list[dict], max_drop: float = 1.0) -> dict[tuple[str, str], dict]:
    source = LOAD + f"print(json.dumps(baselines.equal_accuracy_verdicts({rows!r}, {max_drop!r})))"
    verdicts = run_json_program(source, timeout=120)
    return {(verdict["model"], verdict["cost"]): verdict for verdict in verdicts}


def test_verdict_takes_the_cheapest_variant_within_the_accuracy_limit_on_each_side():
    rows = [
        _row("r20", "reference", "original", 3.0, 1000, 0.0),
        _row("r20", "tfcompress", "L1 50 %", 1.5, 480, 0.8),
        _row("r20", "tfcompress", "L1 25 %", 0.7, 250, 2.5),  # fastest and smallest, but 2.5 points lost
        _row("r20", "tfcompress", "budget", 0.5, 200, 0.5, equal_budget=False),  # other budget: not counted
        _row("r20", "tfmot", "P80 int8", 2.9, 120, 0.9),
        _row("r20", "tfmot", "P90 int8", 2.8, 90, 1.6),
    ]
    verdicts = _verdicts(rows)
    latency = verdicts["r20", "latency_ms"]
    assert latency["winner"] == "tfcompress"
    assert latency["factor"] == pytest.approx(2.9 / 1.5, abs=0.01)
    assert latency["tfcompress"]["variant"] == "L1 50 %" and latency["tfmot"]["variant"] == "P80 int8"
    size = verdicts["r20", "gzip_bytes"]
    assert size["winner"] == "tfmot"
    assert size["factor"] == pytest.approx(480 / 120, abs=0.01)
    assert "**tfmot** by 4.00×" in size["text"]


def test_verdict_calls_close_latencies_a_tie_and_handles_a_side_with_nothing_accurate_enough():
    rows = [
        _row("lenet", "tfcompress", "PTQ int8", 1.00, 100, 0.1),
        _row("lenet", "tfmot", "QAT int8", 1.03, 100, 0.2),  # 3 % slower: within the noise
        _row("cnn", "tfcompress", "EC2T", 2.0, 50, 0.3),
        _row("cnn", "tfmot", "P90", 1.0, 10, 3.0),
    ]
    verdicts = _verdicts(rows)
    assert verdicts["lenet", "latency_ms"]["winner"] is None and "a tie" in verdicts["lenet", "latency_ms"]["text"]
    assert verdicts["lenet", "gzip_bytes"]["winner"] is None  # equal sizes
    cnn = verdicts["cnn", "latency_ms"]
    assert cnn["winner"] == "tfcompress" and cnn["factor"] is None and cnn["tfmot"] is None
    assert "only tfcompress" in cnn["text"]
    # with a looser limit the tfmot variant counts and wins
    assert _verdicts(rows, max_drop=3.0)["cnn", "latency_ms"]["winner"] == "tfmot"


def test_without_tfmot_the_benchmark_exits_with_one_line_saying_how_to_install_it(tmp_path):
    """tfmot and tf_keras hidden from the interpreter (an import hook): the program stops before any work."""
    source = f"""
import importlib.abc, runpy, sys
class Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow_model_optimization", "tf_keras"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Hide())
sys.argv = ["benchmarks/baselines.py", "--work_dir={tmp_path / 'work'}", "--output_dir={tmp_path / 'out'}"]
runpy.run_path({str(BENCHMARK)!r}, run_name="__main__")
"""
    process = subprocess.run([sys.executable, "-c", source], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert process.returncode == 1
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert "tensorflow_model_optimization and tf_keras not installed" in lines[0]
    assert "make baselines" in lines[0] and "pip install --no-deps tensorflow-model-optimization" in lines[0]
    assert not (tmp_path / "work").exists() and not (tmp_path / "out").exists()


def _transfer_package(folder: Path, model_source: str) -> None:
    """Writes architecture.json, weights.npz and parity.npz of a Keras 3 model (random weights, BatchNorm
    statistics far from their initial values so that a mismatch would show)."""
    run_json_program(LOAD + f"""
import numpy as np, keras
from pathlib import Path
from tfcompress import zoo
keras.utils.set_random_seed(0)
model = {model_source}
rng = np.random.default_rng(0)
for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
        gamma, beta, mean, variance = layer.get_weights()
        layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.5, beta.shape),
                           rng.normal(0, 0.5, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
images = rng.normal(size=(8, *model.input_shape[1:])).astype("float32")
baselines.describe_architecture(model, Path({str(folder)!r}), images)
print(json.dumps({{"layers": len(model.layers)}}))
""", timeout=300)


def _run_worker(folder: Path) -> tuple[subprocess.CompletedProcess, dict]:
    job = {"folder": str(folder / "tfmot"), "architecture": str(folder / "architecture.json"),
           "weights": str(folder / "weights.npz"), "parity": str(folder / "parity.npz"), "parity_tolerance": 1e-4,
           "parity_only": True}
    (folder / "job.json").write_text(json.dumps(job))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.run([sys.executable, str(WORKER), f"--job={folder / 'job.json'}"], capture_output=True,
                             text=True, env=env, cwd=REPO, timeout=300)
    assert (folder / "tfmot" / "parity.json").is_file(), process.stderr[-3000:]
    return process, json.loads((folder / "tfmot" / "parity.json").read_text())


@needs_tfmot
@pytest.mark.parametrize("model_source", [
    "zoo.resnet_cifar(depth=8, input_shape=(16, 16, 1), num_classes=10)",  # conv, BN, ReLU, Add, projection, GAP
    "zoo.lenet5()",  # conv with bias, max-pool, flatten, dense with ReLU
])
def test_tf_keras_rebuild_has_the_same_weights_and_outputs(tmp_path, model_source):
    _transfer_package(tmp_path, model_source)
    process, parity = _run_worker(tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    assert parity["passed"] and parity["max_abs_diff"] <= 1e-4
    assert parity["max_abs_output"] > 0.1  # the logits are not all ~0: the comparison means something
    assert parity["versions"]["tf_keras"].startswith("2.")


@needs_tfmot
def test_tf_keras_rebuild_with_a_wrong_weight_is_refused(tmp_path):
    import numpy as np

    _transfer_package(tmp_path, "zoo.lenet5()")
    with np.load(tmp_path / "weights.npz") as archive:
        weights = {key: archive[key] for key in archive.files}
    architecture = json.loads((tmp_path / "architecture.json").read_text())
    conv2 = next(layer for layer in architecture["layers"] if layer["name"] == "conv2")
    weights[conv2["weights"][0]] = weights[conv2["weights"][0]] * 1.05  # one kernel 5 % off
    np.savez(tmp_path / "weights.npz", **weights)
    process, parity = _run_worker(tmp_path)
    assert process.returncode != 0
    assert not parity["passed"] and parity["max_abs_diff"] > 1e-4
    assert "weights were not transferred faithfully" in process.stderr
