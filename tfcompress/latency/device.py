"""The interface every device implements (:mod:`tfcompress.latency.devices` has the devices), and how their
fingerprints compare."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tfcompress import progress as progress_bars
from tfcompress.latency.result import LatencyResult

# What must match for two latencies to be comparable; the node name, OS and Python version need not.
FINGERPRINT_KEYS = ("machine", "cpu", "isa", "cores", "runtime", "runtime_version", "threads")


class Device(abc.ABC):
    """Something that times ``.tflite`` models: :meth:`measure` a batch, :meth:`fingerprint` itself."""

    #: the ``--device`` string that names this device
    name: str

    @abc.abstractmethod
    def measure(self, models: Sequence[Path], *, threads: int, runs: int, warmup: int) -> list[LatencyResult]:
        """One :class:`LatencyResult` per model, in order.

        Raises:
            BenchmarkError: the device could not measure a model (the message says which and why).
        """

    def side_by_side(self, models: Sequence[Path], *, threads: int, runs: int, warmup: int = 5,
                     passes: int = 3, progress: bool = True) -> list[float]:
        """Each model's latency in ms: the median over ``passes`` passes that each time every model in turn.

        Models compared this way share the host's state (load, clocks, caches) and a disturbed moment spreads over
        all of them; separate runs on a shared or throttled machine disagree by tens of percent. Compare the
        results as ratios. ``progress``: a bar with ETA where :mod:`tfcompress.progress` draws bars; False: never.
        """
        by_pass = self.side_by_side_passes(models, threads=threads, runs=runs, warmup=warmup, passes=passes,
                                           progress=progress)
        return [float(np.median([ms[index] for ms in by_pass])) for index in range(len(models))]

    def side_by_side_passes(self, models: Sequence[Path], *, threads: int, runs: int, warmup: int = 5,
                            passes: int = 3, progress: bool = True) -> list[list[float]]:
        """:meth:`side_by_side` before the median: one list of every model's latency in ms per pass (how much
        the passes disagree is the measurement's noise)."""
        by_pass = []
        with progress_bars.bar(passes * len(models), f"latency side by side on {self.name}", unit="model",
                               enable=progress) as bar:
            for _ in range(passes):  # one batch per pass: a remote device gets one round trip each
                results = self.measure(models, threads=threads, runs=runs, warmup=warmup)
                by_pass.append([float(result.latency_ms) for result in results])
                bar.update(len(models))
        return by_pass

    def measure_in_batches(self, models: Sequence[Path], *, threads: int, runs: int, warmup: int,
                           batch_size: int = 16, desc: str = "latency", progress: bool = True
                           ) -> list[LatencyResult]:
        """:meth:`measure`, ``batch_size`` models at a time so that a progress bar (``desc``, where
        :mod:`tfcompress.progress` draws bars) can count them; one round trip per batch on a remote device."""
        results: list[LatencyResult] = []
        with progress_bars.bar(len(models), desc, unit="model", enable=progress) as bar:
            for start in range(0, len(models), batch_size):
                batch = list(models[start:start + batch_size])
                results += self.measure(batch, threads=threads, runs=runs, warmup=warmup)
                bar.update(len(batch))
        return results

    @abc.abstractmethod
    def fingerprint(self, threads: int) -> dict[str, Any]:
        """What the device's latencies depend on: :data:`FINGERPRINT_KEYS` plus descriptive extras."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def comparable(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """The :data:`FINGERPRINT_KEYS` on which two fingerprints differ, as ``key: a != b`` lines."""
    return [f"{key}: {a.get(key)!r} != {b.get(key)!r}" for key in FINGERPRINT_KEYS
            if _normal(a.get(key)) != _normal(b.get(key))]


def _normal(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
