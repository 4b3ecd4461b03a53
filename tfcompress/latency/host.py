"""A description of the machine a latency was measured on, so a number never travels without its device."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

from tfcompress.tf_startup import onednn_enabled

# ARM "CPU part" codes (implementer 0x41) of the cores found in Raspberry-Pi-class boards; /proc/cpuinfo on
# ARM has no "model name", so without this table a Pi 3 and a Pi 5 would both read "aarch64".
_ARM_CORES = {
    "0xb76": "ARM1176",
    "0xc07": "Cortex-A7",
    "0xc08": "Cortex-A8",
    "0xc09": "Cortex-A9",
    "0xc0f": "Cortex-A15",
    "0xd03": "Cortex-A53",
    "0xd04": "Cortex-A35",
    "0xd05": "Cortex-A55",
    "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72",
    "0xd09": "Cortex-A73",
    "0xd0a": "Cortex-A75",
    "0xd0b": "Cortex-A76",
    "0xd0d": "Cortex-A77",
    "0xd41": "Cortex-A78",
}


# CPU features that change which TFLite kernels run and how fast int8 is (int8 ran 1.25× slower than float32 on
# an AVX2-only host and 2.1× faster on one with VNNI): x86 flags and ARM "Features" names from /proc/cpuinfo.
ISA_FEATURES = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
    "amx_int8", "amx_bf16",  # x86
    "neon", "asimd", "asimdhp", "asimddp", "i8mm", "bf16", "sve", "sve2", "fphp", "vfpv4",  # ARM
)


def isa_features(cpuinfo: str | None = None) -> list[str]:
    """The :data:`ISA_FEATURES` the first CPU of ``/proc/cpuinfo`` (or the given text) lists, in that order.

    ``asimddp`` is the ARM dot-product extension (int8 speed-up on Cortex-A76/Pi 5), ``avx512_vnni`` /
    ``avx_vnni`` its x86 counterpart; an empty list means /proc/cpuinfo was unreadable (not Linux).
    """
    flags: set[str] = set()
    for line in _cpuinfo(cpuinfo).splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() in ("flags", "Features"):
            flags = set(value.split())
            break
    return [feature for feature in ISA_FEATURES if feature in flags]


def describe_host() -> dict[str, Any]:
    """The local machine: ``machine`` (e.g. x86_64, aarch64), ``cpu`` (model name), ``isa`` (CPU features
    that matter for TFLite kernels, :func:`isa_features`), ``cores`` (logical CPUs), ``usable_cores`` (those
    this process may run on), ``os``, ``node`` (host name), ``python`` and ``onednn`` (whether TensorFlow runs
    through oneDNN here: it changes TensorFlow's numerics and training speed, not LiteRT's kernels; None when
    TensorFlow does not say).

    Read once per process (cached); each call returns a fresh dict that the caller may edit.
    """
    return {key: list(value) if isinstance(value, tuple) else value for key, value in _host_facts()}


@functools.lru_cache(maxsize=1)
def _host_facts() -> tuple[tuple[str, Any], ...]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        usable = os.cpu_count()
    facts = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "isa": tuple(isa_features()),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": _os_description(),
        "node": platform.node(),
        "python": platform.python_version(),
        "onednn": onednn_enabled(),
    }
    return tuple(facts.items())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name from ``/proc/cpuinfo`` (or the given text): ``model name`` on x86; on ARM boards the
    board ``Model`` line and the core type from ``CPU part``; else ``platform.processor()``."""
    fields: dict[str, str] = {}
    for line in _cpuinfo(cpuinfo).splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and value and key not in fields:  # the first processor's entry is enough
            fields[key] = value
    if "model name" in fields:
        return fields["model name"]
    core = _ARM_CORES.get(fields.get("CPU part", "").lower()) if fields.get("CPU implementer") == "0x41" else None
    board = fields.get("Model") or _device_tree_model()
    parts = [p for p in (board, f"({core})" if core and board else core) if p]
    if parts:
        return " ".join(parts)
    return fields.get("Hardware") or platform.processor() or platform.machine()


def _cpuinfo(text: str | None) -> str:
    if text is not None:
        return text
    try:
        return Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return ""


def _device_tree_model() -> str | None:
    try:  # e.g. "Raspberry Pi 4 Model B Rev 1.4", NUL-terminated
        return Path("/proc/device-tree/model").read_text(errors="replace").rstrip("\x00\n") or None
    except OSError:
        return None


def _os_description() -> str:
    pretty = None
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    kernel = f"{platform.system()} {platform.release()}"
    return f"{pretty}, {kernel}" if pretty else platform.platform()
