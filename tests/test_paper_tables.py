"""The transcribed tables against the papers' own text, and the row comparison."""

import math
import re
from pathlib import Path

import pytest

from cormult_lib.tutorial.paper_tables import (
    TABLES,
    PaperTable,
    identical_rows,
    paper_table,
)

PAPERS = Path(__file__).resolve().parents[2] / "shared" / "papers"
NUMBER = re.compile(r"^-?\d+(\.\d+)?$")


def printed_numbers(line: str, label: str) -> list[float]:
    """The numbers of a table row after its label: ``|``, tab and ``/`` separate cells."""
    cells = re.split(r"[|\t/]", line.strip().lstrip("|").strip()[len(label):])
    numbers = []
    for cell in (c.strip() for c in cells):
        if cell == "-":
            numbers.append(math.nan)
        elif NUMBER.match(cell):
            numbers.append(float(cell))
    return numbers


def row_line(text: str, label: str) -> str:
    """The first line of ``text`` that starts with the row label ``label``."""
    for line in text.splitlines():
        stripped = line.strip().lstrip("|").strip()
        if stripped.startswith(label) and stripped[len(label):][:1] in ("", " ", "\t", "|"):
            return line
    raise AssertionError(f"no row {label!r} in the paper")


@pytest.mark.parametrize("table", TABLES, ids=lambda t: t.name.replace(" ", "_"))
def test_every_row_is_as_printed(table: PaperTable) -> None:
    paper = PAPERS / table.source
    if not paper.is_file():
        pytest.skip(f"{paper} is absent: the check needs the paper's text beside the repository")
    text = paper.read_text()
    caption_at = text.index(f"Table {table.number}. {table.caption.split(' (here')[0][:40]}")
    # CorMulT prints the rows after the caption, CLIP-MSA before it: search around it.
    around = text[max(0, caption_at - 6000) : caption_at + 3000]
    for label, values in table.rows.items():
        printed = printed_numbers(row_line(around, label), label)
        assert len(printed) == len(values), (table.name, label, printed)
        for got, want in zip(printed, values, strict=True):
            assert (math.isnan(got) and math.isnan(want)) or got == want, (table.name, label)


def test_frames_units_and_lookup() -> None:
    table3 = paper_table("CorMulT", 3).frame()
    assert table3.loc["Cosine Similarity", "mae"] == pytest.approx(0.552)
    assert paper_table("CLIP-MSA", 2).frame().shape == (9, 6)
    with pytest.raises(KeyError, match="CorMulT Table 2"):
        paper_table("CorMulT", 9)
    with pytest.raises(ValueError, match="row 'x': 1 values for 2 columns"):
        PaperTable("P", 1, "c", "d", ("a", "b"), {"x": (1.0,)}, "f")


def test_identical_rows_are_found() -> None:
    same = identical_rows()
    pairs = set(zip(same["first"], same["second"], strict=True))
    assert ("CorMulT Table 2: C", "CorMulT Table 4: MMLatch") in pairs
    assert ("CorMulT Table 2: Average", "CorMulT Table 4: MULT") in pairs
    assert ("CorMulT Table 2: A", "CorMulT Table 2: B") not in pairs
    # Table 3 prints MAE and Corr x 100: its cosine row is Table 2's D in the metrics' units.
    assert ("CorMulT Table 2: D", "CorMulT Table 3: Cosine Similarity") in pairs
    one = PaperTable("P", 1, "c", "d", ("a",), {"x": (1.0,), "y": (math.nan,)}, "f")
    assert identical_rows((one, one)).shape[0] == 1, "the dash row is never matched"
