"""Runner ``litert``: the LiteRT Python interpreter, in this process, timing each ``invoke()``.

``ai_edge_litert.interpreter.Interpreter`` applies the XNNPACK delegate by default (it logs "Created TensorFlow
Lite XNNPACK delegate for CPU"), as recent ``benchmark_model`` builds do; the thesis's TF 1.13 binary predates
XNNPACK, so old and new numbers differ by runtime, not only by model. The inputs are filled once with seeded
random data; kernel time does not depend on values for the float and int8 CNNs measured here.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress.latency import remote_runner
from tfcompress.latency.result import BenchmarkError, LatencyResult

RUNTIME = "litert-interpreter"


def run_interpreter(
    model_path: Path, *, threads: int, runs: int, warmup: int, seed: int = 0
) -> LatencyResult:
    """Times ``runs`` invocations of ``model_path`` after ``warmup`` untimed ones, with ``threads`` threads.

    Raises:
        BenchmarkError: LiteRT cannot load, allocate or run the model (e.g. a truncated file, an op it lacks).
    """
    from tfcompress.runtime import open_interpreter  # imported here: only this runner needs LiteRT

    try:
        interpreter, kernels = open_interpreter(Path(model_path).read_bytes(), threads)
    except (ValueError, RuntimeError) as error:
        raise BenchmarkError(f"LiteRT cannot load {model_path}: {error}") from error

    inputs = interpreter.get_input_details()
    try:
        times_ms = remote_runner.time_invocations(interpreter, runs, warmup, seed)
    except ValueError as error:  # an input dtype no CNN has
        raise BenchmarkError(str(error)) from None
    except RuntimeError as error:
        raise BenchmarkError(f"LiteRT failed to run {model_path}: {error}") from error

    return LatencyResult.from_times(
        times_ms,
        runtime=RUNTIME,
        model_path=model_path,
        threads=threads,
        warmup=warmup,
        runtime_version=litert_version(),
        details={
            "inputs": [
                {"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
                for d in inputs
            ],
            "seed": seed,
            "kernels": kernels,  # "xnnpack", or "builtin" when XNNPACK cannot run the model
        },
    )


def random_input(shape: Any, dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Deterministic random data of ``shape`` and ``dtype``: floats in [0, 1) (images in unit range),
    integers over the whole range of 8/16-bit types (quantized inputs), small non-negative ints otherwise
    (indices), booleans at random. One definition with the remote runner's, so remote and local runs time the
    same inputs.

    Raises:
        BenchmarkError: a dtype no CNN input has (strings, ...).
    """
    try:
        return remote_runner.random_input(shape, dtype, rng)
    except ValueError as error:
        raise BenchmarkError(str(error)) from None


def litert_version() -> str | None:
    """The installed ai-edge-litert version, or None."""
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        return None
