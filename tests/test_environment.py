"""environment.yml (conda) and pyproject.toml (pip) must promise the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REQUIREMENT = re.compile(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)")
# The machines cap torch at 2.14.1; the three move together.
TORCH_PINS = {"torch": "==2.14.1", "torchvision": "==0.29.1", "torchaudio": "==2.11.0"}


def parse_requirements(lines: list[str]) -> dict[str, frozenset[str]]:
    """``{normalised name: set of specifier clauses}`` for lines such as ``numpy>=2,<3``."""
    requirements = {}
    for line in lines:
        match = REQUIREMENT.fullmatch(line.strip())
        assert match, f"cannot read requirement {line!r}"
        name = match.group(1).lower().replace("_", "-")
        clauses = frozenset(c.strip() for c in match.group(2).split(",") if c.strip())
        assert name not in requirements, f"{name} is listed twice"
        requirements[name] = clauses
    return requirements


def load_pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def load_environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def conda_and_pip_parts(environment: dict) -> tuple[list[str], list[str]]:
    """The conda specs and the pip lines of ``environment.yml``."""
    conda = [item for item in environment["dependencies"] if isinstance(item, str)]
    pips = [item["pip"] for item in environment["dependencies"] if isinstance(item, dict)]
    assert len(pips) == 1, "environment.yml needs exactly one pip section"
    return conda, pips[0]


def pip_packages(environment: dict) -> dict[str, frozenset[str]]:
    """The packages of the pip section, options such as ``-e`` left out."""
    _, pip_lines = conda_and_pip_parts(environment)
    return parse_requirements([line for line in pip_lines if not line.startswith("-")])


def test_environment_lists_pyproject_packages() -> None:
    project = load_pyproject()
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    environment = load_environment()
    _, pip_lines = conda_and_pip_parts(environment)
    assert [line for line in pip_lines if line.startswith("-")] == ['-e ".[dev]"']
    assert pip_packages(environment) == parse_requirements(declared)


def test_python_is_311_in_both() -> None:
    environment = load_environment()
    conda, _ = conda_and_pip_parts(environment)
    assert environment["name"] == "cormult"
    assert environment["channels"] == ["conda-forge"]
    assert "python=3.11" in conda and "pip" in conda
    assert load_pyproject()["requires-python"] == ">=3.11,<3.12"


def test_torch_family_is_pinned() -> None:
    pyproject = parse_requirements(load_pyproject()["dependencies"])
    for requirements in (pyproject, pip_packages(load_environment())):
        for name, pin in TORCH_PINS.items():
            assert requirements[name] == {pin}, f"{name} must be pinned {pin}"
