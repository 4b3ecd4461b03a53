"""One result schema for every latency runner: :class:`LatencyResult`.

A runner that sees each run's time (the in-process interpreter) builds its result with
:meth:`LatencyResult.from_times`; a runner that only gets summary statistics from a tool (``litert-benchmark``,
``benchmark_model``) fills in what the tool printed and leaves the rest ``None``.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress.latency.host import describe_host

SCHEMA_VERSION = 1


class BenchmarkError(RuntimeError):
    """A runner could not measure a model (the tool crashed, timed out, or printed nothing it can read)."""


@dataclasses.dataclass(kw_only=True)
class LatencyResult:
    """Latency of one ``.tflite`` model on one runtime, in milliseconds per inference (batch as in the model).

    Attributes:
        runtime: what ran the model: ``"litert-interpreter"``, ``"litert-benchmark"`` or ``"benchmark_model"``.
        model_path: the ``.tflite`` file measured.
        model_bytes: its size on disk.
        threads: CPU threads given to the runtime.
        runs: timed inferences the statistics are over (as the runtime reports them).
        warmup: untimed inferences run before them.
        mean_ms: mean time per inference; every runtime reports it.
        median_ms, p90_ms, min_ms, max_ms, std_ms: ``None`` when the runtime does not report them
            (older ``benchmark_model`` builds print no median; only per-run times give a 90th percentile).
            ``std_ms`` is the population standard deviation (ddof=0), as ``benchmark_model`` computes it.
        times_ms: every timed run, in order, when the runner saw them.
        host: the machine that ran the model (:func:`tfcompress.latency.host.describe_host`).
        runtime_version: version of the runtime package, when known.
        fallback_reason: set when the requested runner failed and another one measured instead; says why.
        details: runtime-specific extras (init time, first inference, p5/p95, the command line, ...).
        measured_at: UTC time, ISO 8601.
    """

    runtime: str
    model_path: str
    model_bytes: int
    threads: int
    runs: int
    warmup: int
    mean_ms: float
    median_ms: float | None = None
    p90_ms: float | None = None
    min_ms: float | None = None
    max_ms: float | None = None
    std_ms: float | None = None
    times_ms: list[float] | None = None
    host: dict[str, Any] = dataclasses.field(default_factory=describe_host)
    runtime_version: str | None = None
    fallback_reason: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    measured_at: str = dataclasses.field(
        default_factory=lambda: datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    )

    @classmethod
    def from_times(
        cls,
        times_ms: Sequence[float],
        *,
        runtime: str,
        model_path: str | os.PathLike,
        threads: int,
        warmup: int,
        **fields: Any,
    ) -> LatencyResult:
        """Builds a result from per-run times (milliseconds); ``fields`` sets the other attributes.

        Raises:
            ValueError: no times, or a time that is not a finite number ≥ 0.
        """
        times = [float(t) for t in times_ms]
        if not times:
            raise ValueError("from_times needs at least one run time")
        if not all(math.isfinite(t) and t >= 0 for t in times):
            raise ValueError(f"run times must be finite and ≥ 0 ms, got {times}")
        array = np.asarray(times)
        path = Path(model_path)
        return cls(
            runtime=runtime,
            model_path=str(path),
            model_bytes=path.stat().st_size,
            threads=threads,
            runs=len(times),
            warmup=warmup,
            mean_ms=float(array.mean()),
            median_ms=float(np.median(array)),
            p90_ms=float(np.percentile(array, 90)),
            min_ms=float(array.min()),
            max_ms=float(array.max()),
            std_ms=float(array.std()),
            times_ms=times,
            **fields,
        )

    @property
    def latency_ms(self) -> float:
        """The number to compare models by: the median when known (robust to the odd slow run), else the mean."""
        return self.median_ms if self.median_ms is not None else self.mean_ms

    def summary(self) -> str:
        """One line for a terminal: which model, which runtime, the typical latency and the spread."""
        statistic = "median" if self.median_ms is not None else "mean"
        spread = ""
        if self.min_ms is not None and self.std_ms is not None:
            spread = f" (min {self.min_ms:.3f}, std {self.std_ms:.3f})"
        fallback = f" [fell back: {self.fallback_reason}]" if self.fallback_reason else ""
        return (
            f"{Path(self.model_path).name}: {statistic} {self.latency_ms:.3f} ms{spread} over {self.runs} runs, "
            f"{self.threads} thread{'s' if self.threads != 1 else ''}, {self.runtime} on "
            f"{self.host.get('cpu') or self.host.get('machine')}{fallback}"
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with every field, plus ``schema_version``."""
        return {"schema_version": SCHEMA_VERSION, **dataclasses.asdict(self)}
