"""benchmarks/distillation.py: each arm's points against the original and the plain arm, and the verdict, computed
from the rows. The module defines absl flags, so it runs in a fresh interpreter (absl only, no TensorFlow)."""

from __future__ import annotations

import pytest

from tests.conftest import REPO, run_json_program

BENCHMARK = REPO / "benchmarks" / "distillation.py"


def _arm(label: str, alpha: float | None, accuracy: float) -> dict:
    return {"label": label, "alpha": alpha, "temperature": None if alpha is None else 5.0,
            "keras_accuracy": accuracy, "litert_accuracy": accuracy, "params": 1, "macs": 1, "latency_ms": 1.0,
            "seconds": 60.0}


def _program(rows: list[dict]) -> str:
    return f"""
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("distillation", {str(BENCHMARK)!r})
bench = importlib.util.module_from_spec(spec)
sys.modules["distillation"] = bench
spec.loader.exec_module(bench)
rows = bench.summarize({rows!r}, 0.9334)
print(json.dumps({{"rows": rows, "findings": bench.findings_of(rows, test_images=10000),
                  "settings": bench._parse_settings(["0.1:5", "0.2:2"])}}))
"""


@pytest.fixture(scope="module")
def answers() -> dict:
    return run_json_program(_program([_arm("plain", None, 0.9120), _arm("distilled 0.1:5", 0.1, 0.9298),
                                      _arm("distilled 0.2:2", 0.2, 0.9100)]))


def test_points_against_the_original_and_the_plain_arm(answers):
    rows = {row["label"]: row for row in answers["rows"]}
    assert rows["plain"]["vs_original_points"] == pytest.approx(-2.14)
    assert rows["plain"]["vs_plain_points"] == 0
    assert rows["distilled 0.1:5"]["vs_plain_points"] == pytest.approx(1.78)
    assert rows["distilled 0.2:2"]["vs_plain_points"] == pytest.approx(-0.20)
    assert answers["settings"] == [[0.1, 5.0], [0.2, 2.0]]


def test_the_verdict_is_the_first_distilled_arms_and_carries_the_noise(answers):
    verdict = answers["findings"][-1]
    assert "met by distilled 0.1:5 (+1.78 points" in verdict and "NOT met" not in verdict
    assert "±0.28 points" in verdict  # sqrt(0.912 · 0.088 / 10,000)
    assert any("distilled 0.2:2: 91.00 % vs plain 91.20 %" in line for line in answers["findings"])
    lost = run_json_program(_program([_arm("plain", None, 0.92), _arm("distilled", 0.1, 0.9195)]))
    assert "NOT met by distilled (-0.05 points" in lost["findings"][-1]
