"""Coarse-to-fine: the schedule (sizes, steps per scale, exact final size) and the pyramid driver."""

from __future__ import annotations

import math

import pytest
import torch

from nstlib.api import scales, stylize
from nstlib.controls.pyramid import MIN_START, Scale, join, schedule
from nstlib.core.errors import ParameterError
from nstlib.core.result import StylizeResult
from nstlib.core.settings import Settings


def plan(size: int, steps: int, start: int = 64, ratio: float = math.sqrt(2),
         smallest: int = MIN_START) -> list[Scale]:
    """The schedule for these settings."""
    return schedule(size, Settings(steps=steps, pyramid_start=start, pyramid_ratio=ratio), smallest)


def test_schedule_for_1024_is_a_sqrt2_pyramid_from_64() -> None:
    scales = plan(1024, 200)
    assert [s.size for s in scales] == [64, 91, 128, 181, 256, 362, 512, 724, 1024]  # 1024 / sqrt(2)^k, k = 8..0
    assert [s.steps for s in scales] == [50] * 9  # ceil(200 / 4) each


def test_schedule_rules() -> None:
    assert plan(256, 100) == [Scale(64, 25), Scale(91, 25), Scale(128, 25), Scale(181, 25), Scale(256, 25)]
    assert plan(100, 10) == [Scale(71, 3), Scale(100, 3)]
    assert plan(100, 10, smallest=80) == [Scale(100, 3)]  # a thin picture starts where VGG still sees it
    assert plan(500, 8, start=125, ratio=2) == [Scale(125, 2), Scale(250, 2), Scale(500, 2)]
    assert plan(64, 9, start=64) == [Scale(64, 3)]
    for size in (97, 300, 777, 2048):
        scales = plan(size, 40, ratio=1.3)
        assert scales[-1].size == size and scales[0].size >= 64
        assert all(b.size / a.size == pytest.approx(1.3, rel=0.02) for a, b in zip(scales, scales[1:]))
        assert len(scales) == 1 + math.floor(math.log(size / 64) / math.log(1.3) + 1e-9)
    with pytest.raises(ParameterError, match="pyramid_ratio"):
        plan(256, 10, ratio=1.0)
    with pytest.raises(ParameterError, match="pyramid_start"):
        plan(256, 10, start=8)


def test_a_runs_scales_end_at_the_exact_shape() -> None:
    runs = scales((75, 101), [(60, 80)], Settings(steps=8, coarse_to_fine=True, pyramid_start=50))
    assert runs == [((37, 50), 2), ((53, 71), 2), ((75, 101), 2)]
    assert scales((75, 101), [], Settings(steps=8)) == [((75, 101), 8)]  # auto: one scale below twice 64 px
    assert [shape for shape, _ in scales((75, 128), [], Settings(steps=8))] == [(38, 64), (53, 91), (75, 128)]


def test_join_chains_the_scales_into_one_result() -> None:
    def scale(shape: tuple[int, int], value: float) -> StylizeResult:
        return StylizeResult(image=torch.full((1, 3, *shape), value), steps=2, seconds=1.0, evaluations=2,
                             history=[{"step": 0, "total": 1.0, "time": 0.0}, {"step": 2, "total": 0.5, "time": 1.0}])

    result = join([scale((37, 50), 0.1), scale((53, 71), 0.2), scale((75, 101), 0.3)], (75, 101))
    assert result.image.shape == (1, 3, 75, 101) and result.image.mean().item() == pytest.approx(0.3, abs=1e-6)
    assert [h["step"] for h in result.history] == [0, 2, 2, 4, 4, 6]
    assert [h["size"] for h in result.history] == [50, 50, 71, 71, 101, 101]
    assert (result.steps, result.seconds, result.evaluations) == (6, 3.0, 6)


def test_stylize_coarse_to_fine_reaches_the_requested_size(vgg, content, style) -> None:
    result = stylize(content, style, size=72, steps=4, coarse_to_fine=True, pyramid_start=36, network=vgg,
                     progress=False)
    assert result.image.shape == (1, 3, 72, 72)
    assert [h["size"] for h in result.history if h["step"] in (0,)] == [36]
    assert sorted({h["size"] for h in result.history}) == [36, 51, 72]
    at_target = [h for h in result.history if h["size"] == 72]
    assert result.final is at_target[-1] and result.final["total"] < at_target[0]["total"]
    single = stylize(content, style, size=72, steps=4, coarse_to_fine="auto", network=vgg, progress=False)
    assert "size" not in single.final  # auto: one scale below twice pyramid_start
