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
