"""Sphinx configuration of the pyro_xform documentation.

Build it with ``sphinx-build -W -b html docs docs/_build/html`` (the README's command). The
tutorials are executed at build time; with ``CI`` set they run in smoke mode (few steps).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyro_xform

HERE = Path(__file__).parent

project = "pyro_xform"
author = "pyro_xform developers"
release = version = pyro_xform.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# The tutorials live in tutorials/ as jupytext percent files; the docs render copies of them.
_TUTORIALS = HERE / "tutorials"
shutil.rmtree(_TUTORIALS, ignore_errors=True)
_TUTORIALS.mkdir()
for _source in sorted((HERE.parent / "tutorials").glob("[0-9]*.py")):
    shutil.copy(_source, _TUTORIALS / _source.name)

nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = "force"
nb_execution_timeout = 1800
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]

source_suffix = {".md": "myst-nb", ".py": "myst-nb"}
exclude_patterns = ["_build", "conf.py", "Thumbs.db", ".DS_Store"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

html_theme = "furo"
html_title = "pyro_xform"
