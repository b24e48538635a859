"""From pictures to an objective: the images, the network, the targets, the weighted objective.

1. `prepare_images`: load the content (long side `size`) and the styles (`style_side`: `style_scale`
   x that);
2. `Targets.build`: the content features and the (blended) style Gram matrices, computed once,
   without gradients, from the images and the network (`nstlib.features.Network` builds it);
3. `Targets.objective(settings)`: targets + loss weights = an `Objective`, a function of the pixels
   alone. Changing a weight builds a new objective from the same targets: nothing is recomputed;
   `make_objective` does both steps in one call;
4. `initial_image`: where the optimisation starts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from nstlib.blend import style_targets
from nstlib.errors import ImageLoadError
from nstlib.images import ImageLike, load_image, resize
from nstlib.losses import Features, Objective, StyleTargets, tv_loss
from nstlib.masks import guided_style_targets
from nstlib.settings import Settings, resolve

Extractor = Callable[[torch.Tensor], dict[str, torch.Tensor]]


def as_list(items: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """One picture (style or mask) or a sequence of them -> a list."""
    if isinstance(items, (str, torch.Tensor, Image.Image)) or not isinstance(items, Sequence):
        return [items]
    return list(items)


def check_source(src: ImageLike, name: str) -> None:
    """Refuse an array or tensor with no pixels to read, before anything looks at its shape: an empty one, a meta
    tensor (a shape without data) or a sparse one. `load_image` checks everything else."""
    if isinstance(src, torch.Tensor) and (src.is_meta or src.layout != torch.strided):
        kind = "meta" if src.is_meta else str(src.layout).removeprefix("torch.")
        raise ImageLoadError(f"{name}: a {kind} tensor has no pixels to read; pass an ordinary tensor with its "
                             "data (e.g. x.to_dense() for a sparse one)")
    if isinstance(src, (torch.Tensor, np.ndarray)) and 0 in src.shape:
        raise ImageLoadError(f"{name}: an empty {type(src).__name__} of shape {tuple(src.shape)}; pass a picture")


def style_side(long_side: int, style_scale: float) -> int:
    """The long side of the style images for a content of long side `long_side`: `style_scale` x it."""
    return round(long_side * style_scale)


def prepare_images(
    content: ImageLike, styles: ImageLike | Sequence[ImageLike], settings: Settings
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Load the content (1,3,H,W), long side `settings.size`, and the styles at `style_side` of it."""
    style_list = as_list(styles)
    check_source(content, "content")
    for i, style in enumerate(style_list):
        check_source(style, f"styles[{i}]")
    content = load_image(content, settings.size)
    side = style_side(max(content.shape[-2:]), settings.style_scale)
    return content, [load_image(s, side) for s in style_list]


@dataclass
class Targets:
    """What the image is pulled towards, computed once from the images and the network.

    Attributes:
        extractor: the network, (B,3,H,W) in [0,1] -> {layer: (B,C,h,w)}.
        content: {layer: (1,C,H,W)} feature maps of the content image (the content layers).
        style: blended Gram targets, [(weight, {layer: (1,C,C)})] (see `blend.style_targets`).
        content_tv: the content image's total variation (1,) (or (B,), one per content image): what the
            relative TV term divides by.
        masks: spatial control, one {layer: (1,1,h,w)} per style target (see `nstlib.masks`), or None.
    """

    extractor: Extractor
    content: Features
    style: StyleTargets
    content_tv: torch.Tensor
    masks: list[Features] | None = None

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        extractor: Extractor,
        content: torch.Tensor,
        styles: Sequence[torch.Tensor],
        settings: Settings,
        masks: Sequence[torch.Tensor] | None = None,
    ) -> Targets:
        """Targets for the layers, blend and blend weights of `settings` (its loss weights play no part).

        With `masks` (one (1,1,H,W) mask per style, at the content's size) style k is matched only
        inside mask k, and `blend_weights` become per-region weights (see `nstlib.masks`).
        """
        content_features = {k: v for k, v in extractor(content).items() if k in settings.content_layers}
        if masks is None:
            return cls(extractor, content_features, style_targets(
                extractor, styles, settings.style_layers, settings.blend_weights, settings.blend), tv_loss(content))
        style, style_masks = guided_style_targets(extractor, styles, masks, settings.style_layers,
                                                  settings.blend_weights)
        return cls(extractor, content_features, style, tv_loss(content), style_masks)

    def objective(self, settings: Settings) -> Objective:
        """These targets with the loss weights of `settings` (global and per layer); weights given as (B,)
        tensors (one per batch item, `stylize_grid`) are moved to the targets' device."""
        device = next(iter(self.style[0][1].values())).device
        weights = {k: w.to(device) if isinstance(w, torch.Tensor) else w for k, w in settings.loss_weights.items()}
        return Objective(self.extractor, self.content, self.style, settings.content_layers, settings.style_layers,
                         **weights, style_masks=self.masks, loss=settings.loss, content_tv=self.content_tv)


def make_objective(
    extractor: Extractor,
    content: torch.Tensor,
    styles: Sequence[torch.Tensor],
    settings: Settings | None = None,
    *,
    masks: Sequence[torch.Tensor] | None = None,
    **overrides: Any,
) -> Objective:
    """The objective for (1,3,H,W) `content` and `styles` on the device: `Targets.build` + `objective`."""
    settings = resolve(settings, overrides)
    return Targets.build(extractor, content, styles, settings, masks).objective(settings)


def initial_image(init: str, content: torch.Tensor, styles: Sequence[torch.Tensor], seed: int) -> torch.Tensor:
    """The starting image (1,3,H,W): the content, uniform noise, or the first style resized."""
    if init == "content":
        return content.clone()
    if init == "noise":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(content.shape, generator=gen).to(content.device)
    return resize(styles[0], tuple(content.shape[-2:]))
