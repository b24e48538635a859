"""bench/gpu_check.py on a CPU: the script runs, isolates its checks and prints its table.

What it checks needs a GPU; here `--quick --device cpu` runs the checks that a CPU can (tiny), the
others say "skipped (needs CUDA)", and a failing check must become a FAIL row and exit status 1.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "bench" / "gpu_check.py"
spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
gpu_check = sys.modules["gpu_check"] = importlib.util.module_from_spec(spec)  # its dataclasses look it up there
spec.loader.exec_module(gpu_check)


def table(stdout: str) -> dict[str, list[str]]:
    """The printed table as {check: [result, number, note]}."""
    lines = [line for line in stdout.splitlines() if line.startswith("|")]
    assert lines[:2] == ["| check | result | number | note |", "|---|---|---|---|"], stdout
    return {row[0]: row[1:] for row in (line.strip("| ").split(" | ") for line in lines[2:])}


def test_the_quick_cpu_run_prints_every_check_and_passes() -> None:
    run = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--device", "cpu"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "nstlib GPU check" in run.stdout and re.search(r"cpu \(\d+ threads\)", run.stdout), run.stdout
    rows = table(run.stdout)
    assert list(rows) == [name for name, _ in gpu_check.CHECKS]
    ran = {name for name, (result, _, _) in rows.items() if result == "ok"}
    assert ran == {"stylize_grid = separate runs", "explorer follows a slider"}, rows
    assert all(rows[name][0].startswith("skipped (needs CUDA") for name in set(rows) - ran), rows
    assert f"2 ok, {len(gpu_check.CHECKS) - 2} skipped, 0 failed" in run.stdout


def test_a_failing_check_is_a_row_and_the_exit_status(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    def broken(ctx: object) -> tuple[str, str]:
        raise RuntimeError("CUDA error: an illegal memory access\nwith a long traceback")

    def fine(ctx: object) -> tuple[str, str]:
        return "42", "a note | with a bar"

    monkeypatch.setattr(gpu_check, "CHECKS", [("broken", broken), ("fine", fine)])
    assert gpu_check.main(["--quick", "--device", "cpu"]) == 1
    rows = table(capsys.readouterr().out)
    assert rows["broken"][:2] == ["FAIL", "–"]
    assert rows["broken"][2].startswith("RuntimeError: CUDA error: an illegal memory access; ")
    assert rows["fine"][:2] == ["ok", "42"] and rows["fine"][2].startswith("a note / with a bar; ")
