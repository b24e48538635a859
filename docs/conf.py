"""Sphinx configuration of the course site (`python docs/build_site.py` builds it).

myst-nb renders the executed copies of the notebooks in docs/course/ without running them, MyST reads the
Markdown notes in docs/, and autodoc writes the API reference from nstlib's docstrings.
"""

import importlib
import inspect
import json
import re
from importlib import metadata
from pathlib import Path

import nstlib
from nstlib.course import DOCS_PAGES, DOCS_URL

ROOT = Path(__file__).resolve().parents[1]
REPOSITORY = nstlib.project_urls()["Repository"]  # set once, in pyproject.toml's [project.urls]

project = "nstlib"
author = "the nstlib authors"
copyright = "nstlib authors, MIT licence"
release = version = metadata.version("nstlib")

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.linkcode"]
# $...$ and $$...$$ in the notebooks and notes are formulas; MathJax typesets them in the browser.
myst_enable_extensions = ["dollarmath", "amsmath"]
nb_execution_mode = "off"  # docs/build_site.py executes the notebooks; Sphinx only reads them
exclude_patterns = ["_build", "**.ipynb_checkpoints", "course/.*"]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
napoleon_google_docstring = True

html_theme = "sphinx_book_theme"
html_title = "nstlib: neural style transfer, taught"
html_theme_options = {
    "repository_url": REPOSITORY,
    "use_repository_button": True,
    "path_to_docs": "docs",
    "show_toc_level": 2,
}
default_role = "code"  # `name` in a docstring is code, as in Markdown


def linkcode_resolve(domain: str, info: dict[str, str]) -> str | None:
    """The [source] link of an API entry: its lines on GitHub (a link costs the build nothing, unlike highlighted
    copies of every module)."""
    if domain != "py" or not info["module"].startswith("nstlib"):
        return None
    obj = importlib.import_module(info["module"])
    for name in info["fullname"].split("."):
        obj = getattr(obj, name, None)
    try:
        lines, start = inspect.getsourcelines(inspect.unwrap(obj))
        path = Path(inspect.getsourcefile(inspect.unwrap(obj))).resolve().relative_to(ROOT)
    except (TypeError, OSError, ValueError):  # a constant, a builtin, or code outside the repository
        return None
    return f"{REPOSITORY}/blob/main/{path.as_posix()}#L{start}-L{start + len(lines) - 1}"


def _course_page(app, docname: str, source: list[str]) -> None:
    """A notebook as a page of the site.

    Links point into the site: a notebook reaches a note as DOCS_PAGES/NAME.md, a figure as DOCS_URL/NAME (absolute
    addresses on GitHub, so that Colab follows them too) and another notebook on GitHub; on the site they are ../NAME
    and the notebook's page. After the introduction (the first cell), a line says how the outputs below were made,
    from what docs/build_site.py recorded when it executed the notebook.
    """
    if not docname.startswith("course/"):
        return
    text = source[0]
    for prefix in (f"]({DOCS_PAGES}/", f"]({DOCS_URL}/"):
        text = text.replace(prefix, "](../")
    text = text.replace(f"]({REPOSITORY}/blob/main/notebooks/", "](")
    notebook = json.loads(text)
    run = notebook["metadata"]["nstlib"]
    printed = "".join("".join(out.get("text", "")) for out in notebook["cells"][2]["outputs"])  # the setup cell's
    device = re.search(r"device: (\S+)", printed)[1]
    mode = re.search(r"^CPU mode: [^,]+, \d+ steps", printed, re.MULTILINE)  # else full size: build_site unsets FAST
    minutes, seconds = divmod(run["seconds"], 60)
    note = (f"*The outputs on this page come from running the notebook top to bottom on {run['executed']} "
            f"({mode[0] if mode else 'full size'}; device {device}, a {run['cores']}-core {run['machine']} "
            f"machine, torch {run['torch']}): {minutes} min {seconds} s.*")
    if mode:
        note += " *On a GPU the notebook runs at full size: larger pictures, more steps.*"
    notebook["cells"].insert(1, {"cell_type": "markdown", "id": "site-run-note", "metadata": {}, "source": note})
    source[0] = json.dumps(notebook)


def setup(app) -> None:
    app.connect("source-read", _course_page)
