"""The benchmark's FLOP counter and naive reference, checked by hand (the timings themselves are not tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nstlib.errors import MemoryLimitError
from nstlib.features import layer_channels
from nstlib.optimize import make_objective

spec = importlib.util.spec_from_file_location("bench", Path(__file__).parents[1] / "bench" / "bench.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_conv_flops_match_the_published_vgg19_count(vgg) -> None:
    conv, gram = bench.iteration_flops(vgg, 224)
    # VGG19 up to conv5_1 at 224x224 is 18.1 GMAC; one iteration = forward + input gradient = 2 x 2 FLOP/MAC.
    assert conv / 4 == pytest.approx(18.1e9, rel=0.005)
    # Gram matrices: C^2 * H * W multiply-adds for relu1_1 .. relu5_1.
    assert gram / 4 == 64**2 * 224**2 + 128**2 * 112**2 + 256**2 * 56**2 + 512**2 * 28**2 + 512**2 * 14**2
    assert bench.iteration_flops(vgg, 448)[0] == 4 * conv  # quadratic in the side


def test_naive_tutorial_objective_equals_nstlib_without_tv(vgg, content, style) -> None:
    model, content_losses, style_losses = bench.naive_model(vgg, content, style)
    image = (content + style) / 2
    with torch.no_grad():
        model(image)
        naive = 1e6 * sum(s.loss for s in style_losses) + sum(c.loss for c in content_losses)
        # The tutorial weighs its layers equally with Gram/(C*H*W); with our Gram/(H*W) that is (64/C)^2 per layer.
        tutorial_layers = {name: (64 / layer_channels(name)) ** 2 for name in bench.DEFAULT_STYLE_LAYERS}
        ours = make_objective(vgg, content, [style], content_layers=bench.DEFAULT_CONTENT_LAYERS,
                              style_layers=tutorial_layers, content_weight=1.0,
                              style_weight=1e6 / 64**2, tv_weight=0.0)(image)["total"]  # 1e6 in Gram/(C*H*W) units
    assert naive.item() == pytest.approx(ours.item(), rel=1e-4)


@pytest.mark.parametrize("error", [MemoryLimitError("out of GPU memory at 2048x2048 (step 0)"),
                                   torch.cuda.OutOfMemoryError("CUDA out of memory")])
def test_a_size_that_runs_out_of_memory_is_a_table_note(error: BaseException) -> None:
    def run(total: int, on_step) -> None:
        on_step(0)
        raise error

    assert bench.timed(torch.device("cpu"), 0, 3, run) == {"ms": None, "mem": None, "note": "out of memory"}


def test_other_errors_stop_the_benchmark() -> None:
    def run(total: int, on_step) -> None:
        raise RuntimeError("a bug, not memory")

    with pytest.raises(RuntimeError, match="a bug"):
        bench.timed(torch.device("cpu"), 0, 3, run)
