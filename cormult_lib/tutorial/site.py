"""The tutorial as a static site: the README, every executed chapter and the API reference.

``make docs`` (``python -m cormult_lib.tutorial.site``):

1. runs every chapter whose executed copy in ``outputs/executed`` is missing or older than its
   notebook, the library or ``results/`` (what ``make tutorial`` would run, nothing more);
2. stages a Sphinx source folder (:func:`stage`): the README as ``index.md``, the executed
   chapters under ``notebooks/`` (so the README's links to them resolve unchanged) and the
   README's pictures under ``figures/readme/`` and ``api.rst``;
3. builds it with Sphinx, MyST-NB (which renders the stored outputs, never executing anything)
   and autosummary (a page per module from the library's docstrings), configured by
   ``docs/conf.py``, into ``docs/_build/html`` (git-ignored);
4. checks the result (:func:`check_site`): a page per chapter holding every picture its
   executed notebook shows, the landing page with the README's pictures, the API reference.

The test run builds the same site from the notebooks nbval executed (``make test``'s second
step, ``tests/test_site.py``), so the site a user builds is the one CI checked.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat

from cormult_lib.tutorial import runner

DOCS_DIR = runner.REPO_ROOT / "docs"
BUILD_DIR = DOCS_DIR / "_build"
EXECUTED_DIR = runner.REPO_ROOT / "outputs" / "executed"
#: The folders whose files an executed chapter depends on besides its own notebook.
DEPENDENCIES = ("cormult_lib", "results")
MARKDOWN_IMAGE = re.compile(r"!\[[^\]]*\]\([^)]+\)")
IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml")
#: Pages the API reference must hold (autosummary names them after the modules).
API_PAGES = ("api.html", "api/cormult_lib.stats.html", "api/cormult_lib.models.cormult.html")
API_INDEX = """API reference
=============

Every module of ``cormult_lib``, from its docstrings.

.. autosummary::
   :toctree: api
   :recursive:

   cormult_lib
"""


def newest_change(root: Path = runner.REPO_ROOT) -> float:
    """Latest modification time of any file under :data:`DEPENDENCIES` (0 when none exist)."""
    times = [
        path.stat().st_mtime
        for folder in DEPENDENCIES
        for path in (root / folder).rglob("*")
        if path.is_file() and "__pycache__" not in path.parts
    ]
    return max(times, default=0.0)


#: Parameters a published chapter may have run with: where it writes, not what it shows.
SITE_PARAMETERS = ("output_dir", "figures_dir")


def publishable(copy: Path) -> bool:
    """Whether an executed copy may go on the site: it ran to its end with the chapter's own
    parameters (papermill's metadata; nbval's copies carry none). A failed run, or one with
    ``-p profile paper``, say, is run again with the defaults."""
    papermill = runner.papermill_metadata(copy)
    parameters = set(papermill.get("parameters") or {})
    return not papermill.get("exception") and parameters <= set(SITE_PARAMETERS)


def stale_chapters(notebooks: list[Path], executed_dir: Path, since: float) -> list[Path]:
    """The ``notebooks`` whose executed copy is missing, older than the notebook or ``since``,
    or not :func:`publishable`."""
    stale = []
    for notebook in notebooks:
        copy = executed_dir / notebook.name
        if (
            not copy.is_file()
            or copy.stat().st_mtime < max(notebook.stat().st_mtime, since)
            or not publishable(copy)
        ):
            stale.append(notebook)
    return stale


def stage(executed_dir: Path, source_dir: Path, notebooks: list[Path]) -> Path:
    """Write the Sphinx source folder ``source_dir`` and return it.

    Raises:
        FileNotFoundError: naming the chapters whose executed copy is missing.
        ValueError: naming the chapters whose executed copy is not :func:`publishable` (a
            failed run, or one with other parameters than the site's).
    """
    missing = [n.name for n in notebooks if not (executed_dir / n.name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{executed_dir} lacks the executed chapters {missing}: run `make tutorial` "
            "(or `make docs`, which runs what is missing)"
        )
    unfit = [n.name for n in notebooks if not publishable(executed_dir / n.name)]
    if unfit:
        raise ValueError(
            f"{executed_dir}: the executed chapters {unfit} failed or ran with other parameters "
            "than the site's defaults: run `make docs` without --no-run, which runs them again"
        )
    if source_dir.exists():
        shutil.rmtree(source_dir)
    (source_dir / "notebooks").mkdir(parents=True)
    for notebook in notebooks:
        shutil.copy2(executed_dir / notebook.name, source_dir / "notebooks" / notebook.name)
    readme_figures = runner.REPO_ROOT / "figures" / "readme"
    if readme_figures.is_dir():
        shutil.copytree(readme_figures, source_dir / "figures" / "readme")
    chapters = "\n".join(f"notebooks/{n.stem}" for n in notebooks)
    toctree = (
        f"\n\n```{{toctree}}\n:hidden:\n:caption: Chapters\n\n{chapters}\n```\n\n"
        "```{toctree}\n:hidden:\n:caption: Reference\n\napi\n```\n"
    )
    readme = (runner.REPO_ROOT / "README.md").read_text()
    (source_dir / "index.md").write_text(readme + toctree)
    (source_dir / "api.rst").write_text(API_INDEX)
    return source_dir


def build(source_dir: Path, html_dir: Path, quiet: bool = True) -> None:
    """Run Sphinx (``docs/conf.py``) on ``source_dir`` into ``html_dir``.

    Warnings count as errors (``-W``; ``--keep-going`` lists them all first), so that a
    docstring Sphinx cannot read, or a page that lost its figure, fails ``make docs`` and the
    site test instead of scrolling past.

    Raises:
        RuntimeError: when Sphinx reports a failure (its messages were printed above).
    """
    from sphinx.cmd.build import build_main

    arguments = ["-b", "html", "-W", "--keep-going", "-c", str(DOCS_DIR)]
    arguments += ["-d", str(html_dir.parent / "doctrees")]
    status = build_main([*arguments, *(["-q"] if quiet else []), str(source_dir), str(html_dir)])
    if status:
        raise RuntimeError(f"sphinx-build failed (exit status {status}) on {source_dir}")


class _Images(HTMLParser):
    """The ``src`` of every ``<img>`` of one page."""

    def __init__(self) -> None:
        super().__init__()
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.sources.extend(value for name, value in attrs if name == "src" and value)


def page_images(page: Path) -> list[Path]:
    """The local pictures ``page`` shows that exist on disk (data: URIs count as present)."""
    parser = _Images()
    parser.feed(page.read_text(errors="replace"))
    found = []
    for source in parser.sources:
        if source.startswith("data:image"):
            found.append(page)
        elif not source.startswith(("http:", "https:")) and (page.parent / source).is_file():
            found.append(page.parent / source)
    return found


def notebook_images(path: Path) -> int:
    """How many pictures the outputs of the notebook at ``path`` hold."""
    notebook = nbformat.read(path, as_version=4)
    return sum(
        any(kind in output.get("data", {}) for kind in IMAGE_TYPES)
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
    )


def check_site(html_dir: Path, source_dir: Path, notebooks: list[Path]) -> list[str]:
    """What is wrong with the built site (empty when nothing): one line per problem."""
    problems = []
    for notebook in notebooks:
        page = html_dir / "notebooks" / f"{notebook.stem}.html"
        if not page.is_file():
            problems.append(f"{notebook.stem}: no page {page}")
            continue
        expected = notebook_images(source_dir / "notebooks" / notebook.name)
        shown = len(page_images(page))
        if expected == 0 or shown < expected:
            problems.append(
                f"{notebook.stem}: the page shows {shown} pictures, the executed notebook "
                f"holds {expected}"
            )
    index = html_dir / "index.html"
    pictures = len(MARKDOWN_IMAGE.findall((source_dir / "index.md").read_text()))
    if not index.is_file():
        problems.append(f"no landing page {index}")
    elif len(page_images(index)) < pictures:
        problems.append(
            f"index.html shows {len(page_images(index))} pictures, the README {pictures}"
        )
    problems += [f"no API page {name}" for name in API_PAGES if not (html_dir / name).is_file()]
    return problems


def folder_size(folder: Path) -> int:
    """Bytes of every file under ``folder``."""
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def build_site(executed_dir: Path, build_dir: Path, notebooks: list[Path]) -> Path:
    """Stage, build and check the site; return the folder of its ``index.html``.

    Raises:
        RuntimeError: Sphinx failed, or :func:`check_site` found problems (listed).
    """
    started = time.perf_counter()
    source = stage(executed_dir, build_dir / "source", notebooks)
    html = build_dir / "html"
    build(source, html)
    problems = check_site(html, source, notebooks)
    if problems:
        raise RuntimeError("the site is incomplete:\n  " + "\n  ".join(problems))
    print(
        f"Site: {runner.display(html / 'index.html')} ({len(notebooks)} chapters, "
        f"{folder_size(html) / 2**20:.1f} MiB) built in {time.perf_counter() - started:.0f} s"
    )
    return html


def main(argv: list[str] | None = None) -> int:
    """``make docs``: run the stale chapters, then build and check the site."""
    parser = argparse.ArgumentParser(prog="cormult-docs", description=__doc__.split("\n")[0])
    parser.add_argument("--executed-dir", type=Path, default=EXECUTED_DIR)
    parser.add_argument("--build-dir", type=Path, default=BUILD_DIR)
    parser.add_argument(
        "--no-run", action="store_true", help="build from the executed copies as they are"
    )
    args = parser.parse_args(argv)
    notebooks = runner.discover_notebooks()
    stale = [] if args.no_run else stale_chapters(notebooks, args.executed_dir, newest_change())
    if stale:
        print(f"Running {len(stale)} chapters whose executed copy is missing or stale.")
        arguments = [str(path) for path in stale] + ["--executed-dir", str(args.executed_dir)]
        if runner.main(arguments):
            return 1
    try:
        build_site(args.executed_dir, args.build_dir, notebooks)
    except (FileNotFoundError, RuntimeError, ValueError) as error:
        print(f"make docs: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
