"""The model's own pixel scaling: how raw 0–255 pixels become the numbers the model was trained on.

A model trained on ``[-1, 1]`` pixels and fed ``[0, 1]`` ones still runs and still outputs confident classes — wrong
ones. So the scaling is the model's, never tfcompress's: given by the user (``--scaling``), recorded in every report a
script writes (and read back from the model's report), or taken as ``raw`` when the model starts with its own
``Rescaling`` / ``Normalization`` layer (keras.applications' EfficientNet and ConvNeXt do).

Scalings (the keras.applications ``preprocess_input`` modes among them):

====================  =========================================================================================
``unit``              x / 255 → [0, 1]
``symmetric``, ``tf`` x / 127.5 − 1 → [−1, 1] (MobileNet, MobileNetV2, Inception, Xception in keras.applications)
``raw``               x, 0–255 (models that scale inside, e.g. EfficientNet)
``torch``             (x / 255 − ImageNet mean) / ImageNet std, per channel (DenseNet)
``caffe``             RGB → BGR, x − ImageNet mean in 0–255 units (VGG, ResNet50)
``mean_std``          (x / 255 − mean) / std with the given per-channel mean and std (in 0–1 units); the built-in
                      datasets' statistics are this with the training split's mean and std
====================  =========================================================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import keras
import tensorflow as tf

SCALINGS = ("unit", "symmetric", "tf", "raw", "torch", "caffe", "mean_std")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_BGR_MEAN = (103.939, 116.779, 123.68)
SCALING_HELP = "--scaling=unit|symmetric|raw|torch|caffe (or mean_std with --mean and --std)"


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """Pixel scaling (one of :data:`SCALINGS`), with the per-channel ``mean`` and ``std`` of ``mean_std``."""

    scaling: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"unknown scaling {self.scaling!r}; give one of {', '.join(SCALINGS)}")
        if (self.scaling == "mean_std") != (self.mean is not None and self.std is not None):
            raise ValueError("scaling mean_std needs --mean and --std (per channel, in 0–1 pixel units), and only "
                             "mean_std takes them")
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"--std must be > 0 per channel, got {list(self.std)}")

    def for_channels(self, channels: int) -> Preprocessing:
        """The same scaling for ``channels`` (a one-value mean/std repeated; a 3-value one kept for 3 channels)."""
        if self.scaling != "mean_std" or len(self.mean) == channels:
            if self.scaling == "caffe" and channels != 3:
                raise ValueError(f"scaling caffe is for 3-channel (RGB) models; this one takes {channels} channels")
            return self
        if len(self.mean) == 1:
            return dataclasses.replace(self, mean=self.mean * channels, std=self.std * channels)
        raise ValueError(f"--mean/--std give {len(self.mean)} channels but the model takes {channels}")

    def __call__(self, pixels: tf.Tensor) -> tf.Tensor:
        """Float pixels in 0–255 (…, H, W, C) → the model's input."""
        if self.scaling == "unit":
            return pixels / 255.0
        if self.scaling in ("symmetric", "tf"):
            return pixels / 127.5 - 1.0
        if self.scaling == "raw":
            return pixels
        if self.scaling == "torch":
            return (pixels / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
        if self.scaling == "caffe":
            return pixels[..., ::-1] - CAFFE_BGR_MEAN
        return (pixels / 255.0 - tf.constant(self.mean, tf.float32)) / tf.constant(self.std, tf.float32)

    def describe(self) -> str:
        if self.scaling == "mean_std":
            return (f"mean_std (x/255 − mean {[round(m, 4) for m in self.mean]}) / std "
                    f"{[round(s, 4) for s in self.std]}")
        return self.scaling

    def to_dict(self) -> dict[str, Any]:
        return {key: value for key, value in dataclasses.asdict(self).items() if value is not None}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Preprocessing:
        return cls(values["scaling"], *(tuple(values[key]) if values.get(key) else None for key in ("mean", "std")))


def scales_itself(model: keras.Model) -> str | None:
    """The name of the ``Rescaling`` or ``Normalization`` layer that starts ``model`` (looking into a nested
    backbone), or None: such a model takes raw 0–255 pixels."""
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.layers.Rescaling | keras.layers.Normalization):
            return layer.name
        if isinstance(layer, keras.Model):
            return scales_itself(layer)
        return None
    return None


def for_model(model: keras.Model | None, scaling: str | None = None, mean: Sequence[float] | None = None,
              std: Sequence[float] | None = None, recorded: dict[str, Any] | None = None) -> Preprocessing | None:
    """The model's preprocessing: the user's ``scaling`` if given, else ``raw`` when the model scales itself (None:
    no Keras model to look into, e.g. a .tflite), else what its report ``recorded`` (a ``preprocessing`` entry);
    None when nothing says (the caller asks the user)."""
    if scaling is not None:
        return Preprocessing(scaling, tuple(mean) if mean else None, tuple(std) if std else None)
    if mean or std:
        raise ValueError("--mean/--std need --scaling=mean_std")
    if model is not None and scales_itself(model):
        return Preprocessing("raw")
    if recorded and recorded.get("preprocessing"):
        return Preprocessing.from_dict(recorded["preprocessing"])
    return None
