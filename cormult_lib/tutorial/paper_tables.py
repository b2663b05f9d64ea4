"""The papers' result tables, transcribed: CorMulT Tables 2-6 and CLIP-MSA Tables 1-2.

The numbers live in the data file ``paper_tables.json`` beside this module; this module reads
them into :class:`PaperTable` s. Values are as printed (percent for accuracies and F1;
CorMulT's Table 3 prints MAE and Corr times 100 too, which :meth:`PaperTable.frame` undoes).
A dash is ``null`` in the file and ``nan`` here. A test
(``tests/test_paper_tables.py``) compares every row with the paper's text in
``../shared/papers/`` when it is present.

Column names follow :data:`cormult_lib.metrics.METRIC_KEYS` where the paper says which
binary split it means: CLIP-MSA prints Acc-2 and F1 as "negative/non-negative" (``has0``) /
"negative/positive" (``non0``). CorMulT prints one Acc-2 and one F1 without saying; the MulT
code it builds on scores the non-zero split, so :data:`CORMULT_ACC2` maps them to ``non0``
(an assumption, named where it is used).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from itertools import combinations

import pandas as pd

NAN = math.nan
#: The transcription itself, a data file beside this module: one object per table with the
#: fields of :class:`PaperTable`.
TRANSCRIPTION = "paper_tables.json"
#: CorMulT's unnamed Acc-2 and F1 read as the non-zero split (the MulT code's).
CORMULT_ACC2 = {"acc2": "acc2_non0", "f1": "f1_non0"}


@dataclass(frozen=True)
class PaperTable:
    """One table of a paper: its rows as printed and how to read them.

    Attributes:
        paper: ``"CorMulT"`` or ``"CLIP-MSA"``.
        number: the table's number in the paper.
        caption: the paper's caption.
        dataset: the data set the numbers are on (``"CMU-MOSEI"``, ``"CMU-MOSI"``).
        columns: one name per printed number of a row.
        rows: the row label exactly as printed -> its numbers (``nan`` for a dash).
        source: the paper's file in ``../shared/papers/``.
        scale: column -> factor that turns the printed number into the metric's own unit.
    """

    paper: str
    number: int
    caption: str
    dataset: str
    columns: tuple[str, ...]
    rows: dict[str, tuple[float, ...]]
    source: str
    scale: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for label, values in self.rows.items():
            if len(values) != len(self.columns):
                raise ValueError(f"{self.name}, row {label!r}: {len(values)} values for "
                                 f"{len(self.columns)} columns {self.columns}")

    @property
    def name(self) -> str:
        """``"CorMulT Table 2"``."""
        return f"{self.paper} Table {self.number}"

    def frame(self) -> pd.DataFrame:
        """The table as a frame, one row per printed row, in the metrics' own units."""
        frame = pd.DataFrame.from_dict(self.rows, orient="index", columns=list(self.columns))
        for column, factor in self.scale.items():
            frame[column] = frame[column] * factor
        frame.index.name = "row"
        return frame


def _load_tables() -> tuple[PaperTable, ...]:
    """The transcription in ``paper_tables.json`` (``null`` for a dash) as :class:`PaperTable` s."""
    text = resources.files(__package__).joinpath(TRANSCRIPTION).read_text(encoding="utf-8")
    return tuple(
        PaperTable(
            **{key: value for key, value in table.items() if key not in ("columns", "rows")},
            columns=tuple(table["columns"]),
            rows={
                label: tuple(NAN if value is None else float(value) for value in values)
                for label, values in table["rows"].items()
            },
        )
        for table in json.loads(text)
    )


#: Every transcribed table, in the file's order.
TABLES: tuple[PaperTable, ...] = _load_tables()


def paper_table(paper: str, number: int) -> PaperTable:
    """The table ``number`` of ``paper`` (``"CorMulT"`` or ``"CLIP-MSA"``).

    Raises:
        KeyError: naming the tables there are.
    """
    for table in TABLES:
        if (table.paper, table.number) == (paper, number):
            return table
    raise KeyError(f"no {paper} Table {number}; transcribed: {[t.name for t in TABLES]}")


def identical_rows(tables: tuple[PaperTable, ...] = TABLES) -> pd.DataFrame:
    """Rows of different tables (or of one) that give exactly the same numbers, compared in the
    metrics' own units (:meth:`PaperTable.frame`: Table 3's MAE x 100 is Table 2's MAE).

    Returns:
        One row per pair, with the columns ``first``, ``second`` (``"CorMulT Table 2: C"``)
        and ``values`` (in the metrics' units); rows with a dash are never matched.
    """
    labelled = [
        (f"{table.name}: {label}", table.columns, tuple(values))
        for table in tables
        for label, values in table.frame().iterrows()
        if not values.isna().any()
    ]
    pairs = [
        {"first": a, "second": b, "values": values_a}
        for (a, columns_a, values_a), (b, columns_b, values_b) in combinations(labelled, 2)
        if columns_a == columns_b
        and all(math.isclose(x, y, rel_tol=1e-9) for x, y in zip(values_a, values_b, strict=True))
    ]
    return pd.DataFrame(pairs, columns=["first", "second", "values"])
