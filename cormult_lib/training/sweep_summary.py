"""What a finished sweep says per setting: the mean and standard deviation of each metric over
its seeds (the table of :func:`~cormult_lib.training.sweep.load_sweep`)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from cormult_lib.training.sweep import setting_labels, settings_column

__all__ = ["summarize_sweep"]


def summarize_sweep(table: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Mean and standard deviation (``ddof=1``) of ``metrics`` over the seeds of each setting.

    ``table`` holds one row per (setting, seed), as :func:`load_sweep` gives it: a ``seed``
    column and finite metric values.

    Returns one row per distinct combination of the ``by`` columns, in order of first
    appearance in ``table``: the ``by`` columns (values kept exactly, ``None`` included),
    ``<metric>_mean`` and ``<metric>_std`` per metric (std is NaN for a single seed) and
    ``n_seeds``, the number of seeds (rows) of that setting, every one of them in each mean.

    Raises:
        ValueError naming ``by`` or ``metrics`` when empty or naming missing columns; naming a
        metric column that is not numeric or holds missing (NaN) or infinite values (with
        their rows); naming the (setting, seed) pairs that appear more than once; and for a
        ``table`` without a ``seed`` column.
    """
    by, metrics = list(by), list(metrics)
    for name, columns in (("by", by), ("metrics", metrics)):
        if not columns:
            raise ValueError(f"{name} must name at least one column")
        missing = [column for column in columns if column not in table.columns]
        if missing:
            raise ValueError(f"{name}: columns {missing} not in the table {list(table.columns)}")
    if "seed" not in table.columns:
        raise ValueError(
            f"table: no 'seed' column in {list(table.columns)}; the summary is over the seeds "
            "of each setting, one row per (setting, seed)"
        )
    pair_columns = [*by, "seed"] if "seed" not in by else by
    for metric in metrics:
        if not pd.api.types.is_numeric_dtype(table[metric]):
            raise ValueError(f"metrics: column {metric!r} is not numeric ({table[metric].dtype})")
        finite = np.isfinite(table[metric].to_numpy(dtype=float, na_value=np.nan))
        if not finite.all():
            bad = table.loc[~finite, [*pair_columns, metric]].to_dict(orient="records")
            raise ValueError(
                f"metrics: column {metric!r} has {len(bad)} missing (NaN) or infinite "
                f"value(s), e.g. {bad[:5]}; the mean over the other seeds would leave them out "
                "while n_seeds counted them"
            )
    repeated = setting_labels(table, pair_columns).duplicated().to_numpy()
    if repeated.any():
        rows = table.loc[repeated, pair_columns].to_dict(orient="records")
        raise ValueError(
            f"table: {len(rows)} row(s) repeat the ({', '.join(pair_columns)}) of an earlier "
            f"row, e.g. {rows[:5]}; each setting needs one row per seed"
        )
    # Group on the JSON of the values: pandas' groupby would turn None into NaN and ints
    # next to None into floats, and would merge True with 1.
    codes, _ = pd.factorize(setting_labels(table, by))
    _, first_rows = np.unique(codes, return_index=True)  # codes number groups by appearance
    grouped = table[metrics].groupby(codes)
    columns: dict[str, pd.Series] = {}
    for column in by:
        values = table[column].tolist()
        columns[column] = settings_column([values[i] for i in first_rows])
    for metric in metrics:
        columns[f"{metric}_mean"] = grouped[metric].mean().reset_index(drop=True)
        columns[f"{metric}_std"] = grouped[metric].std(ddof=1).reset_index(drop=True)
    columns["n_seeds"] = grouped.size().reset_index(drop=True)
    return pd.DataFrame(columns)

