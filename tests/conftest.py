"""Shared test helpers: run a script the way a user does, in its own process; build an artefact once per run."""

from __future__ import annotations

import atexit
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Two xdist workers on two cores: one TensorFlow compute thread each (scripts they run inherit it), not one per core
# each, whose oversubscribed Eigen pools spin against the other worker. Set before anything imports TensorFlow.
if os.environ.get("PYTEST_XDIST_WORKER") and os.environ.get("TFC_TEST_THREADS", "1") != "auto":
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", os.environ.get("TFC_TEST_THREADS", "1"))


def run_script(name: str, *args: str, check: bool = True, timeout: float = 600,
               fresh: bool = False) -> subprocess.CompletedProcess:
    """Runs ``scripts/NAME.py ARGS`` in its own process; returns the completed process (text output).

    The process is forked from ``tests/script_server.py``, which has imported what every script imports first
    (TensorFlow, Keras, tfcompress) and nothing else, so a test does not pay ~6–10 s for that import at every
    run. With ``fresh=True`` (or TFC_TEST_FRESH_SCRIPTS=1 in the environment) it is a new interpreter, exactly as
    a user starts it: every script keeps at least one such test."""
    return run_file(REPO / "scripts" / f"{name}.py", *args, check=check, timeout=timeout, fresh=fresh)


def run_file(path: str | os.PathLike, *args: str, check: bool = True, timeout: float = 600,
             fresh: bool = False) -> subprocess.CompletedProcess:
    """``python PATH ARGS`` (in REPO) as :func:`run_script` runs a script."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, str(path), *args]
    if fresh or os.environ.get("TFC_TEST_FRESH_SCRIPTS") or not hasattr(os, "fork"):
        process = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    else:
        process = _script_server().run(command, env, timeout)
    if check and process.returncode != 0:
        raise AssertionError(f"{Path(path).name} failed ({process.returncode}):\n{process.stdout}\n{process.stderr}")
    return process


def run_json_program(source: str, timeout: float = 300) -> dict:
    """Runs Python ``source`` in a fresh interpreter with a clean environment (in REPO; e.g. to configure
    TensorFlow's devices before it starts) and returns the JSON object its last line of output prints."""
    process = subprocess.run(
        [sys.executable, "-c", source], capture_output=True, text=True, cwd=REPO, timeout=timeout,
        env={"TF_CPP_MIN_LOG_LEVEL": "2", "PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return json.loads(process.stdout.strip().splitlines()[-1])


class ScriptServer:
    """The client of one ``tests/script_server.py`` process (see there)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="tfc-script-server-"))
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        with open(self.folder / "server.log", "wb") as log:
            self.process = subprocess.Popen([sys.executable, str(REPO / "tests" / "script_server.py")], cwd=REPO,
                                            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                            bufsize=0)
        self.buffer = b""
        self._answer(300)  # {"ready": pid}: TensorFlow imported

    def _answer(self, timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([self.process.stdout], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(self.process.stdout.fileno(), 65536)
            if not chunk:
                log = (self.folder / "server.log").read_text(errors="replace")
                raise RuntimeError(f"tests/script_server.py ended ({self.process.poll()}):\n{log[-3000:]}")
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return json.loads(line)

    def run(self, command: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
        stdout, stderr = self.folder / "stdout", self.folder / "stderr"
        request = {"script": command[1], "args": command[2:], "cwd": str(REPO), "env": env, "stdout": str(stdout),
                   "stderr": str(stderr)}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            pid = self._answer(60)["pid"]
            try:
                returncode = self._answer(timeout)["returncode"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._answer(60)
                raise subprocess.TimeoutExpired(command, timeout, stdout.read_text(), stderr.read_text()) from None
        except (OSError, TimeoutError, RuntimeError, ValueError):  # out of step with the server: the next starts anew
            self.process.kill()
            self.process.wait()
            raise
        return subprocess.CompletedProcess(command, returncode, stdout.read_text(), stderr.read_text())

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)


_server: ScriptServer | None = None


def _script_server() -> ScriptServer:
    global _server
    if _server is None or _server.process.poll() is not None:
        _server = ScriptServer()
        atexit.register(_server.close)
    return _server


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same global seeds (Python, NumPy, TensorFlow): a test's numbers must not
    depend on which tests ran before it in its worker (random ops and initializers follow the global seed)."""
    import keras

    keras.utils.set_random_seed(0)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def built_once(tmp_path_factory, name: str, build) -> Path:
    """A folder that ``build(folder)`` fills once per test run, whichever xdist worker gets there first (the
    others wait on a lock and reuse it)."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # pytest-N/, shared by the workers
    folder = root / name
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / "built").exists():
            folder.mkdir(exist_ok=True)
            build(folder)
            (folder / "built").touch()
    return folder


@pytest.fixture(scope="session")
def fashion_latency(tmp_path_factory):
    """A small residual net for 32×32 Fashion-MNIST (trained one short epoch, saved), its float32 latency table on
    ``litert`` (saved) and data splits: what the latency-aimed pruning tests share, built once per test run."""
    import types

    import keras

    from tests.test_latency_table import FAST, small_resnet
    from tfcompress import data, latency, training

    options = {"image_size": 32, "holdout_fraction": 0.1}
    train = data.load("fashion_mnist", "train", batch_size=64, limit=4096, seed=0, **options)
    holdout = data.load("fashion_mnist", "holdout", batch_size=256, limit=1024, **options)

    def build(folder: Path) -> None:
        keras.utils.set_random_seed(0)
        model = small_resnet("fashion", classes=10, shape=(32, 32, 1))
        training.compile_classifier(model, training.sgd(0.05, 64, "cosine"))
        model.fit(train, epochs=1, verbose=0)
        model.save(folder / "fashion.keras")
        for attempt in range(3):  # a table measured beside the other test worker can be noise: measure again
            latency.build_table(model, "litert", output=folder / "fashion.npz", precisions=("float32",),
                                **{**FAST, "runs": FAST["runs"] * (1 + 2 * attempt)})
            if both_groups_fraction(model, latency.Table.load(folder / "fashion.npz")) is not None:
                return
            for measured in ("fashion.npz", "fashion.journal.jsonl"):  # the journal would be resumed, not remeasured
                (folder / measured).unlink(missing_ok=True)
        raise AssertionError("three latency tables of the fashion model gave no room between the best one channel "
                             "group can do and the floor: is the host overloaded?")

    folder = built_once(tmp_path_factory, "fashion_latency", build)
    model, table = keras.models.load_model(folder / "fashion.keras"), latency.Table.load(folder / "fashion.npz")
    return types.SimpleNamespace(model=model, table=table, train=train, holdout=holdout,
                                 model_path=folder / "fashion.keras", table_path=folder / "fashion.npz",
                                 fraction=both_groups_fraction(model, table))


def both_groups_fraction(model, table) -> float | None:
    """A latency fraction of ``model`` that pruning reaches only through both of its two channel groups, by
    ``table``: halfway between the best one group alone can do and the best both can (tables are staircases, not
    monotonic: every count is tried). Derived from the table, not fixed, because how much of the latency the
    channels hold depends on the host the table was measured on. None when the table leaves no clear room
    (a noisy one: a floor that is not positive, or less than 5 % of the latency between the two)."""
    from tfcompress.graph import ChannelGraph

    graph = ChannelGraph(model)
    cost = table.cost_fn(model, "float32", graph)
    full = {g.id: g.size for g in graph.prunable_groups}
    (a, size_a), (b, size_b) = full.items()
    floor = min(cost({a: i, b: j}) for i in range(1, size_a + 1) for j in range(1, size_b + 1))
    one_group = min(min(cost({a: i, b: size_b}) for i in range(1, size_a + 1)),
                    min(cost({a: size_a, b: j}) for j in range(1, size_b + 1)))
    unpruned = cost(full)
    if floor <= 0 or one_group - floor < 0.05 * unpruned:
        return None
    return (floor + one_group) / 2 / unpruned


@pytest.fixture(scope="session")
def lenet5_macs50(tmp_path_factory) -> Path:
    """``scripts/prune.py --importance=l1 --target_macs=0.5`` with one epoch of fine-tuning on 3000 images, on the
    reference LeNet-5: the path of OUTPUT (OUTPUT.json beside it), built once per test run. The prune-script test
    of tests/test_channel_pruning.py checks it, tests/test_script_composition.py chains it on; both only read it."""
    lenet5 = REPO / "models" / "lenet5_fashion_mnist.keras"

    def build(folder: Path) -> None:
        run_script("prune", f"--model={lenet5}", "--importance=l1", "--target_macs=0.5", "--finetune_epochs=1",
                   "--train_limit=3000", f"--output={folder / 'lenet5_macs50.keras'}")

    return built_once(tmp_path_factory, "lenet5_macs50", build) / "lenet5_macs50.keras"


# ------------------------------------------------------------------------------ the order of a `pytest -n` run
#
# `make test` runs two xdist workers with --dist worksteal (setup.cfg): each worker starts with one half of the
# collection, in order, and a worker whose queue runs dry takes the back half of the other's queue. A run is
# shortest when the slow tests start first, split evenly between the halves, and the queues end with quick tests
# (what is stolen at the end): then no worker sits idle while the other finishes an 80 s test. The seconds below
# (measured under `make test` on 2 cores) only order the tests: a stale or missing entry costs time, never a
# result. A test marked slow and not listed counts SLOW_DEFAULT seconds, any other FAST_DEFAULT; below 5 s a test
# keeps its place in the collection order (its module's fixtures are set up once).

SLOW_TESTS = {  # nodeid, or nodeid without its [parameters] for every parameter set not listed
    "tests/test_composition.py::test_pipeline[efficientnet_b0-magnitude]": 85,
    "tests/test_composition.py::test_pipeline": 35,
    "tests/test_composition.py::test_export_int8": 8,
    "tests/test_composition.py::test_prune_channels": 7,
    "tests/test_pruning_coverage.py::test_prune_30_percent_of_every_group[DenseNet121]": 55,
    "tests/test_pruning_coverage.py::test_prune_30_percent_of_every_group[ResNet50]": 35,
    "tests/test_pruning_coverage.py::test_prune_30_percent_of_every_group[micronet]": 27,
    "tests/test_pruning_coverage.py::test_prune_30_percent_of_every_group[resnet56]": 25,
    "tests/test_pruning_coverage.py::test_prune_30_percent_of_every_group[MobileNetV2]": 18,
    "tests/test_pruning_coverage.py::test_prune_30_percent_of_every_group[mobilenet_v2]": 14,
    "tests/test_pruning_coverage.py::test_prune_30_percent_of_every_group": 5,
    "tests/test_fisher_netadapt.py::test_netadapt_script_resumes_after_sigkill_and_measures_the_result": 55,
    "tests/test_fisher_netadapt.py::test_fisher_prune_script_reaches_a_channel_target": 35,
    "tests/test_fisher_netadapt.py::test_latency_aware_fisher_reaches_a_predicted_latency": 30,
    "tests/test_fisher_netadapt.py::test_netadapt_meets_the_target_with_the_best_ratio_and_resumes": 15,
    "tests/test_script_composition.py::test_snip_then_prune_keeps_the_zeros_through_fine_tuning": 50,
    "tests/test_script_composition.py::test_prune_ternarize_export_int8_evaluate_and_score": 50,
    "tests/test_script_composition.py::test_plan_reapplied_to_a_fresh_lenet5_gives_the_same_channels": 35,
    "tests/test_script_composition.py::test_plain_sparse_model_keeps_its_zeros_by_default": 35,
    "tests/test_scaling.py::test_search_stops_at_the_first_phi_reaching_the_target": 50,
    "tests/test_train_script.py::test_train_writes_model_and_sidecar_that_agree": 45,
    "tests/test_train_script.py::test_resume_after_kill_continues_from_the_checkpoint": 45,
    "tests/test_latency_table.py::test_script_builds_predicts_and_measures": 45,
    "tests/test_latency_table.py::test_build_killed_with_sigkill_resumes_without_measuring_twice": 35,
    "tests/test_latency_table.py::test_prune_script_aims_at_a_predicted_latency": 35,
    "tests/test_latency_table.py::test_remote_build_over_ssh_matches_local_and_survives_dropped_connections": 35,
    "tests/test_ec2t.py::test_ternarize_script_end_to_end": 40,
    "tests/test_distill.py::test_distill_script_trains_a_fresh_student_from_the_reference_lenet5": 30,
    "tests/test_distill.py::test_mirrored_strategy_takes_the_same_step_as_one_device": 12,
    "tests/test_pipeline.py::test_budget_mode_meets_a_reachable_budget_by_measurement": 45,
    "tests/test_pipeline.py::test_prune_distill_ternarize_int8_chain_measures_every_stage_and_resumes": 35,
    "tests/test_pipeline.py::test_sparsify_then_decompose_then_finetune_keeps_the_chain_honest": 20,
    "tests/test_pipeline.py::test_an_unreachable_budget_says_so_and_keeps_the_best_pair": 13,
    "tests/test_pipeline.py::test_a_budget_just_below_the_models_time_is_met_in_two_distinct_rounds": 15,
    "tests/test_pipeline.py::test_compress_script_runs_a_recipe": 35,
    "tests/test_ec2t.py::test_mirrored_strategy_over_two_logical_cpus": 12,
    "tests/test_keras_coverage.py::test_applications[EfficientNetB0]": 38,
    "tests/test_keras_coverage.py::test_applications": 25,
    "tests/test_channel_pruning.py::test_prune_script_writes_model_and_kept_channels": 35,
    "tests/test_snip.py::test_script_prints_layer_sparsity_and_error": 33,
    "tests/test_snip.py::test_snip_beats_random_at_high_sparsity_on_fashion_mnist": 13,
    "tests/test_export.py::test_resnet20_reference_parity": 25,
    "tests/test_export.py::test_export_evaluate_scripts_round_trip": 19,
    "tests/test_export.py::test_lenet5_reference_parity_on_the_full_test_set": 11,
    "tests/test_channel_surgery.py::test_shrunk_model_trains_saves_reloads_and_exports": 16,
    "tests/test_channel_surgery.py::test_masked_model_round_trips_and_shrinks_the_same": 14,
    "tests/test_micronet.py::test_score_script_writes_json": 12,
    "tests/test_zoo.py::test_micronet_phi_3_5_is_the_published_c100_micronet": 12,
    "tests/test_import.py::test_import_keeps_keras3_and_does_not_import_tfmot": 10,
}
SLOW_DEFAULT, FAST_DEFAULT = 4.0, 0.5
# Tests sharing an artefact of built_once run one after the other in one worker: the other does not wait on the lock.
SHARED_ARTEFACTS = ("fashion_latency", "lenet5_macs50", "lenet_budget")


def expected_seconds(item) -> float:
    seconds = SLOW_TESTS.get(item.nodeid, SLOW_TESTS.get(item.nodeid.split("[", 1)[0]))
    if seconds is not None:
        return seconds
    return SLOW_DEFAULT if item.get_closest_marker("slow") else FAST_DEFAULT


def balanced_order(items: list, workers: int, seconds=expected_seconds, slow: float = 5.0) -> list:
    """``items`` reordered for ``workers`` worksteal queues (the i-th gets the next ``remaining // (workers − i)``
    items): the slow tests (≥ ``slow`` s; those sharing an artefact as one unit) spread over the queues, the
    longest first (LPT), each queue starting with its share, slowest first, then quick tests in collection order."""
    units: dict[str, list] = {}
    quick = []
    for item in items:
        shared = next((name for name in SHARED_ARTEFACTS if name in getattr(item, "fixturenames", ())), None)
        if shared or seconds(item) >= slow:
            units.setdefault(shared or item.nodeid, []).append(item)
        else:
            quick.append(item)
    sizes, remaining = [], len(items)
    for i in range(workers):
        sizes.append(remaining // (workers - i))  # what worksteal sends the i-th worker at the start
        remaining -= sizes[-1]
    queues: list[list] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for unit in sorted(units.values(), key=lambda unit: -sum(map(seconds, unit))):
        fits = [i for i in range(workers) if len(queues[i]) + len(unit) <= sizes[i]] or range(workers)
        target = min(fits, key=loads.__getitem__)
        queues[target] += sorted(unit, key=seconds, reverse=True)
        loads[target] += sum(map(seconds, unit))
    ordered = []
    for i, queue in enumerate(queues):
        fill = max(0, sizes[i] - len(queue)) if i < workers - 1 else len(quick)
        ordered += queue + quick[:fill]
        del quick[:fill]
    return ordered


@pytest.hookimpl(trylast=True)  # after -m / -k deselected: the count is the one the scheduler splits
def pytest_collection_modifyitems(config, items):
    workerinput = getattr(config, "workerinput", None)  # set in an xdist worker, which collects what it runs
    # an xdist worker sets its own --dist to "no": the scheduler's mode is in the arguments as first parsed
    dist = getattr(getattr(config, "known_args_namespace", None), "dist", None)
    if workerinput is None or dist != "worksteal" or len(items) < 2:
        return
    items[:] = balanced_order(items, int(workerinput["workercount"]))
