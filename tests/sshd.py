"""A real OpenSSH server on 127.0.0.1 for tests of remote (``ssh://``) devices: fixture ``sshd_server``.

A test module that imports ``sshd_server_fixture`` (``from tests.sshd import sshd_server_fixture``) can ask for
``sshd_server``; the fixture is session-scoped per importing module and xdist worker.
It skips the tests, saying why, when ``/usr/sbin/sshd`` is missing (``make test`` installs Debian's
``openssh-server``). Everything lives in a temporary directory: host key, client key, ``authorized_keys``,
``known_hosts``, the server's and the client's configurations; the "remote" machine is this one, so its Python
is ``sys.executable``.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without its privilege separation directory
ALIAS = "tfc-test-sshd"


def free_port() -> int:
    """A TCP port nothing listens on at the moment (the kernel's pick)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def keygen(path: Path) -> Path:
    """A passphrase-less ed25519 key pair at ``path`` and ``path.pub``; returns ``path``."""
    subprocess.run(["ssh-keygen", "-q", "-N", "", "-t", "ed25519", "-C", path.name, "-f", str(path)], check=True)
    return path


class SshServer:
    """A running sshd and a client configuration that logs into it with a key, as ``ssh -F config ALIAS``."""

    def __init__(self, root: Path):
        self.root = root
        self.host, self.port, self.user = ALIAS, free_port(), getpass.getuser()
        self.host_key = keygen(root / "host_ed25519")
        self.client_key = keygen(root / "client_ed25519")
        (root / "authorized_keys").write_text((root / "client_ed25519.pub").read_text())
        self.known_hosts = root / "known_hosts"
        public_host_key = " ".join(self.host_key.with_suffix(".pub").read_text().split()[:2])
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {public_host_key}\n")
        self.remote_tmp = root / "remote_tmp"  # TMPDIR of the sessions: where the devices' batches unpack
        self.remote_tmp.mkdir()
        self.log = root / "sshd.log"
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "/usr/bin:/bin")])
        self.sshd_config = root / "sshd_config"
        self.sshd_config.write_text(
            f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {self.host_key}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            "PermitRootLogin prohibit-password\nUseDNS no\nPrintMotd no\nMaxStartups 50\n"
            # This venv's bin on PATH (litert-benchmark), and the sessions' temporary files where tests see them.
            f"SetEnv PATH={path} TMPDIR={self.remote_tmp}\n")
        self.config = self.client_config()
        self.process: subprocess.Popen | None = None

    def client_config(self, name: str = "ssh_config", identity: Path | None = None,
                      known_hosts: Path | None = None) -> Path:
        """A client configuration for :attr:`host`; another ``identity`` or ``known_hosts`` makes a broken one."""
        path = self.root / name
        path.write_text(
            f"Host {ALIAS}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n"
            f"  IdentityFile {identity or self.client_key}\n  IdentitiesOnly yes\n  IdentityAgent none\n"
            f"  UserKnownHostsFile {known_hosts or self.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
            "  StrictHostKeyChecking yes\n  PasswordAuthentication no\n")
        return path

    def url(self, runner: str = "python", python: str | None = sys.executable, config: Path | None = None,
            port: int | None = None) -> str:
        """``ssh://ALIAS[:port]?runner=...&python=...&config=...`` for this server."""
        query = {"runner": runner, "config": str(config or self.config)}
        if python is not None:
            query["python"] = python
        encoded = urllib.parse.urlencode(query, safe="/:", quote_via=urllib.parse.quote)
        return f"ssh://{self.host}{f':{port}' if port else ''}?{encoded}"

    def start(self) -> None:
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(self.sshd_config)],
                                            stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"sshd exited with status {self.process.returncode}: {self.log.read_text()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                return
            time.sleep(0.05)
        raise RuntimeError(f"sshd does not accept connections on port {self.port}: {self.log.read_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.drop_connections()
            self.process.terminate()
            self.process.wait(timeout=10)

    def connections(self) -> list[int]:
        """Process ids of the per-connection sshd processes (the listener's sshd descendants)."""
        assert self.process is not None
        parents: dict[int, tuple[int, str]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # the process ended meanwhile
                continue
            command = stat[stat.index("(") + 1:stat.rindex(")")]
            parents[int(entry.name)] = (int(stat[stat.rindex(")") + 2:].split()[1]), command)
        descendants, frontier = set(), {self.process.pid}
        while frontier:
            frontier = {pid for pid, (ppid, _) in parents.items() if ppid in frontier} - descendants
            descendants |= frontier
        return sorted(pid for pid in descendants if parents[pid][1] == "sshd")

    def drop_connections(self) -> int:
        """Kills the per-connection sshd processes, not the listener nor the commands they ran: to the client
        it is a link that died. Returns how many were killed."""
        victims = self.connections()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(victims)


@pytest.fixture(scope="session", name="sshd_server")
def sshd_server_fixture(tmp_path_factory) -> Iterator[SshServer]:
    """A running :class:`SshServer` for the whole session (each xdist worker starts its own)."""
    if not SSHD.exists():
        pytest.skip(f"{SSHD} is missing: install Debian's openssh-server (`make test` does, as root)")
    if not PRIVSEP_DIR.is_dir():
        try:
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True)
        except OSError as error:
            pytest.skip(f"sshd needs {PRIVSEP_DIR} and it cannot be created here: {error}")
    server = SshServer(tmp_path_factory.mktemp("sshd"))
    server.start()
    try:
        yield server
    finally:
        server.stop()
