"""Pruning: which channels or weights to remove, and how many.

Channel pruning (physical removal, what makes a network faster in TFLite): ``criteria`` score the channels
of a :class:`tfcompress.graph.ChannelGraph`, ``channels`` plans to a target and shrinks the model, and
``channel_mask.ChannelMask`` masks channels during training. Submodules for unstructured sparsity:
``masks`` (weight-mask layers), ``snip`` (single-shot pruning at initialization), ``magnitude`` (random and
magnitude baselines, gradual pruning callback).
"""

from tfcompress.pruning import magnitude, masks, snip  # masks registers WeightMask for .keras loading
from tfcompress.pruning.channel_mask import ChannelMask
from tfcompress.pruning.channels import PruningPlan, plan_channels, prune_channels
from tfcompress.pruning.criteria import CRITERIA, get_criterion, register_criterion

__all__ = ["CRITERIA", "ChannelMask", "PruningPlan", "get_criterion", "magnitude", "masks", "plan_channels",
           "prune_channels", "register_criterion", "snip"]
