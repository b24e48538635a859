"""A hostile user's runs: thin pictures in the coarse-to-fine pyramid, extreme pyramid ratios and numbers, Ctrl-C
between scales, masks at coarse scales, and arguments of the wrong kind. One table of API calls refused before any
work, one of runs that must finish, and the few cases that need more (Ctrl-C, the explorer's thread)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nstlib.api
from nstlib.api import stylize, stylize_grid
from nstlib.controls.pyramid import MAX_SCALES, schedule, smallest_size
from nstlib.core.errors import ImageLoadError, NstlibError, ParameterError
from nstlib.core.features import MIN_SIDE
from nstlib.core.objective import Targets, target_size
from nstlib.core.result import StylizeResult
from nstlib.core.settings import Settings
from nstlib.course.worker import ExplorerWorker
from nstlib.engine.runtime import Runtime
from nstlib.io.data import sample_path

C, S = str(sample_path("astronaut")), str(sample_path("stained_glass"))
RUN = {"steps": 1, "network": "random", "progress": False, "runtime": "cpu"}
SMALL = {**RUN, "size": 32}


def picture(folder: Path, width: int, height: int, name: str = "p.png") -> str:
    """A noise picture of `width` x `height` written to `folder`; its path."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
    return str(folder / name)


def explorer(**changes: object) -> ExplorerWorker:
    """An explorer worker on the samples that does not start its thread, with `changes` to its arguments."""
    arguments = {"settings": Settings(), "network": "random", "runtime": "cpu",
                 "autostart": False, **changes}
    return ExplorerWorker(C, S, **arguments)


# --- Refused before any work: nstlib's error, one line naming the argument ----------------------------------

HUGE = 10**400  # a Python int beyond a float's range
API: dict[str, tuple[Callable[[Path], object], type[NstlibError], str]] = {
    # 1. a size or style_scale that makes a picture too small for the network, named
    "content too thin at size": (lambda t: stylize(picture(t, 1200, 90), S, **{**RUN, "size": 300}), ParameterError,
                                 "give size >= 427"),
    "style too thin at style_scale": (lambda t: stylize(C, picture(t, 200, 64), **{**RUN, "size": 64}),
                                      ParameterError, "give style_scale >= 1.57"),
    # 2. pyramid ratios that would plan millions of scales; numbers beyond a float's range
    "pyramid_ratio=1.0000001": (lambda t: stylize(C, S, **RUN, coarse_to_fine=True, pyramid_ratio=1.0000001),
                                ParameterError, "pyramid_ratio=1.0000001: gives"),
    "pyramid_ratio=1.000000001": (lambda t: stylize(C, S, **RUN, coarse_to_fine=True, pyramid_ratio=1.000000001),
                                  ParameterError, f"more than {MAX_SCALES}"),
    "lr=10**400": (lambda t: stylize(C, S, **SMALL, lr=HUGE), ParameterError, "lr: a whole number"),
    "style_weight=10**400": (lambda t: stylize(C, S, **SMALL, style_weight=HUGE), ParameterError, "style_weight:"),
    "style_scale=10**400": (lambda t: stylize(C, S, **SMALL, style_scale=HUGE), ParameterError, "style_scale:"),
    "pyramid_ratio=10**400": (lambda t: stylize(C, S, **SMALL, pyramid_ratio=HUGE), ParameterError, "pyramid_ratio:"),
    # 4. a mask of the wrong shape is named by its place in the list
    "mask tensor of another aspect": (lambda t: stylize(C, S, **SMALL, masks=torch.ones(32, 96)), ParameterError,
                                      "masks[0]: the mask is 96x32"),
    # 5. wrong kinds of arguments give nstlib's errors, not torch's or Python's
    "tensor weights of different lengths": (lambda t: stylize(C, S, **SMALL, content_weight=torch.ones(2),
                                                              style_weight=torch.ones(3)), ParameterError,
                                            "content_weight has 2, style_weight has 3"),
    "2-D tensor weight": (lambda t: stylize(C, S, **SMALL, tv_weight=torch.ones(2, 2)), ParameterError,
                          "tv_weight: a tensor of shape (2, 2)"),
    "empty tensor weight": (lambda t: stylize(C, S, **SMALL, style_weight=torch.ones(0)), ParameterError,
                            "style_weight: a tensor of shape (0,)"),
    "empty content tensor": (lambda t: stylize(torch.zeros(1, 3, 0, 0), S, **SMALL), ImageLoadError,
                             "content: an empty Tensor"),
    "meta content tensor": (lambda t: stylize(torch.zeros(1, 3, 32, 32, device="meta"), S, **SMALL), ImageLoadError,
                            "content: a meta tensor"),
    "sparse style tensor": (lambda t: stylize(C, torch.zeros(1, 3, 32, 32).to_sparse(), **SMALL), ImageLoadError,
                            "styles[0]: a sparse_coo tensor"),
    "network=object()": (lambda t: stylize(C, S, **{**SMALL, "network": object()}), ParameterError, "network=object"),
    'ExplorerWorker(debounce="x")': (lambda t: explorer(debounce="x"), ParameterError, "debounce='x'"),
    "ExplorerWorker(settings=a dict)": (lambda t: explorer(settings={"steps": 3}), ParameterError, "settings=dict"),
    "ExplorerWorker(runtime=None)": (lambda t: explorer(runtime=None), ParameterError, "runtime=None"),
    "Settings(stepz=3)": (lambda t: Settings(stepz=3), ParameterError, "stepz (did you mean steps"),
    # 6. flags are real bools; the grid's weights are lists
    'cuda_graph="no"': (lambda t: Runtime.create("cpu", cuda_graph="no"), ParameterError, "cuda_graph='no'"),
    'mixed_precision="yes"': (lambda t: Runtime.create("cpu", mixed_precision="yes"), ParameterError,
                              "mixed_precision='yes'"),
    "coarse_to_fine=1": (lambda t: stylize(C, S, **SMALL, coarse_to_fine=1), ParameterError, "coarse_to_fine=1"),
    "stylize_grid(content_weight=5.0)": (lambda t: stylize_grid(C, S, **SMALL, content_weight=5.0), ParameterError,
                                         "give content_weights=[...]"),
}


@pytest.mark.parametrize("case", list(API))
def test_api(refuse_work, tmp_path: Path, case: str) -> None:
    call, error, match = API[case]
    refuse_work()
    with pytest.raises(error) as info:
        call(tmp_path)
    assert match in str(info.value) and "\n" not in str(info.value), str(info.value)


# --- Runs that must finish: every scale of the pyramid fits the network -------------------------------------

RUNS: dict[str, tuple[Callable[[Path], StylizeResult], tuple[int, int], list[int] | None]] = {
    # 1. thin pictures: the pyramid's coarse scales would be under 32 px on the short side (a small style_scale keeps
    # the style, and the test, small)
    "520x40 content, auto pyramid": (lambda t: stylize(picture(t, 520, 40), S, **RUN, style_scale=0.1), (40, 520),
                                     None),
    "200x48 content, pyramid from 32 px": (lambda t: stylize(picture(t, 200, 48), S, **RUN, style_scale=0.5,
                                                             coarse_to_fine=True, pyramid_start=32), (48, 200),
                                           [141, 200]),  # 35 ... 100 px dropped: under 32 px on the short side
    "200x64 style, pyramid from 32 px": (lambda t: stylize(C, picture(t, 200, 64), **RUN, size=100,
                                                           coarse_to_fine=True, pyramid_start=32), (100, 100), None),
    # 4. masks are checked once, at full size, with a pixel of rounding allowed
    "96x32 content and mask, pyramid from 32 px": (lambda t: stylize(
        picture(t, 96, 32), S, masks=picture(t, 96, 32, "m.png"), **RUN, coarse_to_fine=True, pyramid_start=32),
        (32, 96), None),
    "a 20x7 thumbnail mask of a 96x32 content": (lambda t: stylize(
        picture(t, 96, 32), S, masks=picture(t, 20, 7, "m.png"), **RUN), (32, 96), None),
}


@pytest.fixture
def reuse_network(vgg, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs use the session's network instead of building one each (the table's calls name none)."""
    monkeypatch.setattr(nstlib.api.Run, "network", lambda self: vgg)


@pytest.mark.parametrize("case", list(RUNS))
def test_runs(reuse_network, tmp_path: Path, case: str) -> None:
    call, shape, sizes = RUNS[case]
    result = call(tmp_path)
    assert result.status == "complete" and tuple(result.image.shape[-2:]) == shape
    assert sorted({h["size"] for h in result.history}) == sizes if sizes else "size" not in result.final  # scales


def test_no_scale_of_the_schedule_is_below_the_networks_minimum() -> None:
    assert smallest_size((90, 1200), [], 1.0) == 427  # 32 px on the short side
    content, style = (300, 400), (64, 200)
    smallest = smallest_size(content, [style], 0.5)
    assert smallest == 2 * 100  # the style, at half the content's long side, needs a long side of 100 px
    settings = Settings(steps=8, pyramid_start=32)
    scales = schedule(1200, settings, smallest)
    assert len(scales) > 1 and scales[0].size >= smallest and scales[-1].size == 1200
    assert all(min(target_size(content, s.size)) >= MIN_SIDE for s in scales)
    assert all(min(target_size(style, round(s.size * 0.5))) >= MIN_SIDE for s in scales)
    # 1.06 is what the message asks for
    assert len(schedule(1200, settings.replace(pyramid_ratio=1.06))) <= MAX_SCALES
    with pytest.raises(ParameterError, match="at least 1.06"):
        schedule(1200, settings.replace(pyramid_ratio=1.05))


# --- Ctrl-C between scales keeps the finished scales ----------------------------------------------------------

PYRAMID = {**RUN, "steps": 4, "size": 64, "coarse_to_fine": True, "pyramid_start": 32}  # 32, 45, 64 px; 1 step each


def interrupt_second_targets(monkeypatch: pytest.MonkeyPatch, interrupt: Callable[[], None]) -> None:
    """Make `interrupt()` run when the second scale's targets are built."""
    build, calls = Targets.build.__func__, [0]

    def interrupted(cls: type[Targets], *args: object, **kwargs: object) -> Targets:
        calls[0] += 1
        if calls[0] == 2:
            interrupt()
        return build(cls, *args, **kwargs)

    monkeypatch.setattr(Targets, "build", classmethod(interrupted))


def stylize_or_fail(content: torch.Tensor, style: torch.Tensor, vgg: torch.nn.Module) -> StylizeResult:
    try:
        return stylize(content, style, **{**PYRAMID, "network": vgg})
    except KeyboardInterrupt:  # caught here: pytest would take it for the user stopping the tests
        pytest.fail("Ctrl-C discarded the finished scales")


def check_first_scale_kept(result: StylizeResult) -> None:
    assert result.interrupted and result.status == "interrupted after step 1"
    assert [(h["step"], h["size"]) for h in result.history] == [(0, 32), (1, 32)]  # the first scale's step
    assert result.image.shape == (1, 3, 64, 64)  # upsampled to the target


def test_ctrl_c_while_building_the_next_scale_keeps_the_last_one(vgg, content, style, monkeypatch) -> None:
    def ctrl_c() -> None:
        raise KeyboardInterrupt

    interrupt_second_targets(monkeypatch, ctrl_c)
    check_first_scale_kept(stylize_or_fail(content, style, vgg))


# --- The explorer ---------------------------------------------------------------------------------------------

def test_explorer_start_twice_starts_one_thread(vgg, content, style) -> None:
    worker = ExplorerWorker(content, style, Settings(steps=2), runtime="cpu",
                            network=vgg, preview_size=32, autostart=False)
    worker.start()
    worker.start()
    assert worker._thread.is_alive()
    worker.close()
    assert not worker._thread.is_alive()


def test_explorer_preview_of_a_thin_content_fits_the_network(vgg, tmp_path) -> None:
    worker = ExplorerWorker(picture(tmp_path, 1200, 90), S, Settings(), runtime="cpu",
                            network=vgg, preview_size=32, autostart=False)
    assert min(worker.preview_shape) >= MIN_SIDE
