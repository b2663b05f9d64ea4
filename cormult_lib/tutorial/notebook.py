"""The first and last cells of every tutorial notebook.

Each notebook starts with a ``parameters`` cell (literal assignments that papermill can
override) and hands those values to :func:`start_notebook` in the next cell::

    run = start_notebook("02_correlation", profile=profile, dataset=dataset,
                         data_path=data_path, modalities=modalities, seed=seed, device=device,
                         output_dir=output_dir, figures_dir=figures_dir, epochs=epochs)
    ...
    run.save_figure(fig, "02_similarity.png")
    run.write_results({"acc2": acc2, "mae": mae})

:func:`start_notebook` checks every value and stops with a message that names the parameter,
the value and what was expected, so that a typo in ``make tutorial -p ...`` or in the cell
fails in the second cell instead of twenty minutes later. Chapter-specific parameters are
checked with :func:`~cormult_lib.parameters.check_choice`,
:func:`~cormult_lib.parameters.check_int` and :func:`~cormult_lib.parameters.check_float`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

import cormult_lib
from cormult_lib.config import PRESETS, ExperimentConfig, get_config
from cormult_lib.device import describe_device, resolve_device
from cormult_lib.modalities import parse_modalities
from cormult_lib.parameters import check_choice, check_int
from cormult_lib.seeding import seed_everything
from cormult_lib.tutorial.reference import code_version, machine, print_beside_reference

# What ``data_path`` has to point at for each real data set, shown when it is missing.
DATA_PATH_HINTS: dict[str, str] = {
    "mmsa": "the path of an MMSA pickle such as .../MOSEI/Processed/aligned_50.pkl",
    "mult": "the path of a MulT pickle such as .../data/mosei_senti_data.pkl",
    "raw": "a feature cache folder written by `python -m cormult_lib.features.pipeline`",
    "clips": "a folder of clips in CMU-MOSEI's Raw/<video_id>/<clip_id>.mp4 layout with a "
    "label.csv (video_id, clip_id, text, label, mode) beside Raw/",
}

# Environment variables that redirect every chapter's output_dir / figures_dir (set by the
# test suite, so that `make test` never writes into outputs/ or figures/).
#: ``1`` makes every failed lesson check stop the run, ``0`` none (default: only on synthetic).
STRICT_ENV = "CORMULT_STRICT"
DIRECTORY_ENV = {"output_dir": "CORMULT_OUTPUT_DIR", "figures_dir": "CORMULT_FIGURES_DIR"}

# Keys that write_results fills in itself; ``extra`` may not replace them.
RESULT_KEYS = (
    "notebook",
    "metrics",
    "settings",
    "config",
    "seed",
    "device",
    "seconds",
    "versions",
    "finished_at",
    "checks",
)
#: Also filled in by write_results: the code (commit, uncommitted changes; taken when the run
#: started) and the machine (CPU, cores, torch threads, GPU) the run used.
PROVENANCE_KEYS = ("code", "machine")


def to_json_value(value: Any) -> Any:
    """``value`` made of plain JSON types: NaN and infinities become ``None``.

    NumPy scalars and arrays and torch tensors become numbers and lists, paths and other
    ``os.PathLike`` objects strings, tuples and sets lists, mapping keys strings. Anything
    else raises ``TypeError``.
    """
    if value is None or isinstance(value, bool | str | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.generic | np.ndarray):
        return to_json_value(value.tolist())
    if isinstance(value, torch.Tensor):
        return to_json_value(value.detach().cpu().tolist())
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.device):
        return str(value)
    if isinstance(value, Mapping):
        converted = {str(key): to_json_value(item) for key, item in value.items()}
        if len(converted) < len(value):  # e.g. 1 and "1": one would overwrite the other
            texts = Counter(map(str, value))
            keys = [key for key in value if texts[str(key)] > 1]
            raise ValueError(f"keys {keys!r} are the same key in JSON (str): one would be lost")
        return converted
    if isinstance(value, list | tuple | set | frozenset):
        return [to_json_value(item) for item in value]
    raise TypeError(f"cannot write a {type(value).__name__} to JSON: {value!r}")


@dataclass
class NotebookRun:
    """One execution of a notebook: its checked parameters and where its results go.

    ``params`` holds every parameter as the notebook passed it (chapter-specific ones
    included); ``started`` is the ``time.perf_counter()`` reading taken by
    :func:`start_notebook`, for the wall time in :meth:`write_results`. ``strict``: whether a
    failed :meth:`check` stops the run (see there); ``checks`` records every check.
    """

    name: str
    params: dict[str, Any]
    config: ExperimentConfig
    device: torch.device
    modalities: tuple[str, ...]
    output_dir: Path
    figures_dir: Path
    started: float
    strict: bool = True
    checks: list[dict] = field(default_factory=list)
    code: dict[str, Any] = field(default_factory=code_version)

    def check(self, passed: bool, name: str, meaning: str) -> bool:
        """A lesson check: what the chapter expects of the result, e.g. "training helps".

        On the synthetic corpus the expectation holds by construction, so the run is
        ``strict`` and a failed check stops it like an ``assert`` (nbval then fails where the
        lesson broke). On a user's own data (``mmsa``, ``mult``, ``raw``, ``clips``, ...) a
        failed check may only mean too few samples or too short a budget: the run goes on, so
        that its results and figures are written, and the failure is printed with
        ``meaning`` and recorded in the results JSON under ``checks``. Set the environment
        variable ``CORMULT_STRICT=1`` (or ``0``) to choose either behaviour on any data.

        Returns:
            ``passed``, as a bool.
        """
        passed = bool(passed)
        self.checks.append({"check": name, "passed": passed, "meaning": meaning})
        if not passed:
            text = f"check failed: {name}. {meaning}"
            if self.strict:
                raise AssertionError(text)
            print(f"WARNING {text} (recorded under 'checks' in the results JSON; the run goes on)")
        return passed

    def save_figure(self, fig: Any, filename: str) -> Path:
        """Save a matplotlib figure as ``figures_dir / filename`` (120 dpi, tight box)."""
        path = self.figures_dir / filename
        fig.savefig(path, dpi=120, bbox_inches="tight")
        print(f"Saved figure {path}")
        return path

    def write_results(self, metrics: Mapping[str, Any], **extra: Any) -> Path:
        """Write ``output_dir / f"{name}.json"`` and return its path.

        The file holds ``notebook``, ``metrics``, ``settings`` (the parameters), ``config``,
        ``seed``, ``device``, ``seconds`` (wall time of the chapter), ``versions`` (python,
        torch, numpy, cormult_lib), ``finished_at`` (ISO 8601 with the UTC offset),
        ``checks``, ``code`` (the commit and whether the tree had changes when the run started,
        :func:`~cormult_lib.tutorial.reference.code_version`), ``machine`` (CPU, cores, torch
        threads, GPU: :func:`~cormult_lib.tutorial.reference.machine`) and every ``extra``
        keyword. NaN and infinite floats are written as ``null`` so that the file is
        strict JSON; NumPy and torch values become numbers and lists.
        """
        clashes = sorted(set(extra) & {*RESULT_KEYS, *PROVENANCE_KEYS})
        if clashes:
            raise ValueError(f"write_results fills {clashes} itself; pick other keyword names")
        record = {
            "notebook": self.name,
            "metrics": metrics,
            "settings": self.params,
            "config": self.config.to_dict(),
            "seed": self.params["seed"],
            "device": str(self.device),
            "seconds": round(time.perf_counter() - self.started, 3),
            "versions": {
                "python": platform.python_version(),
                "torch": torch.__version__,
                "numpy": np.__version__,
                "cormult_lib": cormult_lib.__version__,
            },
            "finished_at": datetime.now().astimezone().isoformat(timespec="seconds"),
            "checks": self.checks,
            "code": self.code,
            "machine": machine(),
            **extra,
        }
        path = self.output_dir / f"{self.name}.json"
        plain = to_json_value(record)
        path.write_text(json.dumps(plain, indent=2, allow_nan=False) + "\n")
        print(f"Wrote results {path}")
        print_beside_reference(plain)
        failed = [c["check"] for c in self.checks if not c["passed"]]
        if failed:
            print(f"{len(failed)} of {len(self.checks)} lesson checks failed: {failed}")
        return path


def writable_directory(parameter: str, value: str | Path) -> Path:
    """``value`` as a folder that exists and can be written (created when missing).

    Raises:
        ValueError: naming ``parameter`` when ``value`` is a file, cannot be created or is
            not writable.
    """
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ValueError(f"{parameter}={str(value)!r} is a file, not a folder: pass a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"{parameter}={str(value)!r}: the folder cannot be created ({error.strerror})"
        ) from error
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise ValueError(
            f"{parameter}={str(value)!r}: the folder is not writable ({error.strerror}); pass "
            "a folder you can write to"
        ) from error
    return path


def start_notebook(
    name: str,
    *,
    profile: str,
    dataset: str,
    data_path: str | Path | None,
    modalities: str,
    seed: int,
    device: str,
    output_dir: str | Path,
    figures_dir: str | Path,
    datasets: tuple[str, ...] = ("synthetic", "mmsa"),
    **extra: Any,
) -> NotebookRun:
    """Check the parameters of notebook ``name``, seed everything and create the output folders.

    ``datasets`` lists the data sets this chapter supports. Every keyword in ``extra`` (the
    chapter-specific parameters, checked by the notebook itself) is kept in ``params``.

    The environment variables ``CORMULT_OUTPUT_DIR`` and ``CORMULT_FIGURES_DIR``, when set,
    replace ``output_dir`` and ``figures_dir`` (a line says so): the test suite sets them to
    temporary folders so that nbval's runs never write into the repository's ``outputs/``.

    Raises ``ValueError`` naming the parameter for a value that cannot work, and
    ``RuntimeError`` (from :func:`~cormult_lib.device.resolve_device`) when CUDA is asked for
    on a machine without it. Prints one line that summarises the run.
    """
    started = time.perf_counter()
    check_choice("profile", profile, PRESETS)
    check_choice("dataset", dataset, datasets)
    try:
        chosen = parse_modalities(modalities)
    except (TypeError, AttributeError) as err:
        raise ValueError(
            f"modalities={modalities!r} is not valid: expected letters out of 'TAV' such as 'TA'"
        ) from err
    seed = check_int("seed", seed, minimum=0)
    if not isinstance(device, str):
        raise ValueError(
            f"device={device!r} is not valid: expected 'auto', 'cpu', 'cuda' or 'cuda:N'"
        )
    torch_device = resolve_device(device, verbose=False)
    # The synthetic corpus needs no path; a chapter that finds its own data (chapter 09's
    # label_csv, which it may skip) checks it itself.
    if dataset in DATA_PATH_HINTS:
        hint = DATA_PATH_HINTS[dataset]
        if data_path is None:
            raise ValueError(f"data_path=None is not valid: dataset={dataset!r} needs {hint}")
        if not Path(data_path).expanduser().exists():
            raise ValueError(
                f"data_path={str(data_path)!r} does not exist: dataset={dataset!r} needs {hint}"
            )
    elif data_path is not None:
        real = ", ".join(repr(d) for d in datasets if d in DATA_PATH_HINTS) or "none here"
        raise ValueError(
            f"data_path={str(data_path)!r} is given but dataset={dataset!r} reads no file, so "
            f"it would be ignored: also pass the dataset it belongs to ({real})"
        )
    directories = {"output_dir": output_dir, "figures_dir": figures_dir}
    for parameter, variable in DIRECTORY_ENV.items():
        if os.environ.get(variable):
            replaced = directories[parameter]
            print(f"{parameter}={os.environ[variable]} (from ${variable}, instead of {replaced})")
            directories[parameter] = os.environ[variable]
    output_dir, figures_dir = directories["output_dir"], directories["figures_dir"]
    outputs = writable_directory("output_dir", output_dir)
    figures = writable_directory("figures_dir", figures_dir)
    seed_everything(seed)
    params = {
        "profile": profile,
        "dataset": dataset,
        "data_path": data_path,
        "modalities": modalities,
        "seed": seed,
        "device": device,
        "output_dir": output_dir,
        "figures_dir": figures_dir,
        **extra,
    }
    print(
        f"{name}: profile={profile} dataset={dataset} modalities={''.join(chosen)} "
        f"seed={seed} device={describe_device(torch_device)}"
    )
    strict_env = os.environ.get(STRICT_ENV, "").strip().lower()
    if strict_env and strict_env not in ("0", "1", "true", "false"):
        raise ValueError(f"${STRICT_ENV}={strict_env!r}: expected 1 or 0")
    strict = strict_env in ("1", "true") if strict_env else dataset == "synthetic"
    return NotebookRun(
        strict=strict,
        name=name,
        params=params,
        config=get_config(profile),
        device=torch_device,
        modalities=chosen,
        output_dir=outputs,
        figures_dir=figures,
        started=started,
    )
