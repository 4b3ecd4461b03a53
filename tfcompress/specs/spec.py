"""One spec per layer class: everything tfcompress knows about a layer type, in one registry.

A :class:`LayerSpec` says how a layer relates to channels (its channel rule and how it is resized), which of its
variables are kernels and biases, the dot products it computes (the one cost rule behind the channel graph's
cost, the profile's MACs and the MicroNet counts), its MicroNet counter for everything else, whether weight
masks or ternarization apply to it, and how it is stripped to plain Keras at export.

Lookup follows the class's MRO (a subclass of ``Conv2D`` is a convolution unless it registers its own spec);
``spec_for(layer, overrides)`` takes per-call overrides, and ``SPECS.scoped()`` undoes registrations made in a
block. Wrapper layers (weight masks, channel masks, ternary layers) use :func:`wrapper_spec`: they delegate to
the wrapped layer's spec and declare their extra variables (companions sliced like a base variable) and the
values they compute with (:attr:`LayerSpec.effective`).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import keras

from tfcompress.keras_graph import Call, Registry
from tfcompress.specs.channels import ChannelRule
from tfcompress.specs.counting import Count, Precision

Counter = Callable[[Call, Precision], Count]
StripRule = Callable[..., Any]  # (layer, *call_args, **call_kwargs) → plain-Keras output tensor(s)


@dataclasses.dataclass(frozen=True)
class DotProduct:
    """A kernel applied as dot products: every value of ``variable`` is used once at each of ``positions``,
    producing ``outputs`` output elements. MACs = positions · numel(variable)."""

    variable: Any
    positions: int
    outputs: int


def _no_dot_products(call: Call) -> list[DotProduct]:
    return []


def _no_variables(layer: Any) -> list[tuple[Any, Any]]:
    return []


def _plain_values(layer: Any) -> ContextManager[None]:
    return contextlib.nullcontext()


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """What tfcompress knows about one layer class.

    Attributes:
        channels: the channel rule (:mod:`tfcompress.specs.channels`); None: the channel graph refuses the layer.
        resize: ``(layer, kept output channels) → new unbuilt layer`` for layers whose config counts channels.
        kernels: attributes holding the weights that are multiplied in dot products (pruned by weight masks).
        biases: attributes holding biases (masked only when asked).
        dot_products: ``call → [DotProduct]``, the one MAC rule.
        micronet: ``(call, precision) → Count``; None: MicroNet scoring refuses the layer.
        maskable: weight masks may wrap the layer (its kernels, optionally its biases).
        depthwise: kernels are (k…, C_in, multiplier): fan-in k…, output channel c·multiplier + m.
        ternary: the ternary layer class that replaces exactly this class (set by the ternary layers' module).
        decompose: how :mod:`tfcompress.decomposition` splits exactly this class into low-rank factors, or why
            it does not (set by that module); None: the layer has no kernel to split.
        strip: how the layer becomes plain Keras at export; None: it is plain already.
        inner: for wrappers, ``layer → wrapped layer``.
        companions: ``layer → [(extra variable, base variable)]``: extra variables shaped like a base variable
            and sliced like it (weight masks, ternary assignments).
        effective: ``layer → context`` inside which reading the layer's variables gives the values it computes
            with (masked or ternary kernels); used by every measurement of values.
    """

    channels: ChannelRule | None = None
    resize: Callable[[Any, int], Any] | None = None
    kernels: tuple[str, ...] = ()
    biases: tuple[str, ...] = ()
    dot_products: Callable[[Call], list[DotProduct]] = _no_dot_products
    micronet: Counter | None = None
    maskable: bool = False
    depthwise: bool = False
    ternary: type | None = None
    decompose: Any = None
    strip: StripRule | None = None
    inner: Callable[[Any], Any] | None = None
    companions: Callable[[Any], list[tuple[Any, Any]]] = _no_variables
    effective: Callable[[Any], ContextManager[None]] = _plain_values

    def replace(self, **changes: Any) -> LayerSpec:
        return dataclasses.replace(self, **changes)


SPECS: Registry[LayerSpec] = Registry("layer spec")
SpecOverrides = Mapping[type, LayerSpec]


def register(*layer_classes: type, spec: LayerSpec) -> LayerSpec:
    """Registers ``spec`` for ``layer_classes`` (and, through the MRO, their subclasses)."""
    SPECS.register(*layer_classes, value=spec)
    return spec


def extend(layer_class: type, **changes: Any) -> LayerSpec:
    """Registers for ``layer_class`` its current spec with ``changes`` (e.g. ``ternary=TernaryConv2D``)."""
    base = spec_for(layer_class)
    if base is None:
        raise ValueError(f"{layer_class.__name__} has no spec to extend")
    return register(layer_class, spec=base.replace(**changes))


def spec_for(layer: Any, overrides: SpecOverrides | None = None) -> LayerSpec | None:
    """The spec of a layer, operation or class (MRO lookup, ``overrides`` first), or None."""
    return SPECS.lookup(layer, overrides)


def class_path(layer: Any) -> str:
    """``keras.layers.Conv2D``-style name of a layer's class (operation nodes: ``keras.src.ops.numpy.Add``)."""
    cls = layer if isinstance(layer, type) else type(layer)
    module = cls.__module__
    public = getattr(keras.layers, cls.__name__, None) is cls
    return f"keras.layers.{cls.__name__}" if public else f"{module}.{cls.__name__}"


def unwrap(layer: Any) -> Any:
    """The innermost wrapped layer (the layer itself when it wraps nothing)."""
    spec = spec_for(layer)
    while spec is not None and spec.inner is not None:
        layer = spec.inner(layer)
        spec = spec_for(layer)
    return layer


def kernels(layer: Any) -> list[Any]:
    """The kernel variables of a layer, through wrappers (empty for layers without dot products)."""
    base = unwrap(layer)
    spec = spec_for(base)
    if spec is None:
        return []
    return [v for v in (getattr(base, name, None) for name in spec.kernels) if isinstance(v, keras.Variable)]


@contextlib.contextmanager
def effective_values(layer: Any):
    """Reading the layer's variables inside the block gives the values it computes with (through wrappers)."""
    with contextlib.ExitStack() as stack:
        while layer is not None:
            spec = spec_for(layer)
            if spec is None:
                break
            stack.enter_context(spec.effective(layer))
            layer = spec.inner(layer) if spec.inner is not None else None
        yield


def wrapper_spec(
    inner: Callable[[Any], Any],
    *,
    companions: Callable[[Any], list[tuple[Any, Any]]] = _no_variables,
    effective: Callable[[Any], ContextManager[None]] = _plain_values,
    strip: StripRule | None = None,
    micronet: Counter | None = None,
) -> LayerSpec:
    """The spec of a layer that wraps another (``inner(layer)``): channels, resizing, dot products and MicroNet
    counting delegate to the wrapped layer's spec (``micronet`` replaces the last)."""

    def inner_call(call: Call) -> tuple[Call, LayerSpec]:
        wrapped = inner(call.layer)
        spec = spec_for(wrapped)
        if spec is None:
            raise ValueError(f"{call.name}: the wrapped layer {class_path(wrapped)} has no spec")
        return dataclasses.replace(call, layer=wrapped), spec

    def channels(call: Call, layouts: list, builder: Any) -> list:
        wrapped_call, spec = inner_call(call)
        if spec.channels is None:
            raise ValueError(f"{call.name}: the wrapped layer {class_path(wrapped_call.layer)} has no channel rule")
        return spec.channels(wrapped_call, layouts, builder)

    def resize(layer: Any, kept: int) -> Any:
        old = inner(layer)
        spec = spec_for(old)
        # an unbuilt copy either way: a built layer would serialize its build shape (the old channel count)
        new_inner = spec.resize(old, kept) if spec.resize is not None else type(old).from_config(old.get_config())
        config = {**layer.get_config(), "layer": keras.saving.serialize_keras_object(new_inner)}
        return type(layer).from_config(config)

    def dot_products(call: Call) -> list[DotProduct]:
        wrapped_call, spec = inner_call(call)
        return spec.dot_products(wrapped_call)

    def count(call: Call, precision: Precision) -> Count:
        wrapped_call, spec = inner_call(call)
        if spec.micronet is None:
            raise ValueError(f"{call.name}: the wrapped layer {class_path(wrapped_call.layer)} has no MicroNet rule")
        with effective(call.layer):
            return spec.micronet(wrapped_call, precision)

    return LayerSpec(
        channels=channels, resize=resize, dot_products=dot_products, micronet=micronet or count,
        strip=strip, inner=inner, companions=companions, effective=effective,
    )


def stateless(mapping: list[tuple[Any, Any]]) -> ContextManager[None]:
    """A context in which each variable of ``mapping`` reads as its paired value (Keras' stateless scope)."""
    return keras.StatelessScope(state_mapping=mapping)
