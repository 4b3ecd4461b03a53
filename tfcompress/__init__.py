"""tfcompress: compress Keras CNNs for Raspberry-Pi-class devices and measure them on TFLite / LiteRT.

Importing tfcompress never imports tensorflow-model-optimization (it would switch the whole process to
legacy ``tf_keras``) and leaves ``tf.keras`` as Keras 3.
"""

import os as _os

_backend = _os.environ.get("KERAS_BACKEND", "tensorflow")
if _backend != "tensorflow":
    raise ImportError(
        f"tfcompress needs the TensorFlow backend of Keras, but KERAS_BACKEND={_backend!r}. "
        "Unset KERAS_BACKEND or set KERAS_BACKEND=tensorflow before importing tfcompress."
    )
if _os.environ.get("TF_USE_LEGACY_KERAS", "0").lower() in ("1", "true", "yes"):
    raise ImportError(
        "tfcompress uses Keras 3, but TF_USE_LEGACY_KERAS is set (tensorflow-model-optimization sets it). "
        "Run tfmot baselines in their own process and unset TF_USE_LEGACY_KERAS here."
    )

from tfcompress import tf_startup as _tf_startup  # noqa: E402

# TensorFlow's C++ start-up lines (oneDNN, CPU features) would precede every script's output and errors
_tf_startup.import_tensorflow_quietly()

import keras as _keras  # noqa: E402

if _keras.backend.backend() != "tensorflow":
    raise ImportError(
        f"tfcompress needs the TensorFlow backend of Keras, but Keras is configured for "
        f"{_keras.backend.backend()!r} (see ~/.keras/keras.json). Set KERAS_BACKEND=tensorflow."
    )

from tfcompress import (  # noqa: E402
    data,
    decomposition,
    distill,
    export,
    files,
    graph,
    keras_graph,
    latency,
    micronet,
    pipeline,
    profile,
    pruning,
    quantization,
    report,
    resolution,
    runtime,
    scaling,
    specs,
    training,
    zoo,
)
from tfcompress.pipeline import compress  # noqa: E402  (the one call: a model and a budget → a .tflite)

__version__ = "0.1.0"
__all__ = [
    "compress", "data", "decomposition", "distill", "export", "files", "graph", "keras_graph", "latency", "micronet",
    "pipeline", "profile", "pruning", "quantization", "report", "resolution", "runtime", "scaling", "specs", "training",
    "zoo",
]
