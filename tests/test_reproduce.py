"""The reproduction harness (benchmarks/reproduce.py, outside the package) runs end to
end on small cases, F-Layer meets its tolerance, and its output explains its columns."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "reproduce.py"


def _load_harness():
    spec = importlib.util.spec_from_file_location("fairsk_reproduce_harness", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


reproduce = _load_harness()


def test_harness_is_not_in_the_package():
    import fairsk

    assert not (Path(fairsk.__file__).parent / "benchmarks").exists()
    source = SCRIPT.read_text()
    assert "simplefilter(\"ignore\")" not in source  # warnings are scoped, never silenced globally
    assert "_pmf_predict" not in source  # fairlearn's public API only


def test_german_credit_rows():
    rows = reproduce.evaluate_case("german", seed=0, tolerances=[0.05], epochs=3, adult_rows=None)
    methods = {r["method"]: r for r in rows}
    expected = {f"{base} ({mode})" for base, modes in reproduce.MODES.items() for mode in modes}
    assert expected | {"Unconstrained"} <= set(methods)
    assert methods["F-Layer (logits)"]["met"] and methods["F-Layer (logits)"]["gap"] <= 0.05 + 1e-6
    assert methods["Projection (logits)"]["gap"] <= 0.05 + 1e-6
    for name in ("F-Layer (labels)", "Projection (labels)"):  # the label guarantee, on the test call
        assert methods[name]["met"] and methods[name]["rate_met"] and methods[name]["rate_gap"] <= 0.05 + 1e-9
    for name in ("F-Layer (proba)", "Projection (proba)"):
        assert methods[name]["met"] and methods[name]["proba_gap"] <= 0.05 + 1e-9
    assert 0.5 < methods["F-Layer (labels)"]["accuracy"] <= 1.0
    if "fairlearn EG" in methods:  # scores from EG's public predictors_ and weights_: a real AUC
        assert 0.5 < methods["fairlearn EG"]["auc"] <= 1.0
        assert {"fairlearn ThresholdOpt", "fairlearn ThresholdOpt (net)"} <= set(methods)


def test_adult_with_two_attributes_measures_the_largest_gap():
    _, _, A_tr, y_tr, s_tr, A_te, y_te, s_te = reproduce.load_case("adult-sex-race", 0, 300)
    assert s_tr.shape == (300, 2) and s_te.shape == (len(y_te), 2)
    assert set(np.unique(s_te[:, 0])) == {"Female", "Male"} and len(np.unique(s_te[:, 1])) == 5
    labels = np.random.default_rng(0).integers(0, 2, len(y_te))
    per_column = []
    for j in range(2):  # each attribute's selection-rate gap, recomputed here
        rates = [labels[s_te[:, j] == g].mean() for g in np.unique(s_te[:, j])]
        per_column.append(max(rates) - min(rates))
    assert reproduce._rate_gap(labels, s_te) == pytest.approx(max(per_column), abs=1e-12)


def test_adult_sex_race_rows_meet_the_label_tolerance_on_every_attribute(monkeypatch):
    # fairlearn refuses so few rows (an intersection of sex and race with one label only)
    monkeypatch.setattr(reproduce, "_fairlearn", lambda tol, net=None: {})
    rows = reproduce.evaluate_case("adult-sex-race", seed=0, tolerances=[0.05], epochs=1, adult_rows=400)
    methods = {r["method"]: r for r in rows}
    assert methods["F-Layer (labels)"]["rate_met"] and methods["F-Layer (labels)"]["rate_gap"] <= 0.05 + 1e-9
    assert methods["Projection (labels)"]["rate_gap"] <= 0.05 + 1e-9


def _employee_csv():
    candidates = [os.environ.get("FAIRSK_EMPLOYEE_CSV")] + [
        str(folder / "shared" / "data" / "employee_performance.csv") for folder in ROOT.parents]
    return next((c for c in candidates if c and Path(c).exists()), None)


def test_employee_rating_is_a_binary_case_with_marital_status():
    csv = _employee_csv()
    if csv is None:
        pytest.skip("employee_performance.csv is not shipped and was not found")
    kind, _, A_tr, y_tr, s_tr, A_te, y_te, s_te = reproduce.load_case("employee-rating", 0, None, csv)
    assert kind == "clf" and len(y_tr) + len(y_te) == 1200
    assert set(np.unique(np.r_[y_tr, y_te])) == {0, 1} and int(np.r_[y_tr, y_te].sum()) == 1006
    assert set(np.unique(s_te)) == {"Divorced", "Married", "Single"}
    with pytest.raises(ValueError, match="employee-csv"):
        reproduce.load_case("employee-rating", 0, None, None)


def test_versus_fairlearn_counts_seeds_where_f_layer_is_as_accurate_and_as_fair():
    def row(method, seed, acc, gap):
        return dict(dataset="d", tolerance=0.01, seed=seed, method=method, accuracy=acc, rate_gap=gap,
                    rate_met=gap <= 0.01)

    df = pd.DataFrame([row("F-Layer (labels)", 0, 0.80, 0.010), row("fairlearn ThresholdOpt", 0, 0.79, 0.020),
                       row("F-Layer (labels)", 1, 0.80, 0.010), row("fairlearn ThresholdOpt", 1, 0.81, 0.030),
                       row("F-Layer (labels)", 2, 0.80, 0.010), row("fairlearn ThresholdOpt", 2, 0.82, 0.005)])
    out = reproduce.versus_fairlearn(df)
    assert len(out) == 1
    got = out.iloc[0]
    assert got["rival"] == "fairlearn ThresholdOpt" and got["dominates"] == "1/3"
    assert got["flayer_met"] == "3/3" and got["rival_met"] == "1/3"
    assert got["acc_diff"] == pytest.approx(0.80 - (0.79 + 0.81 + 0.82) / 3)


def test_eg_probability_is_the_mixture_of_its_predictors():
    pytest.importorskip("fairlearn")
    _, _, A_tr, y_tr, s_tr, A_te, _, _ = reproduce.load_case("german", 0, None)
    eg = reproduce._fairlearn(0.05)["fairlearn EG"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        eg.fit(A_tr, y_tr, sensitive_features=s_tr)
    p = reproduce._eg_positive_probability(eg, A_te)
    assert np.all((p >= 0) & (p <= 1 + 1e-12))
    # averaged over many draws, EG's own randomised predict agrees with that probability
    draws = np.mean([eg.predict(A_te, random_state=seed) for seed in range(400)], axis=0)
    assert np.abs(draws - p).max() < 0.15


def test_run_writes_tables_plot_and_legend(tmp_path, capsys):
    df = reproduce.run(["diabetes"], seeds=[0], tolerances=[1.0], epochs=3, out_dir=tmp_path)
    assert (tmp_path / "results.csv").exists() and (tmp_path / "results.md").exists()
    assert (tmp_path / "tradeoff.png").stat().st_size > 1000
    f_layer = df[df["method"] == "F-Layer"]
    assert len(f_layer) == 1 and np.all(f_layer["gap"] <= 1.0 + 1e-6)
    assert (tmp_path / "results_raw.csv").exists()
    out = capsys.readouterr().out
    for word in ("gap ", "rate_gap ", "met ", "rate_met "):
        assert any(line.startswith(word) for line in out.splitlines()), word


def test_plot_only_redraws_from_the_committed_results(tmp_path):
    summary = pd.read_csv(ROOT / "docs" / "results" / "decisions" / "results.csv")
    summary.to_csv(tmp_path / "results.csv", index=False)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # this checkout's fairsk
    subprocess.run([sys.executable, str(SCRIPT), "--plot-only", str(tmp_path)], check=True, timeout=120, env=env)
    assert (tmp_path / "tradeoff.png").stat().st_size > 10_000


def test_employee_without_its_file_is_skipped_with_a_message(tmp_path, capsys):
    with pytest.raises(ValueError, match="employee-csv"):
        reproduce.load_case("employee", 0, None, None)
    reproduce.run(["employee", "diabetes"], seeds=[0], tolerances=[1.0], epochs=1, out_dir=tmp_path, verbose=False)
    assert "skipping employee" in capsys.readouterr().out


def test_versus_frontier_matches_each_rival_with_a_fairer_f_layer_model():
    def row(method, seed, tol, acc, gap):
        return dict(dataset="d", tolerance=tol, seed=seed, method=method, accuracy=acc, rate_gap=gap,
                    rate_met=gap <= tol)

    df = pd.DataFrame([
        row("F-Layer (labels)", 0, 0.005, 0.80, 0.005), row("F-Layer (labels)", 0, 0.01, 0.82, 0.010),
        row("fairlearn ThresholdOpt", 0, 0.01, 0.81, 0.007),  # matched by the 0.005 model: less accurate
        row("F-Layer (labels)", 1, 0.005, 0.80, 0.005), row("F-Layer (labels)", 1, 0.01, 0.82, 0.010),
        row("fairlearn ThresholdOpt", 1, 0.01, 0.81, 0.012),  # matched by the 0.01 model: more accurate
        row("fairlearn ThresholdOpt", 2, 0.01, 0.81, 0.012),  # no F-Layer model in seed 2
    ])
    got = reproduce.versus_frontier(df).iloc[0]
    assert got["matched"] == "2/3" and got["as_accurate"] == "1/2"
    assert got["flayer_tolerances"] == "0.005 0.01"
    assert got["flayer_acc"] == pytest.approx(0.81) and got["rival_acc"] == pytest.approx(0.81)
