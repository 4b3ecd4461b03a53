"""Latency of ``.tflite`` models on the runtime that will run them, in one result schema.

    from tfcompress import latency
    result = latency.benchmark("model.tflite", runner="litert", threads=4, runs=50, warmup=5)
    result.median_ms, result.to_dict()

Devices (:mod:`tfcompress.latency.devices`) name where to measure in every script's ``--device`` flag —
``litert``, ``litert_benchmark``, ``binary:PATH``, ``ssh://user@host`` — and fingerprint themselves. Latency
tables (:class:`Table`, :func:`build_table`) predict a model's latency on a device from per-unit measurements.

Runners (``RUNNERS``; the local ways to time one model, used by the local devices):

``litert``            the LiteRT Python interpreter in this process (XNNPACK delegate), every run timed.
``litert_benchmark``  the ``litert-benchmark`` command of ai-edge-litert (LiteRT CompiledModel API); falls back to
                      ``litert`` and says why (``fallback_reason``) when it fails.
``binary``            TensorFlow Lite's C++ ``benchmark_model`` at a path (``binary=`` or
                      ``$TFCOMPRESS_BENCHMARK_MODEL``), run as the thesis ran it on the Raspberry Pi.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from typing import Any

from tfcompress.latency.binary import BenchmarkModelOutput, parse_benchmark_model_output, run_benchmark_model
from tfcompress.latency.build import build_table, load_or_build_table, parse_shard
from tfcompress.latency.device import Device
from tfcompress.latency.devices import DEVICE_HELP, LocalDevice, measure_model, open_device
from tfcompress.latency.host import describe_host
from tfcompress.latency.interpreter import run_interpreter
from tfcompress.latency.litert_benchmark import run_litert_benchmark
from tfcompress.latency.result import BenchmarkError, LatencyResult
from tfcompress.latency.table import Prediction, Table, TableError
from tfcompress.latency.validation import BINARY_ENV_VAR, check_counts, check_tflite, resolve_binary

__all__ = [
    "BINARY_ENV_VAR",
    "DEVICE_HELP",
    "RUNNERS",
    "BenchmarkError",
    "BenchmarkModelOutput",
    "Device",
    "LatencyResult",
    "LocalDevice",
    "Prediction",
    "Runner",
    "Table",
    "TableError",
    "benchmark",
    "build_table",
    "check_tflite",
    "describe_host",
    "load_or_build_table",
    "measure_model",
    "open_device",
    "parse_benchmark_model_output",
    "parse_shard",
    "register_runner",
    "resolve_binary",
    "run_benchmark_model",
    "run_interpreter",
    "run_litert_benchmark",
]

# A runner is called as runner(model_path: Path, *, threads: int, runs: int, warmup: int, **its_options) and
# returns a LatencyResult; the model path has already been checked to be a .tflite file.
Runner = Callable[..., LatencyResult]

RUNNERS: dict[str, Runner] = {
    "litert": run_interpreter,
    "litert_benchmark": run_litert_benchmark,
    "binary": run_benchmark_model,
}


def register_runner(name: str, runner: Runner, *, replace: bool = False) -> None:
    """Adds a runner under ``name`` (refuses to shadow an existing one unless ``replace``)."""
    if name in RUNNERS and not replace:
        raise ValueError(f"a runner named {name!r} already exists; pass replace=True to replace it")
    RUNNERS[name] = runner


def benchmark(
    tflite_path: str | os.PathLike,
    runner: str = "litert",
    threads: int = 1,
    runs: int = 50,
    warmup: int = 5,
    binary: str | os.PathLike | None = None,
    **options: Any,
) -> LatencyResult:
    """Measures the latency of a ``.tflite`` model.

    Args:
        tflite_path: the model.
        runner: a key of ``RUNNERS``: ``"litert"``, ``"litert_benchmark"`` or ``"binary"``.
        threads: CPU threads for the runtime.
        runs: timed inferences.
        warmup: untimed inferences before them.
        binary: the benchmark_model executable (runner ``"binary"`` only; default
            ``$TFCOMPRESS_BENCHMARK_MODEL``).
        **options: runner-specific options, e.g. ``seed`` (litert), ``command`` (litert_benchmark),
            ``extra_args`` / ``timeout_s`` (binary).

    Returns:
        A :class:`LatencyResult`.

    Raises:
        FileNotFoundError: the model (or the binary) does not exist.
        PermissionError: the binary is not executable.
        ValueError: not a .tflite file, an unknown runner, a bad count, or an option the runner does not take.
        BenchmarkError: the runtime failed to measure the model.
    """
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {sorted(RUNNERS)}")
    check_counts(threads, runs, warmup)
    model = check_tflite(tflite_path)
    if binary is not None:
        options["binary"] = binary
    run = RUNNERS[runner]
    accepted = _option_names(run)
    unknown = sorted(set(options) - accepted) if accepted is not None else []
    if unknown:
        raise ValueError(
            f"runner {runner!r} does not take {', '.join(unknown)}"
            + (f" (it takes {', '.join(sorted(accepted))})" if accepted else " (it takes no options)")
        )
    return run(model, threads=threads, runs=runs, warmup=warmup, **options)


def _option_names(runner: Runner) -> set[str] | None:
    """The keyword options a runner takes beyond threads/runs/warmup; None if it takes any (``**kwargs``)."""
    parameters = inspect.signature(runner).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY} - {"threads", "runs", "warmup"}
