"""Sphinx configuration of the dkron-lab docs (build command: top of docs/index.md).

The pages are MyST Markdown. Three pages are generated while the docs build, from the code as it
is: the HTTP API from the OpenAPI document the server serves (``_ext/openapi_page.py``), the
Python reference from docstrings (autodoc), and the import graph from an AST walk of the package
(``_ext/importgraph.py``). The build needs no network: no intersphinx, no remote images.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS / "_ext"))
sys.path.insert(0, str(DOCS.parent))  # the package itself, also when it is not installed

from dkron_lab import __version__  # noqa: E402

project = "dkron-lab"
author = "the dkron-lab authors"
copyright = "the dkron-lab authors"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.graphviz",
    "client_operations",
    "openapi_page",
    "importgraph",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
# Quotes become typographic, but `--flag` stays two hyphens, as typed.
smartquotes_action = "qe"

# -- MyST --------------------------------------------------------------------------------------
myst_enable_extensions = ["colon_fence", "deflist"]
# The pages link to each other's sections as GitHub renders them: `page.md#heading-slug`.
myst_heading_anchors = 4

# -- autodoc -----------------------------------------------------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_class_signature = "separated"
autodoc_preserve_defaults = True

# -- graphviz ------------------------------------------------------------------------------------
# The import graph is drawn at build time by Graphviz's `dot` (apt-get install graphviz), as
# SVG, so the pages need no script or network to show it.
graphviz_output_format = "svg"

# -- warnings: the build runs with -W ------------------------------------------------------------
suppress_warnings: list[str] = []  # none needed today; name each one added, and why

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"dkron-lab {release}"
html_static_path = ["_static"]
html_css_files = ["dkron-lab.css"]
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    # The import graphs get the page's full width: no "on this page" column there.
    "secondary_sidebar_items": {"**": ["page-toc"], "reference/imports": []},
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# Every page's sidebar shows the whole site, grouped as on the landing page (the theme's own
# section navigation would be empty: the sections are captions, not pages).
html_sidebars = {"**": ["globaltoc.html"], "index": []}
