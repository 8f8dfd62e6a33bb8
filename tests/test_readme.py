"""Every Python snippet of the README (and of the docs' getting-started page) runs as
written: the blocks of one file run in order, in one namespace, as a reader would
paste them. Their own asserts check the guarantees they state."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import matplotlib
import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "docs" / "getting_started.md"]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text(encoding="utf-8"))


def test_the_readme_has_its_snippets():
    blocks = python_blocks(ROOT / "README.md")
    assert len(blocks) >= 3
    text = "\n".join(blocks)
    for name in ("FairnessLayer", "FairLayerClassifier", "StreamingFairPredictor"):
        assert name in text


def test_the_readme_cites_the_paper_and_states_the_per_call_guarantee():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "shared/" not in text  # a user of the package has no such folder
    assert "Troxell" in text and "ICML 2026" in text
    assert "per call" in text and "StreamingFairPredictor" in text


@pytest.mark.parametrize("path", PAGES, ids=[p.name for p in PAGES])
def test_snippets_run_as_written(path):
    matplotlib.use("Agg")
    namespace: dict = {"__name__": "__readme__"}
    for i, block in enumerate(python_blocks(path)):
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # a snippet a reader copies should not warn either
            exec(compile(block, f"{path.name}[python block {i}]", "exec"), namespace)
