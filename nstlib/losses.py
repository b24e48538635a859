"""Content, style and total-variation losses, and the weighted objective that combines them.

Every loss is batched: it takes feature maps or images with a batch dimension B and returns a
tensor of shape (B,), one value per image, so that B different weight settings can be optimised
together (see `optimize.stylize_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

Features = Mapping[str, torch.Tensor]
#: A blended style target: a list of (blend weight, {layer: Gram matrix (1,C,C)}).
StyleTargets = Sequence[tuple[float, Mapping[str, torch.Tensor]]]


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Channel correlations of a feature map: (B,C,H,W) -> (B,C,C).

    G[b,i,j] = sum_p F[b,i,p] F[b,j,p] / (H*W), with p running over the H*W positions.

    Dividing by the number of positions M = H*W makes G the *average* outer product of the
    feature vectors, so it does not grow with image size (resolution invariance).

    Relation to Gatys et al. (2016): they use the unnormalised G' = M*G and the per-layer loss
    E_l = 1/(4 N^2 M^2) * sum (G' - A')^2 with N = C channels. Our per-layer loss
    `mean((G - A)^2)` = 1/N^2 * sum (G - A)^2 = 1/(N^2 M^2) * sum (G' - A')^2 = 4 E_l.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def guided_gram_matrix(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of one region: (B,C,H,W) features and a (1,1,H,W) mask in [0,1] -> (B,C,C).

    G[b,i,j] = sum_p m_p^2 F[b,i,p] F[b,j,p] / sum_p m_p^2: the average outer product of the feature
    vectors inside the region (Gatys et al. 2017's guided Gram, normalised by the region's area so
    that it compares with a whole style image's `gram_matrix`; an all-ones mask gives exactly that).
    """
    area = mask.pow(2).sum().clamp_min(1e-8)
    return gram_matrix(features * mask) * (features.shape[-2] * features.shape[-1]) / area


def content_loss(features: Features, targets: Features, layer_weights: Mapping[str, float]) -> torch.Tensor:
    """sum_l w_l * mean((F_l - P_l)^2), one value per batch item: (B,).

    `features[l]` is (B,C,H,W); `targets[l]` is (1,C,H,W) or (B,C,H,W).
    """
    return sum(
        weight * (features[layer] - targets[layer]).pow(2).mean(dim=(1, 2, 3))
        for layer, weight in layer_weights.items()
    )


def style_loss(
    features: Features, target_grams: Features, layer_weights: Mapping[str, float], masks: Features | None = None
) -> torch.Tensor:
    """sum_l w_l * mean((G(F_l) - A_l)^2), one value per batch item: (B,).

    `features[l]` is (B,C,H,W); `target_grams[l]` is a Gram matrix (1,C,C) or (B,C,C).
    Each term equals 4 * Gatys' E_l (see `gram_matrix`). With `masks` ({l: (1,1,H_l,W_l)}) only
    the masked region is compared, through `guided_gram_matrix`.
    """
    def gram(layer: str) -> torch.Tensor:
        return gram_matrix(features[layer]) if masks is None else guided_gram_matrix(features[layer], masks[layer])

    return sum(
        weight * (gram(layer) - target_grams[layer]).pow(2).mean(dim=(1, 2))
        for layer, weight in layer_weights.items()
    )


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Squared (L2) total variation of (B,C,H,W) images: (B,).

    mean((x[i,j+1] - x[i,j])^2) + mean((x[i+1,j] - x[i,j])^2).

    We pick the squared (L2) form: it is smooth, so L-BFGS and gradient checks behave, and it
    damps the high-frequency speckle that optimisation leaves. The L1 form (absolute
    differences) preserves hard edges better but is not differentiable where neighbours are equal.
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean(dim=(1, 2, 3)) + dy.pow(2).mean(dim=(1, 2, 3))


def blended_style_loss(
    features: Features,
    targets: StyleTargets,
    layer_weights: Mapping[str, float],
    masks: Sequence[Features] | None = None,
) -> torch.Tensor:
    """sum_k a_k * style_loss(features, targets_k): the style loss against blended targets (B,).

    `masks`, if given, holds one {layer: mask} per target: target k is matched only in region k.
    """
    masks = masks if masks is not None else [None] * len(targets)
    return sum(alpha * style_loss(features, grams, layer_weights, m) for (alpha, grams), m in zip(targets, masks))


Weight = float | torch.Tensor  # a float, or a (B,) tensor giving each batch item its own weight


class Objective(nn.Module):
    """The full weighted objective of neural style transfer.

    total = content_weight * content + style_weight * style + tv_weight * tv

    Calling it on images (B,3,H,W) in [0,1] returns a dict of (B,) tensors with the keys
    "content", "style", "tv" (unweighted terms) and "total" (the weighted sum).

    Args:
        extractor: a `VGGFeatures` (or the runtime's `PrecisionFeatures`) that returns every layer named in
            the two layer dicts, as float32 maps.
        content_targets: {layer: (1,C,H,W)} feature maps of the content image.
        style_targets: blended Gram targets (see `blend.style_targets`).
        content_layers, style_layers: {layer: per-layer weight}.
        content_weight, style_weight, tv_weight: global weights, floats or (B,) tensors on the image's device.
        style_masks: optional spatial control, one {layer: (1,1,h,w) mask} per style target
            (see `nstlib.masks`); None matches every target over the whole image.
    """

    def __init__(
        self,
        extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
        content_targets: Features,
        style_targets: StyleTargets,
        content_layers: Mapping[str, float],
        style_layers: Mapping[str, float],
        content_weight: Weight,
        style_weight: Weight,
        tv_weight: Weight,
        style_masks: Sequence[Features] | None = None,
    ) -> None:
        super().__init__()
        self.extractor = extractor
        self.content_targets = dict(content_targets)
        self.style_targets = list(style_targets)
        self.content_layers = dict(content_layers)
        self.style_layers = dict(style_layers)
        self.content_weight = content_weight
        self.style_weight = style_weight
        self.tv_weight = tv_weight
        self.style_masks = None if style_masks is None else [dict(m) for m in style_masks]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.extractor(image)
        zero = image.new_zeros(image.shape[0])  # keeps (B,) when a term has no layers
        terms = {
            "content": zero + content_loss(feats, self.content_targets, self.content_layers),
            "style": zero + blended_style_loss(feats, self.style_targets, self.style_layers, self.style_masks),
            "tv": tv_loss(image),
        }
        terms["total"] = (
            self.content_weight * terms["content"]
            + self.style_weight * terms["style"]
            + self.tv_weight * terms["tv"]
        )
        return terms
