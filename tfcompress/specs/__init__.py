"""Layer specs: one :class:`LayerSpec` per layer class, in one registry (:data:`SPECS`).

The channel graph, channel surgery, the profile's MACs, MicroNet scoring, weight masks, ternarization and export's
strip all read a layer's spec; a new layer type is one ``register(MyLayer, spec=LayerSpec(...))``. Importing this
package registers the specs of Keras' layers (:mod:`~tfcompress.specs.keras_layers`) and of Keras 3 operation
nodes (:mod:`~tfcompress.specs.keras_ops`).
"""

from tfcompress.specs import keras_layers, keras_ops  # noqa: F401  (registers the specs)
from tfcompress.specs.channels import Binding, ChannelRule, barrier, blocks, merge, pass_through
from tfcompress.specs.counting import BASE_BITS, Count, Precision
from tfcompress.specs.layout import Layout, Segment
from tfcompress.specs.spec import (
    SPECS,
    DotProduct,
    LayerSpec,
    class_path,
    effective_values,
    extend,
    kernels,
    register,
    spec_for,
    stateless,
    unwrap,
    wrapper_spec,
)

__all__ = [
    "BASE_BITS", "SPECS", "Binding", "ChannelRule", "Count", "DotProduct", "LayerSpec", "Layout", "Precision",
    "Segment", "barrier", "blocks", "class_path", "effective_values", "extend", "kernels", "merge",
    "pass_through", "register", "spec_for", "stateless", "unwrap", "wrapper_spec",
]
