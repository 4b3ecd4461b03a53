"""TensorFlow's start-up, kept off the user's terminal: the one place every entry point goes through
(``import tfcompress`` runs :func:`import_tensorflow_quietly` before anything imports TensorFlow; scripts, the
``tfc-*`` console commands and ``python -m tfcompress.cli.…`` all import the package first).

TensorFlow's C++ side writes lines to file descriptor 2 while it loads, before its logging is configured, so
``TF_CPP_MIN_LOG_LEVEL`` does not hold them back: on an Intel host with oneDNN on, ``import tensorflow`` prints
``WARNING: All log messages before absl::InitializeLog() is called are written to STDERR`` and ``I0000 …
port.cc:153] oneDNN custom operations are on …`` once per shared library it loads (two: it is one import, not
two), then ``cpu_feature_guard`` and CUDA-stub lines on other builds. A script's bad-input error must be its
only line of stderr, so the import runs with descriptor 2 sent to a file, and what it wrote is replayed except
those informational lines. Errors (``E``/``F`` lines) and anything else pass through.

``TFC_TENSORFLOW_LOGS=1``, or absl's ``--verbosity`` ≥ 1 on the command line, shows everything as TensorFlow
wrote it. oneDNN's state (on/off changes TensorFlow's numerics and speed) is recorded in every host
fingerprint instead: :func:`onednn_enabled`.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
import tempfile

ENV_VAR = "TFC_TENSORFLOW_LOGS"

# absl/glog lines of severity I(nfo) or W(arning) with their header, and the continuation lines TensorFlow
# writes under them at start-up
_NOISE = re.compile(
    r"^(?:[IW]\d{4} [\d:.]+\s+\d+ \S+:\d+\] "
    r"|WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|To enable the following instructions: .* in other operations, rebuild TensorFlow"
    r"|E\d{4} .*(?:Unable to register (?:cuDNN|cuFFT|cuBLAS) factory|cuInit: failed|could not find cuda drivers)"
    r")"
)


def wants_logs(argv: list[str] | None = None) -> bool:
    """True when the user asked for TensorFlow's start-up lines (:data:`ENV_VAR` = 1, or ``--verbosity`` /
    ``-v`` ≥ 1 on the command line)."""
    if os.environ.get(ENV_VAR, "0").strip() not in ("", "0"):
        return True
    argv = sys.argv if argv is None else argv
    for index, arg in enumerate(argv):
        value = None
        if arg.startswith(("--verbosity=", "-v=")):
            value = arg.split("=", 1)[1]
        elif arg in ("--verbosity", "-v") and index + 1 < len(argv):
            value = argv[index + 1]
        if value is not None:
            try:
                return int(value) >= 1
            except ValueError:
                return False
    return False


def import_tensorflow_quietly() -> None:
    """``import tensorflow`` with its informational start-up lines dropped (see the module docstring); a no-op
    when TensorFlow is already imported or the user asked for its logs."""
    if wants_logs():
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # TensorFlow's INFO lines after start-up too
    if "tensorflow" in sys.modules:
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no descriptor 2 (a closed stderr): nothing to keep clean
        importlib.import_module("tensorflow")
        return
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            importlib.import_module("tensorflow")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines(keepends=True)
                    if not _NOISE.match(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


def onednn_enabled() -> bool | None:
    """Whether TensorFlow runs its CPU kernels through oneDNN in this process (Intel's default on hosts with
    AVX-512 VNNI/BF16 or AMX; ``TF_ENABLE_ONEDNN_OPTS`` sets it); None when TensorFlow does not say."""
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:
        return None
    return bool(_pywrap_util_port.IsMklEnabled())
