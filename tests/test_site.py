"""The documentation site: staging, the checks of a built site, and the build itself.

``test_the_site_holds_every_chapter`` is ``make test``'s second step (``-m site``): it builds
the site from the notebooks nbval executed in the first step (``$CORMULT_EXECUTED_DIR``, see
the root conftest.py), so nothing runs twice. The other tests need no Sphinx run.
"""

import os
import time
from pathlib import Path

import nbformat
import pytest

from cormult_lib.tutorial import runner
from cormult_lib.tutorial.site import (
    API_PAGES,
    build_site,
    check_site,
    page_images,
    stage,
    stale_chapters,
)

# A 1 x 1 PNG, base64.
PNG = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def _executed(folder: Path, name: str, pictures: int) -> Path:
    """An executed notebook ``name`` with ``pictures`` PNG outputs."""
    outputs = [
        nbformat.v4.new_output("display_data", data={"image/png": PNG}) for _ in range(pictures)
    ]
    cell = nbformat.v4.new_code_cell("plot()", outputs=outputs)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), cell])
    folder.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, folder / name)
    return folder / name


def _page(path: Path, images: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("<html><body>" + "".join(f'<img src="{s}"/>' for s in images) + "</body>")


def test_check_site_finds_missing_pages_and_pictures(tmp_path: Path) -> None:
    source, html = tmp_path / "source", tmp_path / "html"
    _executed(source / "notebooks", "01_a.ipynb", pictures=2)
    _executed(source / "notebooks", "02_b.ipynb", pictures=1)
    (source / "index.md").write_text("# R\n![one](figures/readme/x.png)\n")
    (html / "_images").mkdir(parents=True)
    (html / "_images" / "p.png").write_bytes(b"png")
    _page(html / "notebooks" / "01_a.html", ["../_images/p.png", "../_images/gone.png"])
    _page(html / "index.html", [])
    notebooks = [Path("01_a.ipynb"), Path("02_b.ipynb")]
    problems = check_site(html, source, notebooks)
    assert any("01_a: the page shows 1 pictures, the executed notebook holds 2" in p
               for p in problems), problems
    assert any(p.startswith("02_b: no page") for p in problems), problems
    assert any("index.html shows 0 pictures, the README 1" in p for p in problems), problems
    assert sum("no API page" in p for p in problems) == len(API_PAGES)
    # Mended, the same site passes.
    _page(html / "notebooks" / "01_a.html", ["../_images/p.png", f"data:image/png;base64,{PNG}"])
    _page(html / "notebooks" / "02_b.html", ["../_images/p.png"])
    _page(html / "index.html", ["_images/p.png"])
    for name in API_PAGES:
        _page(html / name, [])
    assert check_site(html, source, notebooks) == []
    assert len(page_images(html / "notebooks" / "01_a.html")) == 2


def test_stale_chapters_and_staging(tmp_path: Path) -> None:
    notebooks = [tmp_path / "01_a.ipynb", tmp_path / "02_b.ipynb"]
    for path in notebooks:
        path.write_text("{}")
    executed = tmp_path / "executed"
    copy = _executed(executed, "01_a.ipynb", pictures=1)
    later = time.time() + 10
    os.utime(copy, (later, later))
    assert stale_chapters(notebooks, executed, since=0) == [notebooks[1]], "02 was never run"
    assert stale_chapters(notebooks, executed, since=later + 1) == notebooks, "library changed"
    for papermill in ({"exception": True, "parameters": {}}, {"parameters": {"profile": "paper"}}):
        notebook = nbformat.read(copy, as_version=4)
        notebook.metadata["papermill"] = papermill  # a failed run; a run of other parameters
        nbformat.write(notebook, copy)
        os.utime(copy, (later, later))
        assert stale_chapters(notebooks, executed, since=0) == notebooks, papermill
        with pytest.raises(ValueError, match=r"chapters \['01_a.ipynb'\] failed or ran with"):
            stage(executed, tmp_path / "source", notebooks[:1])  # --no-run builds no such page
    notebook.metadata["papermill"] = {"exception": None, "parameters": {"output_dir": "o"}}
    nbformat.write(notebook, copy)
    os.utime(copy, (later, later))
    assert stale_chapters(notebooks, executed, since=0) == [notebooks[1]]
    with pytest.raises(FileNotFoundError, match=r"lacks the executed chapters \['02_b.ipynb'\]"):
        stage(executed, tmp_path / "source", notebooks)
    source = stage(executed, tmp_path / "source", notebooks[:1])
    index = (source / "index.md").read_text()
    assert index.startswith((runner.REPO_ROOT / "README.md").read_text())
    assert "notebooks/01_a" in index and (source / "notebooks" / "01_a.ipynb").is_file()
    assert "autosummary" in (source / "api.rst").read_text()


@pytest.mark.site
# Sphinx 9 warns about its own API in sphinx-book-theme, hundreds of times per build.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::PendingDeprecationWarning")
def test_the_site_holds_every_chapter(tmp_path: Path) -> None:
    folder = os.environ.get("CORMULT_EXECUTED_DIR")
    if not folder:
        pytest.skip("CORMULT_EXECUTED_DIR is unset: `make test` executes the notebooks into it "
                    "first, then runs this test")
    notebooks = runner.discover_notebooks()
    started = time.perf_counter()
    html = build_site(Path(folder), tmp_path, notebooks)  # raises, listing what is missing
    print(f"site of {len(notebooks)} chapters built in {time.perf_counter() - started:.0f} s")
    for notebook in notebooks:
        title = nbformat.read(notebook, as_version=4).cells[0].source.splitlines()[0]
        page = (html / "notebooks" / f"{notebook.stem}.html").read_text()
        assert title.lstrip("# ").split(":")[0] in page, f"{notebook.stem}: title missing"
