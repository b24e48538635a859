"""Settings: every knob of the objective and of the optimiser, its default, and why, in one place.

`Settings` is a frozen dataclass. `stylize`, `evaluate`, `stylize_grid`, `compare`, the explorer and
the command line all take one (the CLI builds its options from these fields), and keyword overrides
still work: ``stylize(c, s, steps=10)`` is ``stylize(c, s, settings=Settings(steps=10))``.
`Settings.validate()` rejects a bad value with a one-line `ParameterError` naming the field.

Defaults (layers and weights), and where they come from:

- content layer relu4_2 and style layers relu1_1..relu5_1: Gatys et al. (2016). In the original
  Caffe model their "conv" outputs were rectified in place, so they are our relu layers.
- the relative objective (`nstlib.losses`): every term is measured against its target, so the weights
  below do not depend on how large a network's features, a style's Gram matrices or the picture are.
  Style layers weighted equally: each layer's relative Gram error counts alike.
- content_weight 1, style_weight 0.5, tv_weight 0.05: tuned by eye and by an independent metric on a
  panel of bundled photos, bundled textures and real paintings at 128 px, confirmed at 256 px and
  checked at 512 px on the packaged VGG16 (docs/tuning.md): content recognisable on every pair, style
  clearly transferred on all but chelsea + waves, which at 256 and 512 px is mostly a recolouring.
  Not measured on ImageNet VGG19 (it cannot be downloaded here); the relative form removes the
  difference in feature scale between the two networks, not any difference in what their layers see.
- tv_weight: relative to the content photo's own TV, small enough to damp speckle without blurring;
  0 switches TV off.
- Adam lr 0.02 on [0,1] pixels (crowsonkb's style-transfer-pytorch); L-BFGS with step size 1
  (jcjohnson's neural-style): `DEFAULT_LR`, used where `lr` is None (`Settings.optimizer_lr`).
- the pyramid: a √2 ratio (Gatys et al. 2017); its start size and when "auto" uses it depend on the
  device, so they are the runtime's (`nstlib.runtime.PYRAMID_PLANS`).
- training a feed-forward stylizer (`nstlib.stylizer`): Adam at `TRAIN_LR` on `TRAIN_SIZE` px crops.

Treat them as a starting point and use the weight sliders of notebook 05 to explore.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from nstlib import color
from nstlib.blend import BLEND_METHODS
from nstlib.errors import ParameterError
from nstlib.losses import LOSS_FORMS, Weight
from nstlib.vgg import check_layers

DEFAULT_CONTENT_LAYERS: dict[str, float] = {"relu4_2": 1.0}
DEFAULT_STYLE_LAYERS: dict[str, float] = dict.fromkeys(("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"), 1.0)
DEFAULT_CONTENT_WEIGHT = 1.0
DEFAULT_STYLE_WEIGHT = 0.5  # for the relative objective; see the module docstring
DEFAULT_TV_WEIGHT = 0.05
#: L-BFGS's trust region: without it, on the absolute objective, the first quasi-Newton steps on real features throw
#: the pixels to 0 and 1 (the objective rises 30-fold) and short runs never recover; see `nstlib.lbfgs`.
DEFAULT_MAX_STEP = 0.5

OPTIMIZERS = ("lbfgs", "adam")
#: The learning rate of each optimiser when `lr` is None.
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.02}
#: Size ratio between the scales of the coarse-to-fine pyramid.
DEFAULT_PYRAMID_RATIO = math.sqrt(2.0)
#: Training a feed-forward stylizer (`nstlib.stylizer.train_stylizer`): Adam's learning rate for the network's
#: weights (Johnson et al. 2016) and the crop size in pixels, where `lr` and `size` are None.
TRAIN_LR = 1e-3
TRAIN_SIZE = 256
INITS = ("content", "noise", "style")
#: Largest learning rate accepted: pixels are clamped to [0,1], so larger steps only saturate them.
MAX_LR = 1e3
#: Largest style_scale accepted (the memory check refuses what the machine cannot hold well before).
MAX_STYLE_SCALE = 100.0
#: Seeds accepted (torch's generator takes up to 2**64 - 1).
SEEDS = range(0, 2**64)
#: Most steps accepted: far beyond any useful run, but a typo of many digits is caught.
MAX_STEPS = 10_000_000


def knob(default: Any, help: str, choices: Sequence[Any] | None = None) -> Any:
    """A `Settings` field: its default, a help line and, for a choice, the values allowed. The command line
    builds its options from these (`nstlib.cli`), and `Settings.validate` checks the choices."""
    metadata = {"help": help} if choices is None else {"help": help, "choices": tuple(choices)}
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    """The knobs of one style-transfer run: the objective, the optimiser and the image pyramid.

    Weights may be floats, or (N,) tensors to optimise a batch of N images with their own weights
    (see `stylize_grid`). `replace(**changes)` returns a copy; `validate()` checks every field.
    An unknown field name, here or in `replace`, is a `ParameterError` naming the closest ones.
    """

    # --- the objective
    loss: str = knob("relative", "each term relative to its target's size (the same weights suit any network, "
                                 "style and size) or Gatys' absolute squared errors", LOSS_FORMS)
    content_weight: Weight = knob(DEFAULT_CONTENT_WEIGHT, "weight of the content term")
    style_weight: Weight = knob(DEFAULT_STYLE_WEIGHT, "weight of the style term")
    tv_weight: Weight = knob(DEFAULT_TV_WEIGHT, "weight of the total-variation term (0: off)")
    content_layers: Mapping[str, float] = knob(DEFAULT_CONTENT_LAYERS, "{layer: weight} of the content term")
    style_layers: Mapping[str, float] = knob(DEFAULT_STYLE_LAYERS, "{layer: weight} of the style term")
    blend: str = knob("gram", "how to combine several styles", BLEND_METHODS)
    blend_weights: Sequence[float] | None = knob(None, "one weight per style image")
    style_scale: float = knob(1.0, "style image size relative to the content (bigger: larger brush strokes)")
    preserve_color: str | None = knob(None, "keep the content's colours: transfer luminance only, or match the "
                                            "style's colours first", (*color.PRESERVE_COLOR, None))
    color_match: str = knob("pca", "how preserve_color='match' recolours the style", color.COLOR_MATCH_METHODS)
    # --- the optimisation
    size: int | None = knob(None, "long side of the output in pixels (None: the content's)")
    steps: int = knob(300, "optimiser iterations")
    optimizer: str = knob("lbfgs", "the optimiser", OPTIMIZERS)
    lr: float | None = knob(None, "learning rate (None: Adam 0.02, L-BFGS 1)")
    history_size: int = knob(50, "L-BFGS history length m (2(m+1)+2 image-sized buffers)")
    line_search: bool = knob(False, "L-BFGS with a strong-Wolfe line search")
    max_step: float = knob(DEFAULT_MAX_STEP, "L-BFGS: the most any pixel (0-1) may change in one step")
    init: str = knob("content", "the starting image", INITS)
    seed: int = knob(0, "seed of the noise init (init='noise')")
    coarse_to_fine: bool | str = knob("auto", "stylize on a pyramid from small to size (auto: from 512 px on a "
                                              "CPU, off on CUDA)", ("auto", True, False))
    pyramid_start: int | None = knob(None, "smallest pyramid size in pixels (None: 128; 256 on CUDA)")
    pyramid_ratio: float = knob(DEFAULT_PYRAMID_RATIO, "size ratio between pyramid scales (√2)")

    def __new__(cls, *args: Any, **fields: Any) -> Settings:
        """Refuse unknown field names before the generated __init__ would (with a bare TypeError)."""
        check_field_names(fields)
        return super().__new__(cls)

    def replace(self, **changes: Any) -> Settings:
        """A copy with `changes`; an unknown name is a `ParameterError` naming the closest ones."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> Settings:
        """Check every field (values and types) and return the settings with the layer weights as floats."""
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= MAX_STEPS:
            raise ParameterError(f"steps={self.steps!r}: give a whole number >= 1 (at most {MAX_STEPS:,})")
        check_whole("size", self.size, 1, allow_none=True)
        check_whole("history_size", self.history_size, 1)
        check_whole("pyramid_start", self.pyramid_start, 1, allow_none=True)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed not in SEEDS:
            raise ParameterError(f"seed={self.seed!r}: give a whole number from 0 to {SEEDS.stop - 1}")
        check_flag("line_search", self.line_search)
        for name in ("lr", "style_scale", "pyramid_ratio", "max_step"):
            if getattr(self, name) is not None:
                check_number(name, getattr(self, name))
        self._check_choices()
        if self.lr is not None and not 0 < self.lr <= MAX_LR:
            raise ParameterError(f"lr={self.lr}: the learning rate must be > 0 and at most {MAX_LR:g} (pixels live "
                                 "in [0,1]; try 0.02 for Adam or 1 for L-BFGS)")
        if not self.max_step > 0:
            raise ParameterError(f"max_step={self.max_step}: must be > 0 (pixels live in [0,1]; 1 or more: no limit)")
        if not 0 < self.style_scale <= MAX_STYLE_SCALE:
            raise ParameterError(f"style_scale={self.style_scale}: must be > 0 and at most {MAX_STYLE_SCALE:g} "
                                 "(1 = same size as the content)")
        if self.blend_weights is not None:
            if isinstance(self.blend_weights, (str, bytes)) or not isinstance(self.blend_weights, Sequence):
                raise ParameterError(f"blend_weights={self.blend_weights!r}: give a list of numbers, one per style")
            for weight in self.blend_weights:
                check_number("blend_weights", weight)
        for name in ("content_weight", "style_weight", "tv_weight"):
            check_weight(name, getattr(self, name))
        self._check_batch()
        return dataclasses.replace(  # None or {} means the default layers
            self, content_layers=check_layer_weights("content_layers", self.content_layers or DEFAULT_CONTENT_LAYERS),
            style_layers=check_layer_weights("style_layers", self.style_layers or DEFAULT_STYLE_LAYERS))

    def _check_choices(self) -> None:
        """The fields with a choice (`knob(..., choices)`) hold one of its values."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)  # matched by type too: 1 == True, but 1 is not the choice True
            if choices is not None and not any(value is c or (type(value) is type(c) and value == c)
                                               for c in choices):
                shown = ", ".join(c if isinstance(c, str) else repr(c) for c in choices)
                raise ParameterError(f"{f.name}={value!r}: choose one of {shown}")

    def _check_batch(self) -> None:
        """Tensor loss weights give one value per batch image: those with more than one value agree on how many."""
        lengths = {name: w.numel() for name, w in self.loss_weights.items() if isinstance(w, torch.Tensor)}
        if len(set(lengths.values()) - {1}) > 1:
            given = ", ".join(f"{name} has {n}" for name, n in lengths.items())
            raise ParameterError(f"tensor loss weights of different lengths ({given}): each gives one weight per "
                                 "batch image, so give them the same length (or one value, or a float)")

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


def resolve(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    """`settings` (default `Settings()`) with keyword `overrides`, validated."""
    if settings is not None and not isinstance(settings, Settings):
        raise ParameterError(f"settings={settings!r}: give a nstlib.Settings (or keyword arguments)")
    return (settings or Settings()).replace(**overrides).validate()


def check_layer_weights(name: str, layers: Mapping[str, float]) -> dict[str, float]:
    """Validate {layer name: weight}: known layers, finite weights >= 0 with a positive sum."""
    if not isinstance(layers, Mapping):
        raise ParameterError(f"{name}={layers!r}: give a dict {{layer name: weight}}, e.g. {{'relu4_2': 1.0}}")
    check_layers(layers)
    for value in layers.values():
        check_number(name, value)
    layers = {k: float(v) for k, v in layers.items()}
    if any(v < 0 for v in layers.values()):
        raise ParameterError(f"{name} has a negative weight {layers}; use weights >= 0")
    if sum(layers.values()) <= 0:
        raise ParameterError(f"{name} weights sum to 0 {layers}; give at least one layer a positive weight")
    return layers


def check_weight(name: str, value: Weight) -> None:
    """A loss weight: a finite number >= 0, or a float tensor of them, one per batch image: 0-d or (N,), N >= 1."""
    if isinstance(value, torch.Tensor):
        if value.is_meta or value.layout != torch.strided or value.ndim > 1 or value.numel() == 0:
            kind = "meta " if value.is_meta else "sparse " if value.layout != torch.strided else ""
            raise ParameterError(f"{name}: a {kind}tensor of shape {tuple(value.shape)}; give a float or a (N,) tensor "
                                 "with one weight per batch image, e.g. torch.tensor([1.0, 10.0])")
        if not value.is_floating_point() or not torch.isfinite(value).all() or (value < 0).any():
            raise ParameterError(f"{name}={value}: weights must be finite floats >= 0")
        return
    check_number(name, value)
    if value < 0:
        raise ParameterError(f"{name}={value}: weights must be >= 0")


def check_number(name: str, value: object) -> None:
    """A finite real number (not a bool, not a string, not a whole number beyond a float's range)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > sys.float_info.max:
        raise ParameterError(f"{name}: a whole number of {value.bit_length()} bits is beyond a float's range "
                             f"(about {sys.float_info.max:.1e}); give a finite number")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ParameterError(f"{name}={value!r}: give a finite number")


def check_flag(name: str, value: object, *others: str | None) -> None:
    """A real bool, or one of `others` (None, or a word such as "auto"): a truthy "no" or 1 is refused."""
    if isinstance(value, bool) or (value is None and None in others) or (isinstance(value, str) and value in others):
        return
    *choices, last = ["True", "False", *map(repr, others)]
    raise ParameterError(f"{name}={value!r}: use {', '.join(choices)} or {last}")


def check_field_names(names: Iterable[str]) -> None:
    """Every name is a `Settings` field; else a `ParameterError` naming each unknown one's closest fields."""
    fields = [f.name for f in dataclasses.fields(Settings)]
    unknown = sorted(set(names) - set(fields))
    if unknown:
        hints = [name + (f" (did you mean {' or '.join(close)}?)" if (close := difflib.get_close_matches(
            name, fields, n=2)) else "") for name in unknown]
        raise ParameterError(f"unknown setting(s) {', '.join(hints)}; the settings are {', '.join(fields)}")


def check_whole(name: str, value: object, low: int, allow_none: bool = False) -> None:
    """A whole number >= `low` (or None where allowed)."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ParameterError(f"{name}={value!r}: give a whole number >= {low}" + (" or None" if allow_none else ""))
