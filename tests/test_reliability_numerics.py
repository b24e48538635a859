"""Fault injection: numerics (NaN/inf, huge learning rates, masks of the wrong shape) and determinism.
Rows of docs/reliability.md."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from common import CONTENT, FAST, RUN, STYLE
from PIL import Image

from nstlib.api import stylize
from nstlib.apps.cli import main
from nstlib.core.errors import NonFiniteLossError, ParameterError

# --- Numerics ---------------------------------------------------------------------------------------

def test_mask_of_the_wrong_shape_is_refused_before_optimising(content, style, refuse_work, monkeypatch) -> None:
    wide = torch.ones(1, 3, 64, 128)  # content is 64x64: a 2:1 mask would be stretched
    refuse_work()
    with pytest.raises(ParameterError, match="mask is 128x64 but the content is 64x64"):
        stylize(content, style, steps=5, masks=[wide], network="random", **RUN)
    monkeypatch.undo()  # any resolution with the content's aspect ratio is fine
    result = stylize(content, style, steps=1, masks=[torch.ones(1, 3, 256, 256)], network="random", **RUN)
    assert result.image.shape == (1, 3, 64, 64)


def test_huge_learning_rate_is_refused_before_any_work(content, style) -> None:
    # pixels are clamped to [0,1] after every step, so a large lr saturates them instead of
    # overflowing; an absurd one is refused up front with the usual values
    with pytest.raises(ParameterError, match=r"lr=1e\+30: .* try 0.02 for Adam or 1 for L-BFGS"):
        stylize(content, style, steps=5, lr=1e30, network="random", **RUN)


def test_blow_up_during_the_run_names_the_cause_and_keeps_a_finite_image(vgg, content, style) -> None:
    with pytest.raises(NonFiniteLossError, match=r"at step [1-9]\d*: the learning rate .* or the loss weights") as info:
        stylize(content, style, steps=5, style_weight=1e38, network=vgg, **RUN)
    result = info.value.result
    assert torch.isfinite(result.image).all() and result.image.shape == (1, 3, 64, 64)
    assert result.status.startswith("stopped: non-finite loss at step")


def test_overflowing_weights_at_the_start_name_the_weights(vgg, content, style) -> None:
    # 1e300 is a valid (finite) weight that overflows float32 in the first loss (inf itself is refused up front)
    with pytest.raises(NonFiniteLossError, match="already at the start: the loss weights") as info:
        stylize(content, style, steps=5, style_weight=1e300, network=vgg, **RUN)
    assert torch.equal(info.value.result.image, content)  # nothing ran: the start is the last finite image


@pytest.mark.parametrize("save_partial", [True, False])
def test_cli_writes_the_last_finite_image_marked_only_with_save_partial(tmp_path, capsys, save_partial) -> None:
    out = tmp_path / "out.png"
    # 1e38 overflows float32 within a few steps (at step 3 here, so 6 steps, not FAST's 3)
    argv = ["stylize", CONTENT, STYLE, "-o", str(out), *FAST, "--steps", "6", "--style-weight", "1e38"]
    code = main(argv + (["--save-partial"] if save_partial else []))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "loss weights" in err, err
    assert out.exists() == save_partial and [p.name for p in tmp_path.iterdir()] == (["out.png"] * save_partial)
    if save_partial:
        with Image.open(out) as img:
            assert img.text["nstlib:status"].startswith("stopped: non-finite loss at step")
            assert np.isfinite(np.asarray(img)).all()



# --- Determinism ------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_pixels_in_two_processes(tmp_path) -> None:
    args = ["stylize", CONTENT, STYLE, *FAST, "--init", "noise", "--seed", "5", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, "-m", "nstlib.apps.cli", *args, "-o", str(tmp_path / "a.png")], check=True, env=env,
                   capture_output=True, timeout=300)
    assert main([*args, "-o", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert np.array_equal(a, b) and a.std() > 0
