"""Pruning: which channels or weights to remove, and how many.

Channel pruning (physical removal, what makes a network faster in TFLite): ``importance`` scores the channels
of a :class:`tfcompress.graph.ChannelGraph`, ``channels`` plans to a target (the fraction kept) and ``shrink``
removes them. Unstructured sparsity: ``weight_masks`` (weight-mask layers), ``snip`` (single-shot pruning at
initialization), ``magnitude`` (random and magnitude baselines, gradual pruning callback).
"""

# weight_masks registers WeightMask's spec
from tfcompress.pruning import fisher, importance, magnitude, morphnet, netadapt, snip, weight_masks
from tfcompress.pruning.channels import PruningPlan, PruningResult, apply_plan, plan_channels, prune_channels
from tfcompress.pruning.importance import IMPORTANCES, Importance, get_importance, register_importance
from tfcompress.pruning.shrink import insert_channel_masks, set_channel_masks, shrink

__all__ = [
    "IMPORTANCES", "Importance", "PruningPlan", "PruningResult", "apply_plan", "fisher", "get_importance", "importance",
    "insert_channel_masks", "magnitude", "morphnet", "netadapt", "plan_channels", "prune_channels",
    "register_importance", "set_channel_masks", "shrink", "snip", "weight_masks",
]
