"""Sphinx configuration for the adjointcore documentation.

Build (warnings are errors)::

    python -m sphinx -W -b html docs docs/_build

The API reference lists the names in each public module's ``__all__`` (autosummary with
``autosummary_ignore_module_all = False``); the gallery scripts in ``docs/gallery`` are run by
sphinx-gallery on every build, so a broken example fails the build.
"""
from __future__ import annotations

import inspect
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))            # the packages, without an install
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("ADJOINTCORE_THREADS", "1")   # examples are small; keep them serial

import adjointcore  # noqa: E402

# -- project --------------------------------------------------------------------------------------
project = "adjointcore"
author = "the adjointcore contributors"
copyright = "the adjointcore contributors"
release = adjointcore.__version__
version = release

# -- extensions -----------------------------------------------------------------------------------
extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
    "myst_parser",
    "sphinx_gallery.gen_gallery",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = ["_build", "**.ipynb_checkpoints", "gallery/*.py", "gallery/README.rst",
                    "gallery/GALLERY_HEADER.rst", "auto_examples/*.ipynb",
                    "auto_examples/*.py", "auto_examples/*.zip"]
default_role = "code"        # `x` is inline code, as in the docstrings' numpydoc style
pygments_style = "sphinx"

# -- API reference: public names only -------------------------------------------------------------
autosummary_generate = True
autosummary_ignore_module_all = False      # list exactly each module's __all__
autosummary_imported_members = False
autodoc_member_order = "bysource"
autodoc_typehints = "none"                 # numpydoc sections carry the types
autodoc_preserve_defaults = True
autoclass_content = "class"
numpydoc_show_class_members = False        # methods are documented inline on the class page
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False
numpydoc_attributes_as_param_list = True

# -- MyST (protocols.md is included as written) ---------------------------------------------------
myst_heading_anchors = 3
myst_enable_extensions = ["dollarmath"]

# -- gallery --------------------------------------------------------------------------------------
sphinx_gallery_conf = {
    "examples_dirs": "gallery",
    "gallery_dirs": "auto_examples",
    "filename_pattern": r"/plot_",          # every plot_*.py is executed
    "ignore_pattern": r"__init__\.py",
    "abort_on_example_error": True,         # a broken example fails the build
    "only_warn_on_example_error": False,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "reset_modules": ("matplotlib",),
    "matplotlib_animations": False,
    "show_memory": False,
    "plot_gallery": "True",
    "run_stale_examples": True,             # rerun unchanged examples: the library may have changed
}

# -- HTML ----------------------------------------------------------------------------------------
html_theme = "pydata_sphinx_theme"
html_title = f"adjointcore {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "secondary_sidebar_items": ["page-toc"],
    "footer_start": ["copyright"],
    "footer_end": [],
}
html_static_path: list = []
html_show_sourcelink = False
html_last_updated_fmt = None


# -- docstring helpers ----------------------------------------------------------------------------
# 1. Several docstrings cite ``[1]_`` whose ``.. [1]`` entry lives in the References section of the
#    module that defines the object. On the object's own page that target would be missing, so
#    the module's entries are appended as the object's References section (before numpydoc runs).
# 2. Module-level constants have no docstring of their own: autodoc would show the docstring of
#    their type (``dict``, ``numpy.dtype``). Their ``#:`` comment in the defining module is used
#    instead, or a one-line description of the value.
# 3. autosummary's one-line summaries: citations are dropped (their targets are not on the
#    summary page) and a first sentence cut inside an inline literal (``(N, d1, ...) -> ...``)
#    falls back to the whole first paragraph.
_CITE_USE = re.compile(r"\[(\d+)\]_")
_CITE_DEF = re.compile(r"^\.\. \[(\d+)\]")
_CITE_ANY = re.compile(r"\s*\[(?:\d+|R[0-9a-f]+-\d+)\]_")


def _module_citations(module) -> dict:
    """``{number: [lines]}`` of the ``.. [n]`` entries in ``module``'s docstring."""
    out, current = {}, None
    for line in inspect.cleandoc(getattr(module, "__doc__", None) or "").splitlines():
        m = _CITE_DEF.match(line)
        if m:
            current = m.group(1)
            out[current] = [line]
        elif current is not None and (line.startswith("   ") or not line.strip()):
            if line.strip():
                out[current].append(line)
        else:
            current = None
    return out


def _add_module_citations(app, what, name, obj, options, lines):
    used = {m.group(1) for line in lines for m in _CITE_USE.finditer(line)}
    if not used:
        return
    defined = {m.group(1) for line in lines for m in [_CITE_DEF.match(line.strip())] if m}
    missing = sorted(used - defined, key=int)
    if not missing or any(line.strip() == "References" for line in lines):
        return
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None:
        return
    entries = _module_citations(module)
    if not all(n in entries for n in missing):
        return
    lines += ["", "References", "----------"]
    for n in missing:
        lines += entries[n]


def _comment_doc(qualname: str):
    """The ``#:`` comment of a module-level name, searched in the module and its submodules."""
    from sphinx.pycode import ModuleAnalyzer
    modname, _, attr = qualname.rpartition(".")
    candidates = [modname] + sorted(m for m in sys.modules if m.startswith(modname + "."))
    for mod in candidates:
        try:
            docs = ModuleAnalyzer.for_module(mod).find_attr_docs()
        except Exception:            # noqa: BLE001 - compiled or source-less modules
            continue
        if ("", attr) in docs:
            return [line for line in docs[("", attr)]]
    return None


def _constant_doc(app, what, name, obj, options, lines):
    if what != "data":
        return
    doc = _comment_doc(name)
    if doc is None:
        if isinstance(obj, dict):
            doc = ["A ``dict`` with keys " + ", ".join(f"``{k!r}``" for k in obj) + "."]
        elif len(repr(obj)) < 120:
            doc = [f"Constant ``{obj!r}``."]
        else:
            doc = [f"Constant of type ``{type(obj).__name__}``."]
    lines[:] = doc


def _inherited_property_doc(prop: property):
    """Docstring of the property of the same name in a base class, or None."""
    fget = getattr(prop, "fget", None)
    owner = sys.modules.get(getattr(fget, "__module__", "") or "")
    for part in (getattr(fget, "__qualname__", "") or "").split(".")[:-1]:
        owner = getattr(owner, part, None)
    if not isinstance(owner, type):
        return None
    for base in owner.__mro__[1:]:
        if fget.__name__ in vars(base):
            found = vars(base)[fget.__name__]
            return found.__doc__ if isinstance(found, property) else None
    return None


def _skip_member(app, what, name, obj, skip, options):
    """Leave out members whose only text would be borrowed: NamedTuple fields ("Alias for field
    number N"; the class docstring describes them), and undocumented properties that override a
    plain class attribute (autodoc would show the docstring of ``bool``)."""
    if (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    if isinstance(obj, property) and not obj.__doc__ and not _inherited_property_doc(obj):
        return True
    return None


def _patch_autosummary_summary() -> None:
    from sphinx.ext import autosummary

    extract = autosummary.extract_summary

    def summary(doc, settings):
        doc = [_CITE_ANY.sub("", line) for line in doc]
        text = extract(doc, settings)
        if text.count("``") % 2:
            paragraph = []
            for line in doc:
                if not line.strip():
                    if paragraph:
                        break
                    continue
                paragraph.append(line.strip())
            text = " ".join(paragraph)
        return text

    autosummary.extract_summary = summary


def setup(app):
    _patch_autosummary_summary()
    app.connect("autodoc-process-docstring", _constant_doc, priority=100)
    app.connect("autodoc-process-docstring", _add_module_citations, priority=200)
    app.connect("autodoc-skip-member", _skip_member)
