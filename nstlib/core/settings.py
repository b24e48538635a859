"""Settings: every knob of the objective and of the optimiser, its default and why.

`Settings` is a frozen dataclass that every entry point takes (keyword overrides work too: ``stylize(c, s, steps=10)``)
and the command line builds its options from. `check_number` is the one rule for every number nstlib takes.

Where the defaults come from:

- content layer relu4_2, style layers relu1_1..relu5_1, each weighted 1: Gatys et al. (2016), whose Caffe "conv"
  outputs were rectified in place, so they are our relu layers;
- the relative objective (`nstlib.core.losses`) makes the weights independent of the network, the style and the size;
- content 1, style 1, TV 0.05 (relative to the photo's TV) and coarse-to-fine from 64 px: chosen on a panel of eight
  pairs at 256 and 512 px by distances that are not this objective (docs/tuning.md). Not measured on ImageNet VGG19;
- Adam lr 0.02 on [0,1] pixels (crowsonkb's style-transfer-pytorch); L-BFGS step 1 (jcjohnson's neural-style) within
  the trust region `max_step` (`nstlib.core.lbfgs`); the pyramid: `nstlib.controls.pyramid` (Gatys et al. 2017).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nstlib.core.errors import ParameterError
from nstlib.core.losses import Weight

DEFAULT_CONTENT_LAYERS: dict[str, float] = {"relu4_2": 1.0}
DEFAULT_STYLE_LAYERS: dict[str, float] = dict.fromkeys(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), 1.0)
DEFAULT_CONTENT_WEIGHT = 1.0
DEFAULT_STYLE_WEIGHT = 1.0
DEFAULT_TV_WEIGHT = 0.05
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}

LOSS_FORMS = ("relative", "absolute")
STYLE_LOSSES = ("gram", "w2")
BLEND_METHODS = ("gram", "features", "loss")
PRESERVE_COLOR = ("luminance", "match")
COLOR_MATCH_METHODS = ("histogram", "cholesky", "pca")
OPTIMIZERS = ("lbfgs", "adam")
INITS = ("content", "noise", "style")
#: Limits that catch a typo long before the machine would: pixels live in [0,1], so larger steps only saturate them.
MAX_LR, MAX_STYLE_SCALE, MAX_STEPS, MAX_SEED = 1e3, 100.0, 10_000_000, 2**64 - 1


def knob(default: Any, help: str, choices: Sequence[Any] | None = None) -> Any:
    """A `Settings` field: its default, a help line for the command line and, for a choice, the values allowed."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": tuple(choices)}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """The knobs of one run: the objective, the optimiser and the image pyramid (`nstlib.checks` checks them all).

    Weights may be floats, or (N,) tensors to optimise a batch of N images with their own weights (`stylize_grid`).
    """

    # --- the objective
    loss: str = knob("relative", "each term relative to its target's size (the same weights suit any network, "
                                 "style and size) or Gatys' absolute squared errors", LOSS_FORMS)
    style_loss: str = knob("gram", "match Gram matrices (Gatys), or Gaussians of the features (means and "
                                   "covariances) by the Wasserstein-2 distance", STYLE_LOSSES)
    content_weight: Weight = knob(DEFAULT_CONTENT_WEIGHT, "weight of the content term")
    style_weight: Weight = knob(DEFAULT_STYLE_WEIGHT, "weight of the style term")
    tv_weight: Weight = knob(DEFAULT_TV_WEIGHT, "weight of the total-variation term (0: off)")
    content_layers: Mapping[str, float] = knob(DEFAULT_CONTENT_LAYERS, "{layer: weight} of the content term")
    style_layers: Mapping[str, float] = knob(DEFAULT_STYLE_LAYERS, "{layer: weight} of the style term")
    blend: str = knob("gram", "how to combine several styles", BLEND_METHODS)
    blend_weights: Sequence[float] | None = knob(None, "one weight per style image")
    style_grid: int = knob(1, "match the style in every cell of an n x n grid over the picture, so it reaches every "
                              "part (1: over the whole picture, as Gatys)")
    style_scale: float = knob(1.0, "style image size relative to the content (bigger: larger brush strokes)")
    preserve_color: str | None = knob(None, "keep the content's colours: transfer luminance only, or match the "
                                            "style's colours first", (*PRESERVE_COLOR, None))
    color_match: str = knob("pca", "how preserve_color='match' recolours the style", COLOR_MATCH_METHODS)
    # --- the optimisation
    size: int | None = knob(None, "long side of the output in pixels (None: the content's)")
    steps: int = knob(300, "optimiser iterations")
    optimizer: str = knob("lbfgs", "the optimiser", OPTIMIZERS)
    lr: float | None = knob(None, "learning rate (None: Adam 0.02, L-BFGS 1)")
    history_size: int = knob(50, "L-BFGS history length m (2(m+1)+2 image-sized buffers)")
    max_step: float = knob(0.5, "L-BFGS: the most any pixel (0-1) may change in one step")
    init: str = knob("content", "the starting image", INITS)
    seed: int = knob(0, "seed of the noise init (init='noise')")
    ema: float = knob(0.0, "iterate averaging: the result is an exponential moving average of the steps' images with "
                           "this decay (0.99: about the last 100 steps); 0: off")
    coarse_to_fine: bool | str = knob("auto", "stylize on a pyramid from small to size (auto: when size is at least "
                                              "twice pyramid_start)", ("auto", True, False))
    pyramid_start: int = knob(64, "smallest pyramid size in pixels")
    pyramid_ratio: float = knob(math.sqrt(2.0), "size ratio between pyramid scales (√2)")

    def __new__(cls, *args: Any, **fields: Any) -> Settings:
        check_field_names(fields)  # before the generated __init__ would refuse with a bare TypeError
        return super().__new__(cls)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`; an unknown name is a `ParameterError` naming the closest ones."""
        return dataclasses.replace(self, **changes)

    @property
    def optimizer_lr(self) -> float:
        """The learning rate the optimiser uses: `lr`, or its default for `optimizer` (`DEFAULT_LR`)."""
        return self.lr if self.lr is not None else DEFAULT_LR[self.optimizer]

    @property
    def layers(self) -> list[str]:
        """Every layer the objective reads (content first), for building the network."""
        return [*self.content_layers, *self.style_layers]

    @property
    def batch(self) -> int:
        """How many images are optimised together: the length of tensor weights (1 for floats)."""
        return max(torch.as_tensor(w).numel() for w in self.loss_weights.values())

    @property
    def loss_weights(self) -> dict[str, Weight]:
        """The three global weights, {"content_weight", "style_weight", "tv_weight"}."""
        return {name: getattr(self, name) for name in ("content_weight", "style_weight", "tv_weight")}


def check_number(name: str, value: object, *, whole: bool = False, low: float | None = None,
                 above: float | None = None, high: float | None = None, allow_none: bool = False,
                 hint: str = "") -> Any:
    """`value` as a plain int or float if it is a finite real number (Python, NumPy or a one-element tensor; not a bool)
    in the range asked for; else a `ParameterError` naming `name`, what to give and `hint`."""
    if value is None and allow_none:
        return None
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_meta:
        value = value.item()
    kind = "a whole number" if whole else "a finite number"
    bounds = [f">= {low:g}" if low is not None else "", f"> {above:g}" if above is not None else "",
              f"<= {high:,}" if isinstance(high, int) else f"<= {high:g}" if high is not None else ""]
    wanted = f"{name}={value!r}: give {kind} {' and '.join(b for b in bounds if b)}".rstrip()
    wanted += (" (or None)" if allow_none else "") + (f"; {hint}" if hint else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral if whole else numbers.Real):
        raise ParameterError(wanted)
    if isinstance(value, numbers.Integral):
        value = int(value)
        if abs(value) > sys.float_info.max:  # every number is used as a float somewhere (a size is divided)
            raise ParameterError(f"{name}: a whole number of {value.bit_length()} bits is beyond a float's range")
        value = value if whole else float(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise ParameterError(wanted)
    if (low is not None and value < low) or (above is not None and not value > above) or (
            high is not None and value > high):
        raise ParameterError(wanted)
    return value


def check_field_names(names: Iterable[str]) -> None:
    """Every name is a `Settings` field; else a `ParameterError` naming each unknown one's closest fields."""
    fields = [f.name for f in dataclasses.fields(Settings)]
    unknown = sorted(set(names) - set(fields))
    if unknown:
        hints = [name + (f" (did you mean {' or '.join(close)}?)" if (close := difflib.get_close_matches(
            name, fields, n=2)) else "") for name in unknown]
        raise ParameterError(f"unknown setting(s) {', '.join(hints)}; the settings are {', '.join(fields)}")
