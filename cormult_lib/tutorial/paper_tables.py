"""The papers' result tables, transcribed: CorMulT Tables 2-6 and CLIP-MSA Tables 1-2.

Values are as printed (percent for accuracies and F1; CorMulT's Table 3 prints MAE and Corr
times 100 too, which :meth:`PaperTable.frame` undoes). ``nan`` stands for a dash. A test
(``tests/test_paper_tables.py``) compares every row with the paper's text in
``../shared/papers/`` when it is present.

Column names follow :data:`cormult_lib.metrics.METRIC_KEYS` where the paper says which
binary split it means: CLIP-MSA prints Acc-2 and F1 as "negative/non-negative" (``has0``) /
"negative/positive" (``non0``). CorMulT prints one Acc-2 and one F1 without saying; the MulT
code it builds on scores the non-zero split, so :data:`CORMULT_ACC2` maps them to ``non0``
(an assumption, named where it is used).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import pandas as pd

NAN = math.nan
CORMULT_PAPER = "000_497dacb8129169fb.txt"
CLIP_MSA_PAPER = "002_a291590755c133a2.txt"
#: CorMulT's unnamed Acc-2 and F1 read as the non-zero split (the MulT code's).
CORMULT_ACC2 = {"acc2": "acc2_non0", "f1": "f1_non0"}
SENTIMENT = ("acc7", "acc2", "f1", "mae", "corr")


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


TABLES: tuple[PaperTable, ...] = (
    PaperTable(
        "CorMulT", 2,
        "Performance of CorMult when integrated with MCE under different data perturbation "
        "strategies.",
        "CMU-MOSEI", SENTIMENT,
        {
            "A": (52.1, 85.9, 85.7, 0.553, 0.747),
            "B": (51.2, 83.1, 83.7, 0.554, 0.759),
            "C": (52.1, 83.3, 83.9, 0.582, 0.754),
            "D": (52.8, 86.5, 86.7, 0.552, 0.779),
            "Average": (51.1, 83.3, 83.5, 0.551, 0.758),
        },
        CORMULT_PAPER,
    ),
    PaperTable(
        "CorMulT", 3,
        "Results of CorMulT while using different distance measurement methods.",
        "CMU-MOSEI", SENTIMENT,
        {
            "Euclidean Distance": (52.6, 86.3, 86.4, 54.8, 77.4),
            "Manhattan Distance": (52.5, 86.0, 85.6, 55.1, 77.4),
            "Chebyshev Distance": (52.6, 85.7, 86.3, 55.2, 76.9),
            "Cosine Similarity": (52.8, 86.5, 86.7, 55.2, 77.9),
            "Mahalanobis Distance": (52.4, 85.8, 86.0, 54.7, 77.6),
        },
        CORMULT_PAPER,
        scale={"mae": 0.01, "corr": 0.01},
    ),
    PaperTable(
        "CorMulT", 4,
        "Comparison of CorMulT with multimodal sentiment analysis baseline models.",
        "CMU-MOSEI", SENTIMENT,
        {
            "EF-LSTM": (43.8, 75.2, 75.3, 0.659, 0.609),
            "LMF": (48.1, 82.1, 82, 0.623, 0.677),
            "TFN": (50.2, 82.5, 82.1, 0.593, 0.701),
            "MFM": (50.3, 82.4, 82.3, 0.568, 0.717),
            "CM-Bert": (50.5, 83.6, 83.5, 0.646, 0.747),
            "MISA": (50.7, 83.9, 83.8, 0.557, 0.748),
            "BBFN": (50.8, 82.2, 82.2, 0.526, 0.761),
            "MULT": (51.1, 83.3, 83.5, 0.551, 0.758),
            "ICCN": (51.2, 82.2, 82.4, 0.565, 0.713),
            "MMLatch": (52.1, 83.3, 83.9, 0.582, 0.754),
            "CorMulT": (52.8, 86.5, 86.7, 0.552, 0.779),
        },
        CORMULT_PAPER,
    ),
    PaperTable(
        "CorMulT", 5,
        "The ablation study results for MCE multimodal feature extraction.",
        "CMU-MOSEI", ("L_A", "L_T", "L_V", "L_ave", "epoch_time"),
        {
            "None": (0.251, 0.219, 0.474, 0.315, 178.24),
            "Mel(Audio)": (0.191, 0.169, 0.449, 0.270, 175.43),
            "Res(Vision)": (0.149, 0.143, 0.232, 0.174, 43.14),
            "Full": (0.136, 0.142, 0.225, 0.168, 41.02),
        },
        CORMULT_PAPER,
    ),
    PaperTable(
        "CorMulT", 6,
        "The ablation study results of pre-trained modality quantity.",
        "CMU-MOSEI", SENTIMENT,
        {
            "V+A+T(pre: comb)": (50.9, 82.9, 83.4, 0.553, 0.752),
            "V+A+T(pre: A+T)": (51.2, 83.2, 83.8, 0.554, 0.762),
            "V+A+T(pre: V+T)": (52.3, 86.2, 86.1, 0.552, 0.778),
            "V+A+T(pre: V+A+T)": (52.8, 86.5, 86.7, 0.552, 0.779),
        },
        CORMULT_PAPER,
    ),
    PaperTable(
        "CLIP-MSA", 1,
        "Results on CMU-MOSI and CMU-MOSEI (here the CMU-MOSEI half; Acc-2 and F1 as "
        "negative/non-negative, negative/positive).",
        "CMU-MOSEI",
        ("mosi_acc2_has0", "mosi_acc2_non0", "mosi_f1_has0", "mosi_f1_non0", "mosi_mae",
         "mosi_corr", "acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "mae", "corr"),
        {
            "TFN(2017'EMNLP) [†]": (NAN, 80.8, NAN, 80.7, 0.901, 0.698,
                                    NAN, 82.5, NAN, 82.1, 0.593, 0.700),
            "LMF(2018'ACL) [†]": (NAN, 82.5, NAN, 82.4, 0.917, 0.695,
                                  NAN, 82.0, NAN, 82.1, 0.623, 0.677),
            "MFN(2019'ICLR) [†]": (NAN, 81.7, NAN, 81.6, 0.877, 0.706,
                                   NAN, 84.4, NAN, 84.3, 0.568, 0.717),
            "MuT(2019'ACL) [†]": (81.50, 84.10, 80.60, 83.90, 0.861, 0.711,
                                  NAN, 82.50, NAN, 82.30, 0.580, 0.703),
            "MISA(2020'ACM MM) [†]": (81.80, 83.40, 81.70, 83.60, 0.783, 0.761,
                                      83.60, 85.50, 83.80, 85.30, 0.555, 0.756),
            "MAG-BERT(2020'ACL) [†]": (82.54, 84.30, 82.59, 84.30, 0.731, 0.789,
                                       83.79, 85.23, 83.74, 85.08, 0.539, 0.753),
            "Self-MM(2021'AAAI) [†]": (84.00, 85.98, 84.42, 85.95, 0.713, 0.798,
                                       82.81, 85.17, 82.53, 85.30, 0.530, 0.765),
            "MMIM(2021'EMNLP) [‡]": (84.14, 86.06, 84.00, 85.98, 0.700, 0.800,
                                     82.24, 85.97, 82.66, 85.94, 0.526, 0.772),
            "HyCon(2022'IEEE) [‡]": (NAN, 85.50, NAN, 85.40, 0.688, 0.818,
                                     NAN, 86.40, NAN, 86.40, 0.590, 0.788),
            "TPMSA(2022'IEEE) [‡]": (NAN, 87.0, NAN, 87.0, 0.704, 0.799,
                                     NAN, 85.6, NAN, 85.6, 0.542, 0.770),
            "WSCL-CL(2022'EMNLP) [‡]": (NAN, 86.3, NAN, 86.2, 0.712, 0.798,
                                        NAN, 86.1, NAN, 86.0, 0.577, 0.794),
            "Self-MM*": (83.27, 85.15, 83.19, 85.14, 0.712, 0.795,
                         81.95, 84.94, 82.34, 84.87, 0.532, 0.762),
            "MAG-BERT*": (82.92, 84.58, 82.96, 84.58, 0.770, 0.770,
                          81.43, 85.22, 80.95, 85.18, 0.556, 0.755),
            "CLIP-MSA(ours)": (85.32, 87.30, 85.39, 87.31, 0.673, 0.820,
                               84.19, 85.19, 84.16, 85.43, 0.563, 0.761),
        },
        CLIP_MSA_PAPER,
    ),
    PaperTable(
        "CLIP-MSA", 2,
        "Ablation studies of CLIP-MSA over CMU-MOSI dataset.",
        "CMU-MOSI",
        ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "mae", "corr"),
        {
            "CLIP-MSA": (85.32, 87.30, 85.39, 87.31, 0.673, 0.820),
            "w/o CLIP": (82.95, 84.65, 82.97, 84.65, 0.728, 0.795),
            "w/o Co-Attn": (83.28, 85.11, 83.27, 85.05, 0.721, 0.805),
            "w/o CLIP, Co-Attn": (82.31, 84.50, 82.36, 84.48, 0.782, 0.769),
            "w/o CLIP-T": (84.01, 85.72, 84.02, 85.68, 0.711, 0.804),
            "w/o CLIP-A": (83.62, 85.47, 83.66, 85.46, 0.732, 0.790),
            "w/o CLIP-V": (83.43, 85.31, 83.49, 85.31, 0.725, 0.800),
            "(A,T,V)": (84.31, 86.69, 84.40, 86.72, 0.737, 0.786),
            "(V,T,A)": (84.65, 86.49, 84.69, 86.48, 0.717, 0.798),
        },
        CLIP_MSA_PAPER,
    ),
)


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
    """Rows of different tables (or of one) that print exactly the same numbers.

    Returns:
        One row per pair, with the columns ``first``, ``second`` (``"CorMulT Table 2: C"``)
        and ``values``; rows with a dash are never matched.
    """
    labelled = [
        (f"{table.name}: {label}", table.columns, values)
        for table in tables
        for label, values in table.rows.items()
        if not any(math.isnan(v) for v in values)
    ]
    pairs = [
        {"first": a, "second": b, "values": values_a}
        for (a, columns_a, values_a), (b, columns_b, values_b) in combinations(labelled, 2)
        if columns_a == columns_b and values_a == values_b
    ]
    return pd.DataFrame(pairs, columns=["first", "second", "values"])
