"""Shared pytest fixtures (the redirect of the notebooks' output folders is in the root
``conftest.py``)."""

from pathlib import Path

import pytest


@pytest.fixture
def cmu_dir() -> Path:
    """``../shared/data/cmu`` beside the checkout (real CMU material); skip when absent."""
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cmu"
    if not path.is_dir():
        pytest.skip(
            "../shared/data/cmu not found: real CMU material is only present beside the "
            "project's checkout"
        )
    return path
