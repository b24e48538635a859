"""The benchmark's FLOP counter, naive reference and warm-up, checked by hand (its timings are not tested)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from nstlib.core.errors import MemoryLimitError
from nstlib.core.features import layer_channels
from nstlib.core.objective import Targets
from nstlib.core.settings import Settings
from nstlib.engine.graphs import WARMUP

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
        settings = Settings(content_layers=bench.DEFAULT_CONTENT_LAYERS, style_layers=tutorial_layers,
                            content_weight=1.0, loss="absolute", style_weight=1e6 / 64**2, tv_weight=0.0)  # 1e6 in
        ours = Targets.build(vgg, content, [style], settings).objective(settings)(image)["total"]  # Gram/(C*H*W)
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


@pytest.fixture
def on_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """The benchmark's device is CUDA (its options are checked before anything touches the device)."""
    monkeypatch.setattr(bench, "pick_device", lambda name: torch.device("cuda"))


def test_the_default_warm_up_ends_after_the_graph_capture(on_cuda: None) -> None:
    """Step WARMUP + 1 captures the graph and replays it once: the timed steps begin after it."""
    for argv in ([], ["--quick"]):
        args, device = bench.parse_args(argv)
        assert device.type == "cuda" and args.warmup == WARMUP + 2 > WARMUP + 1


def test_a_warm_up_that_would_time_the_capture_is_refused_on_cuda(on_cuda: None,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        bench.parse_args(["--warmup", str(WARMUP)])
    assert stopped.value.code == 2  # argparse's usage error, before any work
    assert f"error: --warmup {WARMUP} would time the CUDA graph capture" in capsys.readouterr().err
    assert bench.parse_args(["--warmup", str(WARMUP + 1)])[0].warmup == WARMUP + 1


def test_a_cpu_has_no_graphs_to_wait_for() -> None:
    assert bench.parse_args(["--device", "cpu", "--quick"])[0].warmup == 1
    assert bench.parse_args(["--device", "cpu", "--warmup", "0"])[0].warmup == 0
    assert bench.parse_args(["--device", "cpu"])[0].warmup == WARMUP + 2


def test_the_evaluation_bench_compares_the_same_objective(vgg, content, style) -> None:
    """bench/evaluation.py times nstlib's objective against notebook 04's plain one: they must be one function."""
    spec = importlib.util.spec_from_file_location("evaluation", Path(__file__).parents[1] / "bench" / "evaluation.py")
    evaluation = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(evaluation)
    settings = Settings()
    ours = evaluation.nstlib_objective(vgg, content, style, settings)
    plain = evaluation.plain_objective(vgg, content, style, settings.content_layers, settings.style_layers,
                                       tuple(settings.loss_weights.values()))
    x = ((content + style) / 2).requires_grad_(True)
    (g_ours,), (g_plain,) = (torch.autograd.grad(f(x), x) for f in (ours, plain))
    assert ours(x).item() == pytest.approx(plain(x).item(), rel=1e-5)
    torch.testing.assert_close(g_ours, g_plain, rtol=1e-4, atol=1e-6 * g_plain.abs().max().item())
    assert evaluation.evaluation_ms(ours, x.detach(), 1) > 0
