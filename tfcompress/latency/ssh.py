"""A remote device over SSH (a Raspberry Pi): ``ssh://[user@]host[:port][?runner=...&python=...&config=...]``.

It drives the **system OpenSSH client** (``ssh``, as a subprocess) rather than a Python SSH library, because
that client honours ``~/.ssh/config`` fully (``ProxyJump``, ``Match``, ``IdentityAgent``, host aliases),
ssh-agent and key authentication, and ``known_hosts``, exactly as the user's terminal does: if
``ssh pi`` works in a terminal, ``ssh://pi`` works here.

Every call runs with ``BatchMode=yes`` (ssh never prompts, so refused authentication fails at once instead of
hanging), a connect timeout, keep-alives (a dropped link is noticed within ~15 s) and connection multiplexing
(``ControlMaster``/``ControlPersist`` with a socket in a private temporary directory), so measuring hundreds of
small models pays one TCP and authentication handshake. :meth:`SshDevice.close` stops the shared connection.

A batch is measured with one ssh command: a tar archive of the models (and, for the ``python`` runner,
``remote_runner.py``) goes on stdin into a fresh ``mktemp -d`` directory, the runner measures every model, and
the directory is removed when the command ends, however it ends. The runners on the far side:

``python`` (default)    ``remote_runner.py`` with the device's Python and ai-edge-litert (``?python=`` picks the
                        interpreter): every run timed, as the local ``litert`` runner does.
``litert_benchmark``    ai-edge-litert's ``litert-benchmark`` command on the device's PATH.
``binary:PATH``         TFLite's C++ ``benchmark_model`` at PATH on the device (absolute, or ``~/...``).

When an established connection drops mid-command, the whole step (copy and run) is repeated, up to
``retries`` times: it leaves nothing behind, so repeating it is safe. Unreachable hosts, refused
authentication and unknown host keys are not retried: they fail at once, with the fix in the message.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
import time
import urllib.parse
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from absl import logging

from tfcompress.latency import binary, litert_benchmark, remote_runner
from tfcompress.latency.device import Device
from tfcompress.latency.host import cpu_model, isa_features
from tfcompress.latency.interpreter import RUNTIME as INTERPRETER_RUNTIME
from tfcompress.latency.process import exit_description, output_tail
from tfcompress.latency.result import BenchmarkError, LatencyResult
from tfcompress.latency.validation import check_counts, check_tflite

URL_FORM = ("ssh://[user@]host[:port][?runner=python|litert_benchmark|binary:/abs/path]"
            "[&python=/usr/bin/python3][&config=/path/to/ssh_config]")
OPTIONS = ("runner", "python", "config")
RUNTIMES = {"python": INTERPRETER_RUNTIME, "litert_benchmark": litert_benchmark.RUNTIME, "binary": binary.RUNTIME}

_MARK = "@@tfcompress"  # prefix of the section lines the remote scripts print between outputs
_EXIT_NO_TMPDIR = 90  # the remote script's own failures, distinct from the runners' statuses
_EXIT_NO_UNPACK = 91
_SSH_FAILED = 255  # ssh's exit status for its own errors (the remote command's status otherwise)

# ssh's messages (stderr, exit status 255) that no retry can fix.
_HOST_KEY = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED")
_AUTH = re.compile(r"Permission denied|Too many authentication failures")
_NEGOTIATION = re.compile(r"Unable to negotiate|no matching (?:host key type|key exchange method|cipher)")
# "ssh: connect to host H port P: Connection refused / timed out / No route to host / ...", a name that does not
# resolve, a server that never greets, or (through a ProxyJump host) a target the jump host cannot reach.
_UNREACHABLE = re.compile(r"connect to host .* port \d+:|Could not resolve hostname|Name or service not known|"
                          r"Temporary failure in name resolution|timed out during banner exchange|"
                          r"open failed: connect failed")
_CONFIG = re.compile(r"Bad configuration option|bad configuration options|Can't open user config file|"
                     r"Unsupported option|no argument after keyword|missing argument|Bad port")
# A stale control socket: ssh says so and then connects on its own, so the line is no reason for a failure.
_CONTROL_SOCKET_NOTE = re.compile(r"^(Control socket connect|ControlSocket .* already exists).*$", re.MULTILINE)


class SshError(BenchmarkError):
    """ssh could not run a command on the device: unreachable, refused authentication, an unknown or changed host
    key, a connection that kept dropping, or no answer within the timeout."""


class RemoteRunnerError(BenchmarkError):
    """The runner is missing or unusable on the device (no Python, no ai-edge-litert, no benchmark_model)."""


class SshDevice(Device):
    """Measures ``.tflite`` models on a remote machine over SSH (see the module docstring).

    Args:
        host: a host name, address or ``~/.ssh/config`` alias.
        user: the login user; default: ssh's (``User`` in the config, else the local user name).
        port: the SSH port; default: ssh's (``Port`` in the config, else 22).
        runner: ``"python"``, ``"litert_benchmark"`` or ``"binary:PATH"`` (PATH on the device).
        python: the device's Python for the ``python`` runner (a name on its PATH or a path).
        config: an ssh configuration file to use instead of ``~/.ssh/config`` (``ssh -F``).
        connect_timeout_s: give up connecting after this long.
        run_timeout_s: give up on one ssh command (a whole batch) after this long.
        retries: how often a batch is repeated after the connection dropped.

    Raises:
        ValueError: an argument out of range, an unknown runner, or a host or user that is not a name.
        FileNotFoundError: ``config`` does not exist.
    """

    def __init__(
        self,
        host: str,
        *,
        user: str | None = None,
        port: int | None = None,
        runner: str = "python",
        python: str = "python3",
        config: str | os.PathLike | None = None,
        connect_timeout_s: float = 10,
        run_timeout_s: float = 600,
        retries: int = 3,
    ):
        for label, value in (("host", host), ("user", user)):
            if value is not None and (not value or value.startswith("-") or re.search(r"[\s@/]", value)):
                raise ValueError(f"SSH {label} {value!r} is not a {label} name; the form is {URL_FORM}")
        if port is not None and not (isinstance(port, int) and 0 < port < 65536):
            raise ValueError(f"SSH port must be an integer in 1..65535, got {port!r}")
        if not python:
            raise ValueError("python= must name the device's Python, e.g. python=/usr/bin/python3")
        if connect_timeout_s <= 0 or run_timeout_s <= 0:
            raise ValueError(f"timeouts must be > 0 s, got connect {connect_timeout_s}, run {run_timeout_s}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be an integer ≥ 0, got {retries!r}")
        self.host, self.user, self.port, self.python = host, user, port, python
        self.runner, self.binary = _parse_runner(runner)
        self.config = Path(config).expanduser() if config is not None else None
        if self.config is not None and not self.config.is_file():
            raise FileNotFoundError(f"ssh configuration file {str(config)!r} does not exist (given as config=)")
        self.connect_timeout_s, self.run_timeout_s, self.retries = connect_timeout_s, run_timeout_s, retries
        self.name = self._url()
        self._control_dir: str | None = None
        self._stop: weakref.finalize | None = None
        self._facts: dict[str, Any] | None = None
        self._resolved: dict[str, str] | None = None

    @classmethod
    def from_url(cls, url: str, **options: Any) -> SshDevice:
        """The device an ``ssh://`` address names (:data:`URL_FORM`); ``options`` go to the constructor
        (timeouts, retries). Its :attr:`name` is the address as given.

        Raises:
            ValueError: a malformed address, an unknown option or runner (the message shows the form).
            FileNotFoundError: ``config=`` names no file.
        """
        text = str(url).strip()
        try:
            parts = urllib.parse.urlsplit(text)
            port = parts.port
        except ValueError as error:  # a bad port or an unbalanced "[" around an IPv6 address
            raise ValueError(f"malformed SSH address {text!r} ({error}); the form is {URL_FORM}") from None
        if parts.scheme != "ssh" or not parts.hostname:
            raise ValueError(f"malformed SSH address {text!r}: no host; the form is {URL_FORM}")
        if parts.password is not None:
            raise ValueError(f"SSH address {text!r} holds a password: ssh runs in batch mode and never sends one; "
                             "load a key into ssh-agent or set IdentityFile in ~/.ssh/config")
        if parts.path not in ("", "/") or parts.fragment:
            raise ValueError(f"malformed SSH address {text!r}: a path or #fragment after the host; "
                             f"the form is {URL_FORM}")
        try:
            pairs = urllib.parse.parse_qsl(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
        except ValueError:
            raise ValueError(f"malformed options {parts.query!r} in {text!r}; the form is {URL_FORM}") from None
        query: dict[str, str] = {}
        for key, value in pairs:
            if key not in OPTIONS:
                raise ValueError(f"unknown option {key!r} in {text!r}: the options are {', '.join(OPTIONS)}; "
                                 f"the form is {URL_FORM}")
            if key in query:
                raise ValueError(f"option {key!r} is given twice in {text!r}")
            query[key] = value
        user = urllib.parse.unquote(parts.username) if parts.username else None
        device = cls(parts.hostname, user=user, port=port, **query, **options)
        device.name = text
        return device

    # -- Device -------------------------------------------------------------------------------------------------

    def measure(self, models: Sequence[Path], *, threads: int, runs: int, warmup: int) -> list[LatencyResult]:
        """One :class:`LatencyResult` per model, measured on the device in one ssh command (``model_path`` is the
        local path; ``host`` describes the device).

        Raises:
            ValueError, FileNotFoundError: a bad count, or a model that is not a local ``.tflite`` file.
            SshError: the device cannot be reached, refused the login, or the connection kept dropping.
            RemoteRunnerError: the runner is missing on the device (the message says how to install it).
            BenchmarkError: the runner failed on a model (the message names it and quotes the runner).
        """
        check_counts(threads, runs, warmup)
        paths = [check_tflite(model) for model in models]
        if not paths:
            return []
        facts = self._facts or self._read_facts()
        archive = _archive(paths, self.runner == "python")
        process, attempts = self._ssh(self._measure_script(len(paths), threads, runs, warmup), stdin=archive)
        stdout, stderr = _text(process.stdout), _text(process.stderr)
        if process.returncode == _EXIT_NO_TMPDIR:
            raise BenchmarkError(f"cannot make a temporary directory on {self.host}: {output_tail(stderr)}")
        if process.returncode == _EXIT_NO_UNPACK:
            raise BenchmarkError(f"cannot unpack the models on {self.host} (is tar installed there, is the disk "
                                 f"full?): {output_tail(stderr)}")
        sections = _sections(stdout)
        remote_dir = next((value for key, value, _ in sections if key == "dir"), "")
        common = {"threads": threads, "warmup": warmup, "host": facts["host"]}
        extras = {"device": self.name, "ssh_attempts": attempts}
        if self.runner == "python":
            return self._python_results(paths, sections, stderr, common, extras)
        return self._tool_results(paths, sections, remote_dir, runs, common, extras, facts["runtime_version"])

    def fingerprint(self, threads: int) -> dict[str, Any]:
        """The device's :data:`~tfcompress.latency.devices.FINGERPRINT_KEYS` (machine, cpu, isa, cores,
        runtime, runtime_version, threads) and ``usable_cores``, ``os``, ``node``, ``device``, read in one
        ssh command.

        Raises:
            SshError, RemoteRunnerError: as for :meth:`measure`.
        """
        facts = self._read_facts()
        return {**facts["host"], "runtime": RUNTIMES[self.runner], "runtime_version": facts["runtime_version"],
                "threads": threads, "device": self.name}

    # -- connection ---------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Stops the shared connection (``ssh -O exit``) and removes its socket directory; the device stays
        usable (the next command connects again)."""
        if self._stop is not None:
            self._stop()
        self._stop, self._control_dir = None, None

    def __enter__(self) -> SshDevice:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _ssh_argv(self) -> list[str]:
        if self._control_dir is None:
            # A short path: a Unix socket path may be ~100 bytes long, and ssh appends a random suffix to it.
            self._control_dir = tempfile.mkdtemp(prefix="tfc-ssh-", dir="/tmp" if os.path.isdir("/tmp") else None)
            stop_argv = [*self._config_args(), "-o", f"ControlPath={self._control_dir}/cm", "-O", "exit", "--",
                         self.host]
            self._stop = weakref.finalize(self, _stop_master, stop_argv, self._control_dir)
        return [
            *self._config_args(),
            "-T",
            "-o", "BatchMode=yes",
            "-o", f"ConnectTimeout={max(1, round(self.connect_timeout_s))}",
            "-o", "ServerAliveInterval=5",
            "-o", "ServerAliveCountMax=3",
            "-o", "ControlMaster=auto",
            "-o", f"ControlPath={self._control_dir}/cm",
            "-o", "ControlPersist=60",
            "-o", "ClearAllForwardings=yes",  # a LocalForward of the user's config would clash with itself
            *(["-p", str(self.port)] if self.port else []),
            *(["-l", self.user] if self.user else []),
            "--", self.host,
        ]

    def _config_args(self) -> list[str]:
        return ["ssh", *(["-F", str(self.config)] if self.config else [])]

    def _ssh(self, script: str, stdin: bytes | None = None) -> tuple[subprocess.CompletedProcess, int]:
        """Runs ``script`` with ``sh`` on the device; returns the finished process and the attempts it took.

        Raises:
            SshError: see :class:`SshError`.
        """
        # sh -c: the script is POSIX sh whatever the user's login shell is (fish, tcsh, ...).
        argv = [*self._ssh_argv(), f"sh -c {shlex.quote(script)}"]
        for attempt in range(1, self.retries + 2):
            try:
                process = subprocess.run(argv, input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL,
                                         capture_output=True, timeout=self.run_timeout_s, check=False)
            except FileNotFoundError as error:
                raise SshError("the OpenSSH client `ssh` is not installed here: install it (Debian: apt-get "
                               "install openssh-client)") from error
            except subprocess.TimeoutExpired as error:
                raise SshError(f"{self.name}: no answer within {self.run_timeout_s:g} s (run_timeout_s); is the "
                               f"device hung, or does the batch need a longer timeout?") from error
            if process.returncode != _SSH_FAILED:
                return process, attempt
            stderr = _CONTROL_SOCKET_NOTE.sub("", _text(process.stderr)).strip()
            error = self._fatal_error(stderr)
            if error is not None:
                raise error
            if attempt > self.retries:
                raise SshError(f"the SSH connection to {self._where()} dropped {attempt} times in a row: "
                               f"{output_tail(stderr)}")
            delay_s = 0.5 * 2 ** (attempt - 1)
            logging.warning("SSH connection to %s dropped (%s); retrying in %.1f s",
                            self._where(), output_tail(stderr), delay_s)
            time.sleep(delay_s)
        raise AssertionError("unreachable")

    def _fatal_error(self, stderr: str) -> SshError | None:
        """The error for ssh's failure message, or None if it reads as a dropped connection (worth a retry)."""
        if _HOST_KEY.search(stderr):
            if "HAS CHANGED" in stderr:
                return SshError(
                    f"the host key of {self._where()} has changed since it was stored in known_hosts (a "
                    f"reinstalled device, or someone in between): if the device was reinstalled, run `ssh-keygen "
                    f"-R {self._known_hosts_name()}` and connect once with `{self._terminal_command()}`")
            return SshError(
                f"Host key verification failed for {self._where()}: its key is not in known_hosts and ssh cannot "
                f"ask in batch mode; connect once with `{self._terminal_command()}` and accept the key")
        if _AUTH.search(stderr):
            return SshError(
                f"{self._where()} refused authentication for user {self._resolve().get('user', '?')} "
                f"({_first_line(stderr, _AUTH)}): load a key into ssh-agent or set IdentityFile in ~/.ssh/config "
                "(ssh runs in batch mode and never asks for a password)")
        if _NEGOTIATION.search(stderr):
            return SshError(
                f"ssh and {self._where()} share no algorithm ({_first_line(stderr, _NEGOTIATION)}): an old device "
                "may need e.g. `HostKeyAlgorithms +ssh-rsa` for it in ~/.ssh/config")
        if _UNREACHABLE.search(stderr):
            reason = _first_line(stderr, _UNREACHABLE).removeprefix("ssh: ")
            return SshError(f"cannot reach {self._where()} over SSH: {reason}")
        if _CONFIG.search(stderr):
            return SshError(f"ssh rejects its configuration for {self.name}: {output_tail(stderr)}")
        return None

    def _resolve(self) -> dict[str, str]:
        """user, hostname and port as ssh will use them (``ssh -G``: reads the config, connects nowhere)."""
        if self._resolved is None:
            argv = [*self._config_args(), "-G", *(["-p", str(self.port)] if self.port else []),
                    *(["-l", self.user] if self.user else []), "--", self.host]
            try:
                output = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout
            except (OSError, subprocess.TimeoutExpired):
                output = ""
            resolved = {}
            for line in output.splitlines():
                key, _, value = line.partition(" ")
                if key.lower() in ("user", "hostname", "port"):
                    resolved[key.lower()] = value.strip()
            self._resolved = resolved
        return self._resolved

    def _where(self) -> str:
        """``host:port``, with the alias first when the config maps it to another name."""
        resolved = self._resolve()
        hostname, port = resolved.get("hostname", self.host), resolved.get("port", str(self.port or 22))
        address = f"[{hostname}]:{port}" if ":" in hostname else f"{hostname}:{port}"
        return address if hostname == self.host else f"{self.host} ({address})"

    def _known_hosts_name(self) -> str:
        resolved = self._resolve()
        hostname, port = resolved.get("hostname", self.host), resolved.get("port", "22")
        return hostname if port == "22" else f"[{hostname}]:{port}"

    def _terminal_command(self) -> str:
        return shlex.join([*self._config_args(), *(["-p", str(self.port)] if self.port else []),
                           f"{self.user}@{self.host}" if self.user else self.host])

    # -- the remote side ----------------------------------------------------------------------------------------

    def _read_facts(self) -> dict[str, Any]:
        """The device's host facts and runner version, in one ssh command; cached for :meth:`measure`.

        Raises:
            SshError, RemoteRunnerError: as for :meth:`measure`.
        """
        steps = [f'echo "{_MARK}-machine"', "uname -m",
                 f'echo "{_MARK}-cores"', "getconf _NPROCESSORS_ONLN 2>/dev/null || nproc --all",
                 f'echo "{_MARK}-usable_cores"', "nproc 2>/dev/null || getconf _NPROCESSORS_ONLN",
                 f'echo "{_MARK}-node"', "uname -n",
                 f'echo "{_MARK}-pretty"', '(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME")',
                 f'echo "{_MARK}-kernel"', "uname -sr",
                 f'echo "{_MARK}-board"', "cat /proc/device-tree/model 2>/dev/null | tr -d '\\000'; echo",
                 f'echo "{_MARK}-version"', f"({self._version_command()}) </dev/null 2>&1",
                 f'echo "{_MARK}-version_exit $?"',
                 f'echo "{_MARK}-cpuinfo"', "cat /proc/cpuinfo 2>/dev/null"]
        process, _ = self._ssh("; ".join(steps))
        sections = {key: (value, body) for key, value, body in _sections(_text(process.stdout))}
        if "cpuinfo" not in sections:
            raise BenchmarkError(f"cannot read the facts of {self.name}: {output_tail(_text(process.stderr))}")
        status = int(sections["version_exit"][0] or 1)
        version_output = sections["version"][1]
        if status != 0:
            raise self._runner_error(status, version_output) or RemoteRunnerError(
                f"cannot read the {self.runner} runner's version on {self.host}: {output_tail(version_output)}")
        version = version_output.strip().splitlines()[-1].strip() if version_output.strip() else None
        if version and self.runner == "binary":
            version = "sha256:" + version.split()[0][:16]  # as devices.file_digest names a local binary

        def body(key: str) -> str:
            return sections.get(key, ("", ""))[1].strip()

        machine, cpuinfo = body("machine"), sections["cpuinfo"][1]
        # cpu_model reads the board from /proc/device-tree when /proc/cpuinfo names none: the device's, not ours.
        if body("board") and not re.search(r"^Model\s*:", cpuinfo, re.MULTILINE):
            cpuinfo = f"Model\t: {body('board')}\n{cpuinfo}"
        if not re.search(r"^Hardware\s*:", cpuinfo, re.MULTILINE):
            cpuinfo = f"{cpuinfo}\nHardware\t: {machine}\n"  # else cpu_model would fall back to *this* machine
        pretty, kernel = body("pretty"), body("kernel")
        host = {
            "machine": machine,
            "cpu": cpu_model(cpuinfo),
            "isa": isa_features(cpuinfo),
            "cores": _int_or_none(body("cores")),
            "usable_cores": _int_or_none(body("usable_cores")),
            "os": f"{pretty}, {kernel}" if pretty else kernel,
            "node": body("node"),
        }
        self._facts = {"host": host, "runtime_version": version}
        return self._facts

    def _version_command(self) -> str:
        query = "import importlib.metadata as m; print(m.version(\"ai-edge-litert\"))"
        if self.runner == "python":
            return f"{_remote_word(self.python)} -c {shlex.quote(query)}"
        if self.runner == "litert_benchmark":
            # litert-benchmark is a console script: its #! line names the Python whose ai-edge-litert it runs.
            return ('p=$(command -v litert-benchmark) || { echo "litert-benchmark: not found"; exit 127; }; '
                    'py=$(sed -n "1s/^#! *//p" "$p"); [ -n "$py" ] || exit 0; '
                    f"$py -c {shlex.quote(query)} 2>/dev/null || true")
        path = _remote_word(self.binary)
        return (f'if [ ! -e {path} ]; then echo {path}": No such file or directory"; exit 127; '
                f'elif [ ! -x {path} ]; then echo {path}": Permission denied"; exit 126; fi; '
                f"sha256sum {path} 2>/dev/null || shasum -a 256 {path}")

    def _measure_script(self, count: int, threads: int, runs: int, warmup: int) -> str:
        setup = (f'd=$(mktemp -d "${{TMPDIR:-/tmp}}/tfcompress.XXXXXX") || exit {_EXIT_NO_TMPDIR}; '
                 # the EXIT trap removes the directory; the others make a hang-up or a broken pipe an exit.
                 "trap 'rm -rf \"$d\"' EXIT; trap 'exit 1' HUP INT TERM PIPE; "
                 f'echo "{_MARK}-dir $d"; tar -x -C "$d" || exit {_EXIT_NO_UNPACK}; ')
        if self.runner == "python":
            models = " ".join(f'"$d/m{index}.tflite"' for index in range(count))
            return (setup + f'{_remote_word(self.python)} "$d/remote_runner.py" --threads {threads} --runs {runs} '
                    f'--warmup {warmup} {models} </dev/null; echo "{_MARK}-exit $?"')
        if self.runner == "litert_benchmark":
            tool = (f'litert-benchmark --model="$d/$m" --num_runs={runs} --warmup_runs={warmup} '
                    f"--num_threads={threads}")
        else:
            tool = (f'{_remote_word(self.binary)} --graph="$d/$m" --num_threads={threads} --num_runs={runs} '
                    f"--warmup_runs={warmup} --min_secs=0 --warmup_min_secs=0")
        names = " ".join(f"m{index}.tflite" for index in range(count))
        return (setup + f'for m in {names}; do echo "{_MARK}-model $m"; {tool} </dev/null 2>&1; s=$?; '
                f'echo "{_MARK}-exit $s"; [ "$s" -eq 0 ] || break; done')

    def _runner_error(self, status: int, output: str) -> RemoteRunnerError | None:
        """The error for a runner that is missing or cannot start on the device, else None."""
        tail = output_tail(output, lines=1)
        if self.runner == "python":
            if status in (126, 127):
                return RemoteRunnerError(
                    f"cannot run Python {self.python!r} on {self.host} ({tail}): install python3 there, or give "
                    "its path with ?python=/usr/bin/python3")
            if re.search(rf"{remote_runner.IMPORT_ERROR}|No module named '(ai_edge_litert|numpy)|PackageNotFoundError",
                         output):
                return RemoteRunnerError(
                    f"ai-edge-litert is not installed for {self.python} on {self.host} ({tail}): run "
                    f"`{self.python} -m pip install ai-edge-litert` there, or measure with ?runner=binary:PATH "
                    "and a benchmark_model built for the device")
        elif self.runner == "litert_benchmark":
            if status in (126, 127):
                return RemoteRunnerError(
                    f"litert-benchmark is not on the PATH of SSH commands on {self.host} ({tail}): run `pip install "
                    "ai-edge-litert` there (and put its bin directory on PATH), or use ?runner=python")
        elif status == 127:
            return RemoteRunnerError(
                f"benchmark_model {self.binary} does not exist on {self.host}: copy a benchmark_model built for the "
                "device there, or give its path with ?runner=binary:/abs/path")
        elif status == 126:
            return RemoteRunnerError(
                f"benchmark_model {self.binary} cannot be executed on {self.host} ({tail}): run `chmod +x "
                f"{self.binary}` there, and check it is built for the device's CPU")
        return None

    def _python_results(self, paths: list[Path], sections: list[tuple[str, str, str]], stderr: str,
                        common: dict[str, Any], extras: dict[str, Any]) -> list[LatencyResult]:
        status = next((int(value) for key, value, _ in sections if key == "exit"), None)
        lines = [json.loads(line) for _, _, body in sections for line in body.splitlines()
                 if line.startswith("{")]
        if status is None:
            raise BenchmarkError(f"the measurement on {self.host} stopped before it finished: {output_tail(stderr)}")
        if status != 0:
            failed = next((line for line in lines if "error" in line), None)
            if failed is not None:
                local = paths[_index(failed["model"])]
                raise BenchmarkError(f"LiteRT on {self.host} cannot measure {local}: {failed['error']}")
            raise self._runner_error(status, stderr) or BenchmarkError(
                f"the python runner on {self.host} {exit_description(status)}: {output_tail(stderr)}")
        if len(lines) != len(paths):
            raise BenchmarkError(f"the python runner on {self.host} reported {len(lines)} of {len(paths)} models: "
                                 f"{output_tail(stderr)}")
        results = []
        for line in lines:
            results.append(LatencyResult.from_times(
                line["times_ms"], runtime=INTERPRETER_RUNTIME, model_path=paths[_index(line["model"])],
                runtime_version=line.get("litert_version"), **_copy(common),
                details={"inputs": line["inputs"], "seed": line["seed"], "kernels": line["kernels"],
                         "python": line.get("python"), **extras}))
        return results

    def _tool_results(self, paths: list[Path], sections: list[tuple[str, str, str]], remote_dir: str, runs: int,
                      common: dict[str, Any], extras: dict[str, Any], version: str | None) -> list[LatencyResult]:
        outputs: list[tuple[str, str]] = []  # (model name, output) of each model the tool finished
        current, output = None, ""
        for key, value, body in sections:
            if key == "model":
                current, output = value, body
            elif key == "exit" and current is not None:
                status = int(value)
                if status != 0:
                    raise self._runner_error(status, output) or BenchmarkError(
                        f"{self._tool_name()} on {self.host} {exit_description(status)} on "
                        f"{paths[_index(current)]}: {output_tail(output)}")
                outputs.append((current, output))
                current = None
        if len(outputs) != len(paths):
            raise BenchmarkError(f"the measurement on {self.host} stopped after {len(outputs)} of {len(paths)} "
                                 f"models: {output_tail(output)}")
        results = []
        for name, output in outputs:
            local = paths[_index(name)]
            remote_path = f"{remote_dir}/{name}"
            if self.runner == "binary":
                result = _benchmark_model_result(output, local, remote_path, self.binary, runs, common)
            else:
                result = _litert_benchmark_result(output, local, remote_path, runs, common, self.host)
            result.runtime_version = version
            result.details.update(extras)
            results.append(result)
        return results

    def _tool_name(self) -> str:
        return "litert-benchmark" if self.runner == "litert_benchmark" else f"benchmark_model {self.binary}"

    def _url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{urllib.parse.quote(self.user)}@" if self.user else ""
        port = f":{self.port}" if self.port else ""
        query = {"runner": f"binary:{self.binary}" if self.binary else self.runner}
        if self.python != "python3":
            query["python"] = self.python
        if self.config is not None:
            query["config"] = str(self.config)
        if query == {"runner": "python"}:
            query = {}
        encoded = urllib.parse.urlencode(query, safe="/:~", quote_via=urllib.parse.quote)
        return f"ssh://{user}{host}{port}" + (f"?{encoded}" if encoded else "")


def _parse_runner(runner: str) -> tuple[str, str | None]:
    if runner in ("python", "litert_benchmark"):
        return runner, None
    kind, _, path = str(runner).partition(":")
    if kind == "binary" and (path.startswith("/") or path.startswith("~/")):
        return "binary", path
    if kind == "binary":
        raise ValueError(f"runner {runner!r} needs the absolute path of benchmark_model on the device, e.g. "
                         "runner=binary:/home/pi/benchmark_model")
    raise ValueError(f"unknown runner {runner!r}: choose python, litert_benchmark or binary:/abs/path; "
                     f"the form is {URL_FORM}")


def _remote_word(path: str) -> str:
    """``path`` quoted for the device's sh, with a leading ``~/`` left to expand to the home directory there."""
    if path.startswith("~/"):
        return "~/" + shlex.quote(path[2:])
    return shlex.quote(path)


def _archive(models: list[Path], with_runner: bool) -> bytes:
    """A tar archive of the models as ``m0.tflite``, ``m1.tflite``, ... (local names may clash), and of
    ``remote_runner.py`` when asked."""

    def plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mode = 0o644
        return info

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for index, model in enumerate(models):
            tar.add(model, arcname=f"m{index}.tflite", recursive=False, filter=plain)
        if with_runner:
            source = importlib.resources.files("tfcompress.latency").joinpath("remote_runner.py").read_bytes()
            info = plain(tarfile.TarInfo("remote_runner.py"))
            info.size, info.mtime = len(source), int(time.time())
            tar.addfile(info, io.BytesIO(source))
    return buffer.getvalue()


def _sections(stdout: str) -> list[tuple[str, str, str]]:
    """``(key, value, text)`` for each ``@@tfcompress-KEY VALUE`` line of a remote script's output, with the
    text up to the next such line (key ``""`` for any text before the first)."""
    sections: list[tuple[str, str, list[str]]] = [("", "", [])]
    for line in stdout.splitlines():
        if line.startswith(f"{_MARK}-"):
            key, _, value = line[len(_MARK) + 1:].partition(" ")
            sections.append((key, value.strip(), []))
        else:
            sections[-1][2].append(line)
    return [(key, value, "\n".join(lines)) for key, value, lines in sections]


def _benchmark_model_result(output: str, local: Path, remote_path: str, binary_path: str | None, runs: int,
                            common: dict[str, Any]) -> LatencyResult:
    """A result from benchmark_model's output on the device, as :func:`binary.run_benchmark_model` makes one."""
    command = [str(binary_path), f"--graph={remote_path}", f"--num_threads={common['threads']}",
               f"--num_runs={runs}", f"--warmup_runs={common['warmup']}", "--min_secs=0", "--warmup_min_secs=0"]
    result = binary.result_from_output(output, local, command, threads=common["threads"], runs=runs,
                                       warmup=common["warmup"])
    result.host = _copy(common)["host"]
    return result


def _litert_benchmark_result(output: str, local: Path, remote_path: str, runs: int, common: dict[str, Any],
                             host: str) -> LatencyResult:
    """A result from litert-benchmark's stdout, with the fields :mod:`litert_benchmark` fills."""
    latency = litert_benchmark.parse_stdout(output)
    if latency is None:
        raise BenchmarkError(f"litert-benchmark on {host} printed no timings for {local}: {output_tail(output)}")
    details: dict[str, Any] = {
        "command": ["litert-benchmark", f"--model={remote_path}", f"--num_runs={runs}",
                    f"--warmup_runs={common['warmup']}", f"--num_threads={common['threads']}"],
        "resolution_ms": litert_benchmark.RESOLUTION_MS,
        "std_ddof": 1,
        **{key: latency[key] for key in ("p5_ms", "p95_ms") if latency.get(key) is not None},
    }
    return LatencyResult(
        runtime=litert_benchmark.RUNTIME, model_path=str(local), model_bytes=local.stat().st_size,
        runs=int(latency.get("num_runs") or runs), mean_ms=float(latency["avg_ms"]),
        median_ms=latency.get("median_ms"), min_ms=latency.get("min_ms"), max_ms=latency.get("max_ms"),
        std_ms=latency.get("std_ms"), details=details, **_copy(common))


def _stop_master(stop_argv: list[str], control_dir: str) -> None:
    """Asks the shared connection to exit and removes its socket directory (also at interpreter exit)."""
    if os.path.exists(os.path.join(control_dir, "cm")):
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            subprocess.run(stop_argv, capture_output=True, timeout=10, check=False)
    shutil.rmtree(control_dir, ignore_errors=True)


def _index(remote_name: str) -> int:
    """The batch index of ``m7.tflite`` (or a path ending in it)."""
    return int(re.search(r"m(\d+)\.tflite$", remote_name)[1])


def _copy(common: dict[str, Any]) -> dict[str, Any]:
    # Each result gets its own host dict: a caller editing one must not edit all.
    return {**common, "host": {key: list(value) if isinstance(value, list) else value
                               for key, value in common["host"].items()}}


def _first_line(text: str, pattern: re.Pattern) -> str:
    return next((line.strip() for line in text.splitlines() if pattern.search(line)), "")


def _int_or_none(text: str) -> int | None:
    return int(text) if text.strip().isdigit() else None


def _text(data: bytes | None) -> str:
    return (data or b"").decode(errors="replace")
