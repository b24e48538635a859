"""The notebooks' text, as a learner meets it on Colab and on the course site.

- No control character (a tab, a form feed, ...) in any cell: one usually means a LaTeX command written in a Python
  string that is not raw (``"\\frac"`` holds a form feed and ``rac``), which no reader can see in the source.
- Every formula parses. The site and Jupyter typeset formulas with MathJax in a browser; here each one goes through
  matplotlib's mathtext, which reads the same TeX for the commands the notebooks use. Where MathJax knows a spelling
  that mathtext does not, `to_mathtext` rewrites it first (the table says what and why), so a formula that still
  fails is broken.
- Every link is absolute (Colab opens a notebook on its own, where ``../docs`` leads nowhere), every address on
  GitHub, raw.githubusercontent.com, Colab or the course site is this project's, as pyproject.toml's
  ``[project.urls]`` sets it, and names a file that the repository has.
"""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
from IPython.core.inputtransformer2 import TransformerManager
from matplotlib import mathtext

import nstlib
from nstlib import course

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
#: pyproject.toml's [project.urls], read here on its own (`Key = "value"` lines; tomllib is Python 3.11+).
URLS = dict(re.findall(r'^(\w+) = "([^"]+)"$', (ROOT / "pyproject.toml").read_text(encoding="utf-8")
                       .split("[project.urls]\n")[1].split("\n[")[0], flags=re.M))
REPOSITORY = URLS["Repository"]  # https://github.com/OWNER/NAME
OWNER_NAME = REPOSITORY.removeprefix("https://github.com/")

#: MathJax spellings that mathtext lacks, rewritten before parsing; each changes how a formula is written or sized,
#: never what it says.
MATHJAX_TO_MATHTEXT = [
    (r"\\[bB]igg?[lrm]?(?![A-Za-z])", ""),  # \big( \Big[ \bigl ...: delimiter sizes, which mathtext chooses itself
    (r"\\[lr]Vert(?![A-Za-z])", r"\\Vert"),  # \lVert x \rVert: a norm's left and right bars
    (r"\\[lr]vert(?![A-Za-z])", r"\\vert"),
    (r"\\ge(?![A-Za-z])", r"\\geq"),  # TeX's short names
    (r"\\le(?![A-Za-z])", r"\\leq"),
    (r"\\tfrac(?![A-Za-z])", r"\\frac"),  # a fraction in text size
    (r"\\frac\s*([0-9A-Za-z])\s*([0-9A-Za-z])", r"\\frac{\1}{\2}"),  # TeX's one-token arguments: \frac12
    (r"\\sqrt\s*([0-9A-Za-z])", r"\\sqrt{\1}"),  # \sqrt 2
]
#: mathtext has no environments (\begin{pmatrix} ... \end{pmatrix}, aligned, cases): each cell of one, between
#: & and \\, is parsed as a formula of its own.
ENVIRONMENT = re.compile(r"\\begin\{(\w+\*?)\}(.*?)\\end\{\1\}", re.S)
PARSER = mathtext.MathTextParser("agg")


def cells(kind: str | None = None) -> list[tuple[str, int, str]]:
    """(notebook name, cell index, source) of every cell, or of every cell of `kind` ("markdown", "code")."""
    found = []
    for path in NOTEBOOKS:
        for i, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if kind in (None, cell["cell_type"]):
                found.append((path.name, i, "".join(cell["source"])))
    return found


def formulas(markdown: str) -> tuple[list[str], str]:
    """The formulas of a markdown cell ($$...$$ and $...$, outside code) and the prose left around them."""
    prose = re.sub(r"```.*?```|`[^`\n]*`", " ", markdown, flags=re.S)  # code blocks and spans hold no formulas
    found: list[str] = []

    def take(match: re.Match[str]) -> str:
        found.append(match[1])
        return " "

    prose = re.sub(r"\$\$(.+?)\$\$", take, prose, flags=re.S)
    prose = re.sub(r"\$(.+?)\$", take, prose, flags=re.S)
    return found, prose


def to_mathtext(formula: str) -> list[str]:
    """`formula` as one or more pieces mathtext can parse if MathJax can (see MATHJAX_TO_MATHTEXT, ENVIRONMENT)."""
    pieces: list[str] = []

    def cells_of(match: re.Match[str]) -> str:
        pieces.extend(cell for row in match[2].split(r"\\") for cell in row.split("&") if cell.strip())
        return " "

    rest = ENVIRONMENT.sub(cells_of, formula)
    out = []
    for piece in [rest, *pieces]:
        for pattern, replacement in MATHJAX_TO_MATHTEXT:
            piece = re.sub(pattern, replacement, piece)
        if piece.strip():
            out.append(piece.replace("\n", " "))
    return out


def parse_error(formula: str) -> str | None:
    """None if every piece of `formula` parses with mathtext, else mathtext's complaint."""
    for piece in to_mathtext(formula):
        try:
            PARSER.parse(f"${piece}$")
        except ValueError as e:
            return f"{piece!r}: {str(e).splitlines()[-1]}"
    return None


def test_no_cell_holds_a_control_character() -> None:
    for name, i, source in cells():
        bad = sorted({repr(c) for c in source if (ord(c) < 32 and c != "\n") or ord(c) == 127})
        assert not bad, f"{name} cell {i}: control characters {bad} (a LaTeX command in a string that is not raw?)"


def test_every_formula_in_the_text_parses() -> None:
    count = 0
    for name, i, source in cells("markdown"):
        found, prose = formulas(source)
        assert "$" not in prose, f"{name} cell {i}: a $ without its pair"
        for formula in found:
            count += 1
            assert parse_error(formula) is None, f"{name} cell {i}: {parse_error(formula)}"
    assert count > 200  # the formulas were found


def test_formulas_in_code_are_raw_and_parse() -> None:
    """A formula in a code cell (a plot title, a printed line) is a string the kernel builds: it must hold no control
    character (a raw string keeps \\frac as it is) and must parse, since matplotlib typesets it."""
    for name, i, source in cells("code"):
        tree = ast.parse(TransformerManager().transform_cell(source))  # %pip and other magics as Python
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "$" in node.value:
                for formula in formulas(node.value)[0]:
                    assert not re.search(r"[\x00-\x09\x0b-\x1f]", formula), f"{name} cell {i}: use a raw string"
                    assert parse_error(formula) is None, f"{name} cell {i}: {parse_error(formula)}"


@pytest.mark.parametrize(("formula", "parses"), [
    (r"\frac{1}{2}\big(x - y\big)^2", True), (r"\lVert G - A \rVert^2, a \ge 0, \tfrac12, \sqrt 2", True),
    (r"\begin{pmatrix}a & b\\ c & \frac{1}{d}\end{pmatrix}", True), (r"\mathcal{L}_\text{TV}", True),
    ("\\mathcal{L}_\text{TV} = \frac{1}{2}", False),  # a tab and a form feed, from a string that was not raw
    (r"\frac{1}{2", False), (r"\fracc{1}{2}", False), (r"\begin{pmatrix}a & \frca{b}\end{pmatrix}", False),
])
def test_the_formula_check_can_fail(formula: str, parses: bool) -> None:
    assert (parse_error(formula) is None) == parses


def _addresses(text: str) -> list[str]:
    return re.findall(r"https?://[^\s)\"'<>\]]+", text)


def test_every_link_is_absolute_and_every_project_address_is_this_repository() -> None:
    """Markdown links and HTML src/href go to absolute addresses; those on GitHub, raw.githubusercontent.com, Colab and
    the course site are this repository's (pyproject.toml's [project.urls]) and name files that exist in it."""
    raw = f"https://raw.githubusercontent.com/{OWNER_NAME}/main/"
    blob = f"{REPOSITORY}/blob/main/"
    colab = f"https://colab.research.google.com/github/{OWNER_NAME}/blob/main/"
    checked = 0
    for name, i, source in cells():
        for target in re.findall(r"\]\(([^)\s]+)", source) + re.findall(r"(?:src|href)=\"([^\"]+)\"", source):
            assert target.startswith(("https://", "#")), f"{name} cell {i}: relative link {target}"
        for url in _addresses(source):
            url = url.rstrip(".,;:")
            if url.startswith("https://colab.research.google.com/assets/"):  # the badge's picture
                continue
            hosts = ("github.com/", "githubusercontent.com/", "colab.research.google.com/", "github.io/")
            if not any(host in url for host in hosts):
                continue
            assert url.startswith((raw, blob, colab, URLS["Documentation"])) or url == REPOSITORY, \
                f"{name} cell {i}: {url} is not this project's address ({REPOSITORY}, {URLS['Documentation']})"
            for prefix in (raw, blob, colab):
                if url.startswith(prefix):
                    path = url.removeprefix(prefix).split("#")[0]
                    assert (ROOT / path).exists(), f"{name} cell {i}: {url}: the repository has no {path}"
                    checked += 1
    assert checked >= 2 * len(NOTEBOOKS)  # at least the badges and a figure or note per notebook


def test_nstlib_reads_the_addresses_from_pyproject() -> None:
    assert nstlib.project_urls() == URLS
    assert course.COLAB_INSTALL == f"%pip install -q git+{REPOSITORY}"
    assert course.DOCS_URL == f"https://raw.githubusercontent.com/{OWNER_NAME}/main/docs"
    from nstlib.io.download import USER_AGENT

    assert f"({REPOSITORY})" in USER_AGENT
    installs = [(name, line.strip()) for name, _, source in cells("code") for line in source.splitlines()
                if line.strip().startswith(("%pip", "!pip")) and ("git+" in line or "nstlib" in line)]
    assert len(installs) >= len(NOTEBOOKS)  # every notebook installs nstlib on Colab, from this repository
    for name, line in installs:
        assert line == course.COLAB_INSTALL, f"{name}: {line}"
