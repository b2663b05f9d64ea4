"""Chapter 10's tables: provenance, comparisons, verdict checks, paper beside ours."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from cormult_lib.stats import Comparison
from cormult_lib.tutorial.paper_tables import paper_table
from cormult_lib.tutorial.reference import with_provenance
from cormult_lib.tutorial.results_overview import (
    comparisons_of,
    load_references,
    mismatched_verdicts,
    provenance_table,
    seed_means,
    sensitivity_intervals,
    side_by_side,
)


def _comparison(difference: float, low: float, high: float, verdict: str) -> dict:
    return {"subset": "weak:voice", "n": 120, "n_seeds": 5, "metric": "mae", "a": "CorMulT",
            "b": "MulT", "a_value": 0.7 + difference, "b_value": 0.7,
            "difference": difference, "ci_low": low, "ci_high": high, "verdict": verdict,
            "method": "paired bootstrap"}


def _write(folder: Path, name: str, comparisons: list[dict]) -> None:
    record = {"notebook": name, "metrics": {}, "settings": {"profile": "standard"}, "seed": 0,
              "seconds": 90.0, "comparisons": comparisons}
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.json").write_text(json.dumps(with_provenance(record, {})))


def test_provenance_and_verdicts(tmp_path: Path) -> None:
    right = _comparison(-0.03, -0.05, -0.01, "a better")
    _write(tmp_path, "07_cormult_training", [right, _comparison(0.01, -0.02, 0.04,
                                                                "no measurable difference")])
    references = load_references(tmp_path)
    table = provenance_table(references)
    assert table.loc["07_cormult_training", ["comparisons", "decided", "minutes"]].tolist() == [
        2, 1, 1.5]
    commit = references["07_cormult_training"]["reference"]["code"]["commit"]
    assert table.loc["07_cormult_training", "commit"].rstrip("+") == commit[:7]
    assert mismatched_verdicts(references) == []
    (found,) = comparisons_of(references["07_cormult_training"], verdict="a better")
    assert found.sentence().endswith("CorMulT better")
    assert found.groups is None and "(n=120, 5 seeds)" in found.sentence()
    # Two groups of different samples keep both sizes through the JSON file.
    _write(tmp_path, "00_data_tour", [{**right, "n": 53, "groups": [3, 50]}])
    (two,) = comparisons_of(load_references(tmp_path)["00_data_tour"])
    assert two.groups == (3, 50) and "(n=3 vs 50, 5 seeds)" in two.sentence()
    # A verdict its interval does not support is caught.
    _write(tmp_path, "07_cormult_training", [_comparison(0.01, -0.02, 0.04, "a better")])
    assert len(mismatched_verdicts(load_references(tmp_path))) == 1
    # So is a verdict without any interval (JSON null), while "no measurable difference"
    # without one is right.
    _write(tmp_path, "07_cormult_training", [_comparison(-0.03, None, None, "a better"),
                                             _comparison(-0.03, None, None,
                                                         "no measurable difference")])
    (wrong,) = mismatched_verdicts(load_references(tmp_path))
    assert wrong.startswith("07_cormult_training") and "CorMulT better" in wrong
    # A direction given for a metric outside LOWER_IS_BETTER (chapter 01's noise floor in dB)
    # is recorded and read back the same way, not re-derived from the metric's name.
    floor = Comparison.build(
        subset="clips", n=20, n_seeds=1, metric="floor_db", names=("noisy", "clean"),
        values=(30.0, 1.0), interval=(27.8, 29.0), method="two-group bootstrap",
        lower_is_better=True,
    )
    assert floor.verdict == "b better" and floor.lower_better
    _write(tmp_path, "01_spectrograms", [floor.to_dict()])
    references = load_references(tmp_path)
    (read,) = comparisons_of(references["01_spectrograms"])
    assert read.lower_is_better is True and read.verdict == "b better"
    assert not any(line.startswith("01_spectrograms") for line in mismatched_verdicts(references))
    older = {k: v for k, v in floor.to_dict().items() if k != "lower_is_better"}
    assert comparisons_of({"comparisons": [older]})[0].lower_better is False, "name's default"


def test_side_by_side_puts_ours_in_the_papers_units() -> None:
    ours = pd.DataFrame({"acc7": [0.40], "acc2_non0": [0.80], "f1_non0": [0.79], "mae": [0.6],
                         "corr": [0.5]}, index=["CorMulT"])
    columns = {"acc7": "acc7", "acc2": "acc2_non0", "f1": "f1_non0", "mae": "mae",
               "corr": "corr"}
    table = side_by_side(paper_table("CorMulT", 4).frame(), ours,
                         rows={"CorMulT": "CorMulT", "MulT": "MULT"}, columns=columns,
                         sources=("paper", "ours"))
    assert table.loc["CorMulT", ("ours", "acc2")] == pytest.approx(80.0)
    assert table.loc["CorMulT", ("ours", "mae")] == pytest.approx(0.6), "MAE is not a percent"
    assert table.loc["MulT", ("paper", "acc7")] == 51.1
    assert np.isnan(table.loc["MulT", ("ours", "acc7")]), "a row we lack shows NaN"


def test_seed_means_and_sensitivity_intervals() -> None:
    summary = [{"model": "MulT", "subset": "all", "mae_mean": 0.7, "mae_std": 0.01,
                "n_seeds": 5}]
    assert seed_means(summary, ["model", "subset"]).loc[("MulT", "all"), "mae"] == 0.7
    records = [{"fusion": "product", "replacement": "Cor = 1", "seed": s, "relative_change": v}
               for s, v in enumerate([0.02, 0.03, 0.025])]
    records += [{"fusion": "post_norm", "replacement": "Cor = 1", "seed": s,
                 "relative_change": v} for s, v in enumerate([-0.01, 0.02, 0.0])]
    table = sensitivity_intervals(records, negligible=0.01)
    assert table.loc[("product", "Cor = 1"), "verdict"] == "reaches the prediction"
    assert table.loc[("post_norm", "Cor = 1"), "verdict"] == "undecided"  # holds the margin
    # Above 0 but under the margin: negligible, however narrow the interval.
    assert sensitivity_intervals(records, negligible=0.05).loc[
        ("product", "Cor = 1"), "verdict"] == "negligible"
    one_seed = sensitivity_intervals(records[:1]).loc[("product", "Cor = 1")]
    assert one_seed["verdict"] == "undecided" and np.isnan(one_seed["ci_low"])
    with pytest.raises(ValueError, match="negligible"):
        sensitivity_intervals(records, negligible=0.0)
    assert table.loc[("product", "Cor = 1"), "n_seeds"] == 3
    low, high = scipy_stats.ttest_1samp([0.02, 0.03, 0.025], 0).confidence_interval(0.95)
    assert table.loc[("product", "Cor = 1"), ["ci_low", "ci_high"]].tolist() == pytest.approx(
        [low, high]
    )
    # A seed recorded twice would narrow the interval: refused. A seed without spread in its
    # predictions (NaN change) is left out and counted.
    with pytest.raises(ValueError, match="more than once"):
        sensitivity_intervals(records + [records[0]])
    undefined = records + [{"fusion": "product", "replacement": "Cor = 1", "seed": 3,
                            "relative_change": float("nan")}]
    row = sensitivity_intervals(undefined).loc[("product", "Cor = 1")]
    assert (row["n_seeds"], row["undefined"]) == (3, 1)
    assert [row["ci_low"], row["ci_high"]] == pytest.approx([low, high])
