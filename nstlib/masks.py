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
from nstlib.files import show
from nstlib.images import ImageLike, load_image
from nstlib.losses import Features, StyleTargets
from nstlib.vgg import layer_stride


def source_name(src: ImageLike, fallback: str) -> str:
    """How a message names an input picture: its file, else `fallback` (e.g. "masks[1]")."""
    return show(src) if isinstance(src, (str, os.PathLike)) else fallback


def same_aspect(mask: tuple[int, int], content: tuple[int, int]) -> bool:
    """Whether a mask of (H,W) `mask` fits a content of (H,W) `content`: their aspect ratios agree within 2% (a
    mask drawn at another resolution), or within one pixel of rounding of a side of either."""
    (h, w), (th, tw) = mask, content
    # |w*th - h*tw| over h*tw is the ratios' relative difference; over w, how many pixels the content's height is
    # off the height the mask's ratio gives it (over h, th, tw: the content's width, the mask's width, height).
    return abs(w * th - h * tw) <= max(0.02 * h * tw, h, w, th, tw)


def resize_mask(mask: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A (1,1,h,w) mask resized to `shape` = (H,W) (bilinear, antialiased), in [0,1]."""
    if tuple(mask.shape[-2:]) != tuple(shape):
        mask = F.interpolate(mask, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return mask.clamp(0, 1)


def load_mask(src: ImageLike, shape: tuple[int, int], name: str = "mask") -> torch.Tensor:
    """A mask picture (path, PIL, array or tensor) as (1,1,H,W) in [0,1], resized to `shape` = (H,W).

    Colour masks are turned grey by averaging the channels. A mask may be at any resolution, but
    its aspect ratio must match the content's (`same_aspect`): a stretched mask would put the styles
    in the wrong places. Messages name the file, else `name`.
    """
    img = load_image(src, min_side=1).mean(dim=1, keepdim=True)
    (h, w), (th, tw) = img.shape[-2:], shape
    if not same_aspect((h, w), (th, tw)):
        raise ParameterError(f"{source_name(src, name)}: the mask is {w}x{h} but the content is {tw}x{th}; give a "
                             "mask with the content's aspect ratio (e.g. drawn over the content image)")
    return resize_mask(img, shape)


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
