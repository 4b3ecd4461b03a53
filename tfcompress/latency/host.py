"""A description of the machine a latency was measured on, so a number never travels without its device."""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path
from typing import Any

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


def describe_host() -> dict[str, Any]:
    """The local machine: ``machine`` (e.g. x86_64, aarch64), ``cpu`` (model name), ``cores`` (logical CPUs),
    ``usable_cores`` (those this process may run on), ``os``, ``node`` (host name) and ``python``.

    Read once per process (cached); each call returns a fresh dict that the caller may edit.
    """
    return dict(_host_facts())


@functools.lru_cache(maxsize=1)
def _host_facts() -> tuple[tuple[str, Any], ...]:
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        usable = os.cpu_count()
    facts = {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": _os_description(),
        "node": platform.node(),
        "python": platform.python_version(),
    }
    return tuple(facts.items())


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's name from ``/proc/cpuinfo`` (or the given text): ``model name`` on x86; on ARM boards the
    board ``Model`` line and the core type from ``CPU part``; else ``platform.processor()``."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            cpuinfo = ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
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
