"""`import tfcompress` keeps Keras 3, never imports tfmot, and refuses other Keras backends."""

import os
import subprocess
import sys


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "TF_USE_LEGACY_KERAS")}
    environment.update(env, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)


def test_import_keeps_keras3_and_does_not_import_tfmot():
    process = _python(
        "import sys, tfcompress, keras, tensorflow as tf\n"
        "assert not any(m.startswith('tensorflow_model_optimization') for m in sys.modules), 'tfmot imported'\n"
        "assert 'tf_keras' not in sys.modules, 'tf_keras imported'\n"
        "assert tf.keras.Model is keras.Model, tf.keras\n"
        "assert keras.__version__.startswith('3.'), keras.__version__\n"
        "print('ok')"
    )
    assert process.returncode == 0, process.stderr
    assert process.stdout.strip() == "ok"


def test_other_keras_backend_is_refused_with_a_clear_message():
    process = _python("import tfcompress", KERAS_BACKEND="jax")
    assert process.returncode != 0
    assert "KERAS_BACKEND='jax'" in process.stderr
    assert "KERAS_BACKEND=tensorflow" in process.stderr


def test_tensorflows_start_up_lines_stay_off_stderr_with_onednn_forced_on():
    """oneDNN on (Intel's default on VNNI/AMX hosts; forced here so any x86 host checks it) makes TensorFlow's C++
    side print start-up lines that TF_CPP_MIN_LOG_LEVEL does not hold back: a script's one-line error must stay
    the only line of its stderr; TFC_TENSORFLOW_LOGS=1 shows them again."""
    script = "import tfcompress, sys; sys.stderr.write('only line\\n')"
    quiet = _python(script, TF_ENABLE_ONEDNN_OPTS="1")
    assert quiet.returncode == 0 and quiet.stderr == "only line\n", quiet.stderr
    loud = _python(script, TF_ENABLE_ONEDNN_OPTS="1", TFC_TENSORFLOW_LOGS="1")
    if "oneDNN custom operations are on" not in loud.stderr:  # a build without oneDNN prints nothing to keep off
        return
    assert loud.stderr.endswith("only line\n") and len(loud.stderr.splitlines()) > 1


def test_the_start_up_filter_keeps_errors_and_reads_the_users_wish():
    from tfcompress import tf_startup

    noise = ["WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
             "I0000 00:00:1796657009.085264    2819 port.cc:153] oneDNN custom operations are on. You may see",
             "W0000 00:00:1796657009.131078    6565 cpu_feature_guard.cc:227] This TensorFlow binary is optimized"]
    kept = ["E0000 00:00:1796657009.1 2819 some_op.cc:12] a real error", "Traceback (most recent call last):"]
    assert all(tf_startup._NOISE.match(line) for line in noise)
    assert not any(tf_startup._NOISE.match(line) for line in kept)
    assert tf_startup.wants_logs(["prog", "--verbosity=1"]) and tf_startup.wants_logs(["prog", "-v", "2"])
    assert not tf_startup.wants_logs(["prog", "--verbosity=0"]) and not tf_startup.wants_logs(["prog"])


def test_the_host_fingerprint_says_whether_onednn_is_on():
    on = _python("import json, tfcompress; from tfcompress.latency.host import describe_host; "
                 "print(json.dumps(describe_host()['onednn']))", TF_ENABLE_ONEDNN_OPTS="1")
    off = _python("import json, tfcompress; from tfcompress.latency.host import describe_host; "
                  "print(json.dumps(describe_host()['onednn']))", TF_ENABLE_ONEDNN_OPTS="0")
    assert off.stdout.strip() == "false", off.stderr
    assert on.stdout.strip() in ("true", "null"), on.stderr  # null: a build that does not say
