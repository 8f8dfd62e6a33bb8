"""Shared fixtures and random instances for fairsk's tests."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.register_profile("fuzz", max_examples=2000, deadline=None)
settings.register_profile("random", max_examples=300, deadline=None)  # a quick randomised run
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data is absent (looked in {SHARED_DATA}); these tests read the paper's data")
    return SHARED_DATA


@dataclass
class Instance:
    z: torch.Tensor
    groups: torch.Tensor
    y: torch.Tensor
    criterion: str
    tolerance: float
    bounds: tuple | None


def forward_backward(layer, z, groups, y=None, upstream=None):
    """The layer's output on ``z`` and the gradient of ``sum(out * upstream)`` with
    respect to ``z`` (taken on a fresh leaf copy of ``z``)."""
    v = z.detach().clone().requires_grad_(True)
    out = layer(v, groups, y)
    (out * upstream).sum().backward()
    return out.detach(), v.grad


def make_instance(seed, n, k, a, c, criterion, tolerance, box, dtype=torch.float64) -> Instance:
    """A random projection problem; groups have uneven shares and shifted means."""
    rng = np.random.default_rng(seed)
    groups = np.stack([rng.choice(k, size=n, p=rng.dirichlet(np.ones(k))) for _ in range(a)], 1)
    offsets = rng.normal(scale=1.0, size=(a, k))
    z = rng.normal(size=(n, c)) + sum(offsets[j, groups[:, j]] for j in range(a))[:, None]
    y = rng.normal(size=n) * 0.5
    bounds = None
    if box:
        lo = float(rng.uniform(-2.0, -0.5))
        bounds = (lo, lo + float(rng.uniform(1.5, 3.0)))
        if criterion == "eer":  # keep targets inside the box so the problem is feasible
            y = np.clip(y, bounds[0] + 0.01, bounds[1] - 0.01)
    return Instance(
        torch.tensor(z, dtype=dtype),
        torch.tensor(groups),
        torch.tensor(y, dtype=torch.float64),
        criterion,
        float(tolerance),
        bounds,
    )
