"""The argument checks every entry point goes through before any work, in one place: a bad value is one
`ParameterError` that names it and says what to give (numbers: Python, NumPy and one-element tensors alike)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from nstlib.core.errors import ParameterError
from nstlib.core.features import check_layers
from nstlib.core.loop import Watch
from nstlib.core.losses import Weight
from nstlib.core.settings import (
    DEFAULT_CONTENT_LAYERS,
    DEFAULT_STYLE_LAYERS,
    MAX_LR,
    MAX_SEED,
    MAX_STEPS,
    MAX_STYLE_SCALE,
    Settings,
    check_number,
)


def resolve(settings: Settings | None, overrides: Mapping[str, Any]) -> Settings:
    """`settings` (default `Settings()`) with keyword `overrides`, validated."""
    if settings is not None and not isinstance(settings, Settings):
        raise ParameterError(f"settings={settings!r}: give a nstlib.Settings (or keyword arguments)")
    return validate((settings or Settings()).replace(**overrides))


def validate(settings: Settings) -> Settings:
    """Check every field of `settings`; return them with plain Python numbers, and the default layers for None or {}."""
    for f in dataclasses.fields(settings):
        choices, value = f.metadata.get("choices"), getattr(settings, f.name)
        # matched by type too: 1 == True, but 1 is not the choice True
        if choices is not None and not any(value is c or (type(value) is type(c) and value == c) for c in choices):
            raise ParameterError(f"{f.name}={value!r}: choose one of "
                                 f"{', '.join(c if isinstance(c, str) else repr(c) for c in choices)}")
    s = settings
    values = {
        "steps": check_number("steps", s.steps, whole=True, low=1, high=MAX_STEPS),
        "size": check_number("size", s.size, whole=True, low=1, allow_none=True),
        "history_size": check_number("history_size", s.history_size, whole=True, low=1),
        "pyramid_start": check_number("pyramid_start", s.pyramid_start, whole=True, low=1),
        "seed": check_number("seed", s.seed, whole=True, low=0, high=MAX_SEED),
        "lr": check_number("lr", s.lr, above=0, high=MAX_LR, allow_none=True,
                           hint="pixels live in [0,1]: try 0.02 for Adam or 1 for L-BFGS"),
        "max_step": check_number("max_step", s.max_step, above=0),
        "ema": check_number("ema", s.ema, low=0, high=0.9999, hint="0 is off; 0.99 averages about 100 steps"),
        "style_scale": check_number("style_scale", s.style_scale, above=0, high=MAX_STYLE_SCALE),
        "style_grid": check_number("style_grid", s.style_grid, whole=True, low=1),
        "pyramid_ratio": check_number("pyramid_ratio", s.pyramid_ratio, above=1),
    }
    if s.blend_weights is not None:
        values["blend_weights"] = check_numbers("blend_weights", s.blend_weights, low=0)
    weights = {name: check_weight(name, value) for name, value in s.loss_weights.items()}
    lengths = {name: w.numel() for name, w in weights.items() if isinstance(w, torch.Tensor)}
    if len(set(lengths.values()) - {1}) > 1:
        given = ", ".join(f"{name} has {n}" for name, n in lengths.items())
        raise ParameterError(f"tensor loss weights of different lengths ({given}): each gives one weight per batch "
                             "image, so give them the same length (or one value, or a float)")
    return s.replace(**values, **weights,
                     content_layers=check_layer_weights("content_layers", s.content_layers, DEFAULT_CONTENT_LAYERS),
                     style_layers=check_layer_weights("style_layers", s.style_layers, DEFAULT_STYLE_LAYERS))


def check_numbers(name: str, values: object, **bounds: Any) -> list[Any]:
    """A list of numbers: a list or tuple, or a 1-D NumPy array or tensor, of at least one `check_number` each."""
    if isinstance(values, (np.ndarray, torch.Tensor)) and values.ndim == 1:
        values = list(values)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ParameterError(f"{name}={values!r}: give a list of numbers, at least one")
    return [check_number(name, value, **bounds) for value in values]


def check_weight(name: str, value: Weight) -> Weight:
    """A loss weight: a finite number >= 0, or a float tensor of them, one per batch image ((N,), N >= 1)."""
    if isinstance(value, torch.Tensor) and value.numel() != 1:
        if value.is_meta or value.layout != torch.strided or value.ndim != 1 or value.numel() == 0:
            raise ParameterError(f"{name}: a tensor of shape {tuple(value.shape)}; give a float or a (N,) tensor with "
                                 "one weight per batch image, e.g. torch.tensor([1.0, 10.0])")
        if not value.is_floating_point() or not torch.isfinite(value).all() or (value < 0).any():
            raise ParameterError(f"{name}={value}: weights must be finite floats >= 0")
        return value
    return check_number(name, value, low=0)


def check_layer_weights(name: str, layers: object, default: Mapping[str, float]) -> dict[str, float]:
    """{layer name: weight}: known layers, finite weights >= 0 with a positive sum; None or {} is `default`."""
    if layers is None or isinstance(layers, Mapping) and not layers:
        layers = default
    if not isinstance(layers, Mapping):
        raise ParameterError(f"{name}={layers!r}: give a dict {{layer name: weight}}, e.g. {{'relu4_2': 1.0}}")
    check_layers(layers)
    layers = {layer: check_number(f"{name}[{layer!r}]", w, low=0) for layer, w in layers.items()}
    if sum(layers.values()) <= 0:
        raise ParameterError(f"{name} weights sum to 0 {layers}; give at least one layer a positive weight")
    return layers


def check_watch(watch: Watch) -> Watch:
    """What a run reports: a callable callback (or None), and `frame_every` a whole number >= 0."""
    if watch.callback is not None and not callable(watch.callback):
        raise ParameterError(f"callback={watch.callback!r}: give a function of a Progress, or None")
    return Watch(watch.callback, watch.progress, check_number("frame_every", watch.frame_every, whole=True, low=0))
