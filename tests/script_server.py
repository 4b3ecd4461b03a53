"""A fork server for the script tests: ``python tests/script_server.py`` imports TensorFlow, Keras and tfcompress
once, then for every request (a JSON line on stdin) forks a child that runs ``scripts/NAME.py ARGS`` as
``__main__`` exactly as ``python scripts/NAME.py ARGS`` would (its own process, argv, sys.path, stdout, stderr,
exit code), and answers with the child's pid and then its exit code (JSON lines on stdout).

Each script test then pays only for its own work, not for the ~6–10 s of importing TensorFlow again. The server
imports only what every script imports first (whatever those imports print, each child prints again) and runs no
TensorFlow operation (no thread pools, no eager context): a child starts where a fresh interpreter would be
after the script's first lines. ``tests/conftest.py`` starts one server per pytest process;
``run_script(..., fresh=True)`` still spawns a new interpreter (each script keeps at least one such test), and
TFC_TEST_FRESH_SCRIPTS=1 spawns one for every script run.
"""

from __future__ import annotations

import importlib
import json
import os
import runpy
import sys
import tempfile


def _preload() -> None:
    """What every script imports at its top (``scripts/*.py``: absl's flags, the shared flags module, hence
    TensorFlow, Keras and tfcompress), and nothing else: not the programs, which define their absl flags."""
    importlib.import_module("absl.flags")
    importlib.import_module("tfcompress.cli.flags")


def _child(request: dict, preload_output: tuple[bytes, bytes]) -> None:
    """In the forked child: become ``python SCRIPT ARGS`` and run it. Never returns: the script's SystemExit (or
    an uncaught exception) ends the interpreter the way it ends a fresh one."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    stdin = os.open(os.devnull, os.O_RDONLY)
    stdout = os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    stderr = os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    for fd, target, printed in ((stdin, 0, b""), (stdout, 1, preload_output[0]), (stderr, 2, preload_output[1])):
        os.dup2(fd, target)
        os.close(fd)
        if printed:  # what the imports printed in the server, as a fresh interpreter prints it
            os.write(target, printed)
    script = os.path.abspath(request["script"])
    sys.argv = [request["script"], *request["args"]]
    sys.path[0] = os.path.dirname(script)  # what `python scripts/NAME.py` puts first
    runpy.run_path(script, run_name="__main__")
    sys.exit(0)


def _preload_capturing_output() -> tuple[bytes, bytes]:
    """:func:`_preload` with file descriptors 1 and 2 sent to files; returns what was written there."""
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        os.dup2(out.fileno(), 1)
        os.dup2(err.fileno(), 2)
        try:
            _preload()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
        out.seek(0)
        err.seek(0)
        return out.read(), err.read()


def serve() -> None:
    preload_output = _preload_capturing_output()
    answers = sys.stdout
    print(json.dumps({"ready": os.getpid()}), file=answers, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request, preload_output)  # does not return
        print(json.dumps({"pid": pid}), file=answers, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=answers, flush=True)


if __name__ == "__main__":
    serve()
