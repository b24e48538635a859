"""The CLI flags of the perceptual controls, end to end on small images."""

from __future__ import annotations

import pytest
from PIL import Image

from nstlib.apps.cli import main
from nstlib.controls import color
from nstlib.io.data import sample_path
from nstlib.io.images import load_image

CONTENT, STYLE, STYLE2 = (str(sample_path(n)) for n in ("astronaut", "stained_glass", "waves"))
MASK = str(sample_path("astronaut_mask"))
FAST = ["--size", "64", "--steps", "2", "--weights", "random", "--quiet"]


@pytest.mark.parametrize("flags", [
    ["--preserve-color", "luminance"],
    ["--preserve-color", "match", "--color-match", "histogram"],
    ["--coarse-to-fine", "on", "--pyramid-start", "32", "--pyramid-ratio", "2"],
    ["--style-scale", "0.5"],
    ["--mask", MASK],
])
def test_control_flags_write_an_image(tmp_path, capsys, flags: list[str]) -> None:
    out = tmp_path / "out.png"
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST, *flags]) == 0, capsys.readouterr().err
    with Image.open(out) as img:
        assert img.size == (64, 64)
    assert f"wrote {out}" in capsys.readouterr().out


def test_luminance_flag_keeps_the_chroma(tmp_path) -> None:
    out = tmp_path / "out.png"
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST, "--preserve-color", "luminance"]) == 0
    uv = color.rgb_to_yuv(load_image(out))[:, 1:]
    assert (uv - color.rgb_to_yuv(load_image(CONTENT, 64))[:, 1:]).abs().mean() < 0.01  # 8-bit rounding


def test_two_masks_for_two_styles(tmp_path, capsys) -> None:
    inverse = tmp_path / "background.png"
    Image.eval(Image.open(MASK), lambda v: 255 - v).save(inverse)
    out = tmp_path / "out.png"
    assert main(["stylize", CONTENT, STYLE, STYLE2, "-o", str(out), *FAST, "--mask", MASK, str(inverse)]) == 0


@pytest.mark.parametrize("flags, expected", [
    (["--mask", MASK, MASK], "one mask per style"),
    (["--preserve-color", "grey"], "preserve-color"),
    (["--coarse-to-fine", "on", "--pyramid-ratio", "1"], "pyramid_ratio"),
    (["--style-scale", "0"], "style_scale"),
    (["--mask", "nope.png"], "not found"),
])
def test_bad_control_flags_are_one_line_errors(tmp_path, capsys, flags: list[str], expected: str) -> None:
    try:
        code = main(["stylize", CONTENT, STYLE, "-o", str(tmp_path / "o.png"), *FAST, *flags])
    except SystemExit as e:  # argparse rejects a bad choice itself
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and expected in err, err
    assert not (tmp_path / "o.png").exists()
