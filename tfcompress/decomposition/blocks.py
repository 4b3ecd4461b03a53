"""Which layers the decomposition splits, and the plain Keras layers a split layer becomes.

A convolution with a k×k kernel becomes, as in tf-hybrid-pruning (REFERENCE.md §3.1)::

    x → Conv 1×1 (C_in → r_in) "_first" → Conv k×k (r_in → r_out) "_core" → Conv 1×1 (r_out → C_out) "_last"
    x → Conv k×k (C_in → C_out) "_sparse"      (only with a sparse residual)       → Add "_sum" → activation

A pointwise convolution or a Dense layer becomes two layers (a truncated SVD: the core is folded into the first).
The bias and activation go to the last layer (after the sum when there is a sparse branch). The new layers are
plain layers of the original's class, so every other technique, the channel graph and export take them as they
are. The rule for each layer class is its spec's ``decompose`` (:class:`Factoring`), registered below: a new
layer type is one ``specs.extend(LayerClass, decompose=Factoring(...))``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfcompress import specs
from tfcompress.decomposition.tucker import TuckerFactors
from tfcompress.specs import class_path, effective_values, unwrap

# (layer, channels, name, spatial, head) → a new plain layer
Sublayer = Callable[[Any, int, str, bool, bool], keras.layers.Layer]


@dataclasses.dataclass(frozen=True)
class Factoring:
    """How a layer class is split (see the module docstring).

    Attributes:
        refusal: ``layer → reason`` it cannot be split, or None when it can.
        sublayer: ``(layer, channels, name, spatial, head)`` → a new unbuilt plain layer with ``channels``
            outputs: with the layer's kernel size, strides, padding and dilation when ``spatial``, pointwise
            otherwise; with the layer's bias and activation when ``head``, without either otherwise.
    """

    refusal: Callable[[Any], str | None]
    sublayer: Sublayer | None = None


def _conv_sublayer(layer: Any, channels: int, name: str, spatial: bool, head: bool) -> keras.layers.Layer:
    config = {**layer.get_config(), "filters": channels, "name": name}
    if not head:
        config.update(use_bias=False, activation=None)
    if not spatial:
        rank = len(config["kernel_size"])
        config.update(kernel_size=(1,) * rank, strides=(1,) * rank, dilation_rate=(1,) * rank, padding="valid")
    return type(layer).from_config(config)


def _dense_sublayer(layer: Any, channels: int, name: str, spatial: bool, head: bool) -> keras.layers.Layer:
    config = {**layer.get_config(), "units": channels, "name": name}
    if not head:
        config.update(use_bias=False, activation=None)
    config.pop("lora_rank", None)
    return type(layer).from_config(config)


def _conv_refusal(layer: Any) -> str | None:
    if getattr(layer, "groups", 1) != 1:
        return f"a grouped convolution (groups={layer.groups}); its groups would have to be split one by one"
    return None


def _always(reason: str) -> Callable[[Any], str]:
    return lambda layer: reason


for _cls in (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D):
    specs.extend(_cls, decompose=Factoring(_conv_refusal, _conv_sublayer))
specs.extend(keras.layers.Dense, decompose=Factoring(lambda layer: None, _dense_sublayer))
for _cls in (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D):
    specs.extend(_cls, decompose=Factoring(_always(
        "a depthwise convolution has one filter per channel: there is no channel mode to factor; left as is")))
for _cls in (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D):
    specs.extend(_cls, decompose=Factoring(_always(
        "a separable convolution is already factored (depthwise + pointwise); left as is")))
for _cls in (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose):
    specs.extend(_cls, decompose=Factoring(_always("transposed convolutions are not decomposed yet; left as is")))


def factoring_for(layer: Any) -> tuple[Any, Factoring | None, str | None]:
    """``(plain layer, its factoring, reason it cannot be split)`` for a layer, through wrappers (weight masks,
    ternary layers); the factoring is None for layers without a kernel to split."""
    base = unwrap(layer)
    spec = specs.SPECS.lookup(base, exact=True)  # a subclass of Conv2D may compute otherwise: it registers its own
    factoring = spec.decompose if spec is not None else None
    if factoring is None:
        if isinstance(base, tuple(cls for cls, entry in specs.SPECS.registered().items() if entry.decompose)):
            return base, None, (f"{class_path(base)} subclasses a decomposable layer; register its rule with "
                                "specs.extend(LayerClass, decompose=Factoring(...))")
        return base, None, None
    return base, factoring, factoring.refusal(base)


def effective_kernel_and_bias(layer: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """The kernel (k…, C_in, C_out) and bias the layer computes with (masked or ternary values included)."""
    base = unwrap(layer)
    with effective_values(layer):
        kernel = keras.ops.convert_to_numpy(base.kernel)
        bias = keras.ops.convert_to_numpy(base.bias) if getattr(base, "use_bias", False) else None
    return kernel, bias


def is_pointwise(kernel_shape: tuple[int, ...]) -> bool:
    """A Dense kernel or a 1×1 convolution: split in two layers (truncated SVD), not three."""
    return math.prod(kernel_shape[:-2]) == 1


def factored_block(layer: Any, factors: TuckerFactors, bias: np.ndarray | None) -> Callable[..., Any]:
    """The replacement (``inputs → outputs``) of ``layer`` by its factors, as plain layers (module docstring).

    The layers are made once, so a layer called several times is replaced by one shared block.
    """
    base, factoring, _ = factoring_for(layer)
    name, kernel_shape = base.name, tuple(base.kernel.shape)
    ones = (1,) * (len(kernel_shape) - 2)
    r_in, r_out = factors.ranks
    if is_pointwise(kernel_shape):  # fold the core into the first factor: rank r_out from C_in
        chain = [(factoring.sublayer(base, r_out, f"{name}_first", True, False),
                  (factors.u_in @ factors.core.reshape(r_in, r_out)).reshape(*ones, -1, r_out))]
    else:
        chain = [(factoring.sublayer(base, r_in, f"{name}_first", False, False), factors.u_in.reshape(*ones, -1, r_in)),
                 (factoring.sublayer(base, r_out, f"{name}_core", True, False), factors.core)]
    with_sparse = factors.sparse is not None
    # Bias (and, without a sparse branch, the activation) on the last factor; a sparse branch is summed before
    # the activation.
    last = factoring.sublayer(base, kernel_shape[-1], f"{name}_last", False, not with_sparse)
    if with_sparse and getattr(base, "use_bias", False):
        last = type(last).from_config({**last.get_config(), "use_bias": True})
    chain.append((last, factors.u_out.T.reshape(*ones, r_out, -1)))
    sparse = factoring.sublayer(base, kernel_shape[-1], f"{name}_sparse", True, False) if with_sparse else None
    add = keras.layers.Add(name=f"{name}_sum") if with_sparse else None
    activation = None
    if with_sparse and base.activation is not keras.activations.linear:
        activation = keras.layers.Activation(base.get_config()["activation"], name=f"{name}_act")
    weighted = [*chain, *([(sparse, factors.sparse)] if with_sparse else [])]

    def replace(inputs: Any, *args: Any, **kwargs: Any) -> Any:
        first_call = not last.built
        x = inputs
        for sublayer, _ in chain:
            x = sublayer(x)
        if with_sparse:
            x = add([x, sparse(inputs)])
            if activation is not None:
                x = activation(x)
        if first_call:  # the sublayers were just built: give them their weights
            for sublayer, kernel in weighted:
                sublayer.kernel.assign(np.asarray(kernel, np.float32))
            if last.use_bias:
                last.bias.assign(np.asarray(bias, np.float32))
        return x

    return replace
