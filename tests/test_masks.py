"""Spatial control: guided Gram matrices, masks per layer, and a region without style stays content."""

from __future__ import annotations

import pytest
import torch

from nstlib.api import evaluate, stylize
from nstlib.core.errors import ParameterError
from nstlib.core.losses import gram_matrix, guided_gram_matrix
from nstlib.core.objective import layer_masks
from nstlib.core.settings import DEFAULT_STYLE_LAYERS
from nstlib.io.data import sample, sample_path
from nstlib.io.images import load_mask

FAST = dict(progress=False)


def test_guided_gram_is_the_gram_of_the_region() -> None:
    feats = torch.randn(2, 5, 6, 8)
    mask = torch.zeros(1, 1, 6, 8)
    mask[..., 1:4, 2:7] = 1
    region = feats[:, :, 1:4, 2:7].reshape(2, 5, -1)  # independent: pick the region's feature vectors
    expected = region @ region.transpose(1, 2) / region.shape[-1]
    assert torch.allclose(guided_gram_matrix(feats, mask), expected, atol=1e-5)
    assert torch.allclose(guided_gram_matrix(feats, torch.ones(1, 1, 6, 8)), gram_matrix(feats), atol=1e-6)


def test_layer_masks_match_the_feature_grids(vgg, content) -> None:
    mask = load_mask(sample_path("astronaut_mask"), tuple(content.shape[-2:]))
    assert mask.shape == (1, 1, 64, 64) and 0.2 < mask.mean() < 0.8
    feats = vgg(content)
    for layer, m in layer_masks(mask, DEFAULT_STYLE_LAYERS).items():
        assert m.shape[-2:] == feats[layer].shape[-2:], layer
        assert m.mean() == pytest.approx(float(mask.mean()), abs=0.05)  # average pooling keeps the area


def test_an_all_white_mask_is_the_ordinary_style_loss(vgg, content, style) -> None:
    plain = stylize(content, style, steps=2, network=vgg, **FAST)
    masked = stylize(content, style, steps=2, masks=torch.ones(1, 1, 64, 64), network=vgg, **FAST)
    for a, b in zip(plain.history, masked.history):
        assert a["total"] == pytest.approx(b["total"], rel=1e-4)


def test_a_region_without_style_stays_close_to_the_content(vgg, content, style) -> None:
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., :, :32] = 1  # style on the left half only
    result = stylize(content, style, steps=15, masks=[mask], network=vgg, **FAST)
    change = (result.image - content).abs().mean(dim=(0, 1))
    left, right = change[:, :16].mean(), change[:, 48:].mean()  # away from the boundary
    # measured: 0.12 on the left, 0.038 on the right (deep layers see across the boundary, so not 0)
    assert right < 0.05 and right < left / 3, (left, right)


def test_two_styles_with_two_masks_and_errors(vgg, content, style, style2) -> None:
    person = load_mask(sample_path("astronaut_mask"), (64, 64))
    result = stylize(content, [style, style2], steps=2, masks=[person, 1 - person], network=vgg, **FAST)
    assert result.image.shape == (1, 3, 64, 64) and result.final["total"] < result.history[0]["total"]
    with pytest.raises(ParameterError, match="one mask per style"):
        stylize(content, [style, style2], steps=1, masks=[person], network=vgg, **FAST)
    assert sample("astronaut_mask").shape[-2:] == (384, 384)


def test_evaluate_with_masks_scores_the_masked_objective(vgg, content, style, style2) -> None:
    person = load_mask(sample_path("astronaut_mask"), (64, 64))
    result = stylize(content, [style, style2], steps=3, masks=[person, 1 - person], network=vgg, **FAST)
    # the masks are given at another resolution (same aspect ratio) and resized to the image
    scored = evaluate(result.image, content, [style, style2], masks=[sample_path("astronaut_mask"), 1 - person],
                      network=vgg, runtime="cpu")
    assert scored["style"] == pytest.approx(result.final["style"], rel=1e-3)
    unmasked = evaluate(result.image, content, [style, style2], network=vgg, runtime="cpu")
    assert unmasked["style"] != pytest.approx(scored["style"], rel=1e-2)


def test_a_style_grid_is_the_same_style_in_four_quadrant_masks(vgg, content, style) -> None:
    """An independent reference: the spatial-control path (guided Gram matrices), one quadrant mask per copy of the
    style. At 64 px every quadrant's edge falls on a pooling edge, so the masks are exactly 0 or 1 at every layer."""
    image = stylize(content, style, steps=2, network=vgg, **FAST).image
    quadrants = []
    for rows in (slice(0, 32), slice(32, 64)):
        for cols in (slice(0, 32), slice(32, 64)):
            mask = torch.zeros(1, 1, 64, 64)
            mask[..., rows, cols] = 1
            quadrants.append(mask)
    grid = evaluate(image, content, style, network=vgg, runtime="cpu", style_grid=2)
    masked = evaluate(image, content, [style] * 4, masks=quadrants, network=vgg, runtime="cpu")
    assert grid["style"] == pytest.approx(masked["style"], rel=1e-4)
    assert grid["style"] > 1.05 * evaluate(image, content, style, network=vgg, runtime="cpu")["style"]


def test_a_style_grid_too_fine_for_the_picture_or_with_masks_is_refused(vgg, content, style) -> None:
    with pytest.raises(ParameterError, match=r"style_grid=5: at 64x64 px the relu5_1 map is 4x4.*style_grid=4"):
        stylize(content, style, steps=1, style_grid=5, network=vgg, **FAST)
    with pytest.raises(ParameterError, match="style_grid=2: with masks"):
        stylize(content, style, steps=1, style_grid=2, masks=torch.ones(1, 1, 64, 64), network=vgg, **FAST)
    with pytest.raises(ParameterError, match="style_grid"):
        stylize(content, style, steps=1, style_grid=0, network=vgg, **FAST)
