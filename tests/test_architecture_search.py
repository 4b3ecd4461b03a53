"""benchmarks/architecture_search.py: the verdict computed from the rows (best within a budget, uniform pruning
beaten or not, the test set's noise), budget filtering, cache keys, the MorphNet strength search and threshold.

The benchmark module defines absl flags that would clash with the programs other tests load in this process, so
its functions run in one fresh interpreter (it imports absl only, not TensorFlow: well under a second) and every
test reads its part of the answers.
"""

from __future__ import annotations

import math

import pytest

from tests.conftest import REPO, run_json_program

BENCHMARK = REPO / "benchmarks" / "architecture_search.py"


def _row(method: str, label: str, fraction: float, accuracy: float, budget: float | None = None,
         test_images: int = 10000) -> dict:
    return {"method": method, "label": label, "fraction": fraction, "accuracy": accuracy, "budget": budget,
            "test_images": test_images}


ROWS = [
    _row("reference", "resnet20", 1.0, 0.930),
    _row("grid", "wrn-10-1", 0.32, 0.905),
    _row("grid", "effnet_w32_e4", 0.46, 0.915),
    _row("grid", "resnet14", 0.67, 0.925),  # over both budgets
    _row("uniform", "uniform 0.5×", 0.49, 0.912, 0.5),
    _row("morphnet", "MorphNet 0.5×", 0.51, 0.930, 0.5),  # 0.51 ≤ 0.5 × 1.05: within the tolerance
    _row("netadapt", "NetAdapt 0.5×", 0.56, 0.940, 0.5),  # over the budget: not counted
    _row("fisher", "Fisher 0.5×", 0.45, 0.905, 0.5),
    _row("uniform", "uniform 0.3×", 0.30, 0.900, 0.3),
    _row("morphnet", "MorphNet 0.3×", 0.29, 0.899, 0.3),
    _row("netadapt", "NetAdapt 0.3×", 0.31, 0.898, 0.3),
]
SOURCE = f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("architecture_search", {str(BENCHMARK)!r})
bench = importlib.util.module_from_spec(spec)
sys.modules["architecture_search"] = bench
spec.loader.exec_module(bench)
from tfcompress.pruning import morphnet
rows = {ROWS!r}
costs = {{1: [0.5, 0.1, 0.0005], 2: [0.3, 0.2, 0.002, 0.0001]}}
cost = lambda counts: 10.0 * counts[1] + 5.0 * counts[2]  # µs per channel kept
out = {{
    "verdicts": [bench.budget_verdict(rows, b, 0.05) for b in (0.5, 0.3, 0.1)],
    "answer": bench.overall_answer([bench.budget_verdict(rows, b, 0.05) for b in (0.5, 0.3)]),
    "within": [bench.within_budget(f, 0.5, 0.05) for f in (0.5, 0.525, 0.526, None)],
    "keys": [bench.cache_key("mobilenet_v2:width_multiplier=0.5", {{"a": 1, "b": 2}}),
             bench.cache_key("mobilenet_v2:width_multiplier=0.5", {{"b": 2, "a": 1}}),
             bench.cache_key("mobilenet_v2:width_multiplier=0.5", {{"a": 1, "b": 3}}),
             bench.cache_key("MorphNet 0.5×", {{"a": 1}})],
    "grid": [bench.parse_grid_entry("mobilenet_v2:width_multiplier=0.5:depth_multiplier=1"),
             bench.parse_grid_entry("wrn-16-1")],
    "bad_grid": bench._grid_entries(["mobilenet_v2:width_multiplier"]),
    "strengths": [morphnet.next_strength([], 10.0, 20.0, 1e-3),
                  morphnet.next_strength([(1e-3, 30.0)], 10.0, 20.0, 1e-3),
                  morphnet.next_strength([(1e-3, 30.0), (4e-3, 5.0)], 10.0, 20.0, 1e-3),
                  morphnet.next_strength([(1e-3, 5.0)], 10.0, 20.0, 1e-3),
                  morphnet.next_strength([(1e-3, 30.0), (4e-3, 15.0)], 10.0, 20.0, 1e-3)],
    "picked": [morphnet.pick_trial([{{"cost": 30.0}}, {{"cost": 15.0}}, {{"cost": 12.0}}], 10.0, 20.0),
               morphnet.pick_trial([{{"cost": 30.0}}, {{"cost": 8.0}}, {{"cost": 5.0}}], 10.0, 20.0),
               morphnet.pick_trial([{{"cost": 30.0}}, {{"cost": 25.0}}], 10.0, 20.0)],
    "thresholds": [morphnet.threshold_for(costs, cost, 30.0), morphnet.threshold_for(costs, cost, 100.0),
                   morphnet.threshold_for(costs, cost, 15.0)],
    "noise": bench.noise_points(0.9, 0.9, 10000),
}}
try:
    morphnet.threshold_for(costs, cost, 14.0)
except ValueError as error:
    out["threshold_error"] = str(error)
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def answers() -> dict:
    return run_json_program(SOURCE, timeout=60)


def test_verdict_takes_the_best_model_within_the_budget_and_says_who_beats_uniform(answers):
    half = answers["verdicts"][0]
    # NetAdapt (94.0 %) is over the budget when measured; MorphNet at 0.51× is within 5 %: it is the best
    assert half["best"]["label"] == "MorphNet 0.5×" and half["over_budget"] == ["NetAdapt 0.5×"]
    assert half["uniform"]["label"] == "uniform 0.5×"
    assert half["candidates"] == 5  # wrn-10-1, effnet_w32_e4, uniform, MorphNet, Fisher (not resnet14, NetAdapt)
    # +1.8 points is beyond two standard errors of 10,000 images (~0.8 points); effnet +0.3 is a tie
    assert half["beats_uniform"] == ["MorphNet 0.5×"]
    assert half["thesis_holds"] is False and half["grid_beats_uniform"] is False
    deltas = {entry["label"]: entry["delta_points"] for entry in half["comparisons"]}
    assert deltas == pytest.approx({"MorphNet 0.5×": 1.8, "effnet_w32_e4": 0.3, "wrn-10-1": -0.7,
                                    "Fisher 0.5×": -0.7})
    assert "does **not** hold at 0.5×" in half["text"] and "NetAdapt 0.5× (0.56×)" in half["text"]


def test_verdict_calls_differences_within_the_noise_ties_and_the_thesis_holds(answers):
    tight = answers["verdicts"][1]
    # at 0.3×: only the 0.3× models and no grid model (wrn-10-1 at 0.32× is over 0.315×)
    assert tight["candidates"] == 3 and tight["best"]["label"] == "uniform 0.3×"
    assert tight["beats_uniform"] == [] and tight["thesis_holds"] is True
    assert "uniform width pruning itself" in tight["text"] and "The thesis's finding holds at 0.3×" in tight["text"]
    nothing = answers["verdicts"][2]
    assert nothing["best"] is None and nothing["thesis_holds"] is None and "no model" in nothing["text"]
    assert answers["answer"].startswith("On this data and host the thesis's finding is mixed")
    assert "a pruning method beats it at 0.5×" in answers["answer"]
    assert answers["noise"] == pytest.approx(200 * math.sqrt(2 * 0.09 / 10000))


def test_budget_filter_cache_keys_and_grid_entries(answers):
    assert answers["within"] == [True, True, False, False]
    same, reordered, other, method = answers["keys"]
    assert same == reordered and same != other
    assert same.startswith("mobilenet_v2_width_multiplier=0.5-") and method.startswith("MorphNet_0.5-")
    assert answers["grid"] == [["mobilenet_v2", {"width_multiplier": 0.5, "depth_multiplier": 1}], ["wrn-16-1", {}]]
    assert answers["bad_grid"] is False


def test_morphnet_strength_search_and_threshold(answers):
    first, stronger, between, weaker, bracketed = answers["strengths"]
    assert first == 1e-3  # no trial: the start
    assert stronger == pytest.approx(4e-3)  # not pruned enough: ×4
    assert between == pytest.approx(2e-3)  # bracketed: geometric mean
    assert weaker == pytest.approx(2.5e-4)  # pruned too much: ÷4
    assert bracketed is None  # a trial landed in the band
    assert [trial["cost"] for trial in answers["picked"]] == [15.0, 8.0, 25.0]
    # values {1: .5 .1 .0005, 2: .3 .2 .002 .0001}; cost 10/ch of group 1 + 5/ch of group 2
    # 30 µs: 2 + 2 channels (the smallest threshold that fits: 0.002), 100 µs: all (0.0), 15 µs: 1 + 1 (0.2; at
    # 0.5 and 0.3 a group with no value above keeps its strongest channel: the same cost)
    assert answers["thresholds"] == [0.002, 0.0, 0.2]
    assert "one channel per group costs 15" in answers["threshold_error"]
