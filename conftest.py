"""One folder for everything a test run writes, for every path pytest is given.

The notebooks nbval executes write their results, checkpoints and figures where
``CORMULT_OUTPUT_DIR`` / ``CORMULT_FIGURES_DIR`` point (see
:func:`cormult_lib.tutorial.notebook.start_notebook`): a fresh temporary folder per test run,
set here (the repository root, so ``pytest notebooks`` alone is covered too) before
pytest-xdist starts its workers, which inherit it. A test run never reads or leaves artefacts
in the repository's ``outputs/`` and ``figures/``. Progress bars in the executed notebooks are
text (:mod:`cormult_lib.progress`): nobody watches the widgets of a test run.
"""

import os
import tempfile
from pathlib import Path

from cormult_lib.progress import PROGRESS_ENV

if not os.environ.get("CORMULT_OUTPUT_DIR"):
    _RUN_DIR = Path(tempfile.mkdtemp(prefix="cormult-test-run-"))
    os.environ["CORMULT_OUTPUT_DIR"] = str(_RUN_DIR / "outputs")
    os.environ["CORMULT_FIGURES_DIR"] = str(_RUN_DIR / "figures")
os.environ.setdefault(PROGRESS_ENV, "text")
