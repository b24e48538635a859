"""The entry points (`stylize`, `stylize_grid`, `evaluate`) and the one boundary that every entry point (the command
line, the explorer, the trainer, `compare`) goes through: `Run.begin` (the argument checks), `Run.network` (built once)
and `Guard` (Ctrl-C keeps the image so far; out of memory frees it and says what to try).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import os
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from types import TracebackType
from typing import Any

import torch
from PIL import Image

from nstlib.checks import check_numbers, check_watch, resolve
from nstlib.controls import color
from nstlib.controls.pyramid import join as join_scales
from nstlib.controls.pyramid import min_long_side, schedule, smallest_size, uses_pyramid
from nstlib.core.errors import MemoryLimitError, ParameterError
from nstlib.core.features import MIN_SIDE, VGGFeatures, Weights
from nstlib.core.loop import Callback, Watch, optimize
from nstlib.core.objective import Targets, initial_image, normalize_blend_weights, resize, target_size
from nstlib.core.result import TERMS, StylizeResult
from nstlib.core.settings import DEFAULT_CONTENT_WEIGHT, DEFAULT_STYLE_WEIGHT, DEFAULT_TV_WEIGHT, Settings
from nstlib.engine.graphs import release_graphs
from nstlib.engine.memory import advice, check_memory, is_out_of_memory, release_memory
from nstlib.engine.runtime import Runtime
from nstlib.io.images import ImageLike, as_list, check_source, load_image, load_mask, peek_shape, source_name
from nstlib.io.weights import load_weights

#: What `network=` takes: weights (a name, a path, `Weights`) or a built `VGGFeatures` to reuse.
NetworkLike = str | os.PathLike | Weights | VGGFeatures
#: What `runtime=` takes: a device name ("auto", "cpu", "cuda", "mps", "cuda:1") or a `Runtime`.
RuntimeLike = Runtime | str | torch.device


@dataclass
class Run:
    """What an entry point settles before any work: the checked settings, the runtime, the network, the reports."""

    settings: Settings
    runtime: Runtime
    weights: NetworkLike
    watch: Watch

    @classmethod
    def begin(cls, settings: Settings | None, overrides: dict[str, Any], network: NetworkLike = "imagenet",
              runtime: RuntimeLike = "auto", watch: Watch | None = None) -> Run:
        """Check everything that can be checked without loading anything; a mistake is one `ParameterError`."""
        if not isinstance(network, (str, os.PathLike, Weights, VGGFeatures)):
            raise ParameterError(f"network={type(network).__name__}: give weights (e.g. 'imagenet', 'random' or a "
                                 "path) or a nstlib VGGFeatures to reuse")
        return cls(resolve(settings, overrides), Runtime.of(runtime), network, check_watch(watch or Watch()))

    def network(self) -> VGGFeatures:
        """The network for the settings' layers on the runtime's device: the one given, else built from the weights.

        The last one built is kept (runs with the same weights share its CUDA graphs), found by a digest of the
        weights' numbers: a file rewritten, or weights changed in place, give a new one."""
        if isinstance(self.weights, VGGFeatures):
            missing = set(self.settings.layers) - set(self.weights.layers)
            if missing:
                raise ParameterError(f"the given network lacks layers {sorted(missing)}; build it with them")
            return self.weights
        weights = load_weights(self.weights, progress=self.watch.progress)
        key = (weights.network, weights.preprocessing, tuple(self.settings.layers), str(self.runtime.device),
               weights.file, digest(weights.state_dict))
        net = _BUILT.get(key)
        if net is None:
            net = VGGFeatures(self.settings.layers, weights).to(self.runtime.device)
            _BUILT.clear()  # an older network would hold its memory on the device
            _BUILT[key] = net
        return net


#: The network `Run.network` built last, by (network, preprocessing, layers, device, file, digest of the weights).
_BUILT: dict[tuple, VGGFeatures] = {}


def digest(state: dict[str, torch.Tensor]) -> bytes:
    """A digest of a state_dict's names, shapes, dtypes and numbers (a tenth of a second for VGG19's 80 MB)."""
    hashed = hashlib.blake2b(digest_size=16)
    for name, tensor in state.items():
        hashed.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        hashed.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return hashed.digest()


class Guard:
    """Ctrl-C and out-of-memory around a run's work, in one place.

    `results` collects each finished scale's result; on leaving, `result` is `finish(results)`, also after Ctrl-C
    (marked interrupted). An error keeps the image so far and clears the frames of the work it ended, so a kept error
    holds no device memory. `where` and `advice` go into the out-of-memory message.
    """

    def __init__(self, device: torch.device, where: str, advice: str) -> None:
        self.device, self.where, self.advice = device, where, advice
        self.finish: Callable[[list[StylizeResult]], StylizeResult] = lambda results: results[-1]
        self.results: list[StylizeResult] = []
        self.result: StylizeResult | None = None

    def __enter__(self) -> Guard:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> bool:
        partial = getattr(error, "partial_result", None)
        if partial is not None:
            self.results.append(partial)
        done = self.finish(self.results) if self.results else None
        if error is None or (kind is KeyboardInterrupt and done is not None):
            self.result = done
            if error is not None:
                done.interrupted, done.status = True, f"interrupted after step {done.steps}"
            return error is not None
        if is_out_of_memory(error):
            release_graphs()  # the cached graphs of other sizes hold memory too
            release_memory(error, self.device)
            memory = "CPU" if self.device.type == "cpu" else "GPU"
            if done is None:
                raise MemoryLimitError(f"out of {memory} memory {self.where} before the first step: {self.advice}; "
                                       "if something else holds the memory (an earlier run's results, another "
                                       "notebook), free it (del old results, or restart the runtime)") from None
            done.interrupted, done.status = True, f"stopped: out of memory after step {done.steps}"
            raise MemoryLimitError(f"out of {memory} memory {self.where} after step {done.steps}: {self.advice}; "
                                   "the last good image is kept in .result", done) from None
        traceback.clear_frames(tb)  # Jupyter keeps the error: its frames must not keep the run's device memory
        return False


def input_files(*sources: ImageLike) -> list[str | os.PathLike]:
    """The files among a run's inputs, which no output may overwrite: paths, and PIL images opened from a file."""
    files = [getattr(p, "filename", "") or getattr(getattr(p, "fp", None), "name", "") if isinstance(p, Image.Image)
             else p for p in sources]
    return [os.fsdecode(f) if isinstance(f, bytes) else f for f in files if isinstance(f, (str, bytes, os.PathLike))
            and f]


def check_inputs(content: ImageLike, styles: list[ImageLike], masks: list[ImageLike], settings: Settings,
                 runtime: Runtime) -> list[tuple[tuple[int, int], int]]:
    """Before loading anything: one blend weight per style, every input has pixels, no picture falls under `MIN_SIDE`
    px at the run's size, and the run fits in memory. Returns the scales to run, the last at the content's (H,W)."""
    normalize_blend_weights(settings.blend_weights, len(styles))
    names = ["content", *(f"styles[{i}]" for i in range(len(styles))), *(f"masks[{i}]" for i in range(len(masks)))]
    shapes = [peek_shape(src, name) for src, name in zip([content, *styles, *masks], names)]
    source, style_sources = shapes[0], shapes[1:1 + len(styles)]
    shape = target_size(source, settings.size)
    style_shapes = [target_size(s, round(max(shape) * settings.style_scale)) for s in style_sources]
    if min(source) >= MIN_SIDE and min(shape) < MIN_SIDE:  # else `load_image` says the content itself is too small
        raise ParameterError(f"{source_name(content, 'content')}: size={settings.size} makes it {shape[1]}x{shape[0]}"
                             f", below the network's minimum side of {MIN_SIDE} px; give size >= "
                             f"{min_long_side(source)}")
    for i, (style, given, used) in enumerate(zip(styles, style_sources, style_shapes)):
        if min(given) >= MIN_SIDE > min(used):
            least = math.ceil(min_long_side(given) / max(shape) * 100) / 100
            raise ParameterError(f"{source_name(style, f'styles[{i}]')}: style_scale={settings.style_scale} (x the "
                                 f"content's {max(shape)} px) makes it {used[1]}x{used[0]}, below the network's "
                                 f"minimum side of {MIN_SIDE} px; give style_scale >= {least}, or a larger size")
    check_memory(shape, settings, styles=style_shapes, on_cpu=runtime.on_cpu, sources=[*shapes, shape, *style_shapes])
    return scales(shape, style_shapes, settings)


def load_inputs(content: ImageLike, styles: list[ImageLike], masks: list[ImageLike], settings: Settings,
                device: torch.device) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor] | None]:
    """The content (1,3,H,W) and the styles on `device`, and the masks (1,1,H,W) on the CPU (or None)."""
    normalize_blend_weights(settings.blend_weights, len(styles))
    photo = load_image(content, settings.size)
    side = round(max(photo.shape[-2:]) * settings.style_scale)
    mask_list = [load_mask(m, tuple(photo.shape[-2:]), f"masks[{i}]") for i, m in enumerate(masks)] or None
    return photo.to(device), [load_image(s, side).to(device) for s in styles], mask_list


def scales(shape: tuple[int, int], styles: list[tuple[int, int]],
           settings: Settings) -> list[tuple[tuple[int, int], int]]:
    """The (H,W) and steps of each scale to run, smallest first; the last at exactly the content's (H,W) `shape`."""
    if not uses_pyramid(max(shape), settings):
        return [(shape, settings.steps)]
    levels = schedule(max(shape), settings, smallest_size(shape, styles, settings.style_scale))
    return [(target_size(shape, level.size), level.steps) for level in levels[:-1]] + [(shape, levels[-1].steps)]


def finish_run(results: list[StylizeResult], shape: tuple[int, int], photo: torch.Tensor, settings: Settings,
               network: str, inputs: list[str | os.PathLike]) -> StylizeResult:
    """The scales' results joined at (H,W) `shape`, with colour preservation's post-step, the network and inputs."""
    result = join_scales(results, shape)
    photo = photo.cpu() if settings.preserve_color else photo  # only the luminance transfer needs it (its chroma)
    result.image = color.preserve_colors_after(result.image, photo, settings.preserve_color)
    result.frames = [color.preserve_colors_after(f, photo, settings.preserve_color) for f in result.frames]
    result.network, result.inputs = network, inputs
    return result


def stylize(content: ImageLike, styles: ImageLike | Sequence[ImageLike], settings: Settings | None = None, *,
            masks: ImageLike | Sequence[ImageLike] | None = None, network: NetworkLike = "imagenet",
            runtime: RuntimeLike = "auto", callback: Callback | None = None, progress: bool = True,
            frame_every: int = 0, **overrides: Any) -> StylizeResult:
    """Stylize `content` with one or more `styles` (paths, PIL images, arrays or tensors; see `load_image`).

    `settings`, or keyword `overrides` (stylize(c, s, steps=10)), are the knobs (`Settings`); `masks` one picture per
    style, white where that style goes; `network` the weights (`load_weights`: "imagenet", "random", a path) or a built
    `VGGFeatures`; `runtime` a device name ("auto": cuda > mps > cpu) or a `Runtime`; `callback(Progress)` runs after
    every step (True stops), `progress` shows a bar, `frame_every` keeps snapshots. A CPU run is bit-for-bit repeatable.
    """
    run = Run.begin(settings, overrides, network, runtime, Watch(callback, progress, frame_every))
    settings, styles, masks = run.settings, as_list(styles), as_list(masks)
    plan = check_inputs(content, styles, masks, settings, run.runtime)
    shape, inputs = plan[-1][0], input_files(content, *styles, *masks)  # before loading: Pillow then drops its file
    with Guard(run.runtime.device, f"at {shape[1]}x{shape[0]}", advice(*shape, settings.optimizer)) as guard:
        photo, pictures, mask_list = load_inputs(content, styles, masks, settings, run.runtime.device)
        net = run.runtime.prepare(run.network())
        guard.finish = partial(finish_run, shape=shape, photo=photo, settings=settings, network=net.source,
                               inputs=input_files(*inputs, net.file))
        photo, pictures = color.preserve_colors_before(photo, pictures, settings.preserve_color, settings.color_match)
        start = initial_image(settings.init, photo, pictures, settings.seed).repeat(settings.batch, 1, 1, 1)
        for size, steps in plan:
            side = round(max(size) * settings.style_scale)
            masks_here = None if mask_list is None else [resize(m, size).to(photo.device) for m in mask_list]
            targets = Targets.build(net, resize(photo, size), [resize(p, side) for p in pictures], settings, masks_here)
            image = resize(guard.results[-1].image.to(photo.device) if guard.results else start, size)
            guard.results.append(optimize(targets.objective(settings), image, settings.replace(steps=steps),
                                          run.watch, run.runtime))
    return guard.result


def stylize_grid(content: ImageLike, styles: ImageLike | Sequence[ImageLike], settings: Settings | None = None, *,
                 content_weights: Sequence[float] = (DEFAULT_CONTENT_WEIGHT,),
                 style_weights: Sequence[float] = (DEFAULT_STYLE_WEIGHT,),
                 tv_weights: Sequence[float] = (DEFAULT_TV_WEIGHT,), **kwargs: Any) -> StylizeResult:
    """Stylize once for every combination of the given weights: one batch of N images, row-major (the last list
    varies fastest).

    Each image has its own weights; the losses are summed over the batch, so each gets exactly its own gradient. With
    Adam (its update is per pixel) that makes N independent runs in one pass through the network; L-BFGS would couple
    them through its shared history. Other keyword arguments are `stylize`'s. The result's `image` is (N,3,H,W), its
    history holds lists of N values, and its `settings` list each image's weights.
    """
    if kwargs.pop("optimizer", "adam") != "adam":
        raise ParameterError("stylize_grid uses optimizer='adam' (L-BFGS would couple the batch images)")
    lists = {"content_weight": content_weights, "style_weight": style_weights, "tv_weight": tv_weights}
    for name, values in lists.items():
        if name in kwargs:  # it would be overridden by the grid's column
            raise ParameterError(f"stylize_grid({name}=...): the grid's weights are lists; give {name}s=[...] "
                                 f"(e.g. {name}s=[{kwargs[name]!r}] for one value)")
        lists[name] = check_numbers(f"{name}s", values, low=0)
    rows = [dict(zip(lists, combination)) for combination in itertools.product(*lists.values())]
    columns = {key: torch.tensor([float(row[key]) for row in rows]) for key in lists}
    result = stylize(content, styles, settings, **{**kwargs, "optimizer": "adam", **columns})
    result.settings = rows
    return result


def evaluate(image: ImageLike, content: ImageLike, styles: ImageLike | Sequence[ImageLike],
             settings: Settings | None = None, *, masks: ImageLike | Sequence[ImageLike] | None = None,
             network: NetworkLike = "imagenet", runtime: RuntimeLike = "auto", **overrides: Any) -> dict[str, float]:
    """Score any image under the style-transfer objective of `settings`: {"content", "style", "tv", "total"}.

    The content and `masks` are resized to the image's size and the targets built as `stylize` builds them, in plain
    float32, so that outputs of different methods compare on the same terms. Colour preservation plays no part here.
    """
    run = Run.begin(settings, {**overrides, "preserve_color": None}, network, Runtime.of(runtime).for_scoring())
    check_source(image, "image")
    img = load_image(image).to(run.runtime.device)
    shape = tuple(img.shape[-2:])
    photo, pictures, mask_list = load_inputs(content, as_list(styles), as_list(masks),
                                             run.settings.replace(size=max(shape)), run.runtime.device)
    with torch.no_grad():
        targets = Targets.build(run.runtime.prepare(run.network()), resize(photo, shape), pictures, run.settings,
                                None if mask_list is None else [resize(m, shape).to(img.device) for m in mask_list])
        terms = targets.objective(run.settings)(img)
    return {name: float(terms[name][0]) for name in TERMS}
