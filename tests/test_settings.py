"""Settings: one frozen dataclass of knobs, validated once, shared by stylize, evaluate, compare and the CLI."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch

import nstlib
from nstlib.api import evaluate, stylize
from nstlib.apps.cli import build_parser
from nstlib.checks import resolve, validate
from nstlib.core.errors import ParameterError
from nstlib.core.objective import Targets
from nstlib.core.settings import DEFAULT_STYLE_LAYERS, DEFAULT_STYLE_WEIGHT, Settings

FAST = dict(size=64, progress=False, runtime="cpu")


def test_defaults_live_in_the_dataclass_and_it_is_frozen() -> None:
    s = Settings()
    assert s.style_weight == DEFAULT_STYLE_WEIGHT and s.style_layers == DEFAULT_STYLE_LAYERS
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.steps = 3  # type: ignore[misc]
    assert s.replace(steps=3).steps == 3 and s.steps == 300
    with pytest.raises(ParameterError, match="unknown setting.*stpes"):
        s.replace(stpes=3)
    with pytest.raises(ParameterError, match="steps=0"):
        validate(Settings(steps=0))
    with pytest.raises(ParameterError, match="settings="):
        resolve({"steps": 3}, {})  # type: ignore[arg-type]


def test_settings_and_keyword_overrides_give_the_same_run(vgg, content, style) -> None:
    base = Settings(steps=2, optimizer="adam", style_weight=50.0)
    a = stylize(content, style, base, network=vgg, **FAST)
    b = stylize(content, style, settings=base.replace(steps=5), steps=2, network=vgg, **FAST)
    c = stylize(content, style, steps=2, optimizer="adam", style_weight=50.0, network=vgg, **FAST)
    assert torch.equal(a.image, b.image) and torch.equal(a.image, c.image)


def test_cli_has_one_option_per_setting_field() -> None:
    """Every field is an option, the {layer: weight} dicts too."""
    stylize_parser = build_parser()._subparsers._group_actions[0].choices["stylize"]
    options = {s for action in stylize_parser._actions for s in action.option_strings}
    for f in dataclasses.fields(Settings):
        assert f"--{f.name.replace('_', '-')}" in options, f.name


def test_a_weight_change_reuses_the_targets(vgg, content, style) -> None:
    settings = validate(Settings())
    targets = Targets.build(vgg, content, [style], settings)
    a = targets.objective(settings)
    b = targets.objective(settings.replace(style_weight=1000.0, tv_weight=0.0))
    assert a.content["relu4_2"] is b.content["relu4_2"]
    with torch.no_grad():
        ta, tb = a(content), b(content)
    assert torch.equal(ta["style"], tb["style"]) and tb["total"] == pytest.approx(1000.0 * tb["style"])


def test_evaluate_scores_with_the_given_settings(vgg, content, style) -> None:
    image = (content + 0.1).clamp(0, 1)
    low = evaluate(image, content, style, Settings(style_weight=1.0), network=vgg, **FAST_EVAL)
    high = evaluate(image, content, style, style_weight=10.0, network=vgg, **FAST_EVAL)
    assert high["style"] == pytest.approx(low["style"])
    assert high["total"] == pytest.approx(low["total"] + 9.0 * low["style"], rel=1e-5)


FAST_EVAL = dict(runtime="cpu")


def test_compare_scores_with_the_settings_it_optimised_with(vgg, monkeypatch) -> None:
    """A style_weight given to compare is used for optimising and for scoring alike."""
    from nstlib.apps import compare

    # the feed-forward network (the optional extra) is not what is tested here
    monkeypatch.setattr(compare, "feed_forward", lambda c, s, **k: compare.FeedForwardResult(
        compare.load_image(c, k["size"]), 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        _, rows = compare.compare(nstlib.sample_path("astronaut"), nstlib.sample_path("stained_glass"), size=64,
                                  steps=2, style_weight=123.0, tv_weight=0.5, network=vgg, progress=False,
                                  **FAST_EVAL)
    for row in rows:
        assert row["total"] == pytest.approx(row["content"] + 123.0 * row["style"] + 0.5 * row["tv"], rel=1e-5)


def test_numbers_are_numbers_whatever_their_type() -> None:
    """Python, NumPy and one-element tensor numbers are the same setting; a bool or a string is not a number."""
    import numpy as np

    for steps in (5, np.int64(5), torch.tensor(5)):
        assert validate(Settings(steps=steps)).steps == 5
        assert type(validate(Settings(steps=steps)).steps) is int
    for weight in (0.5, np.float32(0.5), torch.tensor(0.5), np.int8(0)):
        assert type(validate(Settings(style_weight=weight)).style_weight) is float
    for bad in (True, "5", 5.5, float("nan")):
        with pytest.raises(ParameterError, match="steps="):
            validate(Settings(steps=bad))
    with pytest.raises(ParameterError, match="style_weight="):
        validate(Settings(style_weight=float("inf")))
