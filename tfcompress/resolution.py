"""Input resolution as a compression knob: the same trained network, run on smaller images.

A convolutional network's cost grows with the pixels it sees, and on a phone-class CPU its latency often does so
where channel pruning's does not: MobileNetV2 α 0.35 at 160 px had to lose ~85 % of its MACs to run in half the
time on an Intel VNNI host (``benchmarks/results/own_data.md``), while fewer pixels shrink every layer at once.
Resolution is the third axis of MobileNet's width/resolution multipliers (Howard et al. 2017, ρ) and of
EfficientNet's compound scaling (Tan & Le 2019).

:func:`rescale_input` returns the network behind a ``Resizing`` layer: the deployed model still takes the images
the original took (the user's application does not change), shrinks them to ``size`` px in its first operator
(bilinear, ``RESIZE_BILINEAR`` in LiteRT) and runs every later layer on the smaller feature maps with the same
weights. Nothing is trained here; a fine-tune (distillation from the original, which sees the full images)
adapts the weights to the new scale of objects. Every other technique works on the result, which is a plain
functional model (the network is nested inside it once).

Call the result with ``training=False`` outside ``fit``/``predict``: Keras 3.15's ``Resizing`` declares
``call(data, training=True)``, and a call without the argument runs every ``BatchNormalization`` after it in
training mode (every path of the toolkit passes it; the export traces with it).

Refused, in one line: networks whose weights depend on the input size (a ``Flatten`` before a ``Dense``, a
``Reshape`` of the feature map), models with several inputs or a non-image input.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import keras

#: the suffix of a rescaled network's name (the nested network keeps the original's name before it)
SUFFIX = "_at_{size}px"


def image_size(model: keras.Model) -> tuple[int, int]:
    """The (height, width) of ``model``'s one image input.

    Raises:
        ValueError: several inputs, or an input that is not a fixed-size image (batch, height, width, channels).
    """
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; input resolution is a knob of a "
                         "model with one image input")
    shape = tuple(model.inputs[0].shape)
    if len(shape) != 4 or shape[1] is None or shape[2] is None:
        raise ValueError(f"model {model.name!r} takes inputs of shape {shape}, not fixed-size images (batch, height, "
                         "width, channels)")
    return int(shape[1]), int(shape[2])


def rescale_input(model: keras.Model, size: int | tuple[int, int]) -> keras.Model:
    """``model`` running on ``size`` px (an int: square, or (height, width)) behind a ``Resizing`` layer that
    takes the original's input; the same weights.

    Raises:
        ValueError: a size that is not smaller than the input and positive, or a network whose weights depend on
            its input size (the message names the layer).
    """
    height, width = image_size(model)
    new_height, new_width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    if not (0 < new_height <= height and 0 < new_width <= width) or (new_height, new_width) == (height, width):
        raise ValueError(f"the new input size must be smaller than the model's {height}×{width} px and positive, "
                         f"got {new_height}×{new_width}")
    config = copy.deepcopy(model.get_config())
    _resize_inputs(config, (height, width), (new_height, new_width))
    config["name"] = model.name + SUFFIX.format(size=new_height if new_height == new_width else
                                                f"{new_height}x{new_width}")
    tied = ("depend on the input size: a Flatten or Reshape before it ties the network to its resolution; replace "
            "it with global pooling and retrain, or keep the resolution")
    try:
        network = model.__class__.from_config(config)
    except ValueError as error:  # a layer built on the new shape refuses its input (a Dense after a Flatten)
        layer = re.search(r"layer '([^']+)'", str(error))
        raise ValueError(f"layer {layer.group(1) if layer else '?'!r} of {model.name!r} cannot take its input at "
                         f"{new_height}×{new_width} px: its weights {tied}") from None
    for before, after in zip(model.weights, network.weights, strict=True):
        if tuple(before.shape) != tuple(after.shape):
            layer = before.path.split("/")[-2] if "/" in before.path else before.path
            raise ValueError(f"layer {layer!r} of {model.name!r} has weights of shape {tuple(before.shape)} that "
                             f"{tied} ({tuple(after.shape)} at {new_height}×{new_width} px)")
        after.assign(before)
    inputs = keras.Input(model.inputs[0].shape[1:], dtype=model.inputs[0].dtype, name="image")
    small = keras.layers.Resizing(new_height, new_width, interpolation="bilinear", name="resize_input")(inputs)
    return keras.Model(inputs, network(small), name=model.name)


def _resize_inputs(config: Any, old: tuple[int, int], new: tuple[int, int]) -> None:
    """Every 4-D ``InputLayer`` of a (nested) functional config scaled by ``new / old``: the model's own to
    ``new``; a nested network's (a backbone on the image, or a block on a feature map) in proportion, rounded up
    as "same"-padded strides round."""
    if isinstance(config, dict):
        if config.get("class_name") == "InputLayer":
            layer = config["config"]
            key = "batch_shape" if "batch_shape" in layer else "batch_input_shape"
            shape = layer.get(key)
            if shape is not None and len(shape) == 4 and None not in shape[1:3]:
                layer[key] = [shape[0], -(-shape[1] * new[0] // old[0]), -(-shape[2] * new[1] // old[1]), shape[3]]
        for value in config.values():
            _resize_inputs(value, old, new)
    elif isinstance(config, list):
        for value in config:
            _resize_inputs(value, old, new)
