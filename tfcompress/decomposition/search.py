"""Choosing each layer's ranks and sparse density, and decomposing a whole model (tf-hybrid-pruning §3.2).

As in the reference (REFERENCE.md §3.2):

* candidate ranks r = C_out//16 · i, i = 4…14 (25 % … 87.5 % of the output channels; r_in ≤ C_in);
  candidate densities of the sparse residual [0] + 0.1·1.3^i %, i < 19;
* cost of a split layer: its low-rank MACs over the original's, HW·(k²r² + r·C_in + r·C_out) / HW·k²·C_in·C_out
  (here exact: the first 1×1 runs at the input resolution); score = cost + ``sparsity_weight``·density/100
  (a sparse non-zero costs ``sparsity_weight`` MACs, default 4);
* **data-free** (``fixed_params``): layer l gets the budget w_l = clip(std(K_l)/Σ std · L · compression_factor, 0, 1)
  (larger-spread kernels get more); each rank whose cost fits gets the density (w_l − cost)/sparsity_weight·100,
  and the pair with the smallest reconstruction MSE wins;
* **evaluation-led** (``fixed_loss``): layer by layer, for each rank (ascending, until its cost alone exceeds the
  best score) the smallest density keeping holdout accuracy ≥ base − max_acc_loss/L (binary search); the best
  score wins, the layer keeps it, and the base accuracy is re-measured.

Beyond the reference: any functional model (the layer specs say what can be split), 1×1 convolutions and Dense
layers by truncated SVD, and ``cost="latency"``: each candidate block is measured on the device against the
original layer (one-layer models), so the cost is measured time. A sparse branch runs as a dense convolution
in LiteRT: in that mode its measured latency replaces ``sparsity_weight``, which then plays no part.
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfcompress import progress as progress_bars
from tfcompress.decomposition.blocks import effective_kernel_and_bias, factored_block, factoring_for, is_pointwise
from tfcompress.decomposition.tucker import Structure, TuckerFactors, relative_error, sparse_partial_tucker
from tfcompress.keras_graph import Call, GraphWalk, copy_layer, input_positions, output_positions, replace_layers
from tfcompress.specs import class_path

METHODS = ("data_free", "evaluation")
COSTS = ("macs", "latency")
DENSITIES_PERCENT = (0.0, *(0.1 * 1.3**i for i in range(19)))
RANK_STEPS = range(4, 15)  # r = C_out//16 · i


@dataclasses.dataclass(frozen=True)
class Target:
    """A layer that can be split: its first call's geometry and the values it computes with."""

    call: Call
    kernel: np.ndarray  # (k…, C_in, C_out)
    bias: np.ndarray | None
    positions_in: int
    positions_out: int

    @property
    def name(self) -> str:
        return self.call.layer.name

    @property
    def macs(self) -> int:
        return self.positions_out * self.kernel.size

    def low_rank_macs(self, ranks: tuple[int, int]) -> int:
        *spatial, c_in, c_out = self.kernel.shape
        r_in, r_out = ranks
        if is_pointwise(self.kernel.shape):
            return self.positions_out * r_out * (c_in + c_out)
        core = math.prod(spatial) * r_in * r_out
        return self.positions_in * c_in * r_in + self.positions_out * (core + r_out * c_out)

    def low_rank_params(self, ranks: tuple[int, int]) -> int:
        *spatial, c_in, c_out = self.kernel.shape
        r_in, r_out = ranks
        if is_pointwise(self.kernel.shape):
            return r_out * (c_in + c_out)
        return c_in * r_in + math.prod(spatial) * r_in * r_out + r_out * c_out

    def candidate_ranks(self) -> list[tuple[int, int]]:
        """The reference's ranks C_out·i/16 (at least 1) as (r_in, r_out), capped by the channel counts (one rank
        for a pointwise layer: its SVD); only those cheaper than the layer."""
        *_, c_in, c_out = self.kernel.shape
        ranks: list[tuple[int, int]] = []
        for step in RANK_STEPS:
            r = max(1, c_out * step // 16)  # = C_out//16·i when 16 divides C_out; not all 0 below 16
            pair = (min(r, c_in, c_out),) * 2 if is_pointwise(self.kernel.shape) else (min(r, c_in), min(r, c_out))
            if pair not in ranks and self.low_rank_macs(pair) < self.macs:
                ranks.append(pair)
        return ranks


@dataclasses.dataclass
class LayerChoice:
    """What the decomposition did to one layer (``ranks`` None: left as is, ``reason`` says why)."""

    name: str
    layer_type: str
    kernel_shape: tuple[int, ...]
    macs_before: int
    params_before: int
    ranks: tuple[int, int] | None = None
    density_percent: float = 0.0
    sparse_nonzeros: int = 0
    budget: float | None = None  # data-free: the cost this layer may keep
    cost: float = 1.0  # low-rank MACs (or measured latency) over the original's
    score: float = 1.0
    relative_error: float = 0.0
    accuracy: float | None = None  # evaluation-led: holdout accuracy once this layer is split
    reason: str = ""

    macs_after: int = -1  # low-rank MACs + positions · sparse non-zeros (-1: as before)
    params_after: int = -1  # low-rank kernel weights + sparse non-zeros (-1: as before)

    def __post_init__(self) -> None:
        self.macs_after = self.macs_before if self.macs_after < 0 else self.macs_after
        self.params_after = self.params_before if self.params_after < 0 else self.params_after

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class DecompositionResult:
    """The decomposed model and one :class:`LayerChoice` per layer considered."""

    model: keras.Model
    layers: list[LayerChoice]
    seconds: float
    settings: dict[str, Any]

    @property
    def split(self) -> list[LayerChoice]:
        return [choice for choice in self.layers if choice.ranks is not None]

    def table(self) -> str:
        lines = [f"{'layer':<28} {'kernel':<18} {'ranks':>9} {'dens %':>7} {'MACs':>11} {'→ MACs':>11} "
                 f"{'params':>9} {'→ params':>9} {'rel.err':>8}  note"]
        for c in self.layers:
            ranks = "-" if c.ranks is None else f"{c.ranks[0]},{c.ranks[1]}"
            lines.append(
                f"{c.name:<28} {'×'.join(map(str, c.kernel_shape)):<18} {ranks:>9} {c.density_percent:>7.2f} "
                f"{c.macs_before:>11,} {c.macs_after:>11,} {c.params_before:>9,} {c.params_after:>9,} "
                f"{c.relative_error:>8.4f}  {c.reason}"
            )
        before = sum(c.macs_before for c in self.layers)
        after = sum(c.macs_after for c in self.layers)
        p_before = sum(c.params_before for c in self.layers)
        p_after = sum(c.params_after for c in self.layers)
        lines.append(f"{'total (layers considered)':<28} {'':<18} {'':>9} {'':>7} {before:>11,} {after:>11,} "
                     f"{p_before:>9,} {p_after:>9,}  MACs ×{after / max(before, 1):.3f}, params "
                     f"×{p_after / max(p_before, 1):.3f} (the reference's accounting: a residual's non-zeros as if "
                     "stored and run sparse; a .tflite stores and runs it dense)")
        return "\n".join(lines)


def decompose(
    model: keras.Model,
    *,
    method: str = "data_free",
    compression_factor: float = 0.5,
    max_acc_loss: float = 0.02,
    holdout: tuple[np.ndarray, np.ndarray] | None = None,
    structure: str | Structure = "unstructured",
    sparsity_weight: float = 4.0,
    cost: str = "macs",
    device: Any = None,
    precision: str = "float32",
    threads: int = 1,
    runs: int = 30,
    layers: Sequence[str] | None = None,
    n_iter_max: int = 100,
    progress: Callable[[str], None] | None = None,
) -> DecompositionResult:
    """Returns a copy of ``model`` whose layers are split into low-rank factors plus a sparse residual.

    Args:
        model: a functional or Sequential model (wrapped layers — weight masks, ternary — are split as they
            compute: the result holds plain float layers).
        method: "data_free" (budget from ``compression_factor``) or "evaluation" (accuracy budget on
            ``holdout``), see the module docstring.
        compression_factor: data-free: the mean fraction of each layer's cost kept, in (0, 1).
        max_acc_loss: evaluation-led: the total accuracy loss allowed (a fraction: 0.02 is 2 points), shared
            equally by the layers.
        holdout: evaluation-led: (images, labels) the accuracy is measured on (not the test set).
        structure: how the sparse residual's entries are grouped: "unstructured", "filter", "channel",
            "block_AxB".
        sparsity_weight: MACs a sparse non-zero costs, relative to a dense MAC (reference: 4); ``inf``: no
            sparse residual (LiteRT runs one as a dense convolution: no speed, only gzip size to gain).
        cost: "macs" or "latency" (candidates measured on ``device`` at ``precision`` with ``threads``, ``runs``
            timed inferences each).
        layers: names of the layers to split; None: every layer whose spec can be split and that gains.
        n_iter_max: HOOI sweeps per fit.
        progress: called with one line per layer (e.g. ``print``). Independently, progress bars (layers searched;
            candidate blocks exported and measured with ``cost="latency"``) are drawn where
            :mod:`tfcompress.progress` draws bars.

    Raises:
        ValueError: bad settings, a named layer missing or not splittable (the message says why).
    """
    say = progress_bars.around_bars(progress)  # lines between the bars, not through them
    structure = Structure.parse(structure) if isinstance(structure, str) else structure
    _check_settings(method, compression_factor, max_acc_loss, holdout, sparsity_weight, cost, device)
    start = time.time()
    targets, choices = _targets(model, layers, structure)
    if not targets:
        raise ValueError(f"model {model.name!r} has no layer that decomposition can split (Conv1D/2D/3D, Dense)")
    cost_of = _mac_costs if cost == "macs" else _latency_costs(targets, device, precision, threads, runs, say)

    def fit(target: Target, ranks: tuple[int, int], density: float) -> TuckerFactors:
        return sparse_partial_tucker(target.kernel, ranks, density, structure, n_iter_max=n_iter_max)

    chosen: dict[str, TuckerFactors] = {}
    if method == "data_free":
        _data_free(targets, choices, compression_factor, sparsity_weight, cost_of, fit, chosen, say)
    else:
        _evaluation_led(model, targets, choices, max_acc_loss, holdout, sparsity_weight, cost_of, fit, chosen, say)

    by_name = {target.name: target for target in targets}

    def replacement_for(layer: keras.layers.Layer) -> Callable[..., Any] | None:
        factors = chosen.get(layer.name)
        return None if factors is None else factored_block(layer, factors, by_name[layer.name].bias)

    decomposed = replace_layers(model, replacement_for)
    settings = {"method": method, "compression_factor": compression_factor, "max_acc_loss": max_acc_loss,
                "structure": structure.label, "cost": cost,
                "sparsity_weight": sparsity_weight if math.isfinite(sparsity_weight) else "inf",
                "precision": precision, "n_iter_max": n_iter_max}
    return DecompositionResult(decomposed, list(choices.values()), time.time() - start, settings)


# ----------------------------------------------------------------------------------------------- settings


def _check_settings(method: str, compression_factor: float, max_acc_loss: float, holdout: Any,
                    sparsity_weight: float, cost: str, device: Any) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if cost not in COSTS:
        raise ValueError(f"cost must be one of {COSTS}, got {cost!r}")
    if method == "data_free" and not 0.0 < compression_factor < 1.0:
        raise ValueError(f"compression_factor must be in (0, 1) (the mean fraction of each layer's cost kept), "
                         f"got {compression_factor}")
    if method == "evaluation":
        if not 0.0 <= max_acc_loss < 1.0:
            raise ValueError(f"max_acc_loss is a fraction in [0, 1) (0.02 = 2 points), got {max_acc_loss}")
        if holdout is None or len(holdout) != 2 or len(holdout[0]) == 0:
            raise ValueError("the evaluation-led method needs holdout=(images, labels), e.g. a split of the "
                             "training data (not the test set)")
    if not sparsity_weight > 0.0:
        raise ValueError(f"sparsity_weight must be > 0, got {sparsity_weight}")
    if cost == "latency" and device is None:
        raise ValueError("cost='latency' measures candidate blocks: give device= (e.g. 'litert')")


def _targets(model: keras.Model, names: Sequence[str] | None,
             structure: Structure) -> tuple[list[Target], dict[str, LayerChoice]]:
    """The layers to split (first calls), and a choice row for every layer with a kernel."""
    targets: list[Target] = []
    choices: dict[str, LayerChoice] = {}
    wanted = None if names is None else set(names)
    seen: set[str] = set()
    for call in GraphWalk(model).calls:
        if not call.is_layer or call.index > 0:
            continue
        base, factoring, refusal = factoring_for(call.layer)
        name = call.layer.name
        seen.add(name)
        if factoring is None and refusal is None:
            if wanted is not None and name in wanted:
                raise ValueError(f"layer {name!r} is a {class_path(base)}, which has no kernel to split; leave it "
                                 "out of layers=[...]")
            continue
        kernel, bias = effective_kernel_and_bias(call.layer) if factoring is not None else (None, None)
        shape = tuple(base.kernel.shape)
        choice = LayerChoice(name, type(base).__name__, shape, output_positions(call) * math.prod(shape),
                             math.prod(shape))
        choices[name] = choice
        if refusal is None:
            try:
                structure.check(shape, name)
            except ValueError as error:
                refusal = str(error).split(": ", 1)[1]
        if refusal is not None:
            choice.reason = refusal
            if wanted is not None and name in wanted:
                raise ValueError(f"layer {name!r} ({class_path(base)}) cannot be split: {refusal}")
            continue
        if wanted is not None and name not in wanted:
            choice.reason = "not in layers=[...]"
            continue
        targets.append(Target(call, kernel, bias, input_positions(call), output_positions(call)))
    if wanted is not None and wanted - seen:
        raise ValueError(f"layers {sorted(wanted - seen)} are not in model {model.name!r}")
    return targets, choices


# ------------------------------------------------------------------------------------------------- costs

CostOf = Callable[[Target, tuple[int, int], bool], float]  # (target, ranks, with a sparse branch) → cost ratio


def _mac_costs(target: Target, ranks: tuple[int, int], sparse: bool) -> float:
    return target.low_rank_macs(ranks) / target.macs


def _latency_costs(targets: list[Target], device: Any, precision: str, threads: int, runs: int,
                   say: Callable[[str], None]) -> CostOf:
    """Measures the original layer and every candidate block (with and without a sparse branch) alone on the
    device, once per distinct geometry; returns the cost as the ratio of measured latencies."""
    from tfcompress.export import to_tflite
    from tfcompress.latency import open_device

    requests: dict[tuple, keras.Model] = {}
    for target in targets:
        key = _geometry(target)
        requests.setdefault((*key, None, False), _one_layer_model(target, None, False))
        for ranks in target.candidate_ranks():
            for sparse in (False, True):
                requests.setdefault((*key, ranks, sparse), _one_layer_model(target, ranks, sparse))
    say(f"measuring {len(requests)} one-layer models on {device} ({precision}) for the latency costs")
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        blocks = progress_bars.iterate(requests.values(), "decomposition: export candidate blocks", unit="model")
        for index, block in enumerate(blocks):
            path = Path(folder) / f"block{index}.tflite"
            to_tflite(block, precision, output=path,
                      **({"representative_data": np.random.default_rng(0).random(
                          (8, *block.input_shape[1:]), np.float32), "num_calibration_samples": 8}
                         if precision == "int8" else {}))
            paths.append(path)
        results = open_device(device).measure_in_batches(paths, threads=threads, runs=runs, warmup=5,
                                                         desc="decomposition: measure candidate blocks")
    measured = {key: result.latency_ms for key, result in zip(requests, results, strict=True)}

    def cost_of(target: Target, ranks: tuple[int, int], sparse: bool) -> float:
        key = _geometry(target)
        return measured[(*key, ranks, sparse)] / measured[(*key, None, False)]

    return cost_of


def _geometry(target: Target) -> tuple:
    config = {k: v for k, v in factoring_for(target.call.layer)[0].get_config().items() if k != "name"}
    return (type(target.call.layer).__name__, repr(sorted(config.items())), target.call.input_shape)


def _one_layer_model(target: Target, ranks: tuple[int, int] | None, sparse: bool) -> keras.Model:
    """The original layer (ranks None) or a candidate block alone on the layer's input shape, random values."""
    base = factoring_for(target.call.layer)[0]
    inputs = keras.Input(target.call.input_shape)
    rng = np.random.default_rng(0)
    if ranks is None:
        return keras.Model(inputs, copy_layer(base)(inputs))
    *spatial, c_in, c_out = target.kernel.shape
    factors = TuckerFactors(rng.normal(size=(*spatial, *ranks)), rng.normal(size=(c_in, ranks[0])),
                            rng.normal(size=(c_out, ranks[1])),
                            rng.normal(size=target.kernel.shape) if sparse else None)
    return keras.Model(inputs, factored_block(base, factors, target.bias)(inputs))


# ------------------------------------------------------------------------------------------------ search


def _data_free(targets: list[Target], choices: dict[str, LayerChoice], compression_factor: float,
               sparsity_weight: float, cost_of: CostOf, fit: Callable, chosen: dict, say: Callable) -> None:
    stds = np.array([float(np.std(target.kernel)) for target in targets])
    budgets = np.clip(stds / max(stds.sum(), 1e-30) * len(targets) * compression_factor, 0.0, 1.0)
    for target, budget in progress_bars.iterate(list(zip(targets, budgets, strict=True)), "decomposition (data-free)",
                                                unit="layer"):
        choice = choices[target.name]
        choice.budget = float(budget)
        best: tuple[float, tuple, float, TuckerFactors] | None = None
        for ranks in target.candidate_ranks():
            low_rank = cost_of(target, ranks, False)
            if low_rank > budget:
                continue
            density = min(100.0, (budget - low_rank) / sparsity_weight * 100.0)
            if density > 0.0 and cost_of(target, ranks, True) > budget:
                density = 0.0  # a measured sparse branch does not fit the (latency) budget
            factors = fit(target, ranks, density)
            mse = float(np.mean((target.kernel - factors.kernel()) ** 2))
            if best is None or mse < best[0]:
                best = (mse, ranks, density, factors)
        if best is None:
            choice.reason = f"budget {budget:.3f} below the cheapest rank's cost"
            say(f"{target.name}: left as is ({choice.reason})")
            continue
        _accept(target, choice, best[1], best[2], best[3], cost_of, sparsity_weight, chosen)
        say(f"{target.name}: budget {budget:.3f} → ranks {choice.ranks}, density {choice.density_percent:.2f} %, "
            f"relative error {choice.relative_error:.4f}")


def _evaluation_led(model: keras.Model, targets: list[Target], choices: dict[str, LayerChoice], max_acc_loss: float,
                    holdout: tuple[np.ndarray, np.ndarray], sparsity_weight: float, cost_of: CostOf,
                    fit: Callable, chosen: dict, say: Callable) -> None:
    from tfcompress.export import strip

    images, labels = (np.asarray(part) for part in holdout)
    work = replace_layers(strip(model), lambda layer: None)  # a plain copy whose kernels we overwrite
    kernels = {layer.name: layer.kernel for layer in work.layers if layer.name in choices}

    forward = tf.function(lambda x: work(x, training=False))  # traced once: predict() costs ~0.4 s per call
    batches = [tf.constant(images[i:i + 256]) for i in range(0, len(images), 256)]

    def accuracy() -> float:
        logits = np.concatenate([keras.ops.convert_to_numpy(forward(batch)) for batch in batches])
        return float(np.mean(np.argmax(logits, axis=-1) == labels.reshape(-1)))

    per_layer_loss = max_acc_loss / len(targets)
    base = accuracy()
    say(f"holdout accuracy {base:.4f} on {len(labels)} images; per-layer budget {per_layer_loss:.4f}")
    for target in progress_bars.iterate(targets, "decomposition (evaluation-led)", unit="layer"):
        choice, variable = choices[target.name], kernels[target.name]
        threshold = base - per_layer_loss

        def keeps_accuracy(factors: TuckerFactors, variable: Any = variable, threshold: float = threshold) -> bool:
            variable.assign(factors.kernel().astype(np.float32))
            return accuracy() >= threshold

        best = _smallest_score(target, keeps_accuracy, sparsity_weight, cost_of, fit)
        if best is None:
            variable.assign(target.kernel.astype(np.float32))
            choice.reason = f"no candidate keeps holdout accuracy ≥ {threshold:.4f} at a lower cost"
            say(f"{target.name}: left as is ({choice.reason})")
            continue
        ranks, density, factors = best
        variable.assign(factors.kernel().astype(np.float32))
        base = accuracy()
        _accept(target, choice, ranks, density, factors, cost_of, sparsity_weight, chosen)
        choice.accuracy = base
        say(f"{target.name}: ranks {ranks}, density {density:.2f} % → holdout accuracy {base:.4f}")


def _smallest_score(target: Target, keeps_accuracy: Callable[[TuckerFactors], bool], sparsity_weight: float,
                    cost_of: CostOf, fit: Callable) -> tuple[tuple[int, int], float, TuckerFactors] | None:
    """The reference's ``find_compression_loss`` for one layer: for each rank (ascending, until its cost alone
    exceeds the best score), the smallest density that keeps the accuracy (binary search); the best score."""
    best_score, best = 1.0, None
    # an infinite weight forbids a sparse residual (LiteRT runs it as a dense convolution)
    densities = DENSITIES_PERCENT if math.isfinite(sparsity_weight) else (0.0,)
    for ranks in target.candidate_ranks():
        if cost_of(target, ranks, False) >= best_score:
            break
        fits: dict[int, TuckerFactors] = {}
        verdicts: dict[int, bool] = {}

        def keeps(index: int, ranks: tuple[int, int] = ranks, fits: dict = fits, verdicts: dict = verdicts) -> bool:
            if index not in verdicts:
                fits[index] = fit(target, ranks, densities[index])
                verdicts[index] = keeps_accuracy(fits[index])
            return verdicts[index]

        low, high = 0, len(densities) - 1
        if not keeps(high):
            continue
        while low < high:
            middle = (low + high) // 2
            if keeps(middle):
                high = middle
            else:
                low = middle + 1
        score = _score(target, ranks, densities[low], cost_of, sparsity_weight)
        if score < best_score:
            best_score, best = score, (ranks, densities[low], fits[low])
    return best


def _score(target: Target, ranks: tuple[int, int], density: float, cost_of: CostOf, sparsity_weight: float) -> float:
    if cost_of is _mac_costs:
        return cost_of(target, ranks, False) + (sparsity_weight * density / 100.0 if density else 0.0)
    return cost_of(target, ranks, density > 0.0)  # measured: the sparse branch's latency is in the block's


def _accept(target: Target, choice: LayerChoice, ranks: tuple[int, int], density: float, factors: TuckerFactors,
            cost_of: CostOf, sparsity_weight: float, chosen: dict) -> None:
    if density == 0.0:
        factors = dataclasses.replace(factors, sparse=None)
    chosen[target.name] = factors
    choice.ranks, choice.density_percent = ranks, density
    choice.sparse_nonzeros = factors.nonzero_sparse
    choice.cost = cost_of(target, ranks, factors.sparse is not None)
    choice.score = _score(target, ranks, density, cost_of, sparsity_weight)
    choice.relative_error = relative_error(target.kernel, factors.kernel())
    choice.macs_after = target.low_rank_macs(ranks) + target.positions_out * choice.sparse_nonzeros
    choice.params_after = target.low_rank_params(ranks) + choice.sparse_nonzeros
