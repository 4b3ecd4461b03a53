"""Runner ``binary``: TensorFlow Lite's C++ ``benchmark_model`` tool, an executable given by path.

This is how the thesis measured on the Raspberry Pi (REFERENCE §1.3, §1.6)::

    benchmark_model --graph=M.tflite --num_threads=T --num_runs=N --warmup_runs=W --min_secs=0 --warmup_min_secs=0

``--min_secs=0 --warmup_min_secs=0`` make the run counts exact: by default the tool keeps running until one
second (warm-up: half a second) has passed. It logs, in microseconds, on stderr in 2.x (stdout in some 1.x
builds), one statistics line per phase after a ``Running benchmark for ...`` header, then a summary line.
The formats this parser reads (see tests/test_latency.py for the real samples)::

    1.12   Running benchmark for 50 iterations
           count=50 first=137789 curr=137254 min=137079 max=143416 avg=137722 std=896
           Average inference timings in us: Warmup: 146161, Init: 4452, no stats: 137722
    1.14+  Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
    2.x    Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding ...
           count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798
           Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, ...
    later  count=50 first=... min=105416 max=106528 avg=105784 std=260 p5=105485 median=105718 p95=106281

Lines may carry a logger prefix (``INFO: ``, Android's ``I tflite  : ``); large values use scientific
notation. With ``--enable_op_profiling`` a profiler block adds ``Timings (microseconds): count=...`` lines:
those are not the timed runs and are skipped.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import logging

from tfcompress.latency.process import exit_description, output_tail
from tfcompress.latency.result import BenchmarkError, LatencyResult
from tfcompress.latency.validation import resolve_binary

RUNTIME = "benchmark_model"

_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_RUN_HEADER = re.compile(r"Running benchmark for")
# A statistics line: "count=N" followed by key=value pairs; "Timings (microseconds): count=" (op profiler)
# and "Memory (bytes): count=" are excluded by requiring that nothing but a log prefix precedes "count=".
_STATS_LINE = re.compile(r"^(?P<prefix>[^\n]*?)count=(?P<count>\d+)(?P<rest>[^\n]*)$", re.MULTILINE)
_KEY_VALUE = re.compile(rf"(\w+)=({_NUMBER})")
_SUMMARY = re.compile(r"(?:Average )?[Ii]nference timings in us:(?P<rest>[^\n]*)")
_SUMMARY_ITEM = re.compile(rf"([A-Za-z][A-Za-z ()]*?):\s*({_NUMBER})")


@dataclasses.dataclass
class BenchmarkModelOutput:
    """What benchmark_model printed about the timed runs, in microseconds (None when not printed)."""

    count: int | None = None
    avg_us: float | None = None
    min_us: float | None = None
    max_us: float | None = None
    std_us: float | None = None
    median_us: float | None = None
    p5_us: float | None = None
    p95_us: float | None = None
    first_us: float | None = None
    init_us: float | None = None
    first_inference_us: float | None = None
    warmup_avg_us: float | None = None


def parse_benchmark_model_output(text: str) -> BenchmarkModelOutput:
    """Reads the timed-run statistics and the summary line out of benchmark_model's output (TF 1.12 – 2.x).

    Raises:
        BenchmarkError: no average inference time anywhere in ``text``.
    """
    parsed = BenchmarkModelOutput()
    stats = _timed_stats_line(text)
    if stats is not None:
        values = {key: float(value) for key, value in _KEY_VALUE.findall(stats)}
        parsed.count = int(values["count"])
        parsed.avg_us = values.get("avg")
        parsed.min_us = values.get("min")
        parsed.max_us = values.get("max")
        parsed.std_us = values.get("std")
        parsed.median_us = values.get("median", values.get("p50"))
        parsed.p5_us = values.get("p5")
        parsed.p95_us = values.get("p95")
        parsed.first_us = values.get("first")

    summaries = list(_SUMMARY.finditer(text))
    if summaries:
        items = {key.strip(): float(value) for key, value in _SUMMARY_ITEM.findall(summaries[-1]["rest"])}
        parsed.init_us = items.get("Init")
        parsed.first_inference_us = items.get("First inference")
        parsed.warmup_avg_us = items.get("Warmup (avg)", items.get("Warmup"))
        # 2.x: "Inference (avg)"; 1.14+: "Inference"; 1.12/1.13 without op profiling: "no stats".
        summary_avg = next((items[k] for k in ("Inference (avg)", "Inference", "no stats") if k in items), None)
        if parsed.avg_us is None:
            parsed.avg_us = summary_avg

    if parsed.avg_us is None:
        raise BenchmarkError(f"no inference timings in benchmark_model's output: {output_tail(text)}")
    return parsed


def _timed_stats_line(text: str) -> str | None:
    """The ``count=...`` line of the timed runs: the first one after the last ``Running benchmark for``
    header (the earlier header is the warm-up phase), or without headers the last one before the summary."""
    headers = list(_RUN_HEADER.finditer(text))
    if headers:
        start, end = headers[-1].end(), len(text)
    else:
        summary = _SUMMARY.search(text)
        start, end = 0, summary.start() if summary else len(text)
    candidates = [m for m in _STATS_LINE.finditer(text, start, end) if _is_log_prefix(m["prefix"])]
    if not candidates:
        return None
    chosen = candidates[0] if headers else candidates[-1]
    return f"count={chosen['count']}{chosen['rest']}"


def _is_log_prefix(prefix: str) -> bool:
    # Accept "", "INFO: ", "I tflite  : ", "07-14 13:14:56.520 22838 22838 I tflite  : ", "2017-... ] ";
    # reject the op profiler's "Timings (microseconds): " and "Memory (bytes): ".
    return "(" not in prefix


def run_benchmark_model(
    model_path: Path,
    *,
    threads: int,
    runs: int,
    warmup: int,
    binary: str | os.PathLike | None = None,
    extra_args: Sequence[str] = (),
    timeout_s: float | None = 3600,
) -> LatencyResult:
    """Runs the benchmark_model executable on ``model_path`` and parses what it prints.

    Args:
        binary: the executable; default ``$TFCOMPRESS_BENCHMARK_MODEL``.
        extra_args: more flags for the tool, e.g. ``["--use_xnnpack=true"]``.
        timeout_s: kill the tool after this long.

    Raises:
        ValueError, FileNotFoundError, PermissionError: no usable binary (see ``resolve_binary``).
        BenchmarkError: the tool failed, timed out, or printed no timings. There is no fallback: the binary
            is usually the target device's runtime, and host numbers must not stand in for it silently.
    """
    executable = resolve_binary(binary)
    argv = [
        str(executable),
        f"--graph={model_path}",
        f"--num_threads={threads}",
        f"--num_runs={runs}",
        f"--warmup_runs={warmup}",
        "--min_secs=0",
        "--warmup_min_secs=0",
        *extra_args,
    ]
    logging.info("running %s", " ".join(argv))
    try:
        process = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except OSError as error:  # e.g. ENOEXEC: a binary for another architecture
        raise BenchmarkError(f"cannot start {executable}: {error.strerror or error}") from error
    except subprocess.TimeoutExpired as error:
        raise BenchmarkError(f"{executable} did not finish within {timeout_s} s") from error
    # 2.x logs to stderr and some 1.x builds to stdout: read both.
    output = f"{process.stdout}\n{process.stderr}"
    if process.returncode != 0:
        raise BenchmarkError(f"{executable} {exit_description(process.returncode)}: {output_tail(output)}")
    return result_from_output(output, model_path, argv, threads=threads, runs=runs, warmup=warmup)


def result_from_output(
    output: str, model_path: Path, command: Sequence[str], *, threads: int, runs: int, warmup: int
) -> LatencyResult:
    """The :class:`LatencyResult` of what benchmark_model printed for ``model_path`` (run here or on a device).

    Raises:
        BenchmarkError: the output holds no timings.
    """
    parsed = parse_benchmark_model_output(output)
    reported_runs = parsed.count if parsed.count is not None else runs
    if parsed.count is None:
        logging.warning("benchmark_model printed no count= line; assuming the %d runs asked for", runs)
    elif parsed.count != runs:
        # Old builds ignore --min_secs or stop at --max_secs (150 s by default) on slow models.
        logging.warning("benchmark_model ran %d timed runs, %d were asked for", parsed.count, runs)
    details: dict[str, Any] = {"command": list(command), "std_ddof": 0}
    for key in ("p5", "p95", "init", "first_inference", "warmup_avg"):
        value = getattr(parsed, f"{key}_us")
        if value is not None:
            details[f"{key}_ms"] = value / 1000
    return LatencyResult(
        runtime=RUNTIME,
        model_path=str(model_path),
        model_bytes=model_path.stat().st_size,
        threads=threads,
        runs=reported_runs,
        warmup=warmup,
        mean_ms=parsed.avg_us / 1000,
        median_ms=_ms(parsed.median_us),
        min_ms=_ms(parsed.min_us),
        max_ms=_ms(parsed.max_us),
        std_ms=_ms(parsed.std_us),
        details=details,
    )


def _ms(microseconds: float | None) -> float | None:
    return None if microseconds is None else microseconds / 1000
