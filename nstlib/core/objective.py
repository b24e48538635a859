"""From pictures to an objective: `Targets.build` computes the content's features and the styles' Gram matrices once;
`targets.objective(settings)` adds the loss weights (a new weight reuses the targets); `initial_image` is the start.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nstlib.core.errors import ParameterError
from nstlib.core.features import layer_stride
from nstlib.core.losses import (
    Features,
    content_loss,
    covariance_root,
    gram_matrix,
    grid_cells,
    moment_matrix,
    relative_weights,
    style_loss,
    tv_loss,
    w2_relative_weights,
    w2_style_loss,
)
from nstlib.core.settings import BLEND_METHODS, Settings, check_number

Extractor = Callable[[torch.Tensor], dict[str, torch.Tensor]]
#: [(blend weight, {layer: (1,C,C) Gram matrix, or (1,C+1,C+1) `moment_matrix` for W2})], one, or one per style/region.
StyleTargets = list[tuple[float, dict[str, torch.Tensor]]]
#: The relative TV term's floor for a flat photo (TV 0); the bundled photos' TV is 4e-2 to 1e-3 from 64 to 512 px.
TV_FLOOR = 1e-5


def target_size(shape: tuple[int, int], size: int | tuple[int, int] | None) -> tuple[int, int]:
    """The (H,W) that `resize` gives an image of `shape` (H,W): long side `size`, or `size` itself if a pair."""
    h, w = shape
    if size is None:
        return h, w
    if isinstance(size, Sequence) and len(size) == 2:
        return check_number("size", size[0], whole=True, low=1), check_number("size", size[1], whole=True, low=1)
    scale = check_number("size", size, whole=True, low=0, hint="or a pair (height, width)") / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def resize(img: torch.Tensor, size: int | tuple[int, int]) -> torch.Tensor:
    """(B,C,H,W) in [0,1] resized to long side `size`, or to exactly (H,W) if a pair (antialiased bicubic)."""
    size = target_size(tuple(img.shape[-2:]), size)
    if size == tuple(img.shape[-2:]):
        return img
    if img.device.type == "mps":  # no antialiased kernel there before torch 2.8
        return resize(img.cpu(), size).to(img.device)
    return F.interpolate(img, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)


def normalize_blend_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Blend weights for `n` styles scaled to sum to 1 (None: equal); one each, >= 0, not all 0."""
    if n == 0:
        raise ParameterError("styles: no style image given; give at least one (a path, a picture or a tensor)")
    if weights is None:
        return [1.0 / n] * n
    if len(weights) != n:
        raise ParameterError(f"blend_weights has {len(weights)} values but there are {n} style images; give one each")
    if any(not w >= 0 for w in weights) or max(weights) <= 0:
        raise ParameterError(f"blend_weights {list(weights)}: give numbers >= 0, at least one of them positive")
    largest = max(weights)  # divided first, so that huge weights do not overflow their sum
    return [w / largest / sum(v / largest for v in weights) for w in weights]


@torch.no_grad()
def style_targets(extractor: Extractor, styles: Sequence[torch.Tensor], layers: Iterable[str],
                  weights: Sequence[float] | None = None, method: str = "gram",
                  statistic: Callable[[torch.Tensor], torch.Tensor] = gram_matrix) -> StyleTargets:
    """Gram targets (or another `statistic` of the feature maps) for one or more style images (each (1,3,H,W) in [0,1]),
    blended by `method`:

    - "gram": average the Gram matrices, A_l = sum_k a_k G_l(s_k), and match that;
    - "features": average the feature maps (styles resized to the first one's size), match G_l(sum_k a_k F_l(s_k)):
      unlike the others it has cross terms between the styles;
    - "loss": keep every style's Gram matrices and sum the weighted losses. It has the same gradient as "gram": sum_k
      a_k |G - A_k|^2 = |G - sum_k a_k A_k|^2 + const.

    Returns [(weight, {layer: (1,C,C)})]: one entry for "gram" and "features", one per style for "loss".
    """
    if method not in BLEND_METHODS:
        raise ParameterError(f"blend={method!r}: choose one of {', '.join(BLEND_METHODS)}")
    layers, alphas = list(layers), normalize_blend_weights(weights, len(styles))
    if method == "features":
        feats = [extractor(resize(s, tuple(styles[0].shape[-2:]))) for s in styles]
        return [(1.0, {layer: statistic(sum(a * f[layer] for a, f in zip(alphas, feats))) for layer in layers})]
    grams = [{layer: statistic(f[layer]) for layer in layers} for f in map(extractor, styles)]
    if method == "loss":
        return list(zip(alphas, grams))
    return [(1.0, {layer: sum(a * g[layer] for a, g in zip(alphas, grams)) for layer in layers})]


def layer_masks(mask: torch.Tensor, layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """A (1,1,H,W) mask shrunk to each layer's grid by average pooling: {layer: (1,1,⌈H/s⌉,⌈W/s⌉)}, s the stride."""
    h, w = mask.shape[-2:]
    return {layer: F.adaptive_avg_pool2d(mask, (-(-h // layer_stride(layer)), -(-w // layer_stride(layer))))
            for layer in layers}


@dataclass
class Targets:
    """What the objective compares with, computed once: the content's features {layer: (1,C,H,W)}, the style targets,
    the content's TV (1,) and, for spatial control, one {layer: (1,1,h,w)} mask per style target."""

    extractor: Extractor
    content: Features
    style: StyleTargets
    content_tv: torch.Tensor
    masks: list[Features] | None = None

    @classmethod
    @torch.no_grad()
    def build(cls, extractor: Extractor, content: torch.Tensor, styles: Sequence[torch.Tensor], settings: Settings,
              masks: Sequence[torch.Tensor] | None = None) -> Targets:
        """Targets of (1,3,H,W) `content` and `styles` for the layers and blend of `settings`.

        With `masks` (one (1,1,H,W) mask in [0,1] per style, at the content's size; Gatys et al. 2017) style k is
        matched only inside mask k, by guided Gram matrices, with the weight w_k * mean(m_k) (`blend_weights` become
        per-region weights w_k, scaled so that the largest is 1): a region no mask covers gets only the content term.
        """
        layers = settings.style_layers
        features = extractor(content)
        check_grid(settings.style_grid, content, {k: v for k, v in features.items() if k in layers}, masks is not None)
        content_features = {k: v for k, v in features.items() if k in settings.content_layers}
        statistic = moment_matrix if settings.style_loss == "w2" else gram_matrix
        if masks is None:
            return cls(extractor, content_features, style_targets(
                extractor, styles, layers, settings.blend_weights, settings.blend, statistic), tv_loss(content))
        if statistic is not gram_matrix:
            raise ParameterError("masks: spatial control matches Gram matrices only; use style_loss='gram' with masks")
        if len(masks) != len(styles):
            raise ParameterError(f"{len(masks)} mask(s) for {len(styles)} style image(s); give one mask per style")
        shares = normalize_blend_weights(settings.blend_weights, len(styles))  # sum to 1, whatever their size
        region = [w / max(shares) for w in shares]  # relative region weights, the largest 1: none overflows
        grams = style_targets(extractor, styles, layers, method="loss")
        style = [(w * float(m.mean()), g) for w, m, (_, g) in zip(region, masks, grams)]
        if not sum(w for w, _ in style) > 0:
            raise ParameterError("masks: every mask is black (or its blend weight 0), so no style goes anywhere; "
                                 "paint the region of each style white")
        return cls(extractor, content_features, style, tv_loss(content), [layer_masks(m, layers) for m in masks])

    def objective(self, settings: Settings) -> Objective:
        """These targets with the loss weights of `settings` (global and per layer)."""
        return Objective(self, settings)


class Objective(nn.Module):
    """total = content_weight * content + style_weight * style + tv_weight * tv, a function of the pixels alone.

    Each term relative or absolute (`settings.loss`), the style term a Gram loss or the Gaussian W2 distance
    (`settings.style_loss`), over the whole picture or averaged over the cells of `settings.style_grid`. Images
    (B,3,H,W) in [0,1] -> {"content", "style", "tv": unweighted, "total"}, each (B,). The weights are device tensors
    (one per batch image, or one), so a CUDA graph can take another run's by copying them in; the relative form's
    per-layer divisors are constants of the run, computed here once.
    """

    def __init__(self, targets: Targets, settings: Settings) -> None:
        super().__init__()
        self.extractor, self.content, self.style, self.masks = (targets.extractor, dict(targets.content),
                                                                 targets.style, targets.masks)
        self.grid = settings.style_grid
        device, dtype = targets.content_tv.device, targets.content_tv.dtype
        self.weights = {name.removesuffix("_weight"): torch.as_tensor(w, dtype=dtype, device=device)
                        for name, w in settings.loss_weights.items()}
        #: For the W2 loss, each style target's covariance roots T^½ (computed once); None for the Gram loss.
        self.roots = None if settings.style_loss == "gram" else [
            {layer: covariance_root(m) for layer, m in moments.items()} for _, moments in self.style]
        if settings.loss == "relative":
            blended = {layer: sum(a * g[layer] for a, g in self.style) / sum(a for a, _ in self.style)
                       for layer in settings.style_layers}
            self.content_scales = relative_weights(settings.content_layers, self.content)
            self.style_scales = (relative_weights if self.roots is None else w2_relative_weights)(
                settings.style_layers, blended)
            self.tv_scale = 1 / targets.content_tv.clamp_min(TV_FLOOR)
        else:
            self.content_scales = {k: torch.tensor(w, dtype=dtype, device=device)
                                   for k, w in settings.content_layers.items()}
            self.style_scales = {k: torch.tensor(w, dtype=dtype, device=device)
                                 for k, w in settings.style_layers.items()}
            self.tv_scale = torch.ones(1, dtype=dtype, device=device)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.extractor(image)
        cells = grid_cells(feats, self.grid)  # each cell of the style_grid matches the whole style
        style = 0
        for k, (alpha, targets) in enumerate(self.style):  # one target, or one per style ("loss" blend) or region
            for cell in cells:
                style = style + alpha / len(cells) * (
                    style_loss(cell, targets, self.style_scales, None if self.masks is None else self.masks[k])
                    if self.roots is None else w2_style_loss(cell, targets, self.roots[k], self.style_scales))
        terms = {"content": content_loss(feats, self.content, self.content_scales), "style": style,
                 "tv": self.tv_scale * tv_loss(image)}
        terms["total"] = sum(self.weights[name] * terms[name] for name in ("content", "style", "tv"))
        return terms


def check_grid(n: int, image: torch.Tensor, style_features: Features, masked: bool) -> None:
    """Refuse a `style_grid` of n that a map of `style_features` ({layer: (1,C,h,w)}) of `image` (1,3,H,W) cannot
    hold, or n > 1 with masks (the masks are the regions then)."""
    if n > 1 and masked:
        raise ParameterError(f"style_grid={n}: with masks, the masks are the regions; use style_grid=1")
    for layer, f in style_features.items():
        if min(f.shape[-2:]) < n:
            (height, width), (h, w) = image.shape[-2:], f.shape[-2:]
            raise ParameterError(f"style_grid={n}: at {width}x{height} px the {layer} map is {w}x{h}, too small for "
                                 f"{n}x{n} cells; use style_grid={min(h, w)} or less, or a larger picture (or "
                                 "a larger pyramid_start)")


def initial_image(init: str, content: torch.Tensor, styles: Sequence[torch.Tensor], seed: int) -> torch.Tensor:
    """The starting image (1,3,H,W): the content, uniform noise, or the first style resized."""
    if init == "content":
        return content.clone()
    if init == "noise":
        return torch.rand(content.shape, generator=torch.Generator().manual_seed(seed)).to(content.device)
    return resize(styles[0], tuple(content.shape[-2:]))
