"""Rebuilding a Keras model with some layers replaced, weights carried over.

This is the one place that rewrites a model graph. :func:`replace_layers` is what ``export.strip`` uses to
turn training-only layers into plain Keras; the channel-pruning, Tucker and ternary work builds on it.
Keras 3's ``clone_model`` with a ``call_function`` does the graph walk (the workaround discussed in
keras-team/keras#17569 "Support Model Surgery").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
from keras.src.models.functional import Functional  # no public alias; clone_model makes the same check

# A replacement takes the inputs the original layer was called with and returns the new output tensor(s).
Replacement = Callable[..., Any]


def as_functional(model: keras.Model) -> keras.Model:
    """A functional view of a built Sequential model (same layer objects); functional models pass through."""
    if isinstance(model, keras.Sequential):
        if not model.built:
            raise ValueError(f"Sequential model {model.name!r} is not built; give it an Input or call it once.")
        return keras.Model(model.inputs, model.outputs, name=model.name)
    if not isinstance(model, Functional):
        raise ValueError(
            f"{type(model).__name__} {model.name!r} is a subclassed model; tfcompress rewrites functional and "
            "Sequential models only. Rebuild it with the functional API."
        )
    return model


def iter_layers(model: keras.Model):
    """Every layer of ``model``, descending into nested models (the nested model itself is yielded first)."""
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from iter_layers(layer)


def replace_layers(
    model: keras.Model, replacement_for: Callable[[keras.layers.Layer], Replacement | None]
) -> keras.Model:
    """Returns a copy of ``model`` where each layer for which ``replacement_for(layer)`` gives a callable is
    replaced by that callable's output; other layers are reused as they are (their weights are shared).

    Nested functional models are rewritten too.
    """
    model = as_functional(model)

    def call(layer: keras.layers.Layer, *args: Any, **kwargs: Any) -> Any:
        replacement = replacement_for(layer)
        return replacement(*args, **kwargs) if replacement is not None else layer(*args, **kwargs)

    return keras.models.clone_model(model, clone_function=lambda layer: layer, call_function=call, recursive=True)
