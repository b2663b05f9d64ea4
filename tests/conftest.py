"""Shared pytest fixtures, and one folder for everything the test run writes.

The notebooks nbval executes write their results, checkpoints and figures where
``CORMULT_OUTPUT_DIR`` / ``CORMULT_FIGURES_DIR`` point (see
:func:`cormult_lib.notebook.start_notebook`): a fresh temporary folder per test run, set here
before pytest-xdist starts its workers (they inherit it), so a test run never reads or leaves
artefacts in the repository's ``outputs/`` and ``figures/``.
"""

import os
import tempfile
from pathlib import Path

import pytest

if not os.environ.get("CORMULT_OUTPUT_DIR"):
    _RUN_DIR = Path(tempfile.mkdtemp(prefix="cormult-test-run-"))
    os.environ["CORMULT_OUTPUT_DIR"] = str(_RUN_DIR / "outputs")
    os.environ["CORMULT_FIGURES_DIR"] = str(_RUN_DIR / "figures")


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
