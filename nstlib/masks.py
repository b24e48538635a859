"""Spatial control: which style goes where (Gatys et al. 2017, guided Gram matrices).

A mask is a grey picture of the content's shape; white marks the region that gets a style. With
styles s_1..s_K and masks m_1..m_K (one each), the style loss becomes

    sum_k w_k f_k sum_l w_l mean((G_l^{m_k}(x) - G_l(s_k))^2),

where G_l^{m} is the `guided_gram_matrix` of layer l's features inside the mask (the mask shrunk to
that layer's grid by average pooling), f_k = mean(m_k) the region's share of the image, and w_k
an optional per-region weight (default 1). A region no mask covers gets no style loss at all, only
the content loss, so it stays close to the content. With one all-white mask this is exactly the
ordinary style loss.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from nstlib.blend import style_targets
from nstlib.errors import ParameterError
from nstlib.features import layer_stride
from nstlib.images import ImageLike, load_image
from nstlib.losses import Features, StyleTargets


def load_mask(src: ImageLike, shape: tuple[int, int]) -> torch.Tensor:
    """A mask picture (path, PIL, array or tensor) as (1,1,H,W) in [0,1], resized to `shape` = (H,W).

    Colour masks are turned grey by averaging the channels. A mask may be at any resolution, but
    its aspect ratio must match the content's (within 2%): a stretched mask would put the styles
    in the wrong places.
    """
    img = load_image(src, min_side=1).mean(dim=1, keepdim=True)
    (h, w), (th, tw) = img.shape[-2:], shape
    if abs((w / h) / (tw / th) - 1) > 0.02:
        name = src if isinstance(src, (str, os.PathLike)) else "mask"
        raise ParameterError(f"{name}: mask is {w}x{h} but the content is {tw}x{th}; give a mask with the "
                             "content's aspect ratio (e.g. drawn over the content image)")
    if tuple(img.shape[-2:]) != tuple(shape):
        img = F.interpolate(img, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return img.clamp(0, 1)


def layer_masks(mask: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """Shrink a (1,1,H,W) mask to each layer's grid: {layer: (1,1,H//s,W//s)}, s = the layer's stride."""
    h, w = mask.shape[-2:]
    return {
        layer: F.adaptive_avg_pool2d(mask, (h // layer_stride(layer), w // layer_stride(layer))) for layer in layers
    }


@torch.no_grad()
def guided_style_targets(
    extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    styles: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    layers: Iterable[str],
    region_weights: Sequence[float] | None = None,
) -> tuple[StyleTargets, list[Features]]:
    """Targets and per-layer masks for `Objective(style_masks=...)`: style k is matched inside mask k.

    `masks` are (1,1,H,W) at the content's size (see `load_mask`); the target weights are
    w_k * mean(m_k), so regions count in proportion to their area.
    """
    layers = list(layers)
    if len(masks) != len(styles):
        raise ParameterError(f"{len(masks)} mask(s) for {len(styles)} style image(s); give one mask per style")
    weights = [1.0] * len(styles) if region_weights is None else [float(w) for w in region_weights]
    if len(weights) != len(styles) or any(w < 0 for w in weights):
        raise ParameterError(f"region weights {weights}: give one weight >= 0 per style ({len(styles)})")
    grams = style_targets(extractor, styles, layers, method="loss")
    targets = [(w * float(m.mean()), g) for w, m, (_, g) in zip(weights, masks, grams)]
    return targets, [layer_masks(m, layers) for m in masks]
