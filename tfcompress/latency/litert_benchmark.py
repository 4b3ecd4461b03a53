"""Runner ``litert_benchmark``: the ``litert-benchmark`` command that ships with ai-edge-litert (≥ 2.x).

It is a Python program (``ai_edge_litert.tools.benchmark_litert_model``) that runs the model through LiteRT's
``CompiledModel`` API (CPU accelerator = XNNPACK), not the ``Interpreter``, so it is a second, independent
runtime path. Invocation (its ``--help``; it does *not* take benchmark_model's ``--graph``)::

    litert-benchmark --model=M.tflite --num_runs=N --warmup_runs=W --num_threads=T --result_json=OUT.json

It prints a ``BENCHMARK RESULTS`` block on stdout (``Inference (avg):  0.09 ms (10 runs)``, ``(min)``,
``(max)``, ``(median)``, ``(std)``, ``(p5)``, ``(p95)``) and writes the same numbers to ``--result_json`` under
``"latency"`` (``avg_ms``, ``median_ms``, ``num_runs``, ...). Both are rounded to 0.01 ms, so on models faster
than ~1 ms its resolution is coarse, and it reports no per-run times (so no p90). Its std is the sample
standard deviation (ddof=1). It exits 0 even when it cannot write the JSON, and dies on a signal (SIGSEGV) on
some malformed models that the interpreter rejects cleanly.

When the command is missing, fails, or prints nothing readable, this runner measures with the interpreter
instead and says why in ``LatencyResult.fallback_reason``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import logging

from tfcompress.latency.interpreter import litert_version, run_interpreter
from tfcompress.latency.process import exit_description, output_tail
from tfcompress.latency.result import BenchmarkError, LatencyResult

RUNTIME = "litert-benchmark"
MODULE = "ai_edge_litert.tools.benchmark_litert_model"
RESOLUTION_MS = 0.01  # the tool rounds every time to two decimals of a millisecond

_STDOUT_LINE = re.compile(r"^Inference \((avg|min|max|median|std|p5|p95)\):\s*([-+\d.eE]+) ms(?: \((\d+) runs\))?",
                          re.MULTILINE)


def find_command() -> list[str] | None:
    """How to start litert-benchmark: the console script next to this Python or on PATH, else
    ``python -m ai_edge_litert.tools.benchmark_litert_model``; None if ai-edge-litert does not ship it."""
    search_path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    script = shutil.which("litert-benchmark", path=search_path)
    if script:
        return [script]
    try:
        if importlib.util.find_spec(MODULE) is not None:
            return [sys.executable, "-m", MODULE]
    except ModuleNotFoundError:
        pass
    return None


def run_litert_benchmark(
    model_path: Path,
    *,
    threads: int,
    runs: int,
    warmup: int,
    command: Sequence[str] | None = None,
    timeout_s: float | None = 3600,
) -> LatencyResult:
    """Measures ``model_path`` with litert-benchmark; falls back to the interpreter runner if that fails.

    Args:
        command: the program (and leading arguments) to run instead of the installed ``litert-benchmark``.
        timeout_s: give up on the tool after this long (then fall back).

    Raises:
        BenchmarkError: both litert-benchmark and the interpreter failed (the message gives both reasons).
    """
    command = list(command) if command is not None else find_command()
    try:
        if not command:
            raise BenchmarkError("litert-benchmark is not installed (ai-edge-litert ≥ 2.0 ships it)")
        return _run(command, model_path, threads=threads, runs=runs, warmup=warmup, timeout_s=timeout_s)
    except BenchmarkError as error:
        reason = str(error)
    logging.warning("litert-benchmark failed on %s, measuring with the LiteRT interpreter instead: %s",
                    model_path, reason)
    try:
        result = run_interpreter(model_path, threads=threads, runs=runs, warmup=warmup)
    except BenchmarkError as error:
        raise BenchmarkError(f"{reason}; and the interpreter fallback failed too: {error}") from error
    result.fallback_reason = reason
    result.details["requested_runtime"] = RUNTIME
    return result


def _run(
    command: list[str], model_path: Path, *, threads: int, runs: int, warmup: int, timeout_s: float | None
) -> LatencyResult:
    with tempfile.TemporaryDirectory(prefix="tfc-litert-benchmark-") as tmp:
        result_json = Path(tmp) / "result.json"
        argv = [
            *command,
            f"--model={model_path}",
            f"--num_runs={runs}",
            f"--warmup_runs={warmup}",
            f"--num_threads={threads}",
            f"--result_json={result_json}",
        ]
        logging.info("running %s", " ".join(argv))
        try:
            process = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
        except OSError as error:  # missing, not executable, or built for another machine
            raise BenchmarkError(f"cannot start {command[0]!r}: {error.strerror or error}") from error
        except subprocess.TimeoutExpired as error:
            raise BenchmarkError(f"litert-benchmark did not finish within {timeout_s} s") from error
        output = f"{process.stdout}\n{process.stderr}"
        if process.returncode != 0:
            raise BenchmarkError(
                f"litert-benchmark {exit_description(process.returncode)}: {output_tail(output)}"
            )
        report = _read_report(result_json)
    latency = _latency_from_json(report) if report else parse_stdout(process.stdout)
    if latency is None:
        raise BenchmarkError(f"litert-benchmark printed no timings I can read: {output_tail(output)}")

    reported_runs = int(latency.get("num_runs") or runs)
    if reported_runs != runs:
        logging.warning("litert-benchmark reports %d runs, %d were asked for", reported_runs, runs)
    details: dict[str, Any] = {
        "command": argv,
        "resolution_ms": RESOLUTION_MS,
        "std_ddof": 1,
        **{key: latency[key] for key in ("p5_ms", "p95_ms", "init_ms", "warmup_first_ms", "warmup_avg_ms")
           if latency.get(key) is not None},
    }
    if report:
        details.update({key: report[key] for key in ("accelerators", "signature", "fully_accelerated")
                        if key in report})
    return LatencyResult(
        runtime=RUNTIME,
        model_path=str(model_path),
        model_bytes=model_path.stat().st_size,
        threads=threads,
        runs=reported_runs,
        warmup=int(latency.get("num_warmup_runs", warmup)),
        mean_ms=float(latency["avg_ms"]),
        median_ms=_optional_float(latency.get("median_ms")),
        min_ms=_optional_float(latency.get("min_ms")),
        max_ms=_optional_float(latency.get("max_ms")),
        std_ms=_optional_float(latency.get("std_ms")),
        runtime_version=litert_version(),
        details=details,
    )


def _read_report(path: Path) -> dict[str, Any] | None:
    # The tool only logs an error (and exits 0) when it cannot write the file; stdout is then the fallback.
    try:
        report = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return report if isinstance(report, dict) else None


def _latency_from_json(report: dict[str, Any]) -> dict[str, Any] | None:
    latency = report.get("latency")
    if not isinstance(latency, dict) or "avg_ms" not in latency:
        return None
    return latency


def parse_stdout(stdout: str) -> dict[str, Any] | None:
    """The ``Inference (...)`` lines of litert-benchmark's stdout as the JSON's ``latency`` keys, or None.

    Used when the tool could not write ``--result_json`` (it still exits 0 then).
    """
    latency: dict[str, Any] = {}
    for match in _STDOUT_LINE.finditer(stdout):
        latency[f"{match[1]}_ms"] = float(match[2])
        if match[3]:
            latency["num_runs"] = int(match[3])
    return latency if "avg_ms" in latency else None


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)
