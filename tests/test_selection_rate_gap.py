"""selection_rate_gap agrees with fairlearn's demographic_parity_difference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import demographic_parity_difference
from hypothesis import given
from hypothesis import strategies as st

from fairsk.metrics import selection_rate_gap


@st.composite
def labelled(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n = draw(st.integers(1, 200))
    n_attr = draw(st.integers(1, 3))
    groups = np.stack([rng.integers(0, draw(st.integers(1, 20)), n) for _ in range(n_attr)], 1)
    k = draw(st.integers(2, 4))
    y = rng.integers(0, k, n)
    return y, groups, k


def fairlearn_gap(y, column, pos_label=1) -> float:
    hit = pd.Series((np.asarray(y) == pos_label).astype(int))
    column = pd.Series(np.asarray(column))  # Series, so that fairlearn does not squeeze one row away
    return demographic_parity_difference(hit, hit, sensitive_features=column)


@given(labelled())
def test_agrees_with_fairlearn(case):
    y, groups, k = case
    # fairlearn compares the intersections of several columns; ours compares each attribute: the max
    per_class = {pos: max(fairlearn_gap(y, groups[:, a], pos) for a in range(groups.shape[1])) for pos in range(k)}
    for pos in range(k):
        assert selection_rate_gap(y, groups, pos_label=pos) == per_class[pos]
    # default: class 1 for 0/1 labels, the largest gap over classes otherwise
    binary = set(np.unique(y).tolist()) <= {0, 1}
    expected = per_class[1] if binary else max(per_class[c] for c in np.unique(y).tolist())
    assert selection_rate_gap(y, groups) == expected


def test_one_attribute_strings_and_series():
    y = pd.Series(["yes", "no", "yes", "yes", "no"])
    s = pd.Series(["f", "f", "m", "m", "m"], name="sex")
    expected = fairlearn_gap(y, s, "yes")
    assert selection_rate_gap(y, s, pos_label="yes") == expected
    assert selection_rate_gap(y.to_numpy(dtype=object), s) == pytest.approx(expected)
    frame = pd.DataFrame({"sex": s, "race": ["a", "b", "a", "b", "b"]})
    assert selection_rate_gap(y, frame, pos_label="yes") == max(fairlearn_gap(y, frame[c], "yes") for c in frame)


def test_bad_input():
    with pytest.raises(ValueError, match="rows"):
        selection_rate_gap([0, 1], [0, 1, 1])
    with pytest.raises(ValueError, match="one label per row"):
        selection_rate_gap(np.zeros((2, 2)), [0, 1])
    with pytest.raises(ValueError, match="missing"):
        selection_rate_gap(np.array([None, "a"], dtype=object), [0, 1])
    assert selection_rate_gap([True, False], [0, 1]) == 1.0
    assert selection_rate_gap([], []) == 0.0
