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
    for path in [*ROOT.glob("nstlib/*.py"), *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("tests/*.py"),
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

#: nstlib's modules in the order a learner meets them: each may import only the modules before it, so
#: reading them top to bottom (image -> features -> targets -> objective -> loop -> result) never
#: needs a later one. A new module takes its place here.
MODULE_ORDER = [
    "errors", "files", "images", "download", "data", "vgg", "weights", "features", "losses", "blend", "masks",
    "color", "result", "settings", "runtime", "pyramid", "memory", "targets", "lbfgs", "step", "graphs", "loop",
    "optimize", "stylizer", "course", "plots", "compare", "worker", "widgets", "cli", "__main__",
]


def test_modules_import_only_modules_before_them() -> None:
    modules = {path.stem for path in (ROOT / "nstlib").glob("*.py")} - {"__init__"}
    assert modules == set(MODULE_ORDER), "place new modules in MODULE_ORDER"
    for name in MODULE_ORDER:
        tree = ast.parse((ROOT / "nstlib" / f"{name}.py").read_text())
        imported = {node.module.split(".")[1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nstlib.")}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                     and node.module == "nstlib" for alias in node.names}
        imported |= {alias.name.split(".")[1] for node in ast.walk(tree) if isinstance(node, ast.Import)
                     for alias in node.names if alias.name.startswith("nstlib.")}
        later = {m for m in imported if MODULE_ORDER.index(m) > MODULE_ORDER.index(name)}
        assert not later, f"nstlib/{name}.py imports the later module(s) {sorted(later)}"
