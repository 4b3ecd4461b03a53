"""Shared test helpers: run a script the way a user does, in its own process."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_script(name: str, *args: str, check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess:
    """Runs ``scripts/NAME.py ARGS`` with this interpreter; returns the completed process (text output)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    process = subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"{name}.py"), *args],
        capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO,
    )
    if check and process.returncode != 0:
        raise AssertionError(f"{name}.py failed ({process.returncode}):\n{process.stdout}\n{process.stderr}")
    return process


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test run, whichever xdist worker gets there first (the
    others wait on a lock and reuse it)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/, shared by the workers
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "built").exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            (folder / "built").touch()
    return folder


@pytest.fixture(scope="session")
def fashion_latency(tmp_path_factory):
    """A small residual net for 32×32 Fashion-MNIST (trained one short epoch, saved), its float32 latency table on
    ``litert`` (saved) and data splits: what the latency-aimed pruning tests share, built once per test run."""
    import types

    import keras

    from tests.test_latency_table import FAST, small_resnet
    from tfcompress import data, latency, training

    options = {"image_size": 32, "holdout_fraction": 0.1}
    train = data.load("fashion_mnist", "train", batch_size=64, limit=4096, seed=0, **options)
    holdout = data.load("fashion_mnist", "holdout", batch_size=256, limit=1024, **options)

    def build(folder: Path) -> None:
        keras.utils.set_random_seed(0)
        model = small_resnet("fashion", classes=10, shape=(32, 32, 1))
        training.compile_classifier(model, training.sgd(0.05, 64, "cosine"))
        model.fit(train, epochs=1, verbose=0)
        model.save(folder / "fashion.keras")
        latency.build_table(model, "litert", output=folder / "fashion.npz", precisions=("float32",), **FAST)

    folder = built_once(tmp_path_factory, "fashion_latency", build)
    return types.SimpleNamespace(model=keras.models.load_model(folder / "fashion.keras"),
                                 table=latency.Table.load(folder / "fashion.npz"), train=train, holdout=holdout,
                                 model_path=folder / "fashion.keras", table_path=folder / "fashion.npz")
