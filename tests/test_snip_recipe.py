"""benchmarks/snip_recipe.py: the gaps and the schedule / recipe / reporting shares computed from the runs, a
diverged run reported as such. The module defines absl flags, so it runs in a fresh interpreter (absl and numpy
only, no TensorFlow)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run_json_program

BENCHMARK = REPO / "benchmarks" / "snip_recipe.py"


def _run(recipe: str, epochs: int, method: str, seed: int, errors: list[float] | None) -> dict:
    if errors is None:
        return {"recipe": recipe, "epochs": epochs, "method": method, "seed": seed, "diverged": True}
    return {"recipe": recipe, "epochs": epochs, "method": method, "seed": seed, "diverged": False,
            "test_error_per_epoch": errors, "final_error": errors[-1], "best_error": min(errors)}


OURS, REFERENCE = "ours, lr 0.02", "reference, lr 0.05"
RUNS = [
    _run(OURS, 2, "dense", 0, [12.0, 10.0]), _run(OURS, 2, "snip", 0, [18.0, 15.0]),
    _run(OURS, 2, "dense", 1, [12.0, 11.0]), _run(OURS, 2, "snip", 1, [17.0, 16.0]),
    _run(OURS, 10, "dense", 0, [9.0, 8.0]), _run(OURS, 10, "snip", 0, [11.0, 10.5]),
    _run(REFERENCE, 2, "dense", 0, [20.0, 14.0]), _run(REFERENCE, 2, "snip", 0, None),
    _run(REFERENCE, 10, "dense", 0, [8.5, 9.0]), _run(REFERENCE, 10, "snip", 0, [9.2, 9.6]),
]
SOURCE = f"""
import importlib.util, json, sys
import numpy as np
spec = importlib.util.spec_from_file_location("snip_recipe", {str(BENCHMARK)!r})
bench = importlib.util.module_from_spec(spec)
sys.modules["snip_recipe"] = bench
spec.loader.exec_module(bench)
rows = bench.summarize({RUNS!r}, np)
print(json.dumps({{"rows": rows, "findings": bench.findings_of(rows),
                  "partial": bench.findings_of([row for row in rows if row["recipe"] == {OURS!r}]),
                  "moved": {{key: run["recipe"] for key, run in bench._with_rates({{
                      "ours/2/dense/0/0.95/None": {{"recipe": "ours"}},
                      "reference/10/snip/0/0.95/None": {{"recipe": "reference"}},
                      "reference@0.05/10/snip/0/0.95/None": {{"recipe": "reference, lr 0.05"}}}}).items()}}}}))
"""


@pytest.fixture(scope="module")
def answers() -> dict:
    return run_json_program(SOURCE)


def test_gaps_are_snip_minus_dense_mean_over_seeds_final_and_best(answers):
    rows = {(row["recipe"], row["epochs"]): row for row in answers["rows"]}
    ours_short = rows[OURS, 2]
    assert ours_short["dense_final"] == pytest.approx(10.5) and ours_short["snip_final"] == pytest.approx(15.5)
    assert ours_short["gap_final"] == pytest.approx(5.0) and ours_short["gap_best"] == pytest.approx(5.0)
    reference_long = rows[REFERENCE, 10]
    assert reference_long["gap_final"] == pytest.approx(0.6) and reference_long["gap_best"] == pytest.approx(0.7)
    diverged = rows[REFERENCE, 2]  # a diverged run is counted, never averaged in
    assert diverged["snip_diverged"] == 1 and diverged["snip_final"] is None and diverged["gap_final"] is None


def test_findings_split_the_gap_into_schedule_recipe_and_reporting(answers):
    diverged, schedule, recipe, reporting, target = answers["findings"]
    assert diverged == "Diverged (loss not finite): reference, lr 0.05, snip, 2 epochs."
    assert schedule == "Schedule (2 → 10 epochs, our recipe): the gap goes +5.00 → +2.50 points."
    assert recipe == "Recipe (ours → the reference's at lr 0.05, 10 epochs): +2.50 → +0.60 points."
    assert reporting.endswith("+0.60 → +0.70 points.")
    assert target.endswith("+0.60 points → met.")
    assert answers["partial"] == []  # one recipe only: no shares claimed


def test_runs_saved_before_the_rate_was_in_the_key_get_their_recipes_default(answers):
    assert answers["moved"] == {"ours@0.02/2/dense/0/0.95/None": "ours, lr 0.02",
                                "reference@0.1/10/snip/0/0.95/None": "reference, lr 0.1",
                                "reference@0.05/10/snip/0/0.95/None": "reference, lr 0.05"}
