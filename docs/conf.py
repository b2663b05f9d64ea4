"""Sphinx configuration of the tutorial's site (``make docs``; see cormult_lib/tutorial/site.py).

The source folder is staged by :func:`cormult_lib.tutorial.site.stage`: the README as the
landing page, the executed chapters under ``notebooks/``, the README's pictures and ``api.rst``.
MyST-NB renders the notebooks' stored outputs (it never executes them); autosummary and autodoc
write the API reference from the library's docstrings (napoleon reads their Google style).
sphinx-autoapi was measured too: 4.4 min against 0.9 min for the same pages on 2 cores.
"""

project = "CorMulT and CLIP-MSA, step by step"
author = "the cormult_lib authors"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.napoleon"]

# Notebooks are executed by `make tutorial` (or by nbval in `make test`), never here.
nb_execution_mode = "off"
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
# The README links to repository files (pyproject.toml, cormult_lib/...) that are not pages;
# the library re-exports classes from its packages, which gives two targets per name.
suppress_warnings = ["myst.xref_missing", "myst.header", "ref.python"]

autosummary_generate = True
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
# The packages' docstrings list their modules as "Modules:" with "name: what it holds" entries.
napoleon_custom_sections = [("Modules", "params_style")]

html_theme = "sphinx_book_theme"
html_title = project
html_theme_options = {"show_toc_level": 2, "home_page_in_toc": True}
