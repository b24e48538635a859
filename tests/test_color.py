"""Colour preservation: YUV round trip, luminance-only transfer keeps the chroma, colour matching
makes the style's colour statistics equal the content's."""

from __future__ import annotations

import pytest
import torch

from nstlib.api import stylize
from nstlib.controls import color
from nstlib.core.errors import ParameterError


def test_yuv_round_trip_and_known_values() -> None:
    x = torch.rand(2, 3, 5, 7)
    assert torch.allclose(color.yuv_to_rgb(color.rgb_to_yuv(x)), x, atol=1e-5)
    white, red = torch.ones(1, 3, 1, 1), torch.tensor([1.0, 0, 0]).view(1, 3, 1, 1)
    assert torch.allclose(color.rgb_to_yuv(white).flatten(), torch.tensor([1.0, 0, 0]), atol=1e-4)  # grey: no chroma
    assert torch.allclose(color.rgb_to_yuv(red).flatten(), torch.tensor([0.299, -0.14713, 0.615]))


def test_luminance_transfer_keeps_the_content_chroma(vgg, content, style) -> None:
    result = stylize(content, style, steps=5, preserve_color="luminance", network=vgg, progress=False)
    plain = stylize(content, style, steps=5, network=vgg, progress=False)
    uv_content = color.rgb_to_yuv(content)[:, 1:]
    diff = (color.rgb_to_yuv(result.image)[:, 1:] - uv_content).abs()
    assert diff.mean() < 2e-3 and (diff < 1e-4).float().mean() > 0.9  # exact except where clamped to the gamut
    assert (color.rgb_to_yuv(plain.image)[:, 1:] - uv_content).abs().mean() > 10 * diff.mean()  # it did change
    assert not torch.allclose(color.rgb_to_yuv(result.image)[:, 0], color.rgb_to_yuv(content)[:, 0], atol=1e-3)


def _correlated(seed: int, mean: tuple[float, float, float], spread: float) -> torch.Tensor:
    """A (1,3,40,40) image of correlated colours well inside [0,1] (so no clamping interferes)."""
    gen = torch.Generator().manual_seed(seed)
    mix = torch.randn(3, 3, generator=gen)
    pixels = mix @ (torch.rand(3, 1600, generator=gen) - 0.5)
    pixels = pixels / pixels.abs().max() * spread + torch.tensor(mean)[:, None]
    return pixels.reshape(1, 3, 40, 40)


def test_match_luminance_gives_content_mean_and_std() -> None:
    style, content = _correlated(2, (0.3, 0.6, 0.5), 0.25), _correlated(3, (0.6, 0.4, 0.5), 0.1)
    grey = color.match_luminance(style, content)
    y_out, y_content = color.rgb_to_yuv(grey)[:, 0], color.rgb_to_yuv(content)[:, 0]
    assert torch.allclose(grey[:, 0], grey[:, 1]) and torch.allclose(grey[:, 1], grey[:, 2])  # grey RGB
    assert y_out.mean() == pytest.approx(float(y_content.mean()), abs=1e-5)
    assert y_out.std() == pytest.approx(float(y_content.std()), rel=1e-4)
    assert not y_content.std() == pytest.approx(float(color.rgb_to_yuv(style)[:, 0].std()), rel=0.1)


@pytest.mark.parametrize("method", ["cholesky", "pca"])
def test_linear_match_equals_mean_and_covariance(method: str) -> None:
    source, target = _correlated(0, (0.3, 0.6, 0.5), 0.25), _correlated(1, (0.6, 0.4, 0.5), 0.08)
    out = color.match_color(source, target, method)
    mean_out, cov_out = color.color_stats(out)
    mean_t, cov_t = color.color_stats(target)
    assert torch.allclose(mean_out, mean_t, atol=1e-5)
    assert torch.allclose(cov_out, cov_t, atol=1e-6, rtol=1e-3)
    mean_s, cov_s = color.color_stats(source)
    assert not torch.allclose(cov_s, cov_t, atol=1e-3)  # the test is not trivially true


def test_histogram_match_equals_mean_and_variances(content, style) -> None:
    out = color.match_color(style, content, "histogram")
    mean_out, cov_out = color.color_stats(out)
    mean_c, cov_c = color.color_stats(content)
    assert torch.allclose(mean_out, mean_c, atol=1e-4)
    assert torch.allclose(cov_out.diagonal(), cov_c.diagonal(), rtol=0.02)
    assert torch.equal(out.reshape(3, -1).sort(1).values, content.reshape(3, -1).sort(1).values)  # same sizes


@pytest.mark.parametrize("method", ["histogram", "cholesky", "pca"])
def test_matching_real_images_moves_statistics_towards_the_content(content, style, method: str) -> None:
    mean_c, cov_c = color.color_stats(content)
    before_mean, before_cov = color.color_stats(style)
    after_mean, after_cov = color.color_stats(color.match_color(style, content, method))
    assert (after_mean - mean_c).norm() < 0.25 * (before_mean - mean_c).norm()
    if method == "histogram":  # per-channel matching: the variances, not the cross-channel covariances
        after_cov, before_cov, cov_c = after_cov.diagonal(), before_cov.diagonal(), cov_c.diagonal()
    assert (after_cov - cov_c).norm() < 0.5 * (before_cov - cov_c).norm()


def test_bad_color_options_are_rejected(content, style) -> None:
    with pytest.raises(ParameterError, match="color_match"):
        color.match_color(style, content, "lab")
    with pytest.raises(ParameterError, match="preserve_color"):
        stylize(content, style, steps=1, preserve_color="yes", network="random", progress=False)
