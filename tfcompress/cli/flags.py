"""Flags that several programs share (dataset choice and pipeline shape), defined once, and the model loading
that fits a model to ``--dataset``."""

from __future__ import annotations

import json

import keras
import tensorflow as tf
from absl import flags

from tfcompress import data


def define_dataset_flags(default: str = "fashion_mnist") -> None:
    flags.DEFINE_enum("dataset", default, sorted(data.DATASETS), "Dataset to train or evaluate on.")
    flags.DEFINE_string("data_dir", None, "Folder with the dataset files (IDX .gz or CIFAR binary); searched first.")
    flags.DEFINE_integer("batch_size", 128, "Examples per batch.", lower_bound=1)


def define_image_size_flag() -> None:
    flags.DEFINE_integer("image_size", None, "Pad/resize images to this size (e.g. 32 for CIFAR nets on MNIST; "
                         "default: the dataset's own).", lower_bound=1)


def define_json_flag(name: str, help_text: str) -> None:
    flags.DEFINE_string(name, "{}", help_text)

    def _is_json_object(value: str) -> bool:
        try:
            return isinstance(json.loads(value), dict)
        except json.JSONDecodeError:
            return False

    flags.register_validator(name, _is_json_object, message=f"--{name} must be a JSON object, e.g. '{{\"phi\": 1}}'")


def dataset_for_model(model_input_shape, split: str, **kwargs) -> tf.data.Dataset:
    """The ``--dataset`` split shaped to fit a model's input (image size and channel count)."""
    FLAGS = flags.FLAGS
    options = data.pipeline_options_for(model_input_shape, FLAGS.dataset)
    return data.load(FLAGS.dataset, split, batch_size=FLAGS.batch_size, data_dir=FLAGS.data_dir, **options, **kwargs)


def load_model_for_dataset(path: str) -> keras.Model:
    """The .keras model at ``path`` (``export.load_keras_model``: what a bad file is, finite weights), checked to
    fit ``--dataset``; a dynamic height and width (None, None, C) is fixed at the dataset's size, which the
    later steps (export, counting, latency tables) need.

    Raises:
        ValueError: a bad model file, a dataset that does not fit, or a dynamic model that cannot be rebuilt.
    """
    from tfcompress import export

    dataset = flags.FLAGS.dataset
    model = export.load_keras_model(path)
    options = data.pipeline_options_for(model.input_shape, dataset)
    if None not in model.input_shape[1:3]:
        return model
    shape = (options["image_size"], options["image_size"], options["channels"])
    names = [layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
    try:
        fixed = keras.models.clone_model(model, input_tensors=keras.Input(shape, name=names[0] if names else None))
        fixed.set_weights(model.get_weights())
    except Exception as error:  # a layer whose config does not rebuild: say so instead of a Keras traceback
        raise ValueError(f"model {path} has a dynamic input {model.input_shape} and could not be rebuilt at "
                         f"{dataset}'s {shape}: {type(error).__name__}: {error}; give its Input a fixed size") from None
    print(f"{path}: dynamic input {model.input_shape[1:]} taken at {dataset}'s size {shape}")
    return fixed
