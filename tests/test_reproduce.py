"""The reproduction harness runs end to end on a small case, and F-Layer meets its tolerance."""

from __future__ import annotations

import numpy as np

from fairsk.benchmarks.reproduce import evaluate_case, run


def test_german_credit_rows():
    rows = evaluate_case("german", seed=0, tolerances=[0.05], epochs=3, adult_rows=None, data_dir=None)
    methods = {r["method"]: r for r in rows}
    assert {"F-Layer", "Projection", "Penalty", "Strict penalty", "Unconstrained"} <= set(methods)
    assert methods["F-Layer"]["met"] and methods["F-Layer"]["gap"] <= 0.05 + 1e-6
    assert methods["Projection"]["gap"] <= 0.05 + 1e-6
    assert 0.5 < methods["F-Layer"]["accuracy"] <= 1.0


def test_run_writes_tables_and_plot(tmp_path):
    df = run(["diabetes"], seeds=[0], tolerances=[1.0], epochs=3, out_dir=tmp_path, verbose=False)
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.md").exists()
    assert (tmp_path / "tradeoff.png").stat().st_size > 1000
    f_layer = df[df["method"] == "F-Layer"]
    assert np.all(f_layer["gap"] <= 1.0 + 1e-6)
