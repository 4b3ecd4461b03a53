"""tfcompress.latency: the three runners, the benchmark_model output parser, input checks and the CLI.

Timings are never asserted (2 shared cores, a training job beside us): only structure and sanity.
"""

from __future__ import annotations

import json
import math
import os
import stat
import textwrap
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import run_script
from tfcompress import latency, zoo
from tfcompress.latency import binary, host, interpreter, litert_benchmark

# ---------------------------------------------------------------------------------------------------------------
# Real benchmark_model output, quoted from public repositories (trimmed to the lines around the timings).

# TFLite 1.12 (tensorflow/contrib/lite era), as quoted in a Yocto BSP manual for a "tensorflow-lite-1.12" recipe:
# fixed-count phases ("Running benchmark for 50 iterations") and the old summary with "no stats".
TFLITE_1_12 = """\
STARTING!
Num runs: [50]
Inter-run delay (seconds): [-1]
Num threads: [1]
Warmup runs: [1]
Graph: [mobilenet_v1_1.0_224_quant.tflite]
Loaded model mobilenet_v1_1.0_224_quant.tflite
resolved reporter
Initialized session in 4.452ms
Running benchmark for 1 iterations
count=1 curr=146161

Running benchmark for 50 iterations
count=50 first=137789 curr=137254 min=137079 max=143416 avg=137722 std=896

Average inference timings in us: Warmup: 146161, Init: 4452, no stats: 137722
"""

# TFLite ~2.0 built with tensorflow/lite/tools/make for armv7l, on a Zedboard:
# tflite-soc/zedboard-setup, benchmarking.md. Warm-up phase with a single run prints no min/max.
TFLITE_2_0_ZEDBOARD = """\
Min warmup runs: [1]
Min warmup runs duration (seconds): [0.5]
Graph: [../../tensorflow-models/mobilenet-v1/mobilenet_v1_1.0_224_quant.tflite]
Loaded model ../../tensorflow-models/mobilenet-v1/mobilenet_v1_1.0_224_quant.tflite
resolved reporter
Initialized session in 21.039ms
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=751932

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=747738 curr=747428 min=747331 max=748577 avg=747733 std=293

Average inference timings in us: Warmup: 751932, Init: 21039, no stats: 747733
"""

# TFLite 2.8 on qemuriscv64 with --enable_op_profiling=true: NobuoTsukamoto/meta-tensorflow-lite,
# doc/tensorflow-lite-benchmark.md. Scientific notation, and the op profiler's own "Timings (microseconds):
# count=50 ... avg=2.9499e+06" line after the summary, which is *not* the timed-runs statistic.
TFLITE_2_8_PROFILING = """\
Initialized session in 17.187ms.
Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
count=1 curr=3512391

Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
count=50 first=2990275 curr=2913402 min=2727568 max=3189954 avg=2.95034e+06 std=109798

Inference timings in us: Init: 17187, First inference: 3512391, Warmup (avg): 3.51239e+06, Inference (avg): 2.95034e+06
Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
Memory footprint delta from the start of the tool (MB): init=4.21094 overall=46.0859
Profiling Info for Benchmark Initialization:
Timings (microseconds): count=1 curr=1356
Memory (bytes): count=0
1 nodes observed

Operator-wise Profiling Info for Regular Benchmark Runs:
Timings (microseconds): count=50 first=2989660 curr=2912978 min=2727203 max=3189476 avg=2.9499e+06 std=109770
Memory (bytes): count=0
31 nodes observed
"""  # noqa: E501

# TFLite 2.x (XNNPACK by default) with "INFO: " log prefixes and the p5/median/p95 fields: qualcomm/qimsdk,
# README.md (QIMSDK-Debian docker image, CPU run).
TFLITE_2_X_PERCENTILES = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Graph: [mobilenet_quant_v1_224.tflite]
INFO: Signature to run: []
INFO: Use gpu: [0]
INFO: Loaded model mobilenet_quant_v1_224.tflite
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: The input model file size (MB): 4.2761
INFO: Initialized session in 87.639ms.
INFO: Running benchmark for at least 1 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=5 first=106436 curr=105929 min=105929 max=106436 avg=106065 std=193 p5=105929 median=105948 p95=106436

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=106022 curr=105780 min=105416 max=106528 avg=105784 std=260 p5=105485 median=105718 p95=106281

INFO: Inference timings in us: Init: 87639, First inference: 106436, Warmup (avg): 106065, Inference (avg): 105784
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=14.4414 overall=14.8164
"""  # noqa: E501

# TFLite ~1.14, the tail of tensorflow/tensorflow tensorflow/lite/tools/benchmark/README.md (op profiling
# example): only the profiler's Timings line and the "Average ... Inference:" summary.
TFLITE_1_14_README_TAIL = """\
Timings (microseconds): count=50 first=79449 curr=81350 min=77385 max=88213 avg=79732 std=1929
Memory (bytes): count=0
31 nodes observed

Average inference timings in us: Warmup: 83235, Init: 38467, Inference: 79760.9
"""

# litert-benchmark (ai-edge-litert 2.3.0) stdout, captured on this machine for a LeNet-5 .tflite.
LITERT_BENCHMARK_STDOUT = """\

========================================
 BENCHMARK RESULTS
========================================
Model initialization:  4.30 ms
Warmup (first):        0.34 ms
Warmup (avg):          0.32 ms (2 runs)
Inference (avg):       0.09 ms (10 runs)
Inference (min):       0.08 ms
Inference (max):       0.12 ms
Inference (median):    0.09 ms
Inference (std):       0.01 ms
Inference (p5):        0.08 ms
Inference (p95):       0.11 ms
Throughput:            33.82 MB/s
Fully accelerated:     False
========================================
"""

# A Raspberry Pi 4 /proc/cpuinfo (64-bit Raspberry Pi OS): no "model name", core type only as "CPU part".
RPI4_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""


# ---------------------------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("latency") / "lenet5.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(zoo.lenet5()).convert())
    return path


@pytest.fixture(scope="module")
def int8_tflite(tmp_path_factory) -> Path:
    converter = tf.lite.TFLiteConverter.from_keras_model(zoo.lenet5())
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    converter.representative_dataset = lambda: ([rng.random((1, 28, 28, 1), dtype=np.float32)] for _ in range(4))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    path = tmp_path_factory.mktemp("latency") / "lenet5_int8.tflite"
    path.write_bytes(converter.convert())
    return path


def write_executable(path: Path, script: str) -> Path:
    path.write_text(textwrap.dedent(script))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def fake_benchmark_model(tmp_path: Path, output: str, exit_status: int = 0) -> Path:
    """A program with benchmark_model's interface: records its arguments, logs ``output`` to stderr."""
    (tmp_path / "fake_output.txt").write_text(output)
    return write_executable(tmp_path / "benchmark_model", f"""\
        #!/bin/sh
        here="$(dirname "$0")"
        printf '%s\\n' "$@" > "$here/args.txt"
        cat "$here/fake_output.txt" >&2
        exit {exit_status}
        """)


def assert_sane(result: latency.LatencyResult, runs: int) -> None:
    assert result.runs == runs
    assert result.min_ms is not None and result.median_ms is not None and result.max_ms is not None
    assert result.max_ms >= result.median_ms >= result.min_ms > 0
    assert result.max_ms >= result.mean_ms >= result.min_ms
    assert result.std_ms is not None and result.std_ms >= 0
    assert json.loads(json.dumps(result.to_dict())) == result.to_dict()  # JSON-able as is


# ---------------------------------------------------------------------------------------------------------------
# Runner 1: the in-process interpreter


@pytest.mark.parametrize("threads", [1, 2])
def test_interpreter_runner_times_every_run(tiny_tflite, threads):
    result = latency.benchmark(tiny_tflite, runner="litert", threads=threads, runs=12, warmup=2)
    assert_sane(result, runs=12)
    assert result.runtime == "litert-interpreter" and result.threads == threads and result.warmup == 2
    assert len(result.times_ms) == 12 and min(result.times_ms) == result.min_ms
    assert result.max_ms >= result.p90_ms >= result.median_ms
    assert result.median_ms == pytest.approx(float(np.median(result.times_ms)))
    assert result.model_bytes == tiny_tflite.stat().st_size and result.model_path == str(tiny_tflite)
    assert result.fallback_reason is None
    assert result.details["inputs"] == [{"name": "serving_default_image:0", "shape": [1, 28, 28, 1],
                                         "dtype": "float32"}]
    assert result.host["cores"] == os.cpu_count() and result.host["cpu"]


@pytest.mark.filterwarnings("ignore:Statistics for quantized inputs")  # the converter's, about int8 I/O
def test_interpreter_runner_fills_int8_inputs(int8_tflite):
    result = latency.benchmark(int8_tflite, runner="litert", runs=5, warmup=1)
    assert_sane(result, runs=5)
    assert result.details["inputs"][0]["dtype"] == "int8"


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16, np.int32, np.float16, np.float32, np.bool_])
def test_random_input_has_the_dtype_shape_and_range(dtype):
    first = interpreter.random_input([2, 3, 4], dtype, np.random.default_rng(0))
    again = interpreter.random_input([2, 3, 4], dtype, np.random.default_rng(0))
    assert first.dtype == np.dtype(dtype) and first.shape == (2, 3, 4)
    np.testing.assert_array_equal(first, again)  # deterministic
    if dtype in (np.int8, np.uint8):  # quantized images: the full range is used
        assert first.min() < 0 if dtype == np.int8 else first.max() > 127
    if dtype in (np.float16, np.float32):
        assert first.min() >= 0 and first.max() < 1


def test_from_times_statistics(tiny_tflite):
    result = latency.LatencyResult.from_times(
        [1.0, 2.0, 3.0, 4.0, 10.0], runtime="x", model_path=tiny_tflite, threads=1, warmup=0
    )
    assert (result.runs, result.median_ms, result.mean_ms, result.min_ms, result.max_ms) == (5, 3.0, 4.0, 1.0, 10.0)
    assert result.p90_ms == pytest.approx(7.6)  # linear interpolation between 4 and 10
    assert result.std_ms == pytest.approx(math.sqrt(10.0))  # population std, as benchmark_model
    with pytest.raises(ValueError, match="at least one"):
        latency.LatencyResult.from_times([], runtime="x", model_path=tiny_tflite, threads=1, warmup=0)


# ---------------------------------------------------------------------------------------------------------------
# Runner 2: litert-benchmark, with fallback


def test_litert_benchmark_runner_measures_or_says_why(tiny_tflite):
    result = latency.benchmark(tiny_tflite, runner="litert_benchmark", threads=2, runs=10, warmup=2)
    assert result.runs == 10 and result.threads == 2
    assert result.mean_ms > 0
    if litert_benchmark.find_command() is None:  # an ai-edge-litert without the tool: documented fallback
        assert result.runtime == "litert-interpreter" and "not installed" in result.fallback_reason
        return
    assert result.runtime == "litert-benchmark", result.fallback_reason
    assert result.fallback_reason is None and result.times_ms is None and result.p90_ms is None
    # Two-decimal rounding: a sub-0.01 ms statistic may read 0, so ≥ 0 here, not > 0.
    assert result.max_ms >= result.median_ms >= result.min_ms >= 0
    assert result.details["resolution_ms"] == 0.01 and f"--model={tiny_tflite}" in result.details["command"]


def test_litert_benchmark_failure_falls_back_to_the_interpreter_with_the_reason(tiny_tflite, tmp_path):
    failing = write_executable(tmp_path / "litert-benchmark", """\
        #!/bin/sh
        echo "Signature serving_default not found." >&2
        exit 3
        """)
    result = latency.benchmark(tiny_tflite, runner="litert_benchmark", runs=4, warmup=0, command=[str(failing)])
    assert_sane(result, runs=4)
    assert result.runtime == "litert-interpreter"
    assert "exited with status 3" in result.fallback_reason and "serving_default not found" in result.fallback_reason
    assert result.details["requested_runtime"] == "litert-benchmark"

    missing = latency.benchmark(tiny_tflite, runner="litert_benchmark", runs=2, warmup=0,
                                command=[str(tmp_path / "no-such-program")])
    assert missing.runtime == "litert-interpreter" and "cannot start" in missing.fallback_reason


def test_litert_benchmark_stdout_is_read_when_no_json_is_written(tiny_tflite, tmp_path):
    (tmp_path / "stdout.txt").write_text(LITERT_BENCHMARK_STDOUT)
    printing = write_executable(tmp_path / "litert-benchmark", f"""\
        #!/bin/sh
        cat "{tmp_path / 'stdout.txt'}"
        """)
    result = latency.benchmark(tiny_tflite, runner="litert_benchmark", runs=10, warmup=2, command=[str(printing)])
    assert result.runtime == "litert-benchmark" and result.fallback_reason is None
    assert (result.runs, result.mean_ms, result.median_ms, result.min_ms, result.max_ms, result.std_ms) == (
        10, 0.09, 0.09, 0.08, 0.12, 0.01)
    assert result.details["p95_ms"] == 0.11


def test_truncated_model_fails_in_both_runtimes_with_both_reasons(tiny_tflite, tmp_path):
    truncated = tmp_path / "truncated.tflite"  # valid header, body cut: litert-benchmark segfaults on it
    truncated.write_bytes(tiny_tflite.read_bytes()[:3000])
    with pytest.raises(latency.BenchmarkError, match=r"litert-benchmark .*interpreter fallback failed too"):
        latency.benchmark(truncated, runner="litert_benchmark", runs=2, warmup=0)
    with pytest.raises(latency.BenchmarkError, match="not a valid Flatbuffer"):
        latency.benchmark(truncated, runner="litert", runs=2, warmup=0)


# ---------------------------------------------------------------------------------------------------------------
# Runner 3: the benchmark_model binary


def test_parser_reads_tflite_1_12_output():
    parsed = latency.parse_benchmark_model_output(TFLITE_1_12)
    assert (parsed.count, parsed.avg_us, parsed.min_us, parsed.max_us, parsed.std_us) == (
        50, 137722, 137079, 143416, 896)
    assert parsed.median_us is None  # older builds print no percentiles
    assert (parsed.init_us, parsed.warmup_avg_us, parsed.first_us) == (4452, 146161, 137789)


def test_parser_skips_the_single_run_warmup_line():
    parsed = latency.parse_benchmark_model_output(TFLITE_2_0_ZEDBOARD)
    assert (parsed.count, parsed.avg_us, parsed.min_us, parsed.max_us, parsed.std_us) == (
        50, 747733, 747331, 748577, 293)
    assert (parsed.init_us, parsed.warmup_avg_us) == (21039, 751932)


def test_parser_reads_scientific_notation_and_ignores_the_op_profiler():
    parsed = latency.parse_benchmark_model_output(TFLITE_2_8_PROFILING)
    assert parsed.count == 50
    assert parsed.avg_us == pytest.approx(2.95034e6)  # the profiler says 2.9499e+06: not that one
    assert (parsed.min_us, parsed.max_us, parsed.std_us) == (2727568, 3189954, 109798)
    assert (parsed.init_us, parsed.first_inference_us) == (17187, 3512391)
    assert parsed.warmup_avg_us == pytest.approx(3.51239e6)


def test_parser_reads_percentiles_behind_log_prefixes():
    parsed = latency.parse_benchmark_model_output(TFLITE_2_X_PERCENTILES)
    assert (parsed.count, parsed.avg_us, parsed.median_us, parsed.p5_us, parsed.p95_us) == (
        50, 105784, 105718, 105485, 106281)
    assert (parsed.min_us, parsed.max_us, parsed.std_us, parsed.init_us) == (105416, 106528, 260, 87639)


def test_parser_falls_back_to_the_summary_line():
    parsed = latency.parse_benchmark_model_output(TFLITE_1_14_README_TAIL)
    assert parsed.count is None  # the only count= line is the profiler's
    assert (parsed.avg_us, parsed.init_us, parsed.warmup_avg_us) == (79760.9, 38467, 83235)


def test_parser_refuses_output_without_timings():
    with pytest.raises(latency.BenchmarkError, match="no inference timings"):
        latency.parse_benchmark_model_output("STARTING!\nFailed to mmap model /tmp/x.tflite\n")


def test_binary_runner_end_to_end(tiny_tflite, tmp_path):
    fake = fake_benchmark_model(tmp_path, TFLITE_2_X_PERCENTILES)
    result = latency.benchmark(tiny_tflite, runner="binary", binary=fake, threads=4, runs=50, warmup=3)
    args = (tmp_path / "args.txt").read_text().splitlines()
    assert args == [f"--graph={tiny_tflite}", "--num_threads=4", "--num_runs=50", "--warmup_runs=3",
                    "--min_secs=0", "--warmup_min_secs=0"]
    assert result.runtime == "benchmark_model" and (result.runs, result.threads, result.warmup) == (50, 4, 3)
    assert (result.mean_ms, result.median_ms, result.min_ms, result.max_ms, result.std_ms) == pytest.approx(
        (105.784, 105.718, 105.416, 106.528, 0.260))
    assert result.p90_ms is None and result.times_ms is None  # the tool does not print them
    assert result.details["p95_ms"] == pytest.approx(106.281) and result.details["init_ms"] == pytest.approx(87.639)
    assert result.model_bytes == tiny_tflite.stat().st_size


def test_binary_runner_takes_the_binary_from_the_environment(tiny_tflite, tmp_path, monkeypatch):
    monkeypatch.setenv(latency.BINARY_ENV_VAR, str(fake_benchmark_model(tmp_path, TFLITE_1_12)))
    result = latency.benchmark(tiny_tflite, runner="binary", runs=50, warmup=1)
    assert (result.runs, result.mean_ms, result.median_ms) == (50, pytest.approx(137.722), None)
    assert result.latency_ms == result.mean_ms  # no median printed: compare by the mean


def test_binary_given_by_a_relative_name_is_not_looked_up_on_path(tiny_tflite, tmp_path, monkeypatch):
    fake_benchmark_model(tmp_path, TFLITE_2_0_ZEDBOARD)
    monkeypatch.chdir(tmp_path)
    result = latency.benchmark(tiny_tflite, runner="binary", binary="benchmark_model", runs=50)
    assert result.details["command"][0] == str(tmp_path / "benchmark_model")
    assert result.mean_ms == pytest.approx(747.733)


def test_binary_runner_reports_a_failing_binary(tiny_tflite, tmp_path):
    fake = fake_benchmark_model(tmp_path, "ERROR: Didn't find op for builtin opcode 'CONV_2D' version '6'\n",
                                exit_status=1)
    with pytest.raises(latency.BenchmarkError, match=r"exited with status 1: .*builtin opcode 'CONV_2D'"):
        latency.benchmark(tiny_tflite, runner="binary", binary=fake, runs=5)


# ---------------------------------------------------------------------------------------------------------------
# Bad input


def test_missing_binary_is_named(tiny_tflite, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"benchmark_model binary .*nope.* does not exist"):
        latency.benchmark(tiny_tflite, runner="binary", binary=tmp_path / "nope")


def test_non_executable_binary_is_named(tiny_tflite, tmp_path):
    not_executable = tmp_path / "benchmark_model"
    not_executable.write_text("#!/bin/sh\n")
    not_executable.chmod(0o644)
    with pytest.raises(PermissionError, match="is not executable: run `chmod \\+x"):
        latency.benchmark(tiny_tflite, runner="binary", binary=not_executable)


def test_binary_runner_without_a_binary_says_how_to_give_one(tiny_tflite, monkeypatch):
    monkeypatch.delenv(latency.BINARY_ENV_VAR, raising=False)
    with pytest.raises(ValueError, match="TFCOMPRESS_BENCHMARK_MODEL"):
        latency.benchmark(tiny_tflite, runner="binary")


def test_non_tflite_and_missing_models_are_refused(tmp_path):
    keras_like = tmp_path / "model.tflite"
    keras_like.write_bytes(b"PK\x03\x04" + bytes(100))  # a zip, e.g. a .keras file renamed
    with pytest.raises(ValueError, match=r"not a TFLite model: bytes 4..8 .*b'TFL3'.*zip archive"):
        latency.benchmark(keras_like)
    tiny = tmp_path / "empty.tflite"
    tiny.write_bytes(b"")
    with pytest.raises(ValueError, match="not a TFLite model"):
        latency.check_tflite(tiny)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        latency.benchmark(tmp_path / "missing.tflite")


def test_bad_arguments_are_named(tiny_tflite):
    with pytest.raises(ValueError, match="unknown runner 'ssh'"):
        latency.benchmark(tiny_tflite, runner="ssh")
    with pytest.raises(ValueError, match="runs must be an integer ≥ 1"):
        latency.benchmark(tiny_tflite, runs=0)
    with pytest.raises(ValueError, match="runner 'litert' does not take binary"):
        latency.benchmark(tiny_tflite, runner="litert", binary="/bin/true")


def test_a_new_runner_is_one_registry_entry(tiny_tflite):
    def constant(model_path, *, threads, runs, warmup, latency_ms=1.0):
        return latency.LatencyResult.from_times([latency_ms] * runs, runtime="constant", model_path=model_path,
                                                threads=threads, warmup=warmup)

    latency.register_runner("constant", constant)
    try:
        result = latency.benchmark(tiny_tflite, runner="constant", runs=3, latency_ms=2.5)
        assert (result.runtime, result.runs, result.median_ms) == ("constant", 3, 2.5)
        with pytest.raises(ValueError, match="already exists"):
            latency.register_runner("constant", constant)
    finally:
        latency.RUNNERS.pop("constant")


def test_host_names_a_raspberry_pi_from_its_cpuinfo():
    assert host.cpu_model(RPI4_CPUINFO) == "Raspberry Pi 4 Model B Rev 1.4 (Cortex-A72)"
    assert host.cpu_model("model name\t: Intel(R) Xeon(R) Processor\n") == "Intel(R) Xeon(R) Processor"
    described = latency.describe_host()
    assert set(described) >= {"machine", "cpu", "cores", "os"}
    described["cpu"] = "edited"
    assert latency.describe_host()["cpu"] != "edited"  # callers get their own copy


def test_stats_line_prefix_rule():
    assert binary._is_log_prefix("INFO: ") and binary._is_log_prefix("07-14 13:14:56.520 22838 22838 I tflite  : ")
    assert not binary._is_log_prefix("Timings (microseconds): ")


# ---------------------------------------------------------------------------------------------------------------
# The script


@pytest.mark.slow
def test_cli_writes_valid_json(tiny_tflite, tmp_path):
    output = tmp_path / "out" / "latency.json"
    process = run_script("benchmark", f"--tflite={tiny_tflite}", "--runs=6", "--warmup=1", "--threads=2",
                         f"--json={output}", timeout=300)
    written = json.loads(output.read_text())
    assert written["schema_version"] == 1 and written["runtime"] == "litert-interpreter"
    assert (written["runs"], written["threads"], written["warmup"], len(written["times_ms"])) == (6, 2, 1, 6)
    assert written["median_ms"] >= written["min_ms"] > 0
    summary, printed = process.stdout.split("\n", 1)
    assert summary.startswith("lenet5.tflite: median ") and "over 6 runs, 2 threads" in summary
    assert json.loads(printed) == written


@pytest.mark.slow
def test_cli_refuses_a_non_tflite_file_and_writes_nothing(tmp_path):
    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello, world")
    process = run_script("benchmark", f"--tflite={not_a_model}", f"--json={tmp_path / 'r.json'}", check=False,
                         timeout=300, fresh=True)  # benchmark.py's run in a fresh interpreter
    assert process.returncode != 0
    assert "is not a TFLite model" in process.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]


def test_side_by_side_is_each_models_median_over_interleaved_passes(tiny_tflite):
    class Scripted(latency.Device):
        """Pass k times model i at ``times[k][i]`` ms; records which models each pass measured."""

        name = "scripted"

        def __init__(self, times):
            self.times, self.calls = iter(times), []

        def measure(self, models, *, threads, runs, warmup):
            self.calls.append(list(models))
            return [latency.LatencyResult.from_times([ms] * runs, runtime="scripted", model_path=tiny_tflite,
                                                     threads=threads, warmup=warmup) for ms in next(self.times)]

        def fingerprint(self, threads):
            return {}

    device = Scripted([[1.0, 9.0], [5.0, 2.0], [3.0, 4.0]])
    assert device.side_by_side([tiny_tflite, tiny_tflite], threads=1, runs=2) == [3.0, 4.0]
    assert device.calls == [[tiny_tflite, tiny_tflite]] * 3  # every pass times every model
