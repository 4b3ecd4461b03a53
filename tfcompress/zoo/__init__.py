"""Functional Keras model builders, and :func:`build` to make one from a name such as ``"wrn-40-2"``.

Every builder takes ``input_shape`` and ``num_classes`` and returns a functional ``keras.Model`` whose output
is logits (no softmax).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras

from tfcompress.zoo.effnet import effnet
from tfcompress.zoo.layers import ChannelShuffle
from tfcompress.zoo.lenet import lenet5, lenet_300_100
from tfcompress.zoo.micronet import compound_multipliers, micronet_resnet, rounding_filters, rounding_repeats
from tfcompress.zoo.mobilenet import mobilenet_v1, mobilenet_v2
from tfcompress.zoo.resnet import resnet_cifar
from tfcompress.zoo.shufflenet import shufflenet_v2
from tfcompress.zoo.wide_resnet import wide_resnet

__all__ = [
    "MODEL_NAMES",
    "ChannelShuffle",
    "build",
    "compound_multipliers",
    "effnet",
    "lenet5",
    "lenet_300_100",
    "micronet_resnet",
    "mobilenet_v1",
    "mobilenet_v2",
    "resnet_cifar",
    "rounding_filters",
    "rounding_repeats",
    "shufflenet_v2",
    "wide_resnet",
]


def _se(group: str | None) -> dict[str, int]:
    """``-se`` → r = 2 (the thesis's best), ``-se4`` → r = 4, no suffix → no squeeze-excitation."""
    return {} if group is None else {"se_reduction": int(group or 2)}


def _given(**groups: str | None) -> dict[str, int]:
    return {key: int(value) for key, value in groups.items() if value is not None}


_SE = r"(?:[-_]se(\d*))?"
# name pattern → (builder, function of the regex groups giving fixed keyword arguments)
_PATTERNS: list[tuple[str, Callable[..., keras.Model], Callable[[re.Match], dict[str, Any]]]] = [
    (r"lenet[-_]?300[-_]?100", lenet_300_100, lambda m: {}),
    (r"lenet[-_]?5", lenet5, lambda m: {}),
    (r"resnet[-_]?(\d+)", resnet_cifar, lambda m: {"depth": int(m[1])}),
    (r"(?:wrn|wide[-_]?resnet)[-_](\d+)[-_](\d+)" + _SE, wide_resnet,
     lambda m: {"depth": int(m[1]), "width": int(m[2]), **_se(m[3])}),
    (r"mobilenet[-_]?v1", mobilenet_v1, lambda m: {}),
    (r"mobilenet[-_]?v2" + _SE, mobilenet_v2, lambda m: _se(m[1])),
    # the thesis's file names: shufflenetv2_d12_w64_se2, effnet_w32_e4
    (r"shufflenet[-_]?v2(?:[-_]d(\d+))?(?:[-_]w(\d+))?" + _SE, shufflenet_v2,
     lambda m: {**_given(depth=m[1], width=m[2]), **_se(m[3])}),
    (r"effnet(?:[-_]w(\d+))?(?:[-_]e(\d+))?", effnet, lambda m: _given(width=m[1], expansion=m[2])),
    (r"micronet", micronet_resnet, lambda m: {}),
]
MODEL_NAMES = (
    "lenet_300_100", "lenet5", "resnet20", "resnet32", "resnet44", "resnet56", "wrn-40-2", "wrn-28-10",
    "mobilenet_v1", "mobilenet_v2", "micronet", "wrn-40-4-se", "mobilenet_v2-se", "shufflenet_v2", "effnet",
)


def build(
    name: str, input_shape: tuple[int, int, int], num_classes: int, **kwargs: Any
) -> keras.Model:
    """Builds a zoo model by name: ``lenet_300_100``, ``lenet5``, ``resnet20`` (any 6n+2), ``wrn-40-2`` (any
    WRN-d-k), ``mobilenet_v1``, ``mobilenet_v2``, ``micronet``, and the NetAdapt thesis's ``shufflenet_v2``
    (``shufflenetv2_d12_w64``), ``effnet`` (``effnet_w32_e4``); a ``-se`` / ``-se4`` suffix on a WRN, MobileNetV2
    or ShuffleNetV2 adds squeeze-and-excitation with r = 2 / 4 (``wrn-40-4-se`` is the thesis's teacher);
    ``kwargs`` go to the builder (e.g. ``width_multiplier=0.5`` or ``phi=3.5``).

    Raises:
        ValueError: unknown name, or arguments the builder rejects (with its message).
    """
    key = name.strip().lower()
    for pattern, builder, fixed in _PATTERNS:
        match = re.fullmatch(pattern, key)
        if match:
            try:
                return builder(input_shape=tuple(input_shape), num_classes=num_classes, **fixed(match), **kwargs)
            except TypeError as error:  # an unknown keyword argument
                raise ValueError(f"model {name!r}: {error}") from None
    raise ValueError(f"unknown model {name!r}; known models: {', '.join(MODEL_NAMES)} (any resnetN, wrn-D-K[-seR], "
                     "shufflenetv2_dD_wW[_seR], effnet_wW_eE)")
