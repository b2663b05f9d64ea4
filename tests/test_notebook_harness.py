"""The notebook harness: parameter checks in ``start_notebook`` and the papermill runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from cormult_lib.parameters import check_choice, check_float, check_int
from cormult_lib.tutorial.notebook import NotebookRun, start_notebook
from cormult_lib.tutorial.runner import UsageError, check_notebook, main, parse_value


@pytest.fixture(autouse=True)
def _own_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests pass output_dir / figures_dir themselves: no redirect from conftest."""
    monkeypatch.delenv("CORMULT_OUTPUT_DIR", raising=False)
    monkeypatch.delenv("CORMULT_FIGURES_DIR", raising=False)


def good_params(tmp_path: Path) -> dict:
    """The default parameters cell of a notebook, writing under ``tmp_path``."""
    return {
        "profile": "quick",
        "dataset": "synthetic",
        "data_path": None,
        "modalities": "TAV",
        "seed": 0,
        "device": "auto",
        "output_dir": tmp_path / "outputs" / "nested",
        "figures_dir": tmp_path / "figures",
    }


def test_start_notebook_defaults(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = start_notebook("01_demo", **good_params(tmp_path), epochs=3)
    assert isinstance(run, NotebookRun)
    assert run.name == "01_demo"
    assert run.config.profile == "quick"
    assert isinstance(run.device, torch.device)
    assert run.modalities == ("T", "A", "V")
    assert run.output_dir.is_dir() and run.figures_dir.is_dir()
    assert run.params["epochs"] == 3 and run.params["seed"] == 0
    assert isinstance(run.started, float)
    line = capsys.readouterr().out
    assert "01_demo" in line and "profile=quick" in line and "modalities=TAV" in line


def test_environment_redirects_the_output_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setenv("CORMULT_OUTPUT_DIR", str(tmp_path / "elsewhere"))
    run = start_notebook("01_demo", **good_params(tmp_path))
    assert run.output_dir == tmp_path / "elsewhere" and run.output_dir.is_dir()
    assert run.figures_dir == tmp_path / "figures", "only the variable that is set redirects"
    assert "(from $CORMULT_OUTPUT_DIR, instead of" in capsys.readouterr().out
    assert run.params["output_dir"] == str(tmp_path / "elsewhere"), "results name the real one"


def test_start_notebook_seeds(tmp_path: Path) -> None:
    start_notebook("01_demo", **good_params(tmp_path))
    first = torch.rand(3)
    start_notebook("01_demo", **good_params(tmp_path))
    assert torch.equal(first, torch.rand(3))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("profile", "fast"),
        ("dataset", "imdb"),
        ("modalities", "TX"),
        ("modalities", 3),
        ("seed", -1),
        ("seed", 1.5),
        ("device", "tpu"),
        ("device", 0),
    ],
)
def test_start_notebook_rejects(tmp_path: Path, name: str, value: object) -> None:
    params = good_params(tmp_path) | {name: value}
    with pytest.raises(ValueError, match=name):
        start_notebook("01_demo", **params)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_start_notebook_rejects_missing_cuda(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="device='cuda'"):
        start_notebook("01_demo", **good_params(tmp_path) | {"device": "cuda"})


def test_start_notebook_needs_data_path(tmp_path: Path) -> None:
    params = good_params(tmp_path) | {"dataset": "mmsa"}
    with pytest.raises(ValueError, match="data_path=None .*dataset='mmsa'"):
        start_notebook("01_demo", **params)
    missing = str(tmp_path / "nowhere.pkl")
    with pytest.raises(ValueError, match="data_path=.*nowhere.pkl' does not exist.*aligned_50"):
        start_notebook("01_demo", **params | {"data_path": missing})
    with pytest.raises(ValueError, match="dataset='mmsa' is not allowed"):
        start_notebook("01_demo", **params | {"data_path": missing}, datasets=("synthetic",))


def test_start_notebook_accepts_existing_data_path(tmp_path: Path) -> None:
    pickle = tmp_path / "aligned_50.pkl"
    pickle.write_bytes(b"")
    params = good_params(tmp_path) | {"dataset": "mmsa", "data_path": str(pickle)}
    assert start_notebook("01_demo", **params).params["data_path"] == str(pickle)


def test_write_results(tmp_path: Path) -> None:
    run = start_notebook("01_demo", **good_params(tmp_path))
    metrics = {"acc2": np.float32(0.5), "corr": float("nan"), "per_class": np.array([1, 2])}
    path = run.write_results(metrics, history=[math.inf, 1.0])
    assert path == run.output_dir / "01_demo.json"
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    record = json.loads(text)
    expected = {"notebook", "metrics", "settings", "config", "seed", "device", "seconds"}
    assert expected | {"versions", "finished_at", "checks", "history", "code", "machine"} == set(
        record
    )
    # Provenance of any run, not only of make reference: the code and the machine.
    assert set(record["code"]) == {"commit", "uncommitted_changes"}
    assert record["code"]["commit"] is None or len(record["code"]["commit"]) == 40
    assert record["machine"]["torch_threads"] == torch.get_num_threads()
    assert record["machine"]["cpu_count"] >= 1
    assert record["metrics"] == {"acc2": 0.5, "corr": None, "per_class": [1, 2]}
    assert record["history"] == [None, 1.0]
    assert record["settings"]["output_dir"] == str(run.output_dir)
    assert record["config"]["profile"] == "quick"
    assert set(record["versions"]) == {"python", "torch", "numpy", "cormult_lib"}
    with pytest.raises(ValueError, match="seed"):
        run.write_results({}, seed=1)
    with pytest.raises(ValueError, match="machine"):
        run.write_results({}, machine="mine")


def test_save_figure(tmp_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = start_notebook("01_demo", **good_params(tmp_path))
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    path = run.save_figure(fig, "demo.png")
    plt.close(fig)
    assert path == run.figures_dir / "demo.png" and path.stat().st_size > 0


def test_validators() -> None:
    assert check_choice("pooling", "max", ("mean", "max")) == "max"
    assert check_int("epochs", np.int64(2), minimum=1) == 2
    assert check_float("lr", 1, minimum=0.0) == 1.0
    with pytest.raises(ValueError, match="pooling='sum'.*'mean', 'max'"):
        check_choice("pooling", "sum", ("mean", "max"))
    with pytest.raises(ValueError, match="epochs=0"):
        check_int("epochs", 0, minimum=1)
    with pytest.raises(ValueError, match="epochs=True"):
        check_int("epochs", True)
    with pytest.raises(ValueError, match="dropout=1.5"):
        check_float("dropout", 1.5, minimum=0.0, maximum=1.0)
    with pytest.raises(ValueError, match="lr=nan"):
        check_float("lr", float("nan"))
    with pytest.raises(ValueError, match="lr='1e-3'"):
        check_float("lr", "1e-3")
    with pytest.raises(ValueError, match="tolerance=inf.*finite"):
        check_float("tolerance", float("inf"), minimum=0.0)  # no maximum: still refused
    with pytest.raises(ValueError, match="lr=1000.*finite"):
        check_float("lr", 10**400)  # too large for a float: named, not an OverflowError
    with pytest.raises(ValueError, match="layers=True"):
        check_choice("layers", True, (0, 1))  # True == 1, but a bool is not a layer count
    assert check_choice("flag", True, (True, False)) is True


def test_parse_value() -> None:
    assert parse_value("3") == 3
    assert parse_value("null") is None and parse_value("None") is None
    assert parse_value("1e-3") == 0.001
    assert parse_value("true") is True
    assert parse_value("TAV") == "TAV"
    assert parse_value("../outputs") == "../outputs"
    assert parse_value("a: b: c") == "a: b: c"
    # YAML 1.1 would read these as a date and as 90 (base 60).
    assert parse_value("2024-01-01") == "2024-01-01" and parse_value("1:30") == "1:30"


def test_parse_value_reads_only_plain_decimal_numbers_and_true_false() -> None:
    """YAML 1.1 read 010 as 8 (octal), 0x1F as 31, 0b11 as 3, 1_000 as 1000 and yes as True:
    a string parameter got a number or a bool that no type check could catch."""
    for text in ("010", "00", "0777", "0x1F", "0b11", "0o17", "1_000", "0.1_0", "1:30:00",
                 ".inf", ".NaN", "yes", "No", "on", "OFF", "1.5.2"):  # fmt: skip
        assert parse_value(text) == text, text
    numbers = {"0": 0, "-0": 0, "+5": 5, "-3": -3, "10": 10, "0.5": 0.5, ".5": 0.5, "1.": 1.0,
               "-.5e+3": -500.0, "1E3": 1000.0, "+.5": 0.5}  # fmt: skip
    for text, number in numbers.items():
        assert parse_value(text) == number and type(parse_value(text)) is type(number), text
    for text, flag in (("True", True), ("TRUE", True), ("false", False), ("False", False)):
        assert parse_value(text) is flag
    assert parse_value("~") is None and parse_value("NULL") is None
    assert parse_value("[1, 010, 2.5, true, null]") == [1, "010", 2.5, True, None]
    assert parse_value("{a: 0x1, b: 2}") == {"a": "0x1", "b": 2}
    assert parse_value('"3"') == "3", "a quoted value stays text"


def make_notebook(path: Path, parameters: str, *cells: str, tagged: bool = True) -> Path:
    """Write a notebook: a title, a (tagged) parameters cell, then ``cells``."""
    parameters_cell = nbformat.v4.new_code_cell(parameters)
    if tagged:
        parameters_cell.metadata["tags"] = ["parameters"]
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    notebook.cells = [
        nbformat.v4.new_markdown_cell("# Demo"),
        parameters_cell,
        *(nbformat.v4.new_code_cell(source) for source in cells),
    ]
    nbformat.write(notebook, path)
    return path


def run_cli(tmp_path: Path, notebook: Path, *options: str) -> int:
    """``main`` on ``notebook`` with the executed copies under ``tmp_path / "executed"``."""
    executed = str(tmp_path / "executed")
    return main([str(notebook), "--kernel", "python3", "--executed-dir", executed, *options])


def test_runner_rejects_misspelt_parameter(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    notebook = make_notebook(tmp_path / "01_demo.ipynb", 'x = 1\nname = "a"', "print(name)")
    assert run_cli(tmp_path, notebook, "-p", "nmae", "b") == 2
    captured = capsys.readouterr()
    message = captured.out + captured.err
    assert "'nmae'" in message and "did you mean 'name'?" in message
    assert "01_demo.ipynb" in message and "x, name" in message
    assert not (tmp_path / "executed" / "01_demo.ipynb").exists()


def test_runner_rejects_unrunnable_notebooks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    notebook = make_notebook(tmp_path / "01_demo.ipynb", "x = 1", "print(x)", tagged=False)
    assert run_cli(tmp_path, notebook) == 2
    assert "no cell tagged 'parameters'" in capsys.readouterr().err
    notebook = make_notebook(tmp_path / "01_demo.ipynb", "%matplotlib inline\nx = 1")
    assert run_cli(tmp_path, notebook, "-p", "x", "2") == 2
    assert "parameters cell of" in capsys.readouterr().err
    assert run_cli(tmp_path, tmp_path / "02_missing.ipynb") == 2
    assert "no such notebook" in capsys.readouterr().err


def test_check_notebook_reads_the_contract_cell(tmp_path: Path) -> None:
    # papermill.inspect_notebook skips the data_path line: its comment holds a second "=".
    cell = (
        'profile = "quick"  # "quick" or "paper"\n'
        'data_path = None  # path to real data when dataset != "synthetic"\n'
        'output_dir = "../outputs#1"\n'
        "seed: int = 0\n"
    )
    notebook = make_notebook(tmp_path / "01_demo.ipynb", cell)
    defaults = check_notebook(notebook, {"data_path": "/x.pkl", "seed": 3})
    assert defaults == {
        "profile": "quick",
        "data_path": None,
        "output_dir": "../outputs#1",
        "seed": 0,
    }



def test_check_notebook_refuses_values_of_another_type_than_the_default(tmp_path: Path) -> None:
    """``-p ablations F`` is the text 'F', which a chapter would read as true."""
    notebook = make_notebook(tmp_path / "01_demo.ipynb", "ablations = True\nepochs = 3\nx = None")
    assert check_notebook(notebook, {"ablations": False, "epochs": 2.5, "x": "anything"})
    with pytest.raises(UsageError, match=r"ablations = 'F': expected true or false"):
        check_notebook(notebook, {"ablations": parse_value("F")})
    with pytest.raises(UsageError, match=r"epochs = 'three': expected a number"):
        check_notebook(notebook, {"epochs": "three"})
    with pytest.raises(UsageError, match=r"epochs = True: expected a number"):
        check_notebook(notebook, {"epochs": True})
    # None where a comment offers it (chapter 08's encoder_lr = None: the head's rate).
    assert check_notebook(notebook, {"epochs": parse_value("null")})


@pytest.mark.parametrize("options", [(), ("-p", "x", "2")], ids=["defaults", "injected"])
def test_runner_reports_failing_cell(
    tmp_path: Path, capsys: pytest.CaptureFixture, options: tuple[str, ...]
) -> None:
    notebook = make_notebook(
        tmp_path / "01_demo.ipynb",
        'x = 1\nname = "a"',
        "print(x)",
        'raise ValueError("boom")',
    )
    later = make_notebook(tmp_path / "02_later.ipynb", "x = 1", "print(x)")
    executed = str(tmp_path / "executed")
    argv = [str(notebook), str(later), "--kernel", "python3", "--executed-dir", executed]
    assert main([*argv, *options]) == 1
    captured = capsys.readouterr()
    # Cell 3 of the source notebook, whether or not papermill injected a parameters cell.
    assert "FAILED: " in captured.err and "01_demo.ipynb, cell 3 (execution count" in captured.err
    assert "ValueError: boom" in captured.err
    assert 'raise ValueError("boom")' in captured.err
    assert "not run" in captured.out
    assert (tmp_path / "executed" / "01_demo.ipynb").exists()
    assert not (tmp_path / "executed" / "02_later.ipynb").exists()


def test_runner_runs_with_parameters(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    notebook = make_notebook(
        tmp_path / "01_demo.ipynb",
        'x = 1\nname = "a"\noutput_dir = "results"',
        "import json, pathlib\nassert x == 5, x\nprint(name * x)",
        "pathlib.Path(output_dir).mkdir(exist_ok=True)\n"
        "pathlib.Path(output_dir, '01_demo.json').write_text(json.dumps({'x': x}))",
    )
    assert run_cli(tmp_path, notebook, "-p", "x", "5") == 0
    executed = nbformat.read(tmp_path / "executed" / "01_demo.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "x = 5" in injected[0].source
    assert "aaaaa" in executed.cells[3].outputs[0]["text"]
    result = tmp_path / "results" / "01_demo.json"
    assert json.loads(result.read_text()) == {"x": 5}
    captured = capfd.readouterr()  # the file descriptors: the kernel's own stderr too
    assert "ok" in captured.out and "01_demo.json" in captured.out
    assert "WARNING" not in captured.err, "the kernel transport must not warn: " + captured.err


def test_lesson_checks_stop_synthetic_runs_and_only_record_on_a_users_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.delenv("CORMULT_STRICT", raising=False)
    synthetic = start_notebook("01_demo", **good_params(tmp_path))
    assert synthetic.strict and synthetic.check(True, "fine", "never shown")
    with pytest.raises(AssertionError, match="check failed: learns. too short a budget"):
        synthetic.check(False, "learns", "too short a budget")
    pickle = tmp_path / "data.pkl"
    pickle.write_bytes(b"")
    users = start_notebook("01_demo", **{**good_params(tmp_path), "dataset": "mmsa",
                                         "data_path": str(pickle)})
    assert not users.strict
    assert users.check(False, "learns", "too short a budget") is False  # the run goes on
    assert "WARNING check failed: learns. too short a budget" in capsys.readouterr().out
    written = json.loads(users.write_results({"mae": 0.7}).read_text())
    assert written["metrics"] == {"mae": 0.7}, "the results are written despite the failure"
    assert written["checks"] == [
        {"check": "learns", "passed": False, "meaning": "too short a budget"}
    ]
    assert "1 of 1 lesson checks failed: ['learns']" in capsys.readouterr().out
    monkeypatch.setenv("CORMULT_STRICT", "1")
    strict = start_notebook("01_demo", **{**good_params(tmp_path), "dataset": "mmsa",
                                          "data_path": str(pickle)})
    with pytest.raises(AssertionError):
        strict.check(False, "learns", "asked to be strict")
    monkeypatch.setenv("CORMULT_STRICT", "maybe")
    with pytest.raises(ValueError, match="CORMULT_STRICT"):
        start_notebook("01_demo", **good_params(tmp_path))


def test_to_json_value_refuses_keys_that_collide_as_text():
    from cormult_lib.tutorial.notebook import to_json_value

    assert to_json_value({1: "a", 2: "b"}) == {"1": "a", "2": "b"}
    with pytest.raises(ValueError, match=r"keys \[1, '1'\] are the same key in JSON"):
        to_json_value({1: "int key", "1": "str key"})
