"""benchmarks/distillation.py: each arm's mean over seeds, its points against the original and against the plain
arm paired by seed, and the verdict, computed from the runs. The module defines absl flags, so it runs in a fresh
interpreter (absl only, no TensorFlow)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run_json_program

BENCHMARK = REPO / "benchmarks" / "distillation.py"


def _run(label: str, alpha: float | None, seed: int, accuracy: float) -> dict:
    return {"label": label, "alpha": alpha, "temperature": None if alpha is None else 5.0, "seed": seed,
            "keras_accuracy": accuracy, "litert_accuracy": accuracy, "params": 1, "macs": 1, "latency_ms": 1.0,
            "seconds": 60.0}


def _program(runs: list[dict]) -> str:
    return f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("distillation", {str(BENCHMARK)!r})
bench = importlib.util.module_from_spec(spec)
sys.modules["distillation"] = bench
spec.loader.exec_module(bench)
rows = bench.summarize({runs!r}, 0.9334)
print(json.dumps({{"rows": rows, "findings": bench.findings_of(rows, test_images=10000),
                  "settings": bench._parse_settings(["0.1:5", "0.2:2"]), "markdown": bench._markdown({{
                      "command": "c", "minutes": 1.0, "host": {{"cpu": "cpu", "cores": 2}}, "rows": rows,
                      "findings": [], "original_litert_accuracy": 0.9334, "settings": {{"model": "m",
                      "method": "l1", "target_macs": 0.5, "epochs": 1, "lr": 0.01, "train_images": 54000,
                      "seeds": 2}}}})}}))
"""


@pytest.fixture(scope="module")
def answers() -> dict:
    # seed 1's batches are harder for every arm: the pairing, not the means, shows who wins
    return run_json_program(_program([
        _run("plain", None, 0, 0.9200), _run("kd 0.1:5", 0.1, 0, 0.9250), _run("kd 0.2:2", 0.2, 0, 0.9190),
        _run("plain", None, 1, 0.9100), _run("kd 0.1:5", 0.1, 1, 0.9130), _run("kd 0.2:2", 0.2, 1, 0.9120),
    ]))


def test_means_over_seeds_and_differences_paired_by_seed(answers):
    rows = {row["label"]: row for row in answers["rows"]}
    assert rows["plain"]["litert_accuracy"] == pytest.approx(0.915)
    assert rows["plain"]["vs_original_points"] == pytest.approx(-1.84)
    assert rows["plain"]["litert_accuracy_std"] == pytest.approx(0.00707, abs=1e-5)
    assert rows["kd 0.1:5"]["vs_plain_points"] == pytest.approx(0.40)  # (0.50 + 0.30) / 2
    assert rows["kd 0.1:5"]["vs_plain_std"] == pytest.approx(0.14, abs=0.01) and rows["kd 0.1:5"]["wins"] == 2
    assert rows["kd 0.2:2"]["vs_plain_points"] == pytest.approx(0.05) and rows["kd 0.2:2"]["wins"] == 1
    assert answers["settings"] == [[0.1, 5.0], [0.2, 2.0]]
    assert "| kd 0.1:5 | 91.90 % | 91.90 % ± 0.85 | -1.44 | +0.40 ± 0.14 (2/2) |" in answers["markdown"]


def test_the_verdict_needs_the_first_distilled_arm_to_win_every_seed(answers):
    verdict = answers["findings"][-1]
    assert "met by kd 0.1:5 (+0.40 points)" in verdict and "NOT met" not in verdict
    assert any("kd 0.2:2: 91.55 % vs plain 91.50 % at equal steps (+0.05 points, ± 0.21 over 2 seeds, won 1 of 2)"
               in line for line in answers["findings"])
    split = run_json_program(_program([_run("plain", None, 0, 0.92), _run("kd", 0.1, 0, 0.93),
                                       _run("plain", None, 1, 0.92), _run("kd", 0.1, 1, 0.9190)]))
    assert "NOT met by kd (+0.45 points)" in split["findings"][-1]  # a higher mean, but one seed lost
    single = run_json_program(_program([_run("plain", None, 0, 0.912), _run("kd", 0.1, 0, 0.93)]))
    assert "±0.28 points" in single["findings"][0]  # one seed: sqrt(0.912 · 0.088 / 10,000)
