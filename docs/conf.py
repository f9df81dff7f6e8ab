"""Sphinx configuration of the pckeypoints documentation: ``bash scripts/docs.sh`` builds it into docs/_build/html."""
import os
import re
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS / "_ext")]  # the checkout's package, then the generators
os.environ.setdefault("PCKP_NO_BUILD", "1")  # importing for autodoc never compiles an extension

project = "pckeypoints"
author = "the pckeypoints authors"
copyright = "2026, the pckeypoints authors"
release = version = "0.1.0"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings: Args, Returns, Examples, Attributes
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_parser",  # the pages are Markdown, as the README and experiments/results are
    "sphinxarg.ext",  # the CLI reference from pckeypoints.cli.build_parser
    "pckp_docs",  # the configuration reference and the evidence pages, generated (docs/_ext/pckp_docs.py)
]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
exclude_patterns = ["_build", "_generated/config_fields.md"]  # the latter: included by config.md
templates_path = []

# Warnings are errors in CI (-W -n): every internal reference must resolve. What lives outside this project
# (torch, numpy, PyG, the standard library) is not linked: no intersphinx (the build needs no network).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(?!pckeypoints\b|pointnet2\b|viz\b).*"),
    (r"py:.*", r"pckeypoints\..*\.(Tensor|Path|Module|np|torch|nn|Dataset|DataLoader|Data|Batch)\b.*"),
    (r"py:.*", r".*\._\w+.*"),  # private modules and classes are not documented
]

# autodoc + napoleon: Google-style docstrings, shapes such as ``(B, K, N)`` as literals, doctests as code.
autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented"
autodoc_mock_imports = []
autoclass_content = "both"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
napoleon_custom_sections = ["Shapes", "Shape"]

myst_enable_extensions = ["dollarmath", "colon_fence", "deflist"]
myst_heading_anchors = 3

html_theme = "furo"
html_title = "pckeypoints"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_theme_options = {"navigation_with_keys": True, "top_of_page_buttons": []}
highlight_language = "text"  # untagged blocks (argparse usage, TOML-like layouts) are not lexed as Python


# The docstrings are written to read as plain text too: |x - y| is an absolute value (not a reST substitution)
# and ``sigma``² a literal followed by a superscript. Both are escaped here rather than in every docstring.
_LITERAL = re.compile(r"(``.+?``|`[^`]+`)")


def _plain_text_to_rest(line: str) -> str:
    parts = _LITERAL.split(line)
    for i in range(0, len(parts), 2):  # outside literals and roles
        parts[i] = parts[i].replace("|", "\\|")
        if i and parts[i][:1] and not re.match(r"[\s.,;:!?)\]}'\"/\\-]", parts[i]):
            parts[i] = "\\ " + parts[i]  # a literal ends only before a space or punctuation
    return "".join(parts)


def _escape_docstring(app, what, name, obj, options, lines):
    literal_indent = None  # inside a literal block (after "::") indented deeper than this
    for i, line in enumerate(lines):
        indent = len(line) - len(line.lstrip())
        if literal_indent is not None and (not line.strip() or indent > literal_indent):
            continue
        literal_indent = indent if line.rstrip().endswith("::") else None
        if not line.lstrip().startswith((">>>", "... ")):
            lines[i] = _plain_text_to_rest(line)


def _resolve_reexport(app, env, node, contnode):
    """``pckeypoints.data.KeypointNet`` (a package's re-export) resolves to where it is documented,
    ``pckeypoints.data.keypointnet.KeypointNet``."""
    if node.get("refdomain") != "py":
        return None
    import importlib

    target = node["reftarget"].lstrip("~.")
    module, _, name = target.rpartition(".")
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return None
    canonical = f"{getattr(obj, '__module__', '')}.{getattr(obj, '__qualname__', '')}"
    if canonical == target or not canonical.startswith(("pckeypoints.", "pointnet2.", "viz.")):
        return None
    node = node.deepcopy()
    node["reftarget"] = canonical
    return env.domains["py"].resolve_xref(env, node["refdoc"], app.builder, node["reftype"], canonical, node,
                                          contnode)


def setup(app):
    app.connect("autodoc-process-docstring", _escape_docstring)
    app.connect("missing-reference", _resolve_reexport)
