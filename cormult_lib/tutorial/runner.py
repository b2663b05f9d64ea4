"""Run the tutorial notebooks top to bottom with papermill: the engine of ``make tutorial``.

Usage (also installed as the console script ``cormult-run``)::

    cormult-run                                          # every notebooks/NN_*.ipynb, in order
    cormult-run notebooks/02_correlation.ipynb -p profile paper -p seed 3
    cormult-run -p dataset mmsa -p data_path /data/MOSEI/Processed/aligned_50.pkl

``-p NAME VALUE`` overrides a parameter of every notebook run. The value is read as YAML, so
``3`` is an int, ``0.5`` and ``1e-3`` floats, ``true`` a bool, ``null`` None, ``[1, 2]`` a list
and ``{a: 1}`` a dict; ``None``, ``True`` and ``False`` (papermill's ``-p`` spellings) are
understood too. Only plain decimal numbers are numbers and only ``true``/``false`` bools:
what YAML 1.1 would read otherwise stays text (``010``, ``0x1F``, ``0b11``, ``1_000``, ``1:30``,
``.inf``, the date ``2024-01-01``, and ``yes``, ``no``, ``on``, ``off``), as does anything that
is not YAML. Quote a value to keep it text: ``-p NAME '"3"'`` is the str ``'3'``.

Before anything runs, every notebook is checked: it must exist, have a cell tagged
``parameters``, and declare every ``-p`` name in that cell. papermill itself only logs a
warning for an undeclared name and injects the assignment anyway, where nothing reads it: a
misspelt ``-p sed 3`` would silently run with the default seed. Here it is an error that names
the parameter, the notebook, the declared names and the closest one.

Executed copies go to ``--executed-dir`` (default ``outputs/executed`` under the repository,
which is git-ignored) under the same file name, each notebook executed with its own folder as
working directory, so ``output_dir = "../outputs"`` means ``<repo>/outputs``.

The runner stops at the first notebook that fails and does not run the rest: the first
traceback is the one to read, and later chapters rarely survive what broke an earlier one.
The failing cell is named by its 0-based index in the source notebook (papermill's own index
counts the cell it injects after the parameters cell) and by its execution count, the
``In [N]`` of the executed copy.
Exit status: 0 when every notebook ran, 1 when one failed, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import json
import logging
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat
import papermill
import yaml
from jupyter_client.manager import AsyncKernelManager
from traitlets import default

from cormult_lib.progress import PROGRESS_ENV
from cormult_lib.tutorial import REPO_ROOT

NOTEBOOK_PATTERN = "[0-9][0-9]_*.ipynb"
SOURCE_PREVIEW_LINES = 5
# Where papermill logs "Passed unknown parameter" and "Unable to parse line".
NOISY_LOGGERS = ("papermill", "papermill.translators")

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class UsageError(Exception):
    """A problem with the command line or the notebooks named on it (exit status 2)."""


class InspectionNoise(logging.Filter):
    """Drops papermill's own parameter-inspection warnings, which :func:`check_notebook` replaces.

    Its inspection misreads lines with two ``=`` (see :func:`check_notebook`), so it would warn
    "Unable to parse line" and "Passed unknown parameter" for names that are declared.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not message.startswith(("Unable to parse line", "Passed unknown parameter"))


@dataclass
class NotebookResult:
    """How one notebook went: ``status`` is ``ok``, ``FAILED`` or ``not run``."""

    path: Path
    status: str = "not run"
    seconds: float | None = None


class _ValueLoader(yaml.SafeLoader):
    """YAML's safe loader with the implicit types of :func:`parse_value`: plain decimal ints
    and floats, ``true``/``false`` and ``null``; every other plain scalar is a str."""


_INT, _FLOAT, _BOOL = (f"tag:yaml.org,2002:{name}" for name in ("int", "float", "bool"))
_REPLACED = (_INT, _FLOAT, _BOOL, "tag:yaml.org,2002:timestamp")
_ValueLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
# The int pattern comes first: the float pattern matches ints too.
_ValueLoader.add_implicit_resolver(
    _INT, re.compile(r"^[-+]?(?:0|[1-9][0-9]*)\Z"), list("-+0123456789")
)
_ValueLoader.add_implicit_resolver(
    _FLOAT,
    re.compile(r"^[-+]?(?:(?:0|[1-9][0-9]*)(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?\Z"),
    list("-+.0123456789"),
)
_ValueLoader.add_implicit_resolver(
    _BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF")
)


def parse_value(text: str) -> Any:
    """A ``-p`` value as Python: YAML scalars, lists and dicts plus papermill's ``None``; only
    plain decimal numbers are numbers and only ``true``/``false`` (``True``, ``TRUE``, ...)
    bools, the rest of YAML 1.1's implicit types stay text (see the module docstring).

    >>> [parse_value(v) for v in ("3", "0.5", "null", "None", "1e-3", "TAV", "[1, 2]", "010")]
    [3, 0.5, None, None, 0.001, 'TAV', [1, 2], '010']
    """
    if text == "None":
        return None
    try:
        return yaml.load(text, Loader=_ValueLoader)  # a SafeLoader: builds no Python objects
    except yaml.YAMLError:
        return text


def build_parser() -> argparse.ArgumentParser:
    """The command line of ``python -m cormult_lib.tutorial.runner``."""
    parser = argparse.ArgumentParser(
        prog="cormult-run",
        description="Execute the tutorial notebooks with papermill and report where results went.",
    )
    parser.add_argument(
        "notebooks",
        nargs="*",
        type=Path,
        help=f"notebooks to run (default: every notebooks/{NOTEBOOK_PATTERN}, sorted)",
    )
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override a parameter of every notebook; VALUE is read as YAML (repeatable)",
    )
    parser.add_argument(
        "--executed-dir",
        type=Path,
        default=REPO_ROOT / "outputs" / "executed",
        help="folder for the executed copies (default: <repo>/outputs/executed)",
    )
    parser.add_argument("--kernel", default="python3", help="Jupyter kernel (default: python3)")
    parser.add_argument(
        "--timeout",
        type=int,
        default=None,
        help="seconds one cell may run before the notebook fails (default: no limit)",
    )
    return parser


def discover_notebooks(root: Path = REPO_ROOT) -> list[Path]:
    """Every ``root/notebooks/NN_*.ipynb``, sorted by name."""
    return sorted((root / "notebooks").glob(NOTEBOOK_PATTERN))


def display(path: Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    absolute = path.resolve()
    try:
        return str(absolute.relative_to(Path.cwd()))
    except ValueError:
        return str(absolute)


def parameters_cell(notebook: nbformat.NotebookNode) -> tuple[int, str]:
    """Index and source of the first cell tagged ``parameters`` (``-1, ""`` when none)."""
    for index, cell in enumerate(notebook.cells):
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            return index, cell.source
    return -1, ""


def read_parameters(source: str) -> tuple[list[str], dict[str, Any]]:
    """The names a parameters cell assigns at its top level, and the values of the literal ones.

    Raises ``SyntaxError`` when the cell is not plain Python (an IPython magic, for example).
    """
    names: list[str] = []
    defaults: dict[str, Any] = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign):
            targets, value = [node.target], node.value
        else:
            continue
        for target in targets:
            if not isinstance(target, ast.Name):
                continue
            if target.id not in names:
                names.append(target.id)
            if value is not None:
                try:
                    defaults[target.id] = ast.literal_eval(value)
                except (ValueError, TypeError):  # not a literal, or an unhashable dict key
                    continue
    return names, defaults


def papermill_metadata(executed: Path) -> dict[str, Any]:
    """The ``papermill`` block of an executed copy's metadata (``exception``, ``parameters``,
    ...); empty for a copy papermill did not write (nbval's)."""
    return json.loads(executed.read_text()).get("metadata", {}).get("papermill", {})


def check_notebook(path: Path, parameters: dict[str, Any]) -> dict[str, Any]:
    """Check that ``path`` can run with ``parameters``; return its literal parameter defaults.

    Raises :class:`UsageError` when the file is missing, has no cell tagged ``parameters``,
    that cell is not plain Python, or a name in ``parameters`` is not assigned there.

    The names come from parsing the cell with ``ast``, not from ``papermill.inspect_notebook``:
    papermill reads the cell with a regular expression that skips every line holding more
    than one ``=`` (``data_path = None  # when dataset != "synthetic"`` declares nothing for
    it), keeps a default only as source text cut at the first ``#``, and needs a kernel named
    in the notebook's metadata.
    """
    if not path.is_file():
        raise UsageError(f"{display(path)}: no such notebook")
    index, source = parameters_cell(nbformat.read(path, as_version=4))
    if index < 0:
        raise UsageError(
            f"{display(path)} has no cell tagged 'parameters'; every tutorial notebook needs "
            "one (in Jupyter: View > Cell toolbar > Tags)"
        )
    try:
        declared, defaults = read_parameters(source)
    except SyntaxError as error:
        raise UsageError(
            f"the parameters cell of {display(path)} is not plain Python (line {error.lineno}: "
            f"{error.msg}); it may only assign values"
        ) from error
    unknown = [name for name in parameters if name not in declared]
    if unknown:
        lines = [f"{display(path)} does not declare the parameter(s) you passed:"]
        for name in unknown:
            close = difflib.get_close_matches(name, declared, n=1)
            suggestion = f" (did you mean {close[0]!r}?)" if close else ""
            lines.append(f"  {name!r}{suggestion}")
        lines.append(f"It declares: {', '.join(declared) or 'nothing'}.")
        lines.append("papermill would only warn and run the notebook without them.")
        raise UsageError("\n".join(lines))
    wrong = [
        f"  {name} = {value!r}: expected {expected} like its default {defaults[name]!r}"
        for name, value in parameters.items()
        if (expected := _type_mismatch(value, defaults.get(name)))
    ]
    if wrong:
        raise UsageError(
            "\n".join([f"{display(path)}: parameter(s) of the wrong type:", *wrong,
                       "Booleans are true / false, numbers are plain digits."])
        )
    return defaults


def _type_mismatch(value: Any, default: Any) -> str | None:
    """What a ``-p`` value should have been when its type does not fit the parameter's default
    (``"true or false"`` for a boolean, ``"a number"`` for a number), else ``None``; text,
    lists, ``None`` defaults and ``None`` values (``-p encoder_lr null``, where a parameter's
    comment offers None) are the chapter's to check."""
    if value is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(value, bool) else "true or false"
    if isinstance(default, int | float):
        number = isinstance(value, int | float) and not isinstance(value, bool)
        return None if number else "a number"
    return None


def source_cell_index(path: Path, executed_index: int, injected: bool) -> int:
    """The index in the notebook at ``path`` of the cell papermill reports as ``executed_index``.

    papermill counts the cells of the notebook it ran, where a cell with the injected
    parameters follows the parameters cell whenever parameters were passed.
    """
    parameters_index, _ = parameters_cell(nbformat.read(path, as_version=4))
    if injected and executed_index > parameters_index:
        return executed_index - 1
    return executed_index


def report_cell_error(
    path: Path, output: Path, error: papermill.PapermillExecutionError, injected: bool
) -> None:
    """Print a failing cell to stderr: traceback, one-line summary, its source and the copy."""
    traceback = _ANSI_ESCAPE.sub("", "\n".join(error.traceback))
    index = source_cell_index(path, error.cell_index, injected)
    lines = error.source.splitlines()
    preview = [f"    {line}".rstrip() for line in lines[:SOURCE_PREVIEW_LINES]]
    if len(lines) > SOURCE_PREVIEW_LINES:
        preview.append("    ...")
    print(
        f"{traceback}\n\nFAILED: {display(path)}, cell {index} (execution count "
        f"{error.exec_count}): {error.ename}: {error.evalue}",
        *preview,
        f"Executed copy with the traceback: {display(output)}",
        sep="\n",
        file=sys.stderr,
    )


class LocalKernelManager(AsyncKernelManager):
    """A kernel reached over local IPC sockets instead of TCP ports.

    The sockets are files ``<tmp>/cormult-kernels/<id>-<port>``, removed when the kernel stops.
    Over TCP, ipykernel warns in every run's console that the traffic is unencrypted; IPC
    sockets never leave the machine, need no free port and give no warning.
    """

    @default("transport")
    def _default_transport(self) -> str:
        return "ipc"

    @default("ip")
    def _default_ip(self) -> str:
        folder = Path(tempfile.gettempdir()) / "cormult-kernels"
        folder.mkdir(mode=0o700, exist_ok=True)
        return str(folder / f"kernel-{os.getpid()}-{id(self):x}")


def run_notebook(
    path: Path, output: Path, parameters: dict[str, Any], kernel: str, timeout: int | None
) -> bool:
    """Execute ``path`` into ``output`` in its own folder; report any failure, return success."""
    print(f"Running {display(path)} -> {display(output)}", flush=True)
    noise = InspectionNoise()
    for logger in NOISY_LOGGERS:
        logging.getLogger(logger).addFilter(noise)
    try:
        papermill.execute_notebook(
            str(path),
            str(output),
            parameters=parameters,
            kernel_name=kernel,
            kernel_manager_class=LocalKernelManager,
            cwd=str(path.parent),
            progress_bar=sys.stderr.isatty(),
            log_output=False,
            execution_timeout=timeout,
        )
    except papermill.PapermillExecutionError as error:
        report_cell_error(path, output, error, injected=bool(parameters))
        return False
    except Exception as error:  # kernel died or missing, cell timeout: no cell error to show
        print(
            f"FAILED: {display(path)}: {type(error).__name__}: {error}",
            f"Executed copy (may stop before the failure): {display(output)}",
            sep="\n",
            file=sys.stderr,
        )
        return False
    finally:
        for logger in NOISY_LOGGERS:
            logging.getLogger(logger).removeFilter(noise)
    return True


def resolved_dir(
    notebook: Path, name: str, parameters: dict[str, Any], defaults: dict[str, Any]
) -> Path | None:
    """The folder parameter ``name`` of ``notebook`` points at, relative to the notebook."""
    value = parameters.get(name, defaults.get(name))
    if not isinstance(value, str | os.PathLike):
        return None
    return (notebook.parent / value).resolve()


def print_summary(
    results: list[NotebookResult],
    executed_dir: Path,
    output_dirs: set[Path],
    figure_dirs: set[Path],
    started: float,
) -> None:
    """Print the status table, then the results and figures this run wrote."""
    names = [display(result.path) for result in results]
    width = max(len("notebook"), *(len(name) for name in names))
    print(f"\n{'notebook':<{width}}  {'status':<7}  {'seconds':>8}")
    for name, result in zip(names, results, strict=True):
        seconds = "" if result.seconds is None else f"{result.seconds:8.1f}"
        print(f"{name:<{width}}  {result.status:<7}  {seconds:>8}")
    print(f"\nExecuted copies: {display(executed_dir)}")
    # Compare with whole seconds: some file systems keep modification times to the second.
    since = math.floor(started)
    for folder in sorted(output_dirs):
        for path in sorted(folder.glob("*.json")):
            age = "" if path.stat().st_mtime >= since else "  (from an earlier run)"
            print(f"Results: {display(path)}{age}")
    for folder in sorted(figure_dirs):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.stat().st_mtime >= since:
                print(f"Figure:  {display(path)}")


def main(argv: list[str] | None = None) -> int:
    """Run the notebooks named in ``argv`` (default: all of them); return the exit status."""
    args = build_parser().parse_args(argv)
    parameters = {name: parse_value(value) for name, value in args.parameter}
    notebooks: Sequence[Path] = args.notebooks or discover_notebooks()
    try:
        if not notebooks:
            raise UsageError(
                f"no notebooks match {display(REPO_ROOT / 'notebooks')}/{NOTEBOOK_PATTERN}"
            )
        defaults = {path: check_notebook(path, parameters) for path in notebooks}
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    args.executed_dir.mkdir(parents=True, exist_ok=True)
    # The kernels inherit it: text progress bars, not widgets that nobody will ever update.
    os.environ.setdefault(PROGRESS_ENV, "text")
    started = time.time()
    results = [NotebookResult(path) for path in notebooks]
    output_dirs: set[Path] = set()
    figure_dirs: set[Path] = set()
    exit_status = 0
    for result in results:
        path = result.path
        tick = time.perf_counter()
        ok = run_notebook(
            path, args.executed_dir / path.name, parameters, args.kernel, args.timeout
        )
        result.seconds = time.perf_counter() - tick
        for name, folders in (("output_dir", output_dirs), ("figures_dir", figure_dirs)):
            folder = resolved_dir(path, name, parameters, defaults[path])
            if folder is not None and folder.is_dir():
                folders.add(folder)
        result.status = "ok" if ok else "FAILED"
        if not ok:
            exit_status = 1
            break
    print_summary(results, args.executed_dir, output_dirs, figure_dirs, started)
    return exit_status


if __name__ == "__main__":
    raise SystemExit(main())
