"""The `nstlib` command: a real run writes a PNG and a GIF; user errors are one line and exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from nstlib.apps.cli import main
from nstlib.io.data import sample_path

CONTENT, STYLE = str(sample_path("astronaut")), str(sample_path("stained_glass"))
FAST = ["--size", "64", "--steps", "3", "--weights", "random", "--quiet"]


def test_stylize_writes_png_and_gif(tmp_path, capsys) -> None:
    out, gif = tmp_path / "out.png", tmp_path / "out.gif"
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), "--gif", str(gif), *FAST]) == 0
    with Image.open(out) as img:
        assert img.size == (64, 64)
    with Image.open(gif) as anim:
        assert anim.n_frames >= 2
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"wrote {gif}" in printed and "done in" in printed


def test_demo_writes_png_and_gif(tmp_path, capsys) -> None:
    assert main(["demo", "--out", str(tmp_path), *FAST]) == 0
    assert (tmp_path / "astronaut_stained_glass.png").exists()
    assert (tmp_path / "astronaut_stained_glass.gif").exists()


def test_console_script_runs_without_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "nstlib.apps.cli", "stylize", str(tmp_path / "missing.jpg"), STYLE, "-o",
         str(tmp_path / "o.png"), *FAST],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "missing.jpg" in proc.stderr and "not found" in proc.stderr and "Traceback" not in proc.stderr


def _bad_cases(tmp: Path) -> dict[str, tuple[list[str], str]]:
    text = tmp / "notes.png"
    text.write_text("not an image")
    existing = tmp / "exists.png"
    existing.write_bytes(b"keep me")
    out = str(tmp / "o.png")
    return {
        "missing content": (["stylize", str(tmp / "nope.jpg"), STYLE, "-o", out, *FAST], "not found"),
        "not an image": (["stylize", CONTENT, str(text), "-o", out, *FAST], "not an image"),
        "output is input": (["stylize", CONTENT, STYLE, "-o", CONTENT, *FAST], "input"),
        "output exists": (["stylize", CONTENT, STYLE, "-o", str(existing), *FAST], "--force"),
        "bad extension": (["stylize", CONTENT, STYLE, "-o", str(tmp / "o.xyz"), *FAST], "extension"),
        "missing folder": (["stylize", CONTENT, STYLE, "-o", str(tmp / "no" / "o.png"), *FAST], "does not exist"),
        "negative weight": (["stylize", CONTENT, STYLE, "-o", out, "--style-weight", "-1", *FAST], "style_weight"),
        "zero steps": (["stylize", CONTENT, STYLE, "-o", out, "--size", "64", "--steps", "0"], "steps"),
        "bad optimizer": (["stylize", CONTENT, STYLE, "-o", out, "--optimizer", "sgd"], "optimizer"),
        "bad device": (["stylize", CONTENT, STYLE, "-o", out, *FAST, "--device", "tpu"], "device"),
        "bad weights": (["stylize", CONTENT, STYLE, "-o", out, "--size", "64", "--weights", "x.pth"], "not found"),
        "blend weights": (["stylize", CONTENT, STYLE, "-o", out, *FAST, "--blend-weights", "1", "2"], "blend_weights"),
        "tiny size": (["stylize", CONTENT, STYLE, "-o", out, "--size", "8", "--weights", "random"], "minimum"),
        "no output": (["stylize", CONTENT, STYLE], "required"),
    }


@pytest.mark.parametrize("case", list(_bad_cases(Path("/tmp"))))
def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys, case: str) -> None:
    argv, expected = _bad_cases(tmp_path)[case]
    with pytest.raises(SystemExit) if case in ("bad optimizer", "no output") else _returns() as box:
        box.value = main(argv)
    code = box.value.code if isinstance(box.value, SystemExit) else box.value
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "\n" not in err and expected in err, err
    assert (tmp_path / "exists.png").read_bytes() == b"keep me"
    assert not (tmp_path / "o.png").exists()


class _returns:
    """Context manager twin of pytest.raises for calls that return an exit code."""

    value: object = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> bool:
        return False


def test_help_gives_each_settings_default_as_set(capsys) -> None:
    """Only True and False read as on and off: a default of 0 or 1 (--seed, --style-grid) is a number."""
    with pytest.raises(SystemExit):
        main(["stylize", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(init='noise') (default 0)" in text and "as Gatys) (default 1)" in text
