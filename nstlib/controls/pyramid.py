"""Coarse-to-fine stylisation (Gatys et al. 2017, section 5): stylize small, then refine larger.

At a small size a step is cheap and the style's large structures fit in the network's receptive field. The schedule,
for a long side `size`: sizes size / r^k for k = n..0 (r = `pyramid_ratio`) from `pyramid_start`, never where a thin
content or style would fall under VGG's 32 px (`smallest_size`); `ceil(steps * SHARE)` steps at each, which costs about
steps * SHARE / (1 - 1/r^2) = steps / 2 full-size steps for r = √2. It is on by default (from twice `pyramid_start`)
because it spreads the style over the whole frame in strokes at the painting's scale (docs/tuning.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from nstlib.core.errors import ParameterError
from nstlib.core.features import MIN_SIDE
from nstlib.core.objective import resize
from nstlib.core.result import StylizeResult
from nstlib.core.settings import Settings

#: Smallest `pyramid_start`: VGG's minimum side.
MIN_START = MIN_SIDE
#: Most scales a schedule may have (a √2 pyramid from 32 to 16384 px has 19): a ratio just above 1 would plan millions.
MAX_SCALES = 64
#: The share of `steps` each scale gets.
SHARE = 0.25


@dataclass(frozen=True)
class Scale:
    """One level of the pyramid: the long side in pixels and the optimiser steps spent there."""

    size: int
    steps: int


def uses_pyramid(size: int, settings: Settings) -> bool:
    """Whether a run at long side `size` goes through the pyramid: `coarse_to_fine` True, or "auto" and `size` at least
    twice `pyramid_start`."""
    return settings.coarse_to_fine is True or settings.coarse_to_fine == "auto" and size >= 2 * settings.pyramid_start


def schedule(size: int, settings: Settings, smallest: int = MIN_START) -> list[Scale]:
    """The scales from the smallest to `size` (see the module docstring), none below `smallest` (`smallest_size`)."""
    ratio = settings.pyramid_ratio
    if not ratio > 1:
        raise ParameterError(f"pyramid_ratio={ratio}: must be > 1 (e.g. 1.414 for a √2 pyramid)")
    start = settings.pyramid_start
    if start < MIN_START:
        raise ParameterError(f"pyramid_start={start}: must be >= {MIN_START} px (VGG's minimum side)")
    start = max(start, smallest)
    levels = math.floor(math.log(size / start) / math.log(ratio) + 1e-9) if size > start else 0
    if levels >= MAX_SCALES:
        least = math.ceil((size / start) ** (1 / (MAX_SCALES - 1)) * 1000) / 1000
        raise ParameterError(f"pyramid_ratio={ratio}: gives {levels + 1:,} scales from {start} to {size} px, more "
                             f"than {MAX_SCALES}; use a ratio of at least {least} (1.414 for a √2 pyramid)")
    per_scale = math.ceil(settings.steps * SHARE)
    return [Scale(round(size / ratio**k), per_scale) for k in range(levels, -1, -1)]


def min_long_side(shape: tuple[int, int]) -> int:
    """The smallest long side at which a picture of `shape` (H,W) keeps its short side >= `MIN_SIDE`."""
    return math.ceil(MIN_SIDE * max(shape) / min(shape))


def smallest_size(content: tuple[int, int], styles: Sequence[tuple[int, int]], style_scale: float) -> int:
    """The smallest long side of the content (H,W) at which it and every style (H,W), resized to `style_scale` x the
    content's long side, keep both sides >= `MIN_SIDE`: smaller, VGG's pooling leaves a feature map empty."""
    return max([min_long_side(content), *(math.ceil(min_long_side(s) / style_scale) for s in styles)])


def join(results: list[StylizeResult], target_shape: tuple[int, int]) -> StylizeResult:
    """The last scale's result at `target_shape`, with the histories, steps, times and frames of all of them."""
    final = results[-1]
    if len(results) == 1 and tuple(final.image.shape[-2:]) == tuple(target_shape):
        return final
    history, steps, seconds = [], 0, 0.0
    for result in results:
        size = max(result.image.shape[-2:])
        history += [{**entry, "step": entry["step"] + steps, "time": entry["time"] + seconds, "size": size}
                    for entry in result.history]
        steps, seconds = steps + result.steps, seconds + result.seconds
    final.history, final.steps, final.seconds = history, steps, seconds
    final.evaluations = sum(r.evaluations for r in results)
    final.frames = [resize(f, target_shape) for r in results for f in r.frames]
    final.image = resize(final.image, target_shape)
    return final
