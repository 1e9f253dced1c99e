"""Sphinx configuration of the documentation site: ``./dev docs`` builds it into ``docs/_build/html``.

Warnings are errors there (``-W --keep-going``) and the build is nitpicky (``-n``): every
cross-reference to this package must resolve. References to other projects (Airflow, httpx, the
standard library) are not resolved, because the build runs offline (no intersphinx inventories):
``nitpick_ignore_regex`` below lets exactly those through.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

project = "airflow-provider-packly"
author = "airflow-provider-packly developers"
copyright = "airflow-provider-packly developers"

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "README.md"]

html_theme = "furo"
html_title = "Packly provider for Apache Airflow"
html_static_path: list[str] = []

# Markdown: heading anchors so that [text](page.md#section) links are checked too.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence"]

autodoc_default_options = {
    "members": True,
    "show-inheritance": True,
    "member-order": "bysource",
}
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
autodoc_inherit_docstrings = False
# Source pages for the package only (a default such as time.monotonic would list a module
# "time" whose source page cannot be built).
viewcode_follow_imported_members = False

# Offline build: names outside this package (Airflow, httpx, anyio, pendulum, the standard
# library, typing constructs) cannot be resolved without intersphinx. Names of the package's
# internals (private bases such as ``_PacklyBaseOperator``, modules outside the public API
# below, which are being reorganised) are not documented either. Anything public must resolve.
PUBLIC_MODULES = r"(hooks\.packly|operators\.packly|sensors\.packly|triggers\.packly|exceptions|connection)"
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"^(?!airflow_provider_packly\b).*"),
    (r"py:.*", rf"^airflow_provider_packly\.(?!{PUBLIC_MODULES}\.).*"),
    (r"py:.*", r"^airflow_provider_packly\..*\._\w+$"),
]


def _public_bases(app: object, name: str, obj: object, options: object, bases: list[type]) -> None:
    """Show a class's public ancestors instead of a private base (``_PacklyBaseOperator`` ->
    ``CheckedArgumentsMixin``, ``BaseOperator``), so "Bases:" names classes a reader can look up."""
    public: list[type] = []
    pending = list(bases)
    while pending:
        base = pending.pop(0)
        if base.__name__.startswith("_"):
            pending[:0] = list(base.__bases__)
        elif base not in public:
            public.append(base)
    bases[:] = public


def setup(app: object) -> None:
    """Sphinx extension hook of this configuration."""
    app.connect("autodoc-process-bases", _public_bases)  # type: ignore[attr-defined]
