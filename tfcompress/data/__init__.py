"""Data: the built-in datasets, the user's images (folders, array files, tensorflow-datasets), the model's own pixel
scaling, and :class:`ModelData`, which puts them together for one model.

``sources`` reads images from where they are; ``preprocessing`` is how the model scales pixels; ``model_data`` splits,
checks against the model, labels unlabelled images by the original and batches with ``tf.data``; ``builtin`` keeps
the offline built-in datasets (Fashion-MNIST from Debian) and their pipeline.
"""

from tfcompress.data.builtin import (
    DATASETS,
    SPLITS,
    DatasetNotFoundError,
    DatasetSpec,
    channel_stats,
    get_spec,
    input_shape,
    load,
    load_arrays,
    pipeline_options_for,
    read_cifar_binary,
    read_idx,
    stratified_holdout,
)
from tfcompress.data.model_data import (
    LABELS_GIVEN,
    LABELS_ORIGINAL,
    OUTPUTS_ORIGINAL,
    ModelData,
    model_input_shape,
    output_widths,
)
from tfcompress.data.preprocessing import SCALINGS, Preprocessing, scales_itself
from tfcompress.data.sources import SOURCE_HELP, Source, open_source, read_arrays, read_folder

__all__ = [
    "DATASETS", "LABELS_GIVEN", "LABELS_ORIGINAL", "OUTPUTS_ORIGINAL", "SCALINGS", "SOURCE_HELP", "SPLITS",
    "DatasetNotFoundError", "DatasetSpec", "ModelData", "Preprocessing", "Source", "channel_stats", "get_spec",
    "input_shape", "load", "load_arrays", "model_input_shape", "open_source", "output_widths", "pipeline_options_for",
    "read_arrays", "read_cifar_binary", "read_folder", "read_idx", "scales_itself", "stratified_holdout",
]
