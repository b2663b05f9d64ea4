"""Progress bars are widgets where a front end shows them and text in headless runs, and the
choice never changes a seeded result."""

from __future__ import annotations

import pytest
import torch
from tqdm.notebook import tqdm as notebook_tqdm

from cormult_lib import progress


def test_headless_runs_get_text_bars_on_stdout(monkeypatch, capsys):
    monkeypatch.setenv(progress.PROGRESS_ENV, "text")
    bar = progress.tqdm(range(3), desc="clips")
    assert not isinstance(bar, notebook_tqdm)
    assert bar.mininterval == progress.HEADLESS_INTERVAL_S
    list(bar)
    bar.close()
    out = capsys.readouterr().out
    assert "clips: 100%" in out and "3/3" in out
    transient = progress.tqdm(range(3), desc="batches", leave=False)
    list(transient)
    transient.close()
    assert capsys.readouterr().out == "", "a leave=False bar is not drawn headless"


@pytest.mark.parametrize("value", [None, "", "widgets"])
def test_other_runs_get_tqdm_auto(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(progress.PROGRESS_ENV, value)
    assert not progress.headless()
    assert type(progress.tqdm(range(2), disable=True)) is progress.auto_tqdm


def _shuffles(monkeypatch, mode: str) -> list[list[int]]:
    """Two epochs of a seeded shuffled loader, each wrapped in a (disabled) bar."""
    monkeypatch.setenv(progress.PROGRESS_ENV, mode)
    generator = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(range(8), batch_size=8, shuffle=True,
                                         generator=generator)
    return [next(iter(progress.tqdm(loader, disable=True))).tolist() for _ in range(2)]


def test_text_and_widget_bars_give_the_same_shuffles(monkeypatch):
    assert _shuffles(monkeypatch, "text") == _shuffles(monkeypatch, "widgets")
