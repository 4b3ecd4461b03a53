"""Shared test helpers: run a script the way a user does, in its own process."""

from __future__ import annotations

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
