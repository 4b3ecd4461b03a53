"""Latency tables: units, grids, building (journal, resume after SIGKILL, shards), prediction, cost functions
and latency targets for pruning — on real LiteRT measurements of small models."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import keras
import numpy as np
import pytest

from tests.conftest import REPO, built_once, run_file, run_script
from tests.sshd import sshd_server_fixture  # noqa: F401  (provides sshd_server)
from tfcompress import latency, zoo
from tfcompress.graph import ChannelGraph
from tfcompress.latency.build import journal_path
from tfcompress.latency.table import Entry, Table, TableError, grid_points
from tfcompress.latency.units import Axis, find_units
from tfcompress.pruning import prune_channels, shrink
from tfcompress.pruning.channels import latency_fraction

FAST = {"repeats": 1, "runs": 10, "warmup": 2, "residues": False, "progress": False}


def small_resnet(name: str = "small", classes: int = 4, shape: tuple[int, int, int] = (16, 16, 3)) -> keras.Model:
    """Stem conv → block (conv-BN-ReLU, conv-BN) + identity → ReLU → pooling → classifier."""
    inputs = keras.Input(shape)
    stem = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    stem = keras.layers.ReLU()(keras.layers.BatchNormalization()(stem))
    x = keras.layers.Conv2D(16, 3, padding="same", name="conv1")(stem)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(16, 3, padding="same", name="conv2")(x))
    x = keras.layers.ReLU()(keras.layers.Add(name="add")([x, stem]))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(x), name=name)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    return small_resnet()


@pytest.fixture(scope="module")
def table(model, tmp_path_factory):
    """The float32 and int8 table of ``model`` (measured once per test run, whichever xdist worker needs it first;
    the others load it)."""

    def build(folder):
        latency.build_table(model, "litert", output=folder / "small.npz", precisions=("float32", "int8"), **FAST)

    return Table.load(built_once(tmp_path_factory, "small_table", build) / "small.npz")


# ------------------------------------------------------------------------------------------------- units


def test_resnet20_units_fuse_bn_and_activation_and_share_keys_across_blocks():
    model = zoo.build("resnet20", input_shape=(32, 32, 3), num_classes=10)
    units = find_units(model)
    assert len(units) == 32  # stem, 9 blocks × (conv1, conv2, add), 2 projections, pool, logits
    by_name = {u.name: u for u in units}
    assert [type(c.layer).__name__ for c in by_name["stem"].calls] == ["Conv2D", "BatchNormalization", "ReLU"]
    assert [type(c.layer).__name__ for c in by_name["stage1_block0_add"].calls] == ["Add", "ReLU"]
    assert [a.size for a in by_name["stage3_block1_conv1"].axes] == [64, 64]
    assert [a.size for a in by_name["stem"].axes] == [16]  # the 3 input channels are fixed: part of the key
    # the identical blocks of a stage share one structure
    assert by_name["stage2_block1_conv1"].key == by_name["stage2_block2_conv1"].key
    assert by_name["stage2_block1_conv1"].key != by_name["stage3_block1_conv1"].key  # other H×W
    assert len({u.key for u in units}) == 16


def test_pruned_model_has_the_same_unit_keys_and_smaller_values(model):
    graph = ChannelGraph(model)
    keep = {g.id: range(8) for g in graph.prunable_groups}
    pruned = shrink(model, graph.masks_from_keep(keep), graph=graph)
    before, after = find_units(model), find_units(pruned)
    assert [u.key for u in before] == [u.key for u in after]
    assert [u.values() for u in after] == [tuple(8 for _ in u.axes) for u in before]


def test_unit_build_has_the_channels_of_its_axis_values(model):
    conv1 = next(u for u in find_units(model) if u.name == "conv1")
    built = conv1.build((5, 11))
    assert built.input_shape == (1, 16, 16, 5) and built.output_shape == (1, 16, 16, 11)
    with pytest.raises(ValueError, match=r"outside 1\.\.16"):
        conv1.build((0, 16))


def test_axis_counts_split_a_value_in_proportion():
    axis = Axis((1, 2, 3), (10, 20, 30))
    for value in (3, 7, 30, 59, 60):
        counts = axis.counts(value)
        assert sum(counts.values()) == value and min(counts.values()) >= 1
    assert axis.counts(30) == {1: 5, 2: 10, 3: 15}


def test_grid_points_are_multiples_of_the_step_with_both_ends():
    assert grid_points(Axis((0,), (16,)), 8, 12).tolist() == [1, 8, 16]
    assert grid_points(Axis((0,), (30,)), 8, 12).tolist() == [1, 8, 16, 24, 30]
    wide = grid_points(Axis((0,), (960,)), 8, 12)
    assert len(wide) <= 13 and wide[0] == 1 and wide[-1] == 960  # the step widened
    assert grid_points(Axis((0,), (1,)), 8, 12).tolist() == [1]


def test_unknown_spatial_size_is_refused_with_the_fix():
    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, keras.layers.Conv2D(4, 3)(inputs))
    with pytest.raises(ValueError, match="fixed input shape"):
        find_units(model)


# ------------------------------------------------------------------------------------------ interpolation


def test_ceil_reads_the_next_grid_point_and_linear_interpolates():
    entry = Entry("{}", (np.array([1, 8, 16]), np.array([4])), {"float32": np.array([[10.0], [20.0], [40.0]])})
    ceil, linear = entry.interpolator("float32", step=8), entry.interpolator("float32", method="linear")
    assert ceil((8, 4)) == linear((8, 4)) == 20.0  # on the grid both are exact
    assert ceil((9, 4)) == 40.0 and linear((12, 4)) == pytest.approx(30.0)
    assert linear((20, 4)) == pytest.approx(50.0)  # beyond the grid: extrapolated
    smoothed = entry.interpolator("float32", sigma=1.0, method="linear")
    assert 10.0 < smoothed((1, 4)) < 20.0 and 20.0 < smoothed((16, 4)) < 40.0  # the jumps flattened
    with pytest.raises(TableError, match="no int8"):
        entry.interpolator("int8")
    # residues (step 4): 15 channels cost 1.5× what 16 do, 14 half as much; the pattern repeats below 8 and 12
    stepped = Entry("{}", (np.array([1, 4, 8, 12, 16]),), {"float32": np.array([10.0, 15.0, 20.0, 30.0, 40.0])},
                    residues={"float32": np.array([[60.0, 20.0, 40.0]])})
    step_ceil = stepped.interpolator("float32", step=4)
    widened = Entry("{}", (np.array([1, 16, 32]),), {"float32": np.array([10.0, 20.0, 40.0])})
    assert widened.interpolator("float32", step=8)((9,)) == pytest.approx(20.0)  # 16: on the grid
    assert widened.interpolator("float32", step=8)((17,)) == pytest.approx(30.0)  # 24: between 16 and 32
    assert step_ceil((15,)) == pytest.approx(60.0) and step_ceil((14,)) == pytest.approx(20.0)
    assert step_ceil((7,)) == pytest.approx(30.0) and step_ceil((16,)) == step_ceil((8,)) * 2 == 40.0
    entry.values["float32"][1, 0] = np.nan
    with pytest.raises(TableError, match="merge the other shards"):
        entry.interpolator("float32")


# ------------------------------------------------------------------------------------ building, predicting


def test_table_round_trips_and_predicts_the_measured_model(table, model, tmp_path):
    assert set(table.precisions) == {"float32", "int8"}
    assert table.fingerprint["cpu"] == latency.describe_host()["cpu"] and "isa" in table.fingerprint
    table.save(tmp_path / "copy.npz")
    loaded = Table.load(tmp_path / "copy.npz")
    assert loaded.entries.keys() == table.entries.keys()
    for precision in ("float32", "int8"):
        prediction = loaded.predict(model, precision)
        measured = next(iter(table.meta["architectures"].values()))["measured_us"][precision]
        # the intercept is calibrated on the whole unpruned model: its prediction is its measurement
        assert prediction.calibrated and prediction.total_us == pytest.approx(measured, rel=1e-9)
        assert [name for name, _ in prediction.layers] == ["stem", "conv1", "conv2", "add", "pool", "logits"]
        assert prediction.breakdown().count("us") == 7
    with np.load(tmp_path / "copy.npz", allow_pickle=False) as arrays:
        assert all(arrays[name].dtype != object for name in arrays.files)


def test_cost_fn_equals_the_prediction_of_the_pruned_model(table, model):
    graph = ChannelGraph(model)
    cost = table.cost_fn(model, "float32", graph)
    full = table.predict(model, "float32").total_us
    assert cost({}) == pytest.approx(full)
    for size in (8, 12, 3):
        counts = {g.id: size for g in graph.prunable_groups}
        pruned = shrink(model, graph.masks_from_keep({g: range(n) for g, n in counts.items()}), graph=graph)
        assert cost(counts) == pytest.approx(table.predict(pruned, "float32").total_us)
    assert cost({g.id: 8 for g in graph.prunable_groups}) < 0.8 * full  # half the channels: clearly faster


def test_cost_fn_maps_the_groups_of_a_model_with_compression_layers(table, model):
    masked = _weight_masked(model)  # WeightMask wrappers: the pruning graph is not the exported one
    graph = ChannelGraph(masked)
    counts = {g.id: 8 for g in graph.prunable_groups}
    small = shrink(masked, graph.masks_from_keep({g: range(n) for g, n in counts.items()}), graph=graph)
    assert table.cost_fn(masked, "float32", graph)(counts) == pytest.approx(table.predict(small, "float32").total_us)


def _weight_masked(model: keras.Model) -> keras.Model:
    from tfcompress.pruning import weight_masks

    masks = {name: {"kernel": np.abs(weights) > np.median(np.abs(weights))}
             for name, weights in ((layer.name, layer.kernel.numpy()) for layer in model.layers
                                   if isinstance(layer, keras.layers.Conv2D))}
    return weight_masks.apply_masks(model, masks)


def test_missing_unit_is_an_error_naming_the_layer(table):
    other = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 5, name="wide_conv")])
    with pytest.raises(TableError, match=r"wide_conv.*scripts/latency_table\.py"):
        table.predict(other)


def test_another_device_is_refused_unless_forced(table):
    other = {**table.fingerprint, "isa": ["avx512_vnni"], "threads": 4}
    with pytest.raises(TableError, match=r"isa.*threads"):
        table.check_device(other)
    table.check_device(other, force=True)
    table.check_device(table.fingerprint)


def test_prune_to_a_latency_target(table, model):
    cost = table.cost_fn(model, "float32")
    full = cost({})
    result = prune_channels(model, "l1", cost_fn=cost, target_latency=0.7)
    assert table.predict(result.model, "float32").total_us <= 0.7 * full * 1.0001
    milliseconds = f"{0.8 * full / 1000:.6f}ms"
    result = prune_channels(model, "l1", cost_fn=cost, target_latency=milliseconds)
    assert table.predict(result.model, "float32").total_us <= 0.8 * full * 1.0001
    with pytest.raises(ValueError, match="needs cost_fn"):
        prune_channels(model, "l1", target_latency=0.5)
    assert latency_fraction("2ms", 4000.0) == 0.5 and latency_fraction("10ms", 4000.0) == 1.0
    with pytest.raises(ValueError, match="milliseconds"):
        latency_fraction("fast", 1.0)


# -------------------------------------------------------------------------------- journal, resume, shards


def test_existing_journal_needs_resume_and_another_device_needs_force(model, tmp_path):
    output = tmp_path / "t.npz"
    latency.build_table(model, "litert", output=output, precisions=("float32",), max_points=2, **FAST)
    with pytest.raises(ValueError, match="pass resume"):
        latency.build_table(model, "litert", output=output, precisions=("float32",), max_points=2, **FAST)
    journal = journal_path(output)
    lines = journal.read_text().splitlines()
    header = json.loads(lines[0])
    header["fingerprint"]["cpu"] = "Raspberry Pi 5 (Cortex-A76)"
    journal.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    with pytest.raises(TableError, match=r"another device.*Cortex-A76"):
        latency.build_table(model, "litert", output=output, precisions=("float32",), max_points=2, resume=True,
                            **FAST)
    resumed = latency.build_table(model, "litert", output=output, precisions=("float32",), max_points=2,
                                  resume=True, force=True, **FAST)
    assert len(journal.read_text().splitlines()) == len(lines)  # everything was measured already
    assert resumed.predict(model).total_us > 0


def test_shards_merge_into_the_whole_table(model, tmp_path):
    parts = [latency.build_table(model, "litert", output=tmp_path / f"s{i}.npz", precisions=("float32",),
                                 shard=f"{i}/2", max_points=2, **FAST) for i in range(2)]
    for part in parts:
        with pytest.raises(TableError, match="merge the other shards"):
            part.predict(model)
    merged = Table.merge([Table.load(tmp_path / f"s{i}.npz") for i in range(2)])
    assert all(not np.isnan(v).any() for e in merged.entries.values() for v in e.values.values())
    assert merged.predict(model).total_us > 0
    with pytest.raises(ValueError, match="i/n"):
        latency.parse_shard("2/2")


def test_build_killed_with_sigkill_resumes_without_measuring_twice(tmp_path):
    """A real SIGKILL in the middle of a build; the resumed build measures only what is missing."""
    script = tmp_path / "build.py"
    output = tmp_path / "killed.npz"
    script.write_text(
        f"import sys\nsys.path.insert(0, {str(REPO)!r})\n"
        + "from tests.test_latency_table import small_resnet\nfrom tfcompress import latency\n"
        + f"latency.build_table(small_resnet(), 'litert', output={str(output)!r}, precisions=('float32',), "
        + "repeats=3, runs=3, warmup=1, max_points=2, residues=False, batch_size=2, resume=len(sys.argv) > 1, "
        + "progress=False)\n")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    journal = journal_path(output)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if journal.exists() and len(journal.read_text().splitlines()) > 12:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = [json.loads(line) for line in journal.read_text().splitlines()[1:] if line.endswith("}")]
    assert len(before) > 10 and not output.exists()
    run_file(script, "resume", timeout=300)  # forked from tests/script_server.py: no second TensorFlow import
    records = [json.loads(line) for line in journal.read_text().splitlines()[1:]]
    pairs = [(r["task"], r["repeat"]) for r in records]
    assert len(pairs) == len(set(pairs))  # nothing measured twice
    assert records[:len(before)] == before
    tasks = {task for task, _ in pairs}
    assert all(sum(1 for t, _ in pairs if t == task) == 3 for task in tasks)
    assert Table.load(output).predict(small_resnet()).total_us > 0


@pytest.mark.slow
def test_script_builds_predicts_and_measures(model, tmp_path):
    source = tmp_path / "small.keras"
    model.save(source)
    output = tmp_path / "small.npz"
    run_script("latency_table", f"--model={source}", f"--output={output}", "--precision=float32", "--repeats=3",
               "--runs=10", "--max_points=3")
    graph = ChannelGraph(model)
    pruned = shrink(model, graph.masks_from_keep({g.id: range(8) for g in graph.prunable_groups}), graph=graph)
    pruned.save(tmp_path / "pruned.keras")
    result = run_script("latency_table", f"--table={output}", f"--predict={tmp_path / 'pruned.keras'}",
                        "--precision=float32", "--measure", f"--json={tmp_path / 'p.json'}")
    assert "predicted_ms:" in result.stdout and "measured_ms:" in result.stdout
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["predicted_ms"] > 0 and report["measured_ms"] > 0 and abs(report["error"]) < 1.0
    bad = run_script("latency_table", f"--model={source}", check=False, fresh=True)  # a fresh interpreter
    assert bad.returncode != 0 and "--output is required" in bad.stderr


def test_remote_build_over_ssh_matches_local_and_survives_dropped_connections(sshd_server, model, tmp_path):
    """The "device" is this machine behind a real sshd; its connections are killed again and again mid-build."""
    # the local reference right before the remote build: under the same load from the other test workers
    table = latency.build_table(model, "litert", output=tmp_path / "local.npz", precisions=("float32",), **FAST)
    output = tmp_path / "remote.npz"
    journal = journal_path(output)
    drops, stop = [], threading.Event()

    def drop_while_building() -> None:
        while not stop.is_set():
            if journal.exists() and len(journal.read_text().splitlines()) > 4 * len(drops) + 4:
                drops.append(sshd_server.drop_connections())
            time.sleep(0.05)

    dropper = threading.Thread(target=drop_while_building, daemon=True)
    dropper.start()
    try:
        remote = latency.build_table(model, sshd_server.url(), output=output, precisions=("float32",),
                                     batch_size=4, **FAST)
    finally:
        stop.set()
        dropper.join()
    assert sum(drops) >= 2  # connections really were dropped mid-build
    pairs = [(r["task"], r["repeat"]) for r in map(json.loads, journal.read_text().splitlines()[1:])]
    assert len(pairs) == len(set(pairs))  # retried batches measured nothing twice
    assert remote.meta["device"].startswith("ssh://") and not latency.device.comparable(
        remote.fingerprint, {**table.fingerprint, "runtime": "litert-interpreter"})
    # the same machine: the same latencies, within the noise of single 10-run measurements of µs-long models
    ratios = np.concatenate([(remote.entries[key].values["float32"] / entry.values["float32"]).ravel()
                             for key, entry in table.entries.items()])
    assert 0.6 < np.median(ratios) < 1.6 and len(ratios) > 20


@pytest.mark.slow
def test_benchmark_script_measures_over_ssh(sshd_server, model, tmp_path):
    from tfcompress.export import to_tflite

    tflite = tmp_path / "small.tflite"
    to_tflite(model, output=tflite)
    result = run_script("benchmark", f"--tflite={tflite}", f"--device={sshd_server.url()}", "--runs=5",
                        f"--json={tmp_path / 'r.json'}")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["details"]["device"] == sshd_server.url() and report["median_ms"] > 0
    assert report["host"]["isa"] == latency.describe_host()["isa"] and "ms" in result.stdout
    refused = run_script("benchmark", f"--tflite={tflite}", "--device=ssh://", check=False)
    assert refused.returncode != 0 and "ssh://" in refused.stderr


@pytest.mark.slow
def test_prune_script_aims_at_a_predicted_latency(fashion_latency, tmp_path):
    output = tmp_path / "pruned.keras"
    source, table = fashion_latency.model_path, fashion_latency.table_path
    run_script("prune", f"--model={source}", f"--latency_table={table}", "--target_latency=0.7",
               "--channel_multiple=8", f"--output={output}")
    predicted = json.loads(output.with_name("pruned.keras.json").read_text())["predicted_latency_ms"]
    assert predicted["after"] <= 0.7 * predicted["before"] * 1.0001 and predicted["device"] == "litert"
    alone = run_script("prune", f"--model={source}", "--target_latency=0.7", f"--output={output}", check=False)
    assert alone.returncode != 0 and "--latency_table" in alone.stderr
