"""One folder for everything a test run writes, for every path pytest is given.

The notebooks nbval executes write their results, checkpoints and figures where
``CORMULT_OUTPUT_DIR`` / ``CORMULT_FIGURES_DIR`` point (see
:func:`cormult_lib.tutorial.notebook.start_notebook`): a fresh temporary folder per test run,
set here (the repository root, so ``pytest notebooks`` alone is covered too) before
pytest-xdist starts its workers, which inherit it. A test run never reads or leaves artefacts
in the repository's ``outputs/`` and ``figures/``. Progress bars in the executed notebooks are
text (:mod:`cormult_lib.progress`): nobody watches the widgets of a test run.

With ``CORMULT_EXECUTED_DIR`` set (``make test`` sets it), every notebook nbval ran is written
there with the outputs of this run, after its last cell: ``tests/test_site.py`` (``make test``'s
second step, ``-m site``) builds the documentation site from them without executing anything
again.

pytest-xdist's ``--dist loadfile`` hands out files in collection order, so a run whose longest
chapter starts last ends with one worker busy and the other idle: the notebooks are collected
first, longest first by their last measured quick run (``results/quick_timings.json``).
"""

import json
import os
import tempfile
from pathlib import Path

import nbformat
import pytest

from cormult_lib.progress import PROGRESS_ENV

if not os.environ.get("CORMULT_OUTPUT_DIR"):
    _RUN_DIR = Path(tempfile.mkdtemp(prefix="cormult-test-run-"))
    os.environ["CORMULT_OUTPUT_DIR"] = str(_RUN_DIR / "outputs")
    os.environ["CORMULT_FIGURES_DIR"] = str(_RUN_DIR / "figures")
os.environ.setdefault(PROGRESS_ENV, "text")

EXECUTED_ENV = "CORMULT_EXECUTED_DIR"
QUICK_TIMINGS = Path(__file__).parent / "results" / "quick_timings.json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Notebooks before test files, the longest chapter first; each file's items keep their
    order (a stable sort on a per-file key)."""
    seconds = json.loads(QUICK_TIMINGS.read_text())["seconds"] if QUICK_TIMINGS.is_file() else {}

    def key(item: pytest.Item) -> tuple[int, float]:
        if item.path.suffix != ".ipynb":
            return (1, 0.0)
        return (0, -seconds.get(item.path.stem, 0.0))

    items.sort(key=key)


def pytest_runtest_teardown(item: pytest.Item) -> None:
    """Keep an nbval cell's outputs in its notebook; write the notebook after its last cell."""
    folder = os.environ.get(EXECUTED_ENV)
    outputs = getattr(item, "test_outputs", None)
    notebook = getattr(item.parent, "nb", None)
    if not folder or notebook is None or not hasattr(item, "cell"):
        return
    item.cell.outputs = outputs or []
    item.cell.execution_count = item.cell_num + 1
    code_cells = sum(cell.cell_type == "code" for cell in notebook.cells)
    if item.cell_num == code_cells - 1:
        Path(folder).mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, Path(folder) / Path(str(item.parent.path)).name)
