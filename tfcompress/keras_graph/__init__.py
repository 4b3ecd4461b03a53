"""Keras-graph utilities, at the bottom of tfcompress (they depend on Keras only): one walker over
functional, Sequential and nested models (:class:`GraphWalk`), layer replacement (:func:`replace_layers`), and
the class-keyed :class:`Registry` every per-layer table uses."""

from tfcompress.keras_graph.registry import Registry
from tfcompress.keras_graph.rewrite import LayerCopies, Replacement, copy_layer, replace_layers
from tfcompress.keras_graph.walk import (
    Alias,
    Call,
    GraphWalk,
    Shape,
    as_functional,
    channels_first,
    input_positions,
    iter_layers,
    known_size,
    output_positions,
    spatial_positions,
)

__all__ = [
    "Alias", "Call", "GraphWalk", "LayerCopies", "Registry", "Replacement", "Shape", "as_functional",
    "channels_first", "copy_layer", "input_positions", "iter_layers", "known_size", "output_positions",
    "replace_layers", "spatial_positions",
]
