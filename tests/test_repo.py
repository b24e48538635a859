"""Project hygiene: notebooks are committed without outputs, CI runs the README's test command."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_notebooks_are_committed_with_outputs_stripped() -> None:
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        for cell in nb["cells"]:
            if cell["cell_type"] == "code":
                assert cell.get("outputs") == [] and cell.get("execution_count") is None, path.name


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"```bash\n(.*?)\n```", readme, flags=re.S)
    test_command = next(c for c in commands if "pytest" in c)
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_project_never_reads_the_private_shared_folder() -> None:
    for path in [*ROOT.glob("nstlib/*.py"), *ROOT.glob("notebooks/*.ipynb"), *ROOT.glob("tests/*.py")]:
        if path.name != "test_repo.py":
            assert "../shared" not in path.read_text(), path
