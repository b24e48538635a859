"""Project hygiene: notebooks are committed without outputs, CI runs the README's test command."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_are_committed_with_outputs_stripped_and_cell_ids() -> None:
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        ids = [cell.get("id") for cell in nb["cells"]]
        assert None not in ids and len(set(ids)) == len(ids), path.name  # nbformat 4.5 requires unique ids
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, path.name


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_project_never_reads_the_private_shared_folder() -> None:
    private = "/".join(["..", "shared"])  # spelled so that this file does not contain it
    for path in [*ROOT.glob("nstlib/**/*.py"), *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("tests/*.py"),
                 *ROOT.glob("bench/*.py"), *ROOT.glob("data/*.py")]:
        assert private not in path.read_text(), path


def test_every_notebook_opens_with_its_badge_and_the_one_install_line() -> None:
    from nstlib.course import COLAB_INSTALL

    readme = (ROOT / "README.md").read_text()
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    assert len(notebooks) >= 8
    for path in notebooks:
        cells = json.loads(path.read_text())["cells"]
        badge = f"colab.research.google.com/github/nstlib/nstlib/blob/main/notebooks/{path.name}"
        assert cells[0]["cell_type"] == "markdown" and badge in "".join(cells[0]["source"]), path.name
        setup = "".join(cells[1]["source"])
        assert '"google.colab" in sys.modules' in setup and COLAB_INSTALL in setup, path.name
        assert badge in readme, f"README does not list {path.name}"
        assert "course.setup(" in "".join(cells[2]["source"]), path.name



def test_every_solution_is_hidden_in_jupyter_on_colab_and_on_the_site() -> None:
    """Jupyter and VS Code honour `source_hidden`; Colab does not, but shows a cell whose first line is a
    `#@title ... { display-mode: "form" }` as its title alone, with the code folded away; the course site folds
    cells tagged `hide-input`."""
    solutions = 0
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if "solution" in cell["metadata"].get("tags", []):
                solutions += 1
                assert cell["metadata"].get("jupyter", {}).get("source_hidden") is True, path.name
                assert "hide-input" in cell["metadata"]["tags"], path.name  # folded on the course site (myst-nb)
                assert re.fullmatch(r'#@title .+ \{ display-mode: "form" \}\n', cell["source"][0]), path.name
    assert solutions >= 13

#: What each part of nstlib may import of nstlib: the core (what the course teaches) nothing else; the engine and
#: the I/O wrap it from outside; `api` (the entry points and their boundary) uses all of them; the course helpers
#: and the apps sit on top.
LAYERS = {
    "core": {"core"},
    "checks": {"core", "checks"},
    "io": {"core", "checks", "io"},
    "engine": {"core", "checks", "engine"},
    "controls": {"core", "checks", "controls", "engine"},
    "api": {"core", "checks", "io", "engine", "controls", "api"},
    "course": {"core", "checks", "io", "engine", "controls", "api", "course"},
    "apps": {"core", "checks", "io", "engine", "controls", "api", "course", "apps"},
}
MODULES = ("api", "checks")  # the parts that are one module, not a folder


def _nstlib_imports(path: Path) -> set[str]:
    """The parts of nstlib (core, io, ...) that a module imports, anywhere in it (functions included)."""
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [node.module or ""] if isinstance(node, ast.ImportFrom) else \
            [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
        parts |= {name.split(".")[1] for name in names if name.startswith("nstlib.")}
        if isinstance(node, ast.ImportFrom) and node.module == "nstlib":
            parts |= {alias.name for alias in node.names}
    return parts


def test_the_folders_are_the_layers_and_the_core_imports_nothing_else() -> None:
    top = {path.name for path in (ROOT / "nstlib").iterdir() if not path.name.startswith("__")}
    assert top == {f"{f}.py" if f in MODULES else f for f in LAYERS}, "a new part of nstlib needs its place in LAYERS"
    for part, allowed in LAYERS.items():
        files = [ROOT / "nstlib" / f"{part}.py"] if part in MODULES else sorted((ROOT / "nstlib" / part).glob("*.py"))
        for path in files:
            wrong = _nstlib_imports(path) - allowed
            assert not wrong, f"{path.relative_to(ROOT)} imports nstlib.{sorted(wrong)}"
    assert _nstlib_imports(ROOT / "nstlib" / "core" / "loop.py") == {"core"}  # the test can fail: it sees imports


def test_every_function_the_course_shows_fits_a_screen() -> None:
    """What a notebook shows with `course.show_source` is read on one screen: at most 40 lines, docstring included."""
    import inspect

    import nstlib
    from nstlib.apps import compare, fast_style
    from nstlib.controls import color, pyramid
    from nstlib.core.features import layer_receptive_field
    from nstlib.core.losses import guided_gram_matrix

    names = {"nstlib": nstlib, "compare": compare, "fast_style": fast_style, "color": color, "pyramid": pyramid,
             "layer_receptive_field": layer_receptive_field, "guided_gram_matrix": guided_gram_matrix}
    shown = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            shown |= set(re.findall(r"course\.show_source\(([\w.]+)\)", "".join(cell["source"])))
    assert len(shown) >= 10
    for expression in sorted(shown):
        lines = len(inspect.getsource(eval(expression, names)).splitlines())  # noqa: S307 - our own notebooks
        assert lines <= 40, f"{expression} is {lines} lines"
