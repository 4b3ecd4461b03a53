"""Low-rank decomposition: Tucker (convolutions) and truncated SVD (pointwise convolutions, Dense) with a sparse
residual, as plain Keras layers (:mod:`.tucker` the maths, :mod:`.blocks` the layers, :mod:`.search` the choice
of ranks and densities)."""

from tfcompress.decomposition.blocks import Factoring, factored_block, factoring_for
from tfcompress.decomposition.search import (
    COSTS,
    DENSITIES_PERCENT,
    METHODS,
    DecompositionResult,
    LayerChoice,
    decompose,
)
from tfcompress.decomposition.tucker import Structure, TuckerFactors, magnitude_sparse, sparse_partial_tucker

__all__ = [
    "COSTS", "DENSITIES_PERCENT", "METHODS", "DecompositionResult", "Factoring", "LayerChoice", "Structure",
    "TuckerFactors", "decompose", "factored_block", "factoring_for", "magnitude_sparse", "sparse_partial_tucker",
]
