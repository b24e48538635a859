"""Fault injection: output safety: overwriting, inputs as outputs, unwritable folders, a full disk.
Rows of docs/reliability.md."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from common import CONTENT, FAST, STYLE
from PIL import Image

from nstlib.apps.cli import main
from nstlib.core.errors import OutputError
from nstlib.io.images import save_image

# --- Output safety ---------------------------------------------------------------------------------------

def test_force_overwrites_an_existing_output(tmp_path, capsys) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST]) == 2
    assert out.read_bytes() == b"old" and "--force" in capsys.readouterr().err
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST, "--force"]) == 0
    with Image.open(out) as img:
        assert img.size == (64, 64) and img.text["nstlib:status"] == "complete"


def test_output_is_never_an_input_even_by_another_name(refuse_work, tmp_path, capsys) -> None:
    refuse_work()
    content = tmp_path / "content.png"
    content.write_bytes(Path(CONTENT).read_bytes())
    (tmp_path / "link.png").symlink_to(content)
    os.link(content, tmp_path / "hard.png")
    (tmp_path / "sub").mkdir()
    for other in ("link.png", "hard.png", "sub/../content.png"):
        code = main(["stylize", str(content), STYLE, "-o", str(tmp_path / other), *FAST, "--force"])
        assert code == 2 and "refusing to overwrite an input" in capsys.readouterr().err, other
    assert content.read_bytes() == Path(CONTENT).read_bytes()


@pytest.mark.parametrize("where", ["under a regular file", "in /proc"])
def test_unwritable_folder_is_refused_before_any_work_even_as_root(refuse_work, tmp_path, capsys, where) -> None:
    # Permission bits do not stop root, so use places no user can create files in.
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "out.png" if where == "under a regular file" else Path("/proc/nstlib-out.png")
    with pytest.raises(OutputError, match=re.escape(str(out))):
        save_image(torch.rand(1, 3, 32, 32), out)
    refuse_work()
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out) in err and ("not a folder" in err or "cannot write in" in err), err
    assert not out.exists()


def test_full_disk_in_the_cli_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nstlib.core.result.os.fsync", no_space)  # fails after the bytes were "written"
    code = main(["stylize", CONTENT, STYLE, "-o", str(tmp_path / "out.png"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "No space left on device" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []
