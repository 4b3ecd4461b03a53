"""Flags that several programs share (dataset choice and pipeline shape), defined once."""

from __future__ import annotations

import json

import tensorflow as tf
from absl import flags

from tfcompress import data


def define_dataset_flags(default: str = "fashion_mnist") -> None:
    flags.DEFINE_enum("dataset", default, sorted(data.DATASETS), "Dataset to train or evaluate on.")
    flags.DEFINE_string("data_dir", None, "Folder with the dataset files (IDX .gz or CIFAR binary); searched first.")
    flags.DEFINE_integer("batch_size", 128, "Examples per batch.", lower_bound=1)


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
