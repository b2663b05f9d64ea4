"""Progress bars: a widget in JupyterLab, plain text in a run nobody watches live.

Every long loop of the library shows a tqdm bar through :func:`tqdm`. In a notebook that a
person runs, ``tqdm.auto`` draws a widget that updates itself. A headless run (``make
tutorial`` / ``cormult-run`` through papermill, ``make test`` through nbval) has no front end to
update a widget, so the executed notebook would keep a static "0%" bar per loop. There
:data:`PROGRESS_ENV` is ``"text"`` (the runner and the test configuration set it) and the bar is
a text bar, redrawn at most every :data:`HEADLESS_INTERVAL_S` seconds and left as one line of
text with its final count and time; transient bars (``leave=False``, e.g. the batches of one
epoch) are not drawn at all there.

Both are tqdm's asyncio class (``tqdm.auto`` is, in and outside notebooks), on purpose: its
constructor calls ``iter()`` on what it wraps, even when disabled, which for a shuffled
``DataLoader`` draws one shuffle order that is never used. Every seeded result of the tutorial
was measured with that draw, so the text bar makes it too: a run gives the same numbers whether
its bars are widgets or text (``tests/test_progress.py``). Dropping the extra pass changes every
seeded result; see the note of issue 19 before doing so.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.asyncio import tqdm_asyncio as text_tqdm
from tqdm.auto import tqdm as auto_tqdm

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
        kwargs["disable"] = kwargs.get("disable", False) or kwargs.get("leave") is False
        kwargs.setdefault("mininterval", HEADLESS_INTERVAL_S)
        kwargs.setdefault("file", sys.stdout)
        kwargs.setdefault("ncols", 90)
        return text_tqdm(*args, **kwargs)
    return auto_tqdm(*args, **kwargs)
