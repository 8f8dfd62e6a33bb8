"""Stratified training batches: the sampler merges each stratum's increasing positions
instead of sorting all positions by sample. The batches must be those of the plain
rule (sort the positions indexed by sample, ties by sample), draw for draw."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fairsk._net import StratifiedBatchSampler, _by_position


def _reference(strata: np.ndarray, batch_size: int, seed: int) -> list[np.ndarray]:
    """The rule written plainly: one position per sample, one stable sort by sample."""
    rng = np.random.default_rng(seed)
    n = len(strata)
    position = np.empty(n)
    by_stratum = np.argsort(strata, kind="stable")
    bounds = np.flatnonzero(np.diff(strata[by_stratum])) + 1
    for idx in np.split(by_stratum, bounds):
        perm = rng.permutation(idx)
        position[perm] = (np.arange(len(idx)) + rng.uniform(size=len(idx))) / len(idx)
    order = np.argsort(position, kind="stable")
    return [order[s: s + batch_size] for s in range(0, n, batch_size)]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(0, 3000), k=st.integers(1, 9),
       batch_size=st.integers(1, 300), big_codes=st.booleans())
def test_the_sampler_draws_the_plain_rule_batches(seed, n, k, batch_size, big_codes):
    rng = np.random.default_rng(seed)
    strata = rng.choice(k, size=n, p=rng.dirichlet(np.ones(k)))
    if big_codes:  # codes beyond 16 bits take the general sort
        strata = strata * 40_000
    ours = list(StratifiedBatchSampler(strata, batch_size, seed))
    ref = _reference(strata, batch_size, seed)
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref):
        np.testing.assert_array_equal(a, b)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(1, 60), levels=st.integers(1, 5))
def test_ties_are_ordered_by_sample(seed, n, levels):
    """Positions with exact ties (impossible to provoke through the sampler's
    uniforms): the merge hands over to the sort by sample."""
    rng = np.random.default_rng(seed)
    members = rng.permutation(n)
    positions = rng.integers(0, levels, n) / levels  # many equal positions
    position = np.empty(n)
    position[members] = positions
    np.testing.assert_array_equal(_by_position(members, positions), np.argsort(position, kind="stable"))
