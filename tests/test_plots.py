"""tfcompress.plots (Pareto front, every plot writes a real PNG), benchmarks/report.py (one results page from the
committed results) and ``scripts/prune.py --plot``."""

from __future__ import annotations

import json
import shutil
import struct
import types
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, run_file, run_script
from tfcompress import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path, min_bytes: int = 8000) -> tuple[int, int]:
    """``path`` is a whole PNG of a drawn figure, and nothing but it was left in its folder; returns its size."""
    payload = path.read_bytes()
    assert payload[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert payload[12:16] == b"IHDR" and payload.endswith(b"IEND\xaeB`\x82"), f"{path.name} is truncated"
    width, height = struct.unpack(">II", payload[16:24])
    assert width >= 300 and height >= 200, (width, height)
    assert len(payload) > min_bytes, f"{path.name}: {len(payload)} bytes, an empty figure?"
    assert not list(path.parent.glob(".tmp-*")), "a temporary file was left behind"
    return width, height


def row(name: str, latency: float | None, accuracy: float | None, **extra) -> dict:
    return {"name": name, "latency_ms": latency, "accuracy": accuracy, "gzip_bytes": 1000 * (latency or 1), **extra}


# ------------------------------------------------------------------------------ Pareto front


def test_pareto_front_keeps_only_non_dominated_rows_and_ties():
    rows = [
        row("slow_same", 3.0, 0.90),       # b is as accurate and faster
        row("b", 2.0, 0.90),
        row("worse_same_x", 2.0, 0.85),   # b: same latency, more accurate
        row("a", 1.0, 0.80),
        row("dominated", 1.5, 0.70),      # a is faster and more accurate
        row("b_tie", 2.0, 0.90),          # tied with b on both: neither beats the other
        row("no_latency", None, 0.99),    # cannot be placed: left out, and beats nothing
        row("nan", float("nan"), 0.99),
        row("best", 4.0, 0.95),
    ]
    front = plots.pareto_front(rows, "latency_ms", "accuracy")
    assert [r["name"] for r in front] == ["a", "b", "b_tie", "best"]  # by latency, input order among ties
    assert plots.pareto_front([], "latency_ms", "accuracy") == []
    assert plots.pareto_front([row("only", 1.0, 0.5)], "latency_ms", "accuracy")[0]["name"] == "only"
    # same latency: only the most accurate; same accuracy: only the fastest
    ties = [row("x", 1.0, 0.5), row("y", 1.0, 0.6), row("z", 0.5, 0.6)]
    assert [r["name"] for r in plots.pareto_front(ties, "latency_ms", "accuracy")] == ["z"]


def test_the_front_is_drawn_as_a_step_line_through_its_points():
    plt = plots._pyplot()
    rows = [row("a", 1.0, 0.80), row("b", 2.0, 0.90), row("c", 2.5, 0.85), row("d", 3.0, 0.95)]
    figure, ax = plt.subplots()
    plots._tradeoff_axes(ax, rows, x="latency_ms", y="accuracy", label="name", group=None, x_scale=1.0,
                         y_scale=100.0, xlabel="ms", ylabel="%", vlines={"target": 2.2})
    steps = [line for line in ax.lines if line.get_drawstyle() == "steps-post"]
    assert len(steps) == 1
    assert list(steps[0].get_xdata()) == [1.0, 2.0, 3.0] and list(steps[0].get_ydata()) == [80.0, 90.0, 95.0]
    assert sorted(text.get_text() for text in ax.texts) == ["a", "b", "c", "d"]
    assert "Pareto front" in [text.get_text() for text in ax.get_legend().get_texts()]
    plt.close(figure)


# ------------------------------------------------------------------------------ every plot writes a PNG


def _table():
    """A latency table as plots reads it (entries with points, values per precision, layer): one 2-axis grid,
    one 1-axis grid, one single point (nothing to draw)."""
    def entry(key, points, values, layer):
        return types.SimpleNamespace(id=key, key_id=key, layer=layer, points=tuple(map(np.asarray, points)),
                                     values={"float32": np.asarray(values, float)})

    grid = np.add.outer(np.arange(1, 5) * 10.0, np.arange(1, 4) * 3.0)
    return types.SimpleNamespace(fingerprint={"device": "litert"}, entries={
        "conv": entry("conv", ([8, 16, 24, 32], [8, 16, 24]), grid, "conv2d"),
        "dense": entry("dense", ([16, 32, 48],), [5.0, 7.0, 9.5], "dense"),
        "add": entry("add", ([32],), [1.0], "add"),
    })


PLOTS = {
    "accuracy_vs_latency": lambda path: plots.accuracy_vs_latency(
        [row("a", 1.0, 0.8, kind="pruned"), row("b", 2.0, 0.9, kind="original"), row("c", 1.5, 0.7, kind="pruned")],
        path, group="kind", vlines={"target": 1.2}, connect=True),
    "accuracy_vs_size": lambda path: plots.accuracy_vs_size(
        [row("a", 1.0, 0.8), row("b", 20.0, 0.9)], path, log_x=True),
    "accuracy_vs_latency_and_size": lambda path: plots.accuracy_vs_latency_and_size(
        [row("a", 1.0, 0.8), row("b", 2.0, 0.9)], path),
    "channels_per_group": lambda path: plots.channels_per_group(
        [{"name": f"conv{i}", "channels_before": 16 * (i + 1), "channels_after": 8 * (i + 1)} for i in range(12)],
        path),
    "latency_table_heatmap": lambda path: plots.latency_table_heatmap(_table(), path),
    "predicted_vs_measured": lambda path: plots.predicted_vs_measured(
        {"model": [{"measured_us": 1000.0 + 50 * i, "predicted_us": 990.0 + 55 * i,
                    "series": "float32" if i % 2 else "int8", "marker": "x" if i % 2 else "o"} for i in range(10)]},
        path),
    "training_curves": lambda path: plots.training_curves(
        {"ternary_sparsity": [0.3, 0.5, 0.6], "val_accuracy": [0.8, 0.85, 0.86], "best_quantization_epoch": [2.0]},
        path, ["ternary_sparsity", "val_accuracy"], marks={"retrain": 2.5}),
    "training_curves_of_several_runs": lambda path: plots.training_curves(
        {"λ=0.15": {"ternary_sparsity": [0.3, 0.6]}, "λ=0.25": {"ternary_sparsity": [0.4, 0.7]}}, path),
}


@pytest.mark.parametrize("name", sorted(PLOTS))
def test_every_plot_writes_a_png(name, tmp_path):
    path = tmp_path / f"{name}.png"
    assert PLOTS[name](path) == path
    assert_png(path)


def test_plots_refuse_what_they_cannot_draw(tmp_path):
    with pytest.raises(ValueError, match=r"groups \['conv1'\] lack channels_before/channels_after"):
        plots.channels_per_group([{"name": "conv1", "channels": 8}], tmp_path / "c.png")
    with pytest.raises(ValueError, match="nothing to draw; per-epoch keys found: none"):
        plots.training_curves({"loss": []}, tmp_path / "t.png")
    with pytest.raises(ValueError, match="no int8 grid"):
        plots.latency_table_heatmap(_table(), tmp_path / "h.png", precision="int8")
    assert list(tmp_path.iterdir()) == []


def test_the_heatmap_puts_the_slowest_entries_first(tmp_path):
    # one panel per entry with more than one point: the 1-point "add" is left out; max_entries keeps the slowest
    plots.latency_table_heatmap(_table(), tmp_path / "one.png", max_entries=1)
    one = assert_png(tmp_path / "one.png", min_bytes=4000)
    two = assert_png(plots.latency_table_heatmap(_table(), tmp_path / "two.png"))
    assert two[0] > one[0]  # a second panel


# ------------------------------------------------------------------------------ benchmarks/report.py


def test_report_builds_one_page_with_every_command_and_host(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name in ("compress.json", "compress.md", "compress.png", "ec2t.json", "ec2t.md", "latency_table.json",
                 "decomposition_distill.json", "decomposition_distill.md", "decomposition_distill.recipe.json"):
        shutil.copy(REPO / "benchmarks" / "results" / name, results / name)
    page_path = tmp_path / "README.md"
    run_file(REPO / "benchmarks" / "report.py", f"--results_dir={results}", f"--output={page_path}")
    page = page_path.read_text()

    for name in ("compress", "ec2t", "latency_table"):
        report = json.loads((results / f"{name}.json").read_text())
        commands = [report["command"]] if "command" in report else [m["command"] for m in report["models"]]
        hosts = [report.get("host") or report.get("fingerprint")] if "models" not in report else [
            m["fingerprint"] for m in report["models"]]
        for command in commands:
            assert f"`{command.strip()}`" in page, command
        for host in hosts:
            assert host["cpu"] in page
    fingerprint = json.loads((results / "compress.json").read_text())["fingerprint"]
    assert f"ISA {'/'.join(fingerprint['isa'])}" in page  # the fingerprint's ISA flags
    # the pipeline summary has no command in its JSON: its .md's
    assert "`python scripts/compress.py --model=models/resnet20_fashion_mnist.keras --recipe=" in page
    # sections in the page's order, each linked from the summary with a headline computed from its JSON
    sections = [line for line in page.splitlines() if line.startswith('<a id="')]
    assert sections == ['<a id="compress"></a>', '<a id="latency_table"></a>', '<a id="decomposition_distill"></a>',
                        '<a id="ec2t"></a>']
    # the headlines carry the numbers of the JSONs they come from (which every benchmark rerun changes)
    budget = next(r for r in json.loads((results / "compress.json").read_text())["rows"] if r["kind"] == "budget")
    assert (f"- **[compress](#compress)** ({fingerprint['cpu']}): budget {budget['target_fraction']}× met: "
            f"{budget['speedup']:.2f}× faster at {-budget['drop_points']:+.2f} points") in page
    ec2t = next(r for r in json.loads((results / "ec2t.json").read_text())["rows"] if r["variant"].startswith("EC2T"))
    assert (f"{ec2t['variant']}: {100 * ec2t['sparsity']:.1f} % sparse, {ec2t['delta_points']:+.2f} points, "
            f"{ec2t['entropy_coded_ratio']:.1f}× smaller entropy-coded kernels") in page
    assert "no headline" not in page
    assert "![compress](results/compress.png)" in page  # PNGs linked relative to the page
    assert "| budget 0.5× within 1.0 points |" in page  # the committed table

    # a result without a headline of its own: the texts of its verdicts (strings or dicts with a text)
    (results / "other.json").write_text(json.dumps({"command": "python other.py", "host": {"cpu": "cpu X"},
                                                    "verdicts": [{"text": "first verdict"}, "second verdict"]}))
    other = tmp_path / "other.md"
    run_file(REPO / "benchmarks" / "report.py", f"--results_dir={results}", f"--output={other}")
    assert "- **[other](#other)** (cpu X): first verdict; second verdict" in other.read_text()
    (results / "other.json").unlink()

    again = tmp_path / "again.md"
    run_file(REPO / "benchmarks" / "report.py", f"--results_dir={results}", f"--output={again}")
    assert again.read_bytes() == page_path.read_bytes()  # deterministic: same results, same bytes


# ------------------------------------------------------------------------------ prune.py --plot


def test_prune_plot_writes_channels_per_group_beside_the_model(tmp_path):
    output = tmp_path / "lenet5_pruned.keras"
    run_script("prune", f"--model={REPO / 'models' / 'lenet5_fashion_mnist.keras'}", "--target_channels=0.75",
               "--plot", f"--output={output}")
    assert_png(output.with_name(output.name + ".png"))
    report = json.loads(output.with_name(output.name + ".json").read_text())
    assert report["flags"]["plot"] is True
    assert any(g["channels_after"] < g["channels_before"] for g in report["groups"])
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "lenet5_pruned.keras", "lenet5_pruned.keras.json", "lenet5_pruned.keras.png"]
