"""A latency table built over SSH against one built locally, with the connection dropped again and again.

    python benchmarks/latency_table_ssh.py     # writes benchmarks/results/latency_table_ssh.{md,json}

Starts a real OpenSSH server on 127.0.0.1 (the test suite's ``tests/sshd.py``: Debian's openssh-server, a
temporary host key and authorized key), so the "remote" device is this machine reached through ``ssh`` with
the ``python`` runner. Builds the reference ResNet-20's float32 table locally and remotely, while a thread
kills the server's per-connection processes every ``--drop_every`` journal lines during the remote build.
Reported: how many connections were dropped, whether any point was measured twice, and the relative
difference between the remote and the local table (per grid point, and per predicted model).
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from absl import app, flags

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests.sshd: the same server the tests start

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "models/resnet20_fashion_mnist.keras", "The .keras model.")
flags.DEFINE_integer("drop_every", 40, "Drop the SSH connections every this many measurements.", lower_bound=1)
flags.DEFINE_integer("repeats", 2, "Measurements per table point.", lower_bound=1)
flags.DEFINE_integer("runs", 30, "Timed inferences per measurement.", lower_bound=1)
flags.DEFINE_string("output_dir", str(REPO / "benchmarks" / "results"), "Where the .md and .json go.")


def main(argv: list[str]) -> None:
    import numpy as np

    from tests.sshd import SSHD, SshServer
    from tfcompress import files, latency
    from tfcompress.export import load_keras_model
    from tfcompress.graph import ChannelGraph
    from tfcompress.latency.build import journal_path

    if not SSHD.exists():
        raise app.UsageError(f"{SSHD} is missing: install Debian's openssh-server (`make sshd` does, as root)")
    model = load_keras_model(REPO / FLAGS.model)
    settings = {"precisions": ("float32",), "repeats": FLAGS.repeats, "runs": FLAGS.runs}
    with tempfile.TemporaryDirectory() as folder:
        server = SshServer(Path(folder))
        server.start()
        try:
            begin = time.monotonic()
            local = latency.build_table(model, "litert", output=Path(folder) / "local.npz", **settings)
            local_s = time.monotonic() - begin
            output = Path(folder) / "remote.npz"
            journal, drops, stop = journal_path(output), [], threading.Event()

            def drop() -> None:
                while not stop.is_set():
                    if journal.exists() and len(journal.read_text().splitlines()) > FLAGS.drop_every * (len(drops) + 1):
                        drops.append(server.drop_connections())
                    time.sleep(0.1)

            dropper = threading.Thread(target=drop, daemon=True)
            dropper.start()
            begin = time.monotonic()
            try:
                remote = latency.build_table(model, server.url(), output=output, **settings)
            finally:
                stop.set()
                dropper.join()
            remote_s = time.monotonic() - begin
            pairs = [(r["task"], r["repeat"]) for r in map(json.loads, journal.read_text().splitlines()[1:])]
        finally:
            server.stop()

    ratios = np.concatenate([(remote.entries[key].values["float32"] / entry.values["float32"]).ravel()
                             for key, entry in local.entries.items()])
    difference = np.abs(ratios - 1)
    graph = ChannelGraph(model)
    rng = np.random.default_rng(0)
    remote_cost, local_cost = remote.cost_fn(model, "float32", graph), local.cost_fn(model, "float32", graph)
    predicted = []
    for _ in range(30):
        counts = {g.id: int(rng.integers(max(1, g.size // 4), g.size + 1)) for g in graph.prunable_groups}
        predicted.append(remote_cost(counts) / local_cost(counts))
    model_difference = np.abs(np.asarray(predicted) - 1)
    fingerprint = local.fingerprint
    report = {
        "command": " ".join(["python benchmarks/latency_table_ssh.py", *sys.argv[1:]]),
        "fingerprint": fingerprint, "remote_device": remote.meta["device"], "settings": settings,
        "local_build_s": round(local_s, 1), "remote_build_s": round(remote_s, 1),
        "connection_drops": len(drops), "connections_killed": int(sum(drops)),
        "measurements": len(pairs), "measured_twice": len(pairs) - len(set(pairs)),
        "grid_points": int(ratios.size),
        "point_difference": {"median": float(np.median(difference)), "p90": float(np.percentile(difference, 90))},
        "model_difference": {"median": float(np.median(model_difference)),
                             "p90": float(np.percentile(model_difference, 90))},
    }
    out = Path(FLAGS.output_dir)
    files.write_json(out / "latency_table_ssh.json", report)
    files.write_text(out / "latency_table_ssh.md", "\n".join([
        "# A latency table over SSH vs the same table built locally",
        "",
        f"Command: `{report['command']}`  ",
        f"Host (both devices): {fingerprint.get('cpu')} ({fingerprint.get('machine')}, {fingerprint.get('cores')} "
        f"cores; ISA: {', '.join(fingerprint.get('isa') or [])}), {fingerprint.get('runtime')} "
        f"{fingerprint.get('runtime_version')}, 1 thread. Remote: a real sshd on 127.0.0.1, runner `python`.  ",
        f"Model: {FLAGS.model}, float32, {settings['repeats']} measurements × {settings['runs']} runs per point.",
        "",
        "| | local | over SSH |",
        "|---|---|---|",
        f"| build time | {local_s:.0f} s | {remote_s:.0f} s |",
        f"| connections dropped during the build | – | {len(drops)} times ({int(sum(drops))} sshd processes "
        "killed) |",
        f"| measurements / measured twice | – | {len(pairs)} / {report['measured_twice']} |",
        "",
        f"Remote vs local, per grid point ({ratios.size} points): median |Δ| "
        f"{100 * report['point_difference']['median']:.1f} %, p90 {100 * report['point_difference']['p90']:.1f} %. "
        f"Per predicted model (30 random pruned ResNet-20s): median |Δ| "
        f"{100 * report['model_difference']['median']:.1f} %, p90 {100 * report['model_difference']['p90']:.1f} %.",
        "",
    ]))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    app.run(main)
