"""Progress bars are widgets where a front end shows them and text in headless runs."""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("value", [None, "", "widgets"])
def test_other_runs_get_tqdm_auto(monkeypatch, value):
    if value is None:
        monkeypatch.delenv(progress.PROGRESS_ENV, raising=False)
    else:
        monkeypatch.setenv(progress.PROGRESS_ENV, value)
    assert not progress.headless()
    bar = progress.tqdm(range(2), disable=True)
    assert type(bar) is progress.auto_tqdm
