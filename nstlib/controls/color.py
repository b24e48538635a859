"""Colour preservation (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer").

`stylize(preserve_color=...)` keeps the content's colours instead of the style's, in one of two ways:

- ``"luminance"``: stylize the luma Y alone (the style's matched to the content's mean and standard deviation), then
  put the result's Y together with the content's chroma U and V;
- ``"match"``: recolour the style to the content's colour statistics first, by histogram matching or by a linear map
  x' = A (x - mu_s) + mu_c with A = L_c L_s^-1 (Cholesky) or Sigma_c^(1/2) Sigma_s^(-1/2) (PCA).

All images are (B,3,H,W) tensors with values in [0,1].
"""

from __future__ import annotations

import torch

from nstlib.core.errors import ParameterError
from nstlib.core.settings import COLOR_MATCH_METHODS

#: RGB -> YUV (ITU-R BT.601): Y is the luma, U and V the blue and red colour differences.
RGB_TO_YUV = torch.tensor([
    [0.299, 0.587, 0.114],
    [-0.14713, -0.28886, 0.436],
    [0.615, -0.51499, -0.10001],
])
YUV_TO_RGB = torch.linalg.inv(RGB_TO_YUV)


def _apply_matrix(matrix: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
    """Multiply every pixel's 3-vector by `matrix`: (B,3,H,W) -> (B,3,H,W)."""
    return torch.einsum("ij,bjhw->bihw", matrix.to(img), img)


def rgb_to_yuv(img: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) RGB in [0,1] -> (B,3,H,W) YUV (Y in [0,1], U in +-0.436, V in +-0.615)."""
    return _apply_matrix(RGB_TO_YUV, img)


def yuv_to_rgb(img: torch.Tensor) -> torch.Tensor:
    """(B,3,H,W) YUV -> (B,3,H,W) RGB (not clamped: out-of-gamut colours leave [0,1])."""
    return _apply_matrix(YUV_TO_RGB, img)


def match_luminance(style: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """Grey `style` (B,3,H,W) whose luma has the mean and standard deviation of `content`'s, clamped to [0,1]."""
    ys, yc = rgb_to_yuv(style)[:, :1], rgb_to_yuv(content)[:, :1]
    std_s = ys.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
    y = (ys - ys.mean(dim=(1, 2, 3), keepdim=True)) * yc.std(dim=(1, 2, 3), keepdim=True) / std_s
    y = y + yc.mean(dim=(1, 2, 3), keepdim=True)
    return y.clamp(0, 1).expand(-1, 3, -1, -1).contiguous()


def combine_luminance(stylized: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
    """The luma of `stylized` (B,3,H,W) with the chroma (U, V) of `content` (B or 1,3,H,W), as RGB clamped to [0,1]
    (where the combination leaves the gamut, the clamp changes the chroma)."""
    yuv = torch.cat([rgb_to_yuv(stylized)[:, :1], rgb_to_yuv(content)[:, 1:].expand(stylized.shape[0], -1, -1, -1)], 1)
    return yuv_to_rgb(yuv).clamp(0, 1)


def color_stats(img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (3,) and covariance (3,3) of the pixel colours of one image (1,3,H,W)."""
    x = img.reshape(3, -1).double()
    mean = x.mean(1)
    centred = x - mean[:, None]
    return mean, centred @ centred.T / x.shape[1]


def _sqrtm(cov: torch.Tensor, power: float) -> torch.Tensor:
    """cov^power for a symmetric positive semi-definite (3,3) matrix, via its eigendecomposition."""
    values, vectors = torch.linalg.eigh(cov)
    return vectors @ torch.diag(values.clamp_min(1e-8) ** power) @ vectors.T


def _match_histogram(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Give each channel of `source` the value distribution of `target`'s: rank r of N gets the quantile r / (N - 1)."""
    src, tgt = source.reshape(3, -1), target.reshape(3, -1)
    tgt_sorted = tgt.sort(dim=1).values
    order = src.argsort(dim=1)
    positions = torch.linspace(0, tgt.shape[1] - 1, src.shape[1], dtype=src.dtype, device=src.device)
    low = positions.floor().long()
    high = (low + 1).clamp_max(tgt.shape[1] - 1)
    frac = positions - low
    quantiles = tgt_sorted[:, low] * (1 - frac) + tgt_sorted[:, high] * frac
    out = torch.empty_like(src)
    out.scatter_(1, order, quantiles)
    return out.reshape(source.shape)


def match_color(source: torch.Tensor, target: torch.Tensor, method: str = "pca") -> torch.Tensor:
    """Recolour `source` (1,3,H,W) so that its colour statistics match `target`'s (1,3,H',W'), up to the final clamp
    to [0,1]: `method` "histogram" (each channel's distribution; the cross-channel covariances only roughly),
    "cholesky" or "pca" (mean and full covariance; "pca" rotates the colours least)."""
    if method not in COLOR_MATCH_METHODS:
        raise ParameterError(f"color_match={method!r}: choose one of {', '.join(COLOR_MATCH_METHODS)}")
    if method == "histogram":
        return _match_histogram(source, target).clamp(0, 1)
    mu_s, cov_s = color_stats(source)
    mu_t, cov_t = color_stats(target)
    eye = 1e-8 * torch.eye(3, dtype=cov_s.dtype, device=cov_s.device)
    if method == "cholesky":
        transform = torch.linalg.cholesky(cov_t + eye) @ torch.linalg.inv(torch.linalg.cholesky(cov_s + eye))
    else:
        transform = _sqrtm(cov_t, 0.5) @ _sqrtm(cov_s, -0.5)
    x = source.reshape(3, -1).double()
    out = transform @ (x - mu_s[:, None]) + mu_t[:, None]
    return out.reshape(source.shape).to(source.dtype).clamp(0, 1)


def preserve_colors_before(content: torch.Tensor, styles: list[torch.Tensor], preserve_color: str | None,
                           method: str = "pca") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The pre-step of colour preservation on (1,3,H,W) images: "match" recolours the styles to the content's palette,
    "luminance" stylizes grey images (the chroma goes back in `preserve_colors_after`), None changes nothing."""
    if preserve_color == "match":
        return content, [match_color(s, content, method) for s in styles]
    if preserve_color == "luminance":
        grey = rgb_to_yuv(content)[:, :1].expand(-1, 3, -1, -1).contiguous()  # the luma as a grey RGB image
        return grey, [match_luminance(s, content) for s in styles]
    return content, styles


def preserve_colors_after(stylized: torch.Tensor, content: torch.Tensor, preserve_color: str | None) -> torch.Tensor:
    """The post-step: with "luminance", the stylized luma (B,3,H,W) with the content's chroma."""
    return combine_luminance(stylized, content) if preserve_color == "luminance" else stylized
