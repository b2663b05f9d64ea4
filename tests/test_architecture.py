"""The library's structure: layers that import only downwards, and modules a reader can hold.

``make lint`` runs the import-linter contract of ``pyproject.toml``; these tests run it too, show
that it catches a wrong-way import, and keep the configuration presets in one place.
"""

from __future__ import annotations

import ast
import importlib
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cormult_lib.config import (
    CHAPTER_BUDGETS,
    DISTANCE_GRIDS,
    DISTANCE_NAMES,
    PRESETS,
    chapter_budget,
)
from cormult_lib.correlation.distances import DISTANCES

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
#: "No module over about 600 lines" (issue 18); a module growing past this is split by job.
MAX_MODULE_LINES = 650


def _lint_imports(project: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=project, capture_output=True, text=True,
        env={"PYTHONPATH": str(project), "PATH": "/usr/bin:/bin"}, timeout=300,
    )


@pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")
def test_the_layers_contract_holds_and_catches_an_upward_import(tmp_path):
    kept = _lint_imports(ROOT)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert "1 kept, 0 broken" in kept.stdout

    copy = tmp_path / "project"
    shutil.copytree(ROOT / "cormult_lib", copy / "cormult_lib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    pooling = copy / "cormult_lib" / "nn" / "pooling.py"
    pooling.write_text(pooling.read_text() + "\nfrom cormult_lib.tutorial import plots  # noqa\n")
    broken = _lint_imports(copy)
    assert broken.returncode != 0
    assert "cormult_lib.nn.pooling -> cormult_lib.tutorial.plots" in broken.stdout


def test_no_library_module_is_longer_than_a_reader_can_hold():
    lengths = {
        str(path.relative_to(ROOT)): len(path.read_text().splitlines())
        for path in (ROOT / "cormult_lib").rglob("*.py")
    }
    too_long = {path: n for path, n in lengths.items() if n > MAX_MODULE_LINES}
    assert not too_long, f"modules over {MAX_MODULE_LINES} lines: {too_long}"


def test_presets_live_in_config_and_match_the_library():
    assert tuple(DISTANCES) == DISTANCE_NAMES
    assert all(grid["distance"] == tuple(DISTANCES) for grid in DISTANCE_GRIDS.values())
    for chapter, budgets in CHAPTER_BUDGETS.items():
        assert set(budgets) == set(PRESETS), chapter
        assert len({tuple(sorted(b)) for b in budgets.values()}) == 1, chapter  # same keys


def test_chapter_budget_takes_given_values_and_refuses_unknown_ones():
    quick = CHAPTER_BUDGETS["04_mce_pretraining"]["quick"]
    assert chapter_budget("04_mce_pretraining", "quick", ablation_clips=None, ablation_seeds=5) == {
        **quick, "ablation_seeds": 5,
    }
    budget = chapter_budget("09_real_text", "quick")
    budget["limits"]["train"] = 1  # a copy: the preset is untouched
    assert CHAPTER_BUDGETS["09_real_text"]["quick"]["limits"]["train"] != 1
    with pytest.raises(ValueError, match="no budget \\['epochs'\\]"):
        chapter_budget("08_clip_msa", "quick", epochs=3)
    with pytest.raises(ValueError, match="profile must be one of"):
        chapter_budget("08_clip_msa", "huge")
    with pytest.raises(ValueError, match="no budgets for chapter '99_x'"):
        chapter_budget("99_x", "quick")


def test_every_import_in_the_readme_resolves():
    """The README's code blocks import from the library's current places."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    imports = [
        node
        for block in blocks
        for node in ast.walk(ast.parse(block))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("cormult_lib")
    ]
    assert len(imports) >= 10
    for node in imports:
        module = importlib.import_module(node.module)
        missing = [a.name for a in node.names if not hasattr(module, a.name)]
        assert not missing, f"README: from {node.module} import {missing}"
