"""Rebuilding a model with some layers replaced, on the one graph walker (:class:`GraphWalk`).

:func:`replace_layers` is what export's strip, ternarization and weight masking use to swap layers; channel
surgery (:mod:`tfcompress.pruning.shrink`) uses :class:`LayerCopies` with resized layers and sliced weights.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np

from tfcompress.keras_graph.walk import Call, GraphWalk

# A replacement takes the inputs the original layer was called with and returns the new output tensor(s).
Replacement = Callable[..., Any]


def copy_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A new, unbuilt layer with ``layer``'s config."""
    return type(layer).from_config(layer.get_config())


class LayerCopies:
    """One new layer per original layer (``make(call)``), given its weights (``weights(layer)``) right after
    its first call has built it; later calls of a shared layer reuse the copy. Operation nodes
    (``x + 1.0``) hold no state and are called as they are."""

    def __init__(
        self,
        make: Callable[[Call], keras.layers.Layer] = lambda call: copy_layer(call.layer),
        weights: Callable[[keras.layers.Layer], list[np.ndarray]] = lambda layer: layer.get_weights(),
    ) -> None:
        self._make, self._weights = make, weights
        self._copies: dict[int, keras.layers.Layer] = {}

    def __call__(self, call: Call, args: tuple, kwargs: dict) -> Any:
        if not call.is_layer:
            return call.layer(*args, **kwargs)
        key = id(call.layer)
        first = key not in self._copies
        if first:
            self._copies[key] = self._make(call)
        outputs = self._copies[key](*args, **kwargs)
        if first and call.layer.weights:
            self._copies[key].set_weights(self._weights(call.layer))
        return outputs


def replace_layers(
    model: keras.Model,
    replacement_for: Callable[[keras.layers.Layer], Replacement | None],
    *,
    share_weights: bool = False,
) -> keras.Model:
    """Returns a copy of ``model`` where each layer for which ``replacement_for(layer)`` gives a callable is
    replaced by that callable's output (``replacement_for`` always sees the original layers).

    The layers that are kept are copies with the same weights, so training the result leaves ``model`` as it
    was; ``share_weights=True`` reuses them instead (cheaper, for a throw-away view such as export). Nested
    models are inlined: the result is one flat functional model.
    """
    walk = GraphWalk(model)
    copies = LayerCopies()

    def call_fn(call: Call, args: tuple, kwargs: dict) -> Any:
        replacement = replacement_for(call.layer) if call.is_layer else None
        if replacement is not None:
            return replacement(*args, **kwargs)
        if share_weights:
            return call.layer(*args, **kwargs)
        return copies(call, args, kwargs)

    return walk.rebuild(call_fn)
