"""Progress bars: a widget in JupyterLab, plain text in a run nobody watches live.

Every long loop of the library shows a tqdm bar through :func:`tqdm`. In an interactive
notebook ``tqdm.auto`` draws a widget that updates itself. A headless run (``make tutorial`` /
``cormult-run`` through papermill, ``make test`` through nbval) has no front end to update a
widget, so the executed notebook would keep a static "0%" bar per loop. There
:data:`PROGRESS_ENV` is ``"text"`` (the runner and the test configuration set it) and the bar is
tqdm's text bar, redrawn at most every :data:`HEADLESS_INTERVAL_S` seconds and left as one line
of text with its final count and time.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm as auto_tqdm
from tqdm.std import tqdm as text_tqdm

#: ``"text"``: text bars (headless runs); anything else: ``tqdm.auto`` (widgets in Jupyter).
PROGRESS_ENV = "CORMULT_PROGRESS"
#: Seconds between redraws of a text bar, so a long loop leaves a few lines, not thousands.
HEADLESS_INTERVAL_S = 30.0


def headless() -> bool:
    """Whether bars are drawn as text (:data:`PROGRESS_ENV` is ``"text"``)."""
    return os.environ.get(PROGRESS_ENV, "").strip().lower() == "text"


def tqdm(*args: Any, **kwargs: Any) -> text_tqdm:
    """``tqdm(iterable, desc=..., total=..., ...)`` as the run calls for: a text bar on
    standard output in a headless run, ``tqdm.auto`` otherwise."""
    if headless():
        kwargs.setdefault("mininterval", HEADLESS_INTERVAL_S)
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ncols", 90)
        return text_tqdm(*args, **kwargs)
    return auto_tqdm(*args, **kwargs)
