"""Times ``.tflite`` models with the LiteRT interpreter on the machine this file runs on; the ``python`` runner
of :class:`tfcompress.latency.ssh.SshDevice` copies it to a remote device (a Raspberry Pi) and runs it there::

    python3 remote_runner.py --threads 4 --runs 50 --warmup 5 a.tflite b.tflite

Standalone on purpose: it imports only the standard library, numpy and ai-edge-litert, so the device needs
neither tfcompress nor TensorFlow (and runs Python ≥ 3.8). It measures as :mod:`tfcompress.latency.interpreter`
does, so remote and local numbers compare: XNNPACK unless one probe invocation shows it cannot run the model
(then LiteRT's built-in kernels), inputs filled once with the same seeded random data, ``warmup`` untimed
invocations, then each of ``runs`` invocations timed with ``perf_counter_ns``.

It prints one JSON object per model on stdout, in order: ``model`` (the path given), ``times_ms``, ``inputs``,
``kernels``, ``seed``, ``litert_version`` and ``python``; or ``model`` and ``error`` for a model LiteRT cannot
load or run, after which it stops. Exit status: 0 all measured, 1 a model failed, 3 numpy or ai_edge_litert
cannot be imported (the message on stderr starts with ``IMPORT_ERROR``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import time

IMPORT_ERROR = "remote_runner: cannot import"
EXIT_MODEL_FAILED = 1
EXIT_IMPORT_ERROR = 3


def random_input(shape, dtype, rng):
    """Seeded inputs: floats in [0, 1), integers over the whole range of 8/16-bit types, small non-negative ints
    otherwise, random bools (also what ``tfcompress.latency.interpreter`` feeds local runs)."""
    import numpy as np

    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if np.issubdtype(dtype, np.floating):
        return rng.random(shape, dtype=np.float32).astype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = (info.min, info.max) if info.bits <= 16 else (0, 100)
        return rng.integers(low, high, shape, dtype=dtype, endpoint=True)
    raise ValueError(f"cannot make random input of dtype {dtype.name}")


def open_interpreter(interpreter_module, model_path: str, threads: int):
    """An allocated interpreter with XNNPACK, or with the built-in kernels when XNNPACK cannot prepare a node
    (ai-edge-litert 2.3 fails on sparse quantized kernels); returns it with ``"xnnpack"`` or ``"builtin"``."""
    interpreter = interpreter_module.Interpreter(model_path=model_path, num_threads=threads)
    try:
        interpreter.allocate_tensors()
        interpreter.invoke()  # a delegate that cannot prepare a node fails here
        return interpreter, "xnnpack"
    except RuntimeError as error:
        if "delegate" not in str(error).lower():
            raise
    interpreter = interpreter_module.Interpreter(
        model_path=model_path, num_threads=threads,
        experimental_op_resolver_type=interpreter_module.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return interpreter, "builtin"


def measure(interpreter_module, model_path: str, threads: int, runs: int, warmup: int, seed: int) -> dict:
    """Per-run times and what was run, as the JSON line for ``model_path``."""
    import numpy as np

    interpreter, kernels = open_interpreter(interpreter_module, model_path, threads)
    inputs = interpreter.get_input_details()
    times_ms = time_invocations(interpreter, runs, warmup, seed)
    return {
        "model": model_path,
        "times_ms": times_ms,
        "inputs": [{"name": d["name"], "shape": [int(s) for s in d["shape"]], "dtype": np.dtype(d["dtype"]).name}
                   for d in inputs],
        "kernels": kernels,
        "seed": seed,
    }


def time_invocations(interpreter, runs: int, warmup: int, seed: int) -> list:
    """Fills the inputs of an allocated interpreter with seeded random data, invokes it ``warmup`` times untimed,
    then returns the milliseconds of each of ``runs`` timed invocations (the one timing loop of every runner)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], random_input(detail["shape"], detail["dtype"], rng))
    for _ in range(warmup):
        interpreter.invoke()
    times_ms = []
    for _ in range(runs):
        start = time.perf_counter_ns()
        interpreter.invoke()
        times_ms.append((time.perf_counter_ns() - start) / 1e6)
    return times_ms


def litert_version():
    try:
        return importlib.metadata.version("ai-edge-litert")
    except importlib.metadata.PackageNotFoundError:
        return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--runs", type=int, required=True)
    parser.add_argument("--warmup", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    try:
        import numpy  # noqa: F401  (named in the error when missing)
        from ai_edge_litert import interpreter as interpreter_module
    except ImportError as error:
        print(f"{IMPORT_ERROR} {error.name or error}: {error}", file=sys.stderr)
        return EXIT_IMPORT_ERROR

    facts = {"litert_version": litert_version(), "python": platform.python_version()}
    for model in args.models:
        try:
            line = measure(interpreter_module, model, args.threads, args.runs, args.warmup, args.seed)
        except (ValueError, RuntimeError) as error:  # LiteRT's load, allocate and invoke errors
            print(json.dumps({"model": model, "error": f"{type(error).__name__}: {error}"}), flush=True)
            return EXIT_MODEL_FAILED
        print(json.dumps({**line, **facts}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
