"""Flags that several programs share (the user's data, the model's scaling, batches), defined once, and how a
program gets its model and the data that model was made for.

The data a program uses is the user's (``--dataset``, ``--test_data``, ``--calibration_data``) or, without a data
flag, what the model's report (``MODEL.json``, written by every tfcompress program, or the reference models' own)
records — followed back through the reports of the models it was made from. A model that records nothing gets no
data: a program then does what needs none, or says which flag gives it data. Never is a model evaluated on a dataset
it was not made for (a class count, image size or channel count that does not fit is a one-line error).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf
from absl import flags

from tfcompress import data

_RUN: dict[str, Any] = {"data": None, "spec": None}  # the data of this run, set by load_model_for_dataset


def define_builtin_dataset_flags(default: str = "fashion_mnist") -> None:
    """``--dataset`` as one of the built-in datasets (programs that train a zoo model from scratch)."""
    flags.DEFINE_enum("dataset", default, sorted(data.DATASETS), "Dataset to train or evaluate on.")
    flags.DEFINE_string("data_dir", None, "Folder with the dataset files (IDX .gz or CIFAR binary); searched first.")
    flags.DEFINE_integer("batch_size", 128, "Examples per batch.", lower_bound=1)


def define_dataset_flags(default: str | None = None, augment_flag: bool = True) -> None:
    """``--dataset`` and its companions; ``augment_flag``: also ``--augment`` (off: a flip is wrong for digits)."""
    flags.DEFINE_string("dataset", default, f"Images: {data.SOURCE_HELP}. Default: the dataset the model's report "
                        "(MODEL.json) records; a model without one gets no data.")
    flags.DEFINE_string("test_data", None, "Test images, if not a split of --dataset (same forms as --dataset).")
    flags.DEFINE_string("calibration_data", None, "int8 calibration images (default: the training images).")
    flags.DEFINE_float("test_fraction", 0.2, "Fraction of --dataset set aside as test images when it has no test "
                       "split and --test_data is not given (stratified, deterministic).")
    flags.register_validator("test_fraction", lambda v: 0.0 < v < 1.0, message="--test_fraction must be in (0, 1)")
    flags.DEFINE_enum("scaling", None, list(data.SCALINGS), "How the model scales 0–255 pixels (keras.applications "
                      "modes: tf, torch, caffe). Default: recorded in the model's report, raw for a model with its own "
                      "Rescaling/Normalization, the dataset's mean/std for a built-in dataset.")
    flags.DEFINE_list("mean", None, "Per-channel mean in 0–1 units, with --scaling=mean_std.")
    flags.DEFINE_list("std", None, "Per-channel std in 0–1 units, with --scaling=mean_std.")
    flags.DEFINE_string("data_dir", None, "Folder with a built-in dataset's files (IDX .gz or CIFAR binary).")
    flags.DEFINE_integer("batch_size", 128, "Examples per batch.", lower_bound=1)
    flags.DEFINE_string("custom_objects", None, "A Python module (import name or .py file) defining the custom layers "
                        "and functions the model file names.")
    if augment_flag:
        flags.DEFINE_bool("augment", False, "Random crop and horizontal flip while training (only if they suit your "
                          "images: a flip is wrong for digits and text).")


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


# ------------------------------------------------------------------------------------------ what models record


def lineage(path: str | Path, depth: int = 8) -> list[tuple[Path, dict[str, Any]]]:
    """``path`` and the models it was made from, each with its report (``{}`` if none), newest first: a report
    names its input as ``source``, ``model`` or ``flags.model``."""
    chain: list[tuple[Path, dict[str, Any]]] = []
    current: Path | None = Path(path)
    while current is not None and len(chain) < depth:
        report = _report_of(current)
        chain.append((current, report))
        parent = report.get("source") or report.get("model") or report.get("flags", {}).get("model")
        parent = Path(parent) if isinstance(parent, str) and parent else None
        current = parent if parent is not None and parent.is_file() and parent.resolve() not in {
            p.resolve() for p, _ in chain} else None
    return chain


def _report_of(path: Path) -> dict[str, Any]:
    sidecar = path.with_name(path.name + ".json")
    try:
        report = json.loads(sidecar.read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def recorded_data(path: str | Path) -> dict[str, Any]:
    """The data a model records (``dataset``, ``preprocessing``, ``test_data``, ``calibration_data``), the first
    report along its lineage that has a ``dataset``; ``{}`` when none has."""
    for _, report in lineage(path):
        merged = {**report.get("flags", {}), **report}
        if isinstance(merged.get("dataset"), str) and merged["dataset"]:
            return {key: merged[key] for key in ("dataset", "preprocessing", "test_data", "calibration_data")
                    if merged.get(key)}
    return {}


def original_model_path(path: str | Path) -> Path:
    """The first model of ``path``'s lineage: the user's original, whose decisions label unlabelled images."""
    return lineage(path)[-1][0]


# --------------------------------------------------------------------------------------------- model and data


def load_model_for_dataset(path: str) -> keras.Model:
    """The .keras model at ``path`` (``export.load_keras_model``: what a bad file is, finite weights) and this run's
    data for it (:func:`run_data`): ``--dataset`` or what the model records, checked to fit the model, unlabelled
    images labelled by the original model's top-1. A dynamic height and width is fixed at the data's image size.

    Raises:
        ValueError: a bad model file, data that does not fit (one line naming it and the flag that fixes it).
    """
    from tfcompress import export

    model = export.load_keras_model(path, custom_objects())
    spec, preprocessing, separate = _data_choice(path, model)
    if spec is not None and None in model.input_shape[1:3]:
        model = _fixed_input(model, path, spec)
    _RUN.update(data=None, spec=spec)
    if spec is None:
        return model
    _RUN["data"] = _labelled_by_original(data.ModelData.for_model(model, spec, preprocessing, **separate), path,
                                         model)
    return model


def data_for_tflite(path: str, input_shape: tuple[int, ...], output_width: int | None) -> data.ModelData | None:
    """This run's data for a ``.tflite`` (no Keras model to ask): ``--dataset`` or what its report records, with
    unlabelled images labelled by the original Keras model of its lineage."""

    spec, preprocessing, separate = _data_choice(path, None)
    _RUN.update(data=None, spec=spec)
    if spec is None:
        return None
    _RUN["data"] = _labelled_by_original(data.ModelData.open(spec, preprocessing, input_shape=tuple(input_shape[-3:]),
                                                             output_widths=[output_width], **separate), path)
    return _RUN["data"]


def _labelled_by_original(model_data: data.ModelData, path: str, model: keras.Model | None = None
                          ) -> data.ModelData:
    """``model_data``, its unlabelled images given targets by the first model of ``path``'s lineage (``model`` itself
    when that is ``path``)."""
    from tfcompress import export

    if model_data.labels is not None:
        return model_data
    original = original_model_path(path)
    if model is not None and original == Path(path):
        teacher = model
    elif original.suffix in (".keras", ".h5"):
        teacher = export.load_keras_model(original, custom_objects())
    else:
        raise ValueError(f"{path}: unlabelled images need the original Keras model to label them, and no report "
                         "leads to it; give labelled images or evaluate the .keras model")
    model_data = model_data.labelled_by(teacher, batch_size=flags.FLAGS.batch_size)
    print(f"unlabelled images: {original}'s " + ("top-1 decisions are the labels (accuracy below is agreement "
          "with it)" if model_data.metric_name == "agreement" else "outputs are the targets of every head "
          "(scores below are output errors against it, 0 = the same)"))
    return model_data


def custom_objects() -> dict[str, Any] | None:
    """The public classes and functions of ``--custom_objects`` (a module name or a .py file), or None."""
    import importlib
    import importlib.util
    import inspect

    name = _flag("custom_objects")
    if not name:
        return None
    try:
        if name.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(name).stem, name)
            if spec is None or not Path(name).is_file():
                raise ImportError(f"no such file {name}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(name)
    except Exception as error:  # the user's module: any error in it is theirs to see, in one line
        raise ValueError(f"--custom_objects {name!r} could not be imported: {type(error).__name__}: {error}") from None
    return {key: value for key, value in vars(module).items()
            if not key.startswith("_") and (inspect.isclass(value) or inspect.isfunction(value))}


def _data_choice(path: str, model: keras.Model | None) -> tuple[str | None, data.Preprocessing | None, dict]:
    flag = _flag  # programs with only the built-in --dataset lack the other data flags
    recorded = recorded_data(path)
    spec = flag("dataset") or recorded.get("dataset")
    if spec is None:
        return None, None, {}
    mean = [float(v) for v in flag("mean")] if flag("mean") else None
    std = [float(v) for v in flag("std")] if flag("std") else None
    same_data = not flag("dataset") or flag("dataset") == recorded.get("dataset")
    # the scaling is the model's, whatever the images: the recorded one holds for other data too
    preprocessing = data.preprocessing.for_model(model, flag("scaling"), mean, std, recorded)
    separate = {"test_spec": flag("test_data") or (recorded.get("test_data") if same_data else None),
                "calibration_spec": flag("calibration_data") or (recorded.get("calibration_data") if same_data
                                                                 else None),
                "test_fraction": flag("test_fraction") or 0.2, "data_dir": flag("data_dir")}
    return spec, preprocessing, separate


def _flag(name: str) -> Any:
    return flags.FLAGS[name].value if name in flags.FLAGS else None


def _fixed_input(model: keras.Model, path: str, spec: str) -> keras.Model:
    """``model`` rebuilt with a fixed input size: the data's image size (LiteRT, counting and tables need one)."""
    source = data.open_source(spec, "train", data_dir=_flag("data_dir"))
    size = int(source.image_sizes()[:1].max()) if source is not None else None
    shape = (size, size, model.input_shape[-1])
    names = [layer.name for layer in model.layers if isinstance(layer, keras.layers.InputLayer)]
    try:
        fixed = keras.models.clone_model(model, input_tensors=keras.Input(shape, name=names[0] if names else None))
        fixed.set_weights(model.get_weights())
    except Exception as error:  # a layer whose config does not rebuild: say so instead of a Keras traceback
        raise ValueError(f"model {path} has a dynamic input {model.input_shape} and could not be rebuilt at "
                         f"{spec}'s {shape}: {type(error).__name__}: {error}; give its Input a fixed size") from None
    print(f"{path}: dynamic input {model.input_shape[1:]} taken at {spec}'s size {shape}")
    return fixed


def run_data(needed_for: str = "this program") -> data.ModelData:
    """This run's :class:`tfcompress.data.ModelData`, or a one-line error saying which flag gives it."""
    if _RUN["data"] is None:
        raise ValueError(f"{needed_for} needs images and the model records no dataset: give --dataset=FOLDER "
                         "(class sub-folders, or a flat folder of unlabelled images), an .npz file or a dataset name, "
                         "with the model's --scaling")
    return _RUN["data"]


def use_data(model_data: data.ModelData) -> None:
    """Makes ``model_data`` this run's data (e.g. relabelled by the original for an agreement limit)."""
    _RUN["data"] = model_data


def has_data() -> bool:
    return _RUN["data"] is not None


def dataset_for_model(model_input_shape, split: str, **kwargs) -> tf.data.Dataset:
    """Batches of this run's data (:meth:`tfcompress.data.ModelData.batches`); ``augment`` only with ``--augment``
    where the program has that flag."""
    del model_input_shape  # the data is already shaped for the model of this run
    augment = kwargs.pop("augment", False) and (_flag("augment") is not False)
    return run_data().batches(split, batch_size=flags.FLAGS.batch_size, augment=augment, **kwargs)


def data_report() -> dict[str, Any]:
    """What to record in a report so that the next program finds the same data: the dataset, the scaling, the
    separate test and calibration images, and what they were."""
    model_data = _RUN["data"]
    if model_data is None:
        return {}
    return {"dataset": _absolute(_RUN["spec"]), "preprocessing": model_data.preprocessing.to_dict(),
            **{key: _absolute(_flag(key)) for key in ("test_data", "calibration_data") if _flag(key)},
            "data": model_data.describe()}


def _absolute(spec: str) -> str:
    """A folder or file spec as an absolute path (a later program may run elsewhere); names stay names."""
    return str(Path(spec).expanduser().resolve()) if Path(spec).expanduser().exists() else spec


def metric_name() -> str:
    """"accuracy", or "agreement" when the labels are the original model's decisions."""
    return _RUN["data"].metric_name if _RUN["data"] is not None else "accuracy"
