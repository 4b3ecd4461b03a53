"""Devices: where a ``.tflite`` model is timed, named the same way in every script's ``--device`` flag.

``litert``                      the LiteRT interpreter in this process (XNNPACK).
``litert_benchmark``            the ``litert-benchmark`` command of ai-edge-litert, on this machine.
``binary:PATH``                 TFLite's C++ ``benchmark_model`` at PATH (``binary``: ``$TFCOMPRESS_BENCHMARK_MODEL``).
``ssh://[user@]host[:port]``    a remote device (a Raspberry Pi) over SSH; the runner on the far side is a query
                                option: ``?runner=python`` (default: Python + ai-edge-litert there),
                                ``?runner=litert_benchmark`` or ``?runner=binary:/home/pi/benchmark_model``;
                                ``&python=/usr/bin/python3``, ``&config=~/.ssh/config_for_pi`` (``ssh -F``).

A device measures a batch of models at once (a remote one copies them in one transfer) and describes itself
with a **fingerprint**: what a latency depends on (CPU model, ISA features, cores, runtime and its version,
threads), so that a latency table measured on one device is never silently used for another.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np

from tfcompress.latency.binary import run_benchmark_model
from tfcompress.latency.device import Device
from tfcompress.latency.host import describe_host
from tfcompress.latency.interpreter import litert_version, run_interpreter
from tfcompress.latency.litert_benchmark import run_litert_benchmark
from tfcompress.latency.result import LatencyResult
from tfcompress.latency.validation import check_counts, resolve_binary

DEVICE_HELP = (
    "Where to measure: litert (LiteRT interpreter in this process), litert_benchmark, binary:PATH "
    "(benchmark_model), or ssh://user@host[:port][?runner=python|litert_benchmark|binary:PATH] for a remote device."
)

class LocalDevice(Device):
    """A runner of :mod:`tfcompress.latency` on this machine."""

    def __init__(self, runner: str = "litert", binary: str | os.PathLike | None = None):
        if runner not in ("litert", "litert_benchmark", "binary"):
            raise ValueError(f"unknown local runner {runner!r}; choose litert, litert_benchmark or binary:PATH")
        self.runner = runner
        self.binary = resolve_binary(binary) if runner == "binary" else None
        self.name = f"binary:{self.binary}" if self.binary else runner

    def measure(self, models: Sequence[Path], *, threads: int, runs: int, warmup: int) -> list[LatencyResult]:
        check_counts(threads, runs, warmup)
        if self.runner == "litert":
            return [run_interpreter(Path(m), threads=threads, runs=runs, warmup=warmup) for m in models]
        if self.runner == "litert_benchmark":
            return [run_litert_benchmark(Path(m), threads=threads, runs=runs, warmup=warmup) for m in models]
        return [run_benchmark_model(Path(m), threads=threads, runs=runs, warmup=warmup, binary=self.binary)
                for m in models]

    def fingerprint(self, threads: int) -> dict[str, Any]:
        if self.binary is not None:
            runtime, version = "benchmark_model", file_digest(self.binary)
        else:
            runtime, version = f"litert-{'interpreter' if self.runner == 'litert' else 'benchmark'}", litert_version()
        return {**describe_host(), "runtime": runtime, "runtime_version": version, "threads": threads,
                "device": self.name}


def file_digest(path: str | os.PathLike) -> str:
    """A short SHA-256 of a file: the version of a runtime binary that prints none."""
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def open_device(spec: str | Device) -> Device:
    """The device a ``--device`` string names (see the module docstring); a Device is returned as it is.

    Raises:
        ValueError: an unknown device, or a malformed ``ssh://`` address (the message shows the forms).
        FileNotFoundError, PermissionError: ``binary:PATH`` names no executable file.
    """
    if isinstance(spec, Device):
        return spec
    text = str(spec).strip()
    if text in ("litert", "litert_benchmark"):
        return LocalDevice(text)
    if text == "binary" or text.startswith("binary:"):
        return LocalDevice("binary", text.partition(":")[2] or None)
    if text.startswith("ssh://"):
        from tfcompress.latency.ssh import SshDevice  # the SSH client is only needed for remote devices

        return SshDevice.from_url(text)
    raise ValueError(f"unknown device {text!r}. {DEVICE_HELP}")


def measure_model(
    model: keras.Model,
    device: str | Device,
    precision: str = "float32",
    *,
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    representative_data: Any = None,
) -> LatencyResult:
    """Exports ``model`` (compression layers stripped) at ``precision`` and measures it on ``device``.

    int8 calibrates on ``representative_data`` (default: 8 random inputs: latency does not depend on the
    values).
    """
    from tfcompress.export import to_tflite  # export is only needed when a Keras model is measured

    calibration = {}
    if precision == "int8":
        samples = representative_data
        if samples is None:
            samples = np.random.default_rng(0).random((8, *model.input_shape[1:]), np.float32)
        calibration = {"representative_data": samples, "num_calibration_samples": 8}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.tflite"
        to_tflite(model, precision, output=path, **calibration)
        result, = open_device(device).measure([path], threads=threads, runs=runs, warmup=warmup)
    return result
