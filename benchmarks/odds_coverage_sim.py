"""Coverage of the calibrator's interval on populations whose gaps are known exactly.

Scores are normal with a mean per (group, label) and unit variance, so the population
true- and false-positive rates of any threshold are normal tail probabilities. For
every seed a calibration sample is drawn, :class:`~fairsk.calibration.ErrorRateCalibrator`
(tolerance 0.02) is fitted, and two things are compared with its intervals: the
thresholds' exact population gap (``estimate_gap(None)``), and the gap measured on a
fresh test sample (``estimate_gap(n_test)``).

    PYTHONPATH=. python benchmarks/odds_coverage_sim.py

writes benchmarks/results/odds_coverage_sim.txt.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from scipy.stats import norm

from fairsk.calibration import ErrorRateCalibrator, error_rate_gap

OUT = Path(__file__).resolve().parent / "results" / "odds_coverage_sim.txt"
MU = {(0, 0): 0.0, (0, 1): 1.5, (1, 0): 0.5, (1, 1): 2.2}  # score means per (group, label)
# (criterion, calibration rows, test rows, populations, randomize)
SETTINGS = [
    ("equal_opportunity", 1500, 1500, 200, False),
    ("equalized_odds", 1500, 1500, 200, False),
    ("equalized_odds", 500, 5000, 150, False),
    ("equalized_odds", 3000, 400, 150, True),
]


def draw(rng, n):
    g = rng.integers(0, 2, n)
    y = (rng.random(n) < 0.3 + 0.1 * g).astype(int)
    return rng.normal([MU[(a, b)] for a, b in zip(g, y)], 1.0), y, g


def population_gap(cal: ErrorRateCalibrator, criterion: str) -> float:
    """The exact gap of the (possibly randomized) thresholds on the population."""
    rate = {(h, v): sum(w * norm.sf(t - MU[(h, v)]) for t, w in zip(*cal.mixtures_[h])) for h in (0, 1)
            for v in (0, 1)}
    tpr_gap, fpr_gap = abs(rate[0, 1] - rate[1, 1]), abs(rate[0, 0] - rate[1, 0])
    return tpr_gap if criterion == "equal_opportunity" else max(tpr_gap, fpr_gap)


def main() -> None:
    t0 = time.perf_counter()
    lines = [f"# {__doc__.splitlines()[0]}", "# PYTHONPATH=. python benchmarks/odds_coverage_sim.py",
             "# nominal 95% intervals, 100 bootstrap resamples, tolerance 0.02",
             "criterion          n_cal n_test randomize  covered(population)  covered(test)  "
             "median width(test)  median low(population)"]
    for criterion, n_cal, n_test, seeds, randomize in SETTINGS:
        population = test = 0
        widths, lows = [], []
        for seed in range(seeds):
            rng = np.random.default_rng(seed)
            s, y, g = draw(rng, n_cal)
            cal = ErrorRateCalibrator(criterion, 0.02, randomize=randomize, random_state=seed).fit(s, y, g)
            _, (low, high) = cal.estimate_gap(None)
            population += low <= population_gap(cal, criterion) <= high
            lows.append(low)
            s_te, y_te, g_te = draw(rng, n_test)
            measured = error_rate_gap(criterion, y_te, cal.predict(s_te, g_te), g_te)
            _, (low, high) = cal.estimate_gap(n_test)
            test += low <= measured <= high
            widths.append(high - low)
        lines.append(f"{criterion:18s} {n_cal:5d} {n_test:6d} {str(randomize):9s}  {population:4d}/{seeds:<4d}"
                     f"           {test:4d}/{seeds:<4d}      {np.median(widths):.3f}               "
                     f"{np.median(lows):.4f}")
        print(lines[-1], flush=True)
    lines.append(f"total {time.perf_counter() - t0:.0f} s")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
