"""Sphinx configuration of the orchestrator documentation.

Build it with ``python -m sphinx -W -b html docs docs/_build/html`` from the repository's
root; the test suite builds it the same way (tests/test_docs.py). The build reads nothing
from the network: intersphinx is on, with no inventories to fetch.
"""

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # autodoc imports the package from this checkout

import orchestrator  # noqa: E402

project = "orchestrator"
author = "the orchestrator authors"
copyright = "the orchestrator authors"
version = release = orchestrator.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.intersphinx"]
intersphinx_mapping: dict = {}  # none: a build must not need the network
intersphinx_disabled_reftypes = ["*"]

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_class_signature = "mixed"
autodoc_default_options = {"show-inheritance": True}

exclude_patterns = ["_build"]
templates_path: list = []
html_static_path: list = []
html_theme = "alabaster"
html_title = f"orchestrator {release}"
html_theme_options = {"description": "Run many background workers on one machine.",
                      "fixed_sidebar": True, "page_width": "1200px",
                      "sidebar_width": "230px"}
pygments_style = "sphinx"
highlight_language = "none"
