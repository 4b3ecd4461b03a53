"""tfcompress.latency.ssh: SshDevice against a real OpenSSH server on 127.0.0.1 (tests/sshd.py), no mocks.

The "remote" machine is this one, so its fingerprint must equal the local one and its latencies the local
runner's, up to noise (2 shared cores: medians are compared within a factor of 3, nothing tighter).
"""

from __future__ import annotations

import getpass
import re
import shutil
import stat
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.sshd import free_port, keygen, sshd_server_fixture  # noqa: F401  (provides sshd_server)
from tfcompress import zoo
from tfcompress.latency import devices, interpreter, remote_runner
from tfcompress.latency.device import FINGERPRINT_KEYS, comparable
from tfcompress.latency.host import describe_host
from tfcompress.latency.result import BenchmarkError
from tfcompress.latency.ssh import RemoteRunnerError, SshDevice, SshError

# benchmark_model 2.x output with percentiles (the sample tests/test_latency.py quotes), for a fake binary.
BENCHMARK_MODEL_OUTPUT = """\
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=106436 curr=105929 min=105929 max=106436 avg=106065 std=193 p5=105929 median=105948 p95=106436

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=106022 curr=105780 min=105416 max=106528 avg=105784 std=260 p5=105485 median=105718 p95=106281

INFO: Inference timings in us: Init: 87639, First inference: 106436, Warmup (avg): 106065, Inference (avg): 105784
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> list[Path]:
    """LeNet-5, a one-conv model, and LeNet-5 again under the same file name in another folder."""
    root = tmp_path_factory.mktemp("ssh_models")
    tiny = tf.keras.Sequential([tf.keras.Input((16, 16, 3), batch_size=1), tf.keras.layers.Conv2D(4, 3)])
    paths = [root / "lenet5.tflite", root / "conv.tflite", root / "copy" / "lenet5.tflite"]
    paths[2].parent.mkdir()
    paths[0].write_bytes(tf.lite.TFLiteConverter.from_keras_model(zoo.lenet5()).convert())
    paths[1].write_bytes(tf.lite.TFLiteConverter.from_keras_model(tiny).convert())
    shutil.copy(paths[0], paths[2])
    return paths


@pytest.fixture
def device(sshd_server):
    with SshDevice.from_url(sshd_server.url()) as opened:
        yield opened


def fake_benchmark_model(folder: Path, sleep_s: float = 0) -> Path:
    """A program with benchmark_model's interface: records its arguments, touches ``started``, sleeps, logs
    :data:`BENCHMARK_MODEL_OUTPUT` to stderr."""
    (folder / "output.txt").write_text(BENCHMARK_MODEL_OUTPUT)
    path = folder / "benchmark_model"
    path.write_text(f'#!/bin/sh\nhere="$(dirname "$0")"\nprintf "%s\\n" "$@" > "$here/args.txt"\n'
                    f'touch "$here/started"\nsleep {sleep_s}\ncat "$here/output.txt" >&2\n')
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def assert_sane(result, runs: int) -> None:
    assert result.runs == runs and len(result.times_ms) == runs
    assert result.max_ms >= result.median_ms >= result.min_ms > 0
    assert result.std_ms >= 0


def wait_until_empty(folder: Path, timeout_s: float = 5) -> list[Path]:
    deadline = time.monotonic() + timeout_s
    while (left := list(folder.iterdir())) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


# ---------------------------------------------------------------------------------------------------------------
# Measuring


def test_remote_measurement_carries_the_devices_fingerprint(sshd_server, models):
    url = sshd_server.url()
    device = devices.open_device(url)
    assert isinstance(device, SshDevice) and device.name == url
    with device:
        [result] = device.measure([models[0]], threads=1, runs=20, warmup=2)
        fingerprint = device.fingerprint(threads=1)
    assert_sane(result, runs=20)
    assert (result.runtime, result.model_path, result.threads, result.warmup) == (
        "litert-interpreter", str(models[0]), 1, 2)
    assert result.model_bytes == models[0].stat().st_size
    assert result.runtime_version == interpreter.litert_version()
    assert result.details["device"] == url and result.details["kernels"] == "xnnpack"
    assert result.details["inputs"] == [{"name": "serving_default_image:0", "shape": [1, 28, 28, 1],
                                         "dtype": "float32"}]
    local = describe_host()
    for key in ("machine", "cpu", "isa", "cores", "os", "node"):
        assert result.host[key] == local[key] == fingerprint[key], key
    # The same machine and runtime as the local interpreter: the two fingerprints are interchangeable.
    assert comparable(fingerprint, devices.LocalDevice("litert").fingerprint(1)) == []
    assert fingerprint["device"] == url
    assert set(FINGERPRINT_KEYS) <= set(fingerprint)
    assert wait_until_empty(sshd_server.remote_tmp) == []  # the remote batch directory is gone


def test_remote_and_local_latencies_agree(device, models):
    [remote] = device.measure([models[0]], threads=1, runs=30, warmup=3)
    local = interpreter.run_interpreter(models[0], threads=1, runs=30, warmup=3)
    ratio = remote.median_ms / local.median_ms
    assert 1 / 3 < ratio < 3, f"remote {remote.median_ms:.3f} ms vs local {local.median_ms:.3f} ms"


def test_a_batch_is_one_connection_and_keeps_order_and_local_paths(sshd_server, models):
    logins_before = sshd_server.log.read_text().count("Accepted publickey")
    with SshDevice.from_url(sshd_server.url()) as device:
        results = device.measure(models, threads=2, runs=5, warmup=1)
        again = device.measure(models[:1], threads=1, runs=5, warmup=0)
    assert [r.model_path for r in results] == [str(m) for m in models]  # duplicate file names stay apart
    assert [r.details["inputs"][0]["shape"] for r in results] == [[1, 28, 28, 1], [1, 16, 16, 3], [1, 28, 28, 1]]
    assert all(r.threads == 2 and r.runs == 5 for r in results) and again[0].threads == 1
    assert all(r.details["ssh_attempts"] == 1 for r in [*results, *again])
    # Facts, batch and second batch share one multiplexed connection: one handshake, one login.
    assert sshd_server.log.read_text().count("Accepted publickey") == logins_before + 1


def test_litert_benchmark_runner_over_ssh(sshd_server, models):
    with SshDevice.from_url(sshd_server.url(runner="litert_benchmark")) as device:
        [result] = device.measure([models[1]], threads=1, runs=10, warmup=2)
        fingerprint = device.fingerprint(threads=1)
    assert result.runtime == "litert-benchmark" and result.runs == 10 and result.mean_ms > 0
    assert result.model_path == str(models[1]) and result.details["std_ddof"] == 1
    assert result.details["command"][1].startswith("--model=" + str(sshd_server.remote_tmp))
    assert fingerprint["runtime"] == "litert-benchmark"
    assert fingerprint["runtime_version"] == interpreter.litert_version()


def test_binary_runner_over_ssh(sshd_server, models, tmp_path):
    fake = fake_benchmark_model(tmp_path)
    with SshDevice.from_url(sshd_server.url(runner=f"binary:{fake}")) as device:
        results = device.measure(models[:2], threads=4, runs=50, warmup=3)
        fingerprint = device.fingerprint(threads=4)
    arguments = (tmp_path / "args.txt").read_text().splitlines()  # of the last model
    assert arguments[0].startswith(f"--graph={sshd_server.remote_tmp}/") and arguments[0].endswith("/m1.tflite")
    assert arguments[1:] == ["--num_threads=4", "--num_runs=50", "--warmup_runs=3", "--min_secs=0",
                             "--warmup_min_secs=0"]
    for result, model in zip(results, models, strict=False):
        assert result.runtime == "benchmark_model" and result.model_path == str(model)
        assert (result.mean_ms, result.median_ms, result.min_ms, result.std_ms) == pytest.approx(
            (105.784, 105.718, 105.416, 0.260))
        assert result.details["p95_ms"] == pytest.approx(106.281)
    assert fingerprint["runtime"] == "benchmark_model"
    assert fingerprint["runtime_version"] == results[0].runtime_version == devices.file_digest(fake)


# ---------------------------------------------------------------------------------------------------------------
# Dropped connections


def test_a_connection_dropped_between_calls_is_reopened(sshd_server, device, models):
    device.measure(models[:1], threads=1, runs=3, warmup=0)
    assert sshd_server.drop_connections() >= 1
    [result] = device.measure(models[:1], threads=1, runs=3, warmup=0)
    assert_sane(result, runs=3)


def test_a_connection_dropped_during_a_call_is_retried(sshd_server, models, tmp_path):
    fake = fake_benchmark_model(tmp_path, sleep_s=1)
    outcome = {}
    with SshDevice.from_url(sshd_server.url(runner=f"binary:{fake}")) as device:
        device.fingerprint(threads=1)
        measuring = threading.Thread(
            target=lambda: outcome.update(results=device.measure(models[:1], threads=1, runs=50, warmup=1)))
        measuring.start()
        deadline = time.monotonic() + 10
        while not (tmp_path / "started").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sshd_server.drop_connections() >= 1  # while the fake benchmark_model sleeps
        measuring.join(timeout=30)
    [result] = outcome["results"]
    assert result.details["ssh_attempts"] == 2 and result.mean_ms == pytest.approx(105.784)
    assert wait_until_empty(sshd_server.remote_tmp) == []  # the interrupted attempt cleaned up after itself


# ---------------------------------------------------------------------------------------------------------------
# Errors, each in one line that says what to do


def test_a_port_nobody_listens_on_is_unreachable(sshd_server, models):
    port = free_port()
    device = SshDevice.from_url(sshd_server.url(port=port))
    started = time.monotonic()
    with pytest.raises(SshError, match=rf"cannot reach tfc-test-sshd \(127\.0\.0\.1:{port}\) over SSH: "
                                       r".*Connection refused"):
        device.measure(models[:1], threads=1, runs=1, warmup=0)
    assert time.monotonic() - started < 5  # not retried


def test_a_key_the_server_does_not_know_is_refused(sshd_server, models, tmp_path):
    config = sshd_server.client_config("stranger_config", identity=keygen(tmp_path / "stranger"))
    device = SshDevice.from_url(sshd_server.url(config=config))
    with pytest.raises(SshError, match=rf"refused authentication for user {getpass.getuser()} .*load a key into "
                                       r"ssh-agent or set IdentityFile in ~/.ssh/config"):
        device.fingerprint(threads=1)


def test_an_unknown_host_key_is_refused_with_the_fix(sshd_server, tmp_path):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    device = SshDevice.from_url(sshd_server.url(config=sshd_server.client_config("no_hosts", known_hosts=empty)))
    with pytest.raises(SshError, match=r"Host key verification failed for .*not in known_hosts.*connect once with "
                                       r"`ssh -F .* tfc-test-sshd`"):
        device.fingerprint(threads=1)


def test_a_missing_binary_is_named(sshd_server, models):
    device = SshDevice.from_url(sshd_server.url(runner="binary:/nonexistent/benchmark_model"))
    with pytest.raises(RemoteRunnerError, match=r"benchmark_model /nonexistent/benchmark_model does not exist on "
                                                r"tfc-test-sshd: .*\?runner=binary:"):
        device.measure(models[:1], threads=1, runs=1, warmup=0)


def test_a_missing_python_is_named(sshd_server, models):
    device = SshDevice.from_url(sshd_server.url(python="/nonexistent/python"))
    with pytest.raises(RemoteRunnerError, match=r"cannot run Python '/nonexistent/python' on tfc-test-sshd .*"
                                                r"\?python=/usr/bin/python3"):
        device.measure(models[:1], threads=1, runs=1, warmup=0)


def test_a_python_without_ai_edge_litert_is_named(sshd_server, models):
    system_python = Path("/usr/bin/python3")
    if not system_python.exists() or Path(sys.executable).resolve() == system_python.resolve():
        pytest.skip("needs a system Python besides this venv's")
    device = SshDevice.from_url(sshd_server.url(python=str(system_python)))
    try:
        device.fingerprint(threads=1)
    except RemoteRunnerError as error:
        assert "ai-edge-litert is not installed for /usr/bin/python3 on tfc-test-sshd" in str(error)
        assert "/usr/bin/python3 -m pip install ai-edge-litert" in str(error)
    else:
        pytest.skip("/usr/bin/python3 has ai-edge-litert")


def test_a_model_litert_cannot_load_is_named(device, models, tmp_path):
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(models[0].read_bytes()[:2000])  # a valid header, then nothing
    with pytest.raises(BenchmarkError, match=rf"LiteRT on tfc-test-sshd cannot measure {broken}: "):
        device.measure([models[1], broken], threads=1, runs=1, warmup=0)


def test_a_command_that_outlives_the_timeout_names_the_device(sshd_server, models, tmp_path):
    fake = fake_benchmark_model(tmp_path, sleep_s=3)
    with SshDevice.from_url(sshd_server.url(runner=f"binary:{fake}")) as device:
        device.fingerprint(threads=1)  # connect first, so that only the measurement meets the timeout
        device.run_timeout_s = 1
        with pytest.raises(SshError, match=rf"{re.escape(device.name)}: no answer within 1 s"):
            device.measure(models[:1], threads=1, runs=1, warmup=0)


@pytest.mark.parametrize(("url", "message"), [
    ("ssh://", "no host"),
    ("ssh://pi:99999", "malformed SSH address"),
    ("ssh://pi:22x", "malformed SSH address"),
    ("ssh://[::1", "malformed SSH address"),
    ("ssh://pi/home/pi", "a path or #fragment"),
    ("ssh://pi:secret@pi", "holds a password"),
    ("ssh://pi?runner=gpu", "unknown runner 'gpu': choose python, litert_benchmark or binary:/abs/path"),
    ("ssh://pi?runner=binary:benchmark_model", "needs the absolute path of benchmark_model on the device"),
    ("ssh://pi?threads=4", "unknown option 'threads'"),
    ("ssh://pi?runner=python&runner=litert_benchmark", "option 'runner' is given twice"),
    ("ssh://pi?runner", "malformed options"),
    ("ssh://-oProxyCommand=x", "is not a host name"),
])
def test_malformed_addresses_are_refused_with_the_form(url, message):
    with pytest.raises(ValueError, match=message) as raised:
        SshDevice.from_url(url)
    assert len(str(raised.value).splitlines()) == 1


def test_a_missing_config_file_is_named():
    with pytest.raises(FileNotFoundError, match="ssh configuration file '/nonexistent/config' does not exist"):
        SshDevice.from_url("ssh://pi?config=/nonexistent/config")


def test_a_device_built_from_arguments_is_named_by_its_url():
    device = SshDevice("pi", user="pi", port=2222, runner="binary:/home/pi/benchmark_model", python="python3")
    assert device.name == "ssh://pi@pi:2222?runner=binary:/home/pi/benchmark_model"
    again = SshDevice.from_url(device.name)
    assert (again.host, again.user, again.port, again.runner, again.binary) == (
        "pi", "pi", 2222, "binary", "/home/pi/benchmark_model")
    assert SshDevice("pi").name == "ssh://pi"


def test_close_stops_the_shared_connection_and_the_device_stays_usable(sshd_server, models):
    device = SshDevice.from_url(sshd_server.url())
    device.fingerprint(threads=1)
    control_dir = Path(device._control_dir)
    assert (control_dir / "cm").exists()
    device.close()
    assert not control_dir.exists()
    assert device.fingerprint(threads=1)["cores"] == describe_host()["cores"]
    device.close()


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int8, np.uint8, np.int16, np.int32, np.int64, np.bool_])
def test_the_remote_runner_feeds_the_same_inputs_as_the_local_one(dtype):
    expected = interpreter.random_input([2, 5], dtype, np.random.default_rng(0))
    got = remote_runner.random_input([2, 5], dtype, np.random.default_rng(0))
    assert got.dtype == expected.dtype and np.array_equal(got, expected)
