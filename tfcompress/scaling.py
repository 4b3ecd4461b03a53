"""Compound scaling, and the efficientCNNs paradigm "scale until the accuracy target, then ternarize".

Compound scaling (Tan & Le, EfficientNet, 2019) grows a baseline network's depth by d = α^φ and its width by
w = β^φ; the EC2T MicroNet (Marbán, Becking et al. 2020) uses α = 1.4, β = 1.2 on a ResNet-44-like CIFAR
baseline (``tfcompress.zoo.micronet_resnet``; φ = 3.5 gives the 8 M-parameter C100-MicroNet). Ternarizing a
larger network costs less accuracy than shrinking a small one, so the recipe is: raise φ until the full-
precision model reaches a target accuracy, then ternarize it with EC2T (:mod:`tfcompress.quantization.ec2t`).

:func:`scaled_config` says what φ does to the baseline (blocks per stage, filters per stage, parameters),
:func:`build` builds it, and :func:`search` trains candidates of increasing φ within a budget until one reaches
the target on a holdout set.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import keras
import tensorflow as tf

from tfcompress import training, zoo
from tfcompress.zoo.micronet import ALPHA, BETA

BASE_FILTERS = (16, 32, 64)


@dataclasses.dataclass(frozen=True)
class ScaledConfig:
    """What compound coefficient φ makes of the MicroNet baseline.

    Attributes:
        phi: the compound coefficient φ.
        depth_multiplier: d = α^φ.
        width_multiplier: w = β^φ.
        blocks_per_stage: ⌈base_blocks·d⌉.
        filters: per-stage filters, each rounded to a multiple of 8 (``zoo.rounding_filters``).
    """

    phi: float
    depth_multiplier: float
    width_multiplier: float
    blocks_per_stage: int
    filters: tuple[int, ...]


def scaled_config(phi: float, alpha: float = ALPHA, beta: float = BETA, base_blocks: int = 7) -> ScaledConfig:
    """The depth and width that φ gives the MicroNet baseline (α = 1.4, β = 1.2, 7 blocks per stage)."""
    if phi < 0:
        raise ValueError(f"phi must be ≥ 0, got {phi}")
    depth, width = zoo.compound_multipliers(phi, alpha, beta)
    return ScaledConfig(
        phi=phi, depth_multiplier=depth, width_multiplier=width,
        blocks_per_stage=zoo.rounding_repeats(base_blocks, depth),
        filters=tuple(zoo.rounding_filters(f, width) for f in BASE_FILTERS),
    )


def build(
    phi: float, input_shape: tuple[int, int, int], num_classes: int, alpha: float = ALPHA, beta: float = BETA,
    **kwargs: Any,
) -> keras.Model:
    """The MicroNet baseline scaled by φ (``zoo.micronet_resnet``; ``kwargs`` e.g. ``base_blocks``, ``dropout``)."""
    return zoo.micronet_resnet(input_shape, num_classes, phi=phi, alpha=alpha, beta=beta, **kwargs)


@dataclasses.dataclass
class Candidate:
    """One trained candidate of :func:`search`."""

    phi: float
    params: int
    accuracy: float
    train_seconds: float


@dataclasses.dataclass
class SearchResult:
    """The outcome of :func:`search`.

    Attributes:
        target_accuracy: the holdout accuracy asked for.
        reached: whether a candidate reached it.
        chosen: the first candidate that reached it, or the most accurate one if none did.
        model: the chosen candidate's trained model.
        candidates: every candidate trained, in order of φ.
    """

    target_accuracy: float
    reached: bool
    chosen: Candidate
    model: keras.Model
    candidates: list[Candidate]

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_accuracy": self.target_accuracy, "reached": self.reached,
            "chosen": dataclasses.asdict(self.chosen), "candidates": [dataclasses.asdict(c) for c in self.candidates],
        }


def search(
    train: tf.data.Dataset,
    holdout: tf.data.Dataset,
    target_accuracy: float,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    phis: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 3.5),
    max_phi: float = 3.5,
    epochs_per_candidate: int = 10,
    lr: float = 0.1,
    builder: Callable[[float], keras.Model] | None = None,
    verbose: Any = 0,
) -> SearchResult:
    """Trains candidates of increasing φ until one reaches ``target_accuracy`` on ``holdout``.

    Each candidate gets the same budget, ``epochs_per_candidate`` epochs of the reference recipe (SGD +
    Nesterov, cosine schedule, ``training.sgd``); candidates above ``max_phi`` are not tried.

    Args:
        train, holdout: batched ``(image, label)`` datasets; keep the test split out of the search.
        target_accuracy: holdout top-1 accuracy in [0, 1].
        input_shape, num_classes: of the models to build.
        phis: the φ values to try, in increasing order.
        max_phi: the largest φ the budget allows.
        epochs_per_candidate: training epochs per candidate.
        lr: initial learning rate.
        builder: ``builder(phi) -> model`` (logits out); default :func:`build`.

    Raises:
        ValueError: no φ within ``max_phi``, φ not increasing, a target outside [0, 1], or a bad budget.
    """
    if not 0.0 <= target_accuracy <= 1.0:
        raise ValueError(f"target_accuracy must be in [0, 1], got {target_accuracy}")
    if epochs_per_candidate < 1:
        raise ValueError(f"epochs_per_candidate must be ≥ 1, got {epochs_per_candidate}")
    if list(phis) != sorted(phis):
        raise ValueError(f"phis must be increasing, got {list(phis)}")
    candidates_phi = [phi for phi in phis if phi <= max_phi]
    if not candidates_phi:
        raise ValueError(f"no φ in {list(phis)} is ≤ max_phi={max_phi}")
    builder = builder or (lambda phi: build(phi, input_shape, num_classes))
    steps = int(train.cardinality()) * epochs_per_candidate

    candidates: list[Candidate] = []
    models: list[keras.Model] = []
    for phi in candidates_phi:
        model = builder(phi)
        training.compile_classifier(model, training.sgd(lr, max(steps, 1), "cosine"))
        start = time.time()
        model.fit(train, epochs=epochs_per_candidate, verbose=verbose)
        accuracy = training.evaluate(model, holdout)["accuracy"]
        candidates.append(Candidate(phi, model.count_params(), accuracy, round(time.time() - start, 1)))
        models.append(model)
        if accuracy >= target_accuracy:
            return SearchResult(target_accuracy, True, candidates[-1], model, candidates)
    best = max(range(len(candidates)), key=lambda i: candidates[i].accuracy)
    return SearchResult(target_accuracy, False, candidates[best], models[best], candidates)
