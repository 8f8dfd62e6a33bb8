"""Every example in examples/ runs on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("plot_*.py"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path):
    subprocess.run([sys.executable, str(path)], check=True, timeout=300)


def test_demo_runs():
    out = subprocess.run([sys.executable, "-m", "fairsk.demo"], check=True, capture_output=True, text=True, timeout=300)
    assert "parity gap" in out.stdout
