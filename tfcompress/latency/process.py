"""Helpers for running an external benchmark tool and reporting its failures readably."""

from __future__ import annotations

import re
import signal

# LiteRT/TFLite "INFO: [file.cc:12] ..." and Python-logging "2026-01-01 12:00:00 INFO name: ..." lines.
_INFO_LINE = re.compile(r"^(?:INFO\b|\d{4}-\d\d-\d\d [\d:,.]+ INFO\b)")


def exit_description(returncode: int) -> str:
    """``"exited with status 2"`` or ``"was killed by SIGSEGV"`` (subprocess gives -N for signal N)."""
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def output_tail(text: str, lines: int = 5) -> str:
    """The last non-empty lines of a tool's output joined on one line, for an error message; INFO log
    lines are left out when anything else was printed (the reason for a failure is rarely an INFO line)."""
    all_lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    telling = [line for line in all_lines if not _INFO_LINE.match(line)] or all_lines
    return " | ".join(telling[-lines:]) if telling else "(no output)"
