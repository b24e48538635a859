"""The GPU path, end to end, on a real accelerator: run `pytest tests/test_gpu.py` on a machine with one.

Skipped without CUDA (CI has no GPU). NSTLIB_TEST_DEVICE picks the device (default "cuda"); setting
it to "cpu" dry-runs the same checks on the CPU, where the fast path is float32 channels_last.
What the CPU tests cannot show: that bf16/fp16 autocast, the loss scale,
CUDA graph capture and replay (`nstlib.engine.graphs`), the host-sync-free optimisers, the explorer's fast
path and a real out-of-memory error all work on the GPU itself, and that every notebook runs top to
bottom at full size there (the CPU suite runs them only in FAST mode, where the answer checks of the
exercises never meet the fast path). On a CPU the graph tests dry-run the eager body of a captured
step (`GraphedStep.step`, i.e. `take_step`) and the cache around it; capture and replay need CUDA
(tests/test_fake_device.py emulates them on a CPU, with tensors that claim a GPU).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import nbformat
import pytest
import torch
from nbclient import NotebookClient

from nstlib.api import stylize, stylize_grid
from nstlib.core.errors import MemoryLimitError, NonFiniteLossError
from nstlib.core.features import VGGFeatures, random_weights
from nstlib.core.lbfgs import SyncFreeLBFGS
from nstlib.core.loop import Watch, make_optimizer, optimize, take_step
from nstlib.core.objective import Targets
from nstlib.core.result import StylizeResult
from nstlib.core.settings import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, Settings
from nstlib.course.widgets import StyleExplorer
from nstlib.engine import graphs
from nstlib.engine.runtime import (
    BFloat16Grams,
    Precision,
    PrecisionFeatures,
    Runtime,
)

DEVICE = torch.device(os.environ.get("NSTLIB_TEST_DEVICE", "cuda"))
pytestmark = pytest.mark.skipif(DEVICE.type == "cuda" and not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (set NSTLIB_TEST_DEVICE=cpu to dry-run these checks)")
NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
RUN = dict(size=128, runtime=DEVICE, progress=False)


def make_objective(extractor, content: torch.Tensor, styles: list[torch.Tensor], **overrides):
    """The default objective (with `overrides`) of `content` and `styles`, as `stylize` builds it."""
    settings = Settings(**overrides)
    return Targets.build(extractor, content, styles, settings).objective(settings)


@pytest.fixture(scope="module")
def net() -> VGGFeatures:
    return VGGFeatures([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], random_weights()).to(DEVICE)


@pytest.fixture(scope="module")
def images(content, style) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Content, style and a point half way between content and noise (every loss term non-zero), on DEVICE."""
    noise = torch.rand(content.shape, generator=torch.Generator().manual_seed(0))
    return content.to(DEVICE), style.to(DEVICE), ((content + noise) / 2).to(DEVICE)


def _dtypes() -> list[torch.dtype | None]:
    """float16 on every GPU, bfloat16 where it is native (compute capability >= 8.0); float32 on a CPU."""
    if DEVICE.type != "cuda" or not torch.cuda.is_available():
        return [None]
    return [torch.float16, *([torch.bfloat16] if torch.cuda.get_device_capability(DEVICE)[0] >= 8 else [])]


def _lowered(result: StylizeResult) -> bool:
    """30 steps from the content photo: the style term falls more than fivefold and the total more than threefold.
    The content term starts at 0 and can only rise, so the total falls less (measured on the CPU dry run at 128 px:
    style 8.4x to 11.9x, total 3.6x to 4.7x, L-BFGS and Adam, plain and through the float16 path's code)."""
    first, last = result.history[0], result.final
    return last["style"] < first["style"] / 5 and last["total"] < first["total"] / 3


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_the_default_path_lowers_the_objective(net, content, style, optimizer: str) -> None:
    assert (Runtime.create(DEVICE).precision is not None) == (DEVICE.type == "cuda")  # fast: the CUDA default
    result = stylize(content, style, steps=30, optimizer=optimizer, network=net, **RUN)
    assert _lowered(result), (result.history[0], result.final)
    assert result.image.device.type == "cpu" and 0 <= result.image.min() and result.image.max() <= 1
    steps = [h["step"] for h in result.history]  # each scale's start and steps (coarse-to-fine by default)
    assert steps[0] == 0 and steps[-1] == result.steps and all(b - a in (0, 1) for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("dtype", _dtypes())
def test_mixed_precision_loss_terms_match_float32(net, images, dtype: torch.dtype | None) -> None:
    """Same stated tolerance as tests/test_precision.py: 1% (bf16) or 0.1% (fp16) per term; gradient cosine."""
    content, style, image = images
    plain = make_objective(net, content, [style])
    fast = make_objective(PrecisionFeatures(net, Precision(dtype=dtype)), content, [style])
    rel, cosine = {torch.bfloat16: (1e-2, 0.98), torch.float16: (1e-3, 0.995), None: (1e-4, 0.9999)}[dtype]
    grads, values = [], []
    for objective, context in ((plain, nullcontext()), (fast, BFloat16Grams() if dtype == torch.bfloat16 else
                                                         nullcontext())):
        x = image.clone().requires_grad_(True)
        with context:  # what a bfloat16 step runs in: bfloat16 products with float32 results for the Gram matrices
            terms = objective(x)
        grads.append(torch.autograd.grad(terms["total"].sum(), x)[0].flatten())
        values.append({k: v.item() for k, v in terms.items()})
    for term in ("content", "style", "tv", "total"):
        assert values[1][term] == pytest.approx(values[0][term], rel=rel), term
    assert torch.nn.functional.cosine_similarity(grads[0], grads[1], dim=0) > cosine


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_float16_with_the_loss_scale_optimises(net, images, optimizer: str) -> None:
    """The T4 path (no native bf16): float16 autocast and the dynamic loss scale, forced on any GPU."""
    content, style, _ = images
    dtype = torch.float16 if DEVICE.type == "cuda" else None
    objective = make_objective(PrecisionFeatures(net, Precision(dtype=dtype)), content, [style])
    runtime = Runtime(DEVICE, Precision(dtype=dtype), log_every=10)  # float16: with the loss scale
    result = optimize(objective, content, Settings(steps=30, optimizer=optimizer), Watch(progress=False), runtime)
    assert _lowered(result), (result.history[0], result.final)
    assert torch.isfinite(result.image).all()


def test_grid_equals_separate_adam_runs(net, content, style) -> None:
    run = dict(steps=4, network=net, **RUN)
    grid = stylize_grid(content, style, style_weights=[10.0, 1000.0], **run)
    for i, setting in enumerate(grid.settings):
        alone = stylize(content, style, optimizer="adam", **setting, **run)
        assert grid.final["total"][i] == pytest.approx(alone.final["total"], rel=2e-2)


def test_the_explorer_follows_a_slider_on_the_device(net, content, style) -> None:
    explorer = StyleExplorer(content, style, runtime=DEVICE, network=net, steps=4,
                             frame_every=1)
    try:
        assert isinstance(explorer.worker.net, PrecisionFeatures) == (DEVICE.type == "cuda")
        assert explorer.wait()
        explorer.style_weight.value = 123.0  # inside the slider's range, as in tests/test_widgets.py
        assert explorer.wait()
        assert explorer.runs[-1]["style_weight"] == 123.0 and explorer.latency is not None
        print(f"explorer latency on {DEVICE}: {explorer.latency:.3f} s")  # recorded, not asserted
    finally:
        explorer.close()


ON_CUDA = pytest.mark.skipif(DEVICE.type != "cuda", reason="CUDA graphs and CUDA's sync check need a GPU")


def _step_runner(step: graphs.GraphedStep) -> Callable[[], dict[str, torch.Tensor]]:
    """The terms of one step of `step`: captured and replayed on CUDA, `take_step` on a CPU (the dry run)."""
    return lambda: (step if DEVICE.type == "cuda" else step.step)()[0]


def _graphed(objective, image: torch.Tensor, optimizer: str):
    return graphs.graphed_step(objective, image, Settings(optimizer=optimizer))


@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_a_captured_step_gives_the_eager_steps_iterates(net, images, optimizer: str) -> None:
    """10 steps (3 eager warm-up, 1 capture, replays) against the same optimiser run eagerly, both bf16
    mixed precision on CUDA: the replayed kernels are the same, so the images agree to bf16 rounding."""
    content, style, start = images
    graphs.release_graphs()
    objective = make_objective(Runtime.create(DEVICE).prepare(net), content, [style])
    with _graphed(objective, start, optimizer) as step:
        run = _step_runner(step)
        totals = [run()["total"].clone() for _ in range(10)]
        graphed = step.image.detach().clone()
    eager = start.clone().requires_grad_(True)
    opt = make_optimizer(eager, Settings(optimizer=optimizer), capturable=True)
    for i in range(10):
        terms, _ = take_step(objective, eager, opt)
        assert totals[i].item() == pytest.approx(terms["total"].item(), rel=2e-2), i
    assert (graphed - eager.detach()).abs().mean() < 2e-3 and (graphed - start).abs().max() > 0.05


def test_a_cached_step_is_reused_and_never_replays_a_stale_weight(net, images) -> None:
    """The second run of the same kind borrows the first one's step (no new capture) with its own
    loss weights, targets and start copied in: it equals a run on a fresh step."""
    content, style, start = images
    graphs.release_graphs()
    features = Runtime.create(DEVICE).prepare(net)
    light, heavy = (make_objective(features, content, [style], style_weight=w) for w in (10.0, 1e4))
    with _graphed(light, start, "adam") as first:
        for _ in range(6):
            _step_runner(first)()
    with _graphed(heavy, start, "adam") as again:
        assert again is first and again.objective.weights["style"].item() == 1e4
        reused = [_step_runner(again)()["total"].item() for _ in range(6)]
    graphs.release_graphs()
    with _graphed(heavy, start, "adam") as fresh:
        assert fresh is not first
        expected = [_step_runner(fresh)()["total"].item() for _ in range(6)]
    assert reused == pytest.approx(expected, rel=1e-3)
    assert reused[0] == pytest.approx(heavy(start)["total"].item(), rel=1e-2)  # the heavy weight, from step 0


@ON_CUDA
@pytest.mark.parametrize("optimizer", ["lbfgs", "adam"])
def test_the_optimisers_of_the_graph_path_never_sync(images, optimizer: str) -> None:
    _, _, start = images
    image = start.clone().requires_grad_(True)
    opt = make_optimizer(image, Settings(optimizer=optimizer), capturable=True)
    assert isinstance(opt, SyncFreeLBFGS) == (optimizer == "lbfgs")
    image.grad = torch.rand_like(image) - 0.5
    opt.step()  # Adam makes its state here (copying a 0 to the device: a sync, once)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            image.grad = torch.rand_like(image) - 0.5
            opt.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")


@ON_CUDA
def test_the_graph_path_keeps_callbacks_frames_and_the_nan_rollback(net, content, style) -> None:
    """Default CUDA runtime (bf16 + CUDA graphs): the callback sees every step and can stop the run,
    frames are kept, a NaN stops with the last finite image."""
    assert Runtime.create(DEVICE).cuda_graph
    seen = []
    result = stylize(content, style, steps=20, frame_every=4, network=net,
                     callback=lambda s: seen.append(s.step) or s.step == 12, **RUN)
    assert seen == list(range(1, 13)) and result.interrupted and len(result.frames) == 4
    with pytest.raises(NonFiniteLossError) as info:
        stylize(content, style, steps=30, style_weight=1e38, network=net, **RUN)
    assert torch.isfinite(info.value.result.image).all()


@pytest.mark.skipif(DEVICE.type != "cuda", reason="a real out-of-memory error needs a GPU (a CPU would swap)")
def test_a_real_out_of_memory_error_is_clear_and_frees_the_memory(net, content, style) -> None:
    """Fill the GPU but for 256 MiB, stylize at 1024 px: one clear error, then the memory is free again."""
    base = torch.cuda.memory_allocated(DEVICE)
    free, _ = torch.cuda.mem_get_info(DEVICE)
    filler = torch.empty(free - 256 * 2**20, dtype=torch.uint8, device=DEVICE)
    with pytest.raises(MemoryLimitError, match="out of GPU memory at 1024x1024|already while moving"):
        stylize(content, style, size=1024, steps=3, runtime=DEVICE, network=net,
                coarse_to_fine=False, progress=False)
    del filler
    gc.collect()
    assert torch.cuda.memory_allocated(DEVICE) <= base + 64 * 2**20  # nothing of the failed run is pinned
    result = stylize(content, style, size=1024, steps=2, runtime=DEVICE, network=net,
                     coarse_to_fine=False, progress=False)  # and the same run now fits
    assert result.image.shape == (1, 3, 1024, 1024)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="full-size notebooks need a CUDA GPU (hours on a CPU)")
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_notebook_runs_at_full_size(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every cell top to bottom, NSTLIB_FAST=0 (full size and step counts, the CUDA fast path), with
    the session's weights (random unless NSTLIB_WEIGHTS names a file); any cell error fails the test
    with that cell's traceback (nbclient's CellExecutionError)."""
    monkeypatch.setenv("NSTLIB_FAST", "0")  # the kernel inherits this process's environment
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(path.parents[1]), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=1800, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    printed = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    assert "device: cuda" in printed and "FAST mode" not in printed, printed[:2000]
