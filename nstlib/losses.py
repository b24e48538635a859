"""Content, style and total-variation losses, and the weighted objective that combines them.

Two forms of each term (`LOSS_FORMS`):

- "absolute" (Gatys et al. 2016): squared errors, mean((F - P)^2) and mean((G - A)^2). Their size
  follows the size of the targets, which depends on the network and its preprocessing (a Caffe VGG
  reads pixels in 0-255, about 58 times a torchvision VGG's inputs, and its features grow with them:
  the style term by that factor to the fourth power), on the style image (a bright busy pattern has
  larger Gram matrices than a dark sparse one) and on the layer. One set of weights cannot mean the
  same thing on all of them.
- "relative" (nstlib's default): each squared error divided by its target's, mean((F - P)^2) / mean(P^2)
  and mean((G - A)^2) / mean(A^2), and the TV term by the content image's TV. Every term is then 1
  where the error is as large as the target itself, for any network, style image, layer and size:
  multiplying every feature map by k leaves the objective unchanged (tests/test_losses.py).
  crowsonkb's style-transfer-pytorch normalises every layer's term too (its ScaledMSELoss), for the
  same reason. We divide by the target's mean square, a constant of the run: each relative term is
  then exactly Gatys' squared error with a per-layer weight 1/mean(P^2) or 1/mean(A^2), so its
  gradient, and everything notebooks 02-04 derive for the absolute form, carries over unchanged.

Every loss is batched: it takes feature maps or images with a batch dimension B and returns a
tensor of shape (B,), one value per image, so that B different weight settings can be optimised
together (see `optimize.stylize_grid`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import nn

Features = Mapping[str, torch.Tensor]
Weight = float | torch.Tensor  # a float, or a (B,) tensor giving each batch item its own weight
#: A blended style target: a list of (blend weight, {layer: Gram matrix (1,C,C)}).
StyleTargets = Sequence[tuple[float, Mapping[str, torch.Tensor]]]
#: The forms of the objective: see the module docstring.
LOSS_FORMS = ("relative", "absolute")
#: A relative term divides by its target's mean square; this floor keeps an all-zero target (a dead channel map)
#: from dividing by zero. Any target with a value on it, at any feature scale float32 holds, is far above it.
NORM_FLOOR = 1e-30
#: The same for the TV term: a flat content image has TV 0. A photo's TV halves with each doubling of its size
#: (neighbours grow alike): 4e-2 to 1e-3 for the bundled photos from 64 to 512 px, ~100 times this floor at least.
TV_FLOOR = 1e-5


def mean_square(target: torch.Tensor) -> torch.Tensor:
    """A relative term's divisor: the mean square of (1,...) or (B,...) targets, (1,) or (B,), floored."""
    return target.pow(2).mean(dim=tuple(range(1, target.ndim))).clamp_min(NORM_FLOOR)


def relative_weights(layer_weights: Mapping[str, Weight], targets: Features) -> dict[str, torch.Tensor]:
    """{layer: w_l / mean(T_l^2)}, each (1,) or (B,): the per-layer weights that make an absolute term relative."""
    return {layer: weight / mean_square(targets[layer]) for layer, weight in layer_weights.items()}


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


def content_loss(
    features: Features, targets: Features, layer_weights: Mapping[str, Weight], relative: bool = False
) -> torch.Tensor:
    """sum_l w_l * mean((F_l - P_l)^2), one value per batch item: (B,). Relative: each layer / mean(P_l^2).

    `features[l]` is (B,C,H,W); `targets[l]` is (1,C,H,W) or (B,C,H,W).
    """
    if relative:
        layer_weights = relative_weights(layer_weights, targets)
    return sum(
        weight * (features[layer] - targets[layer]).pow(2).mean(dim=(1, 2, 3))
        for layer, weight in layer_weights.items()
    )


def style_loss(
    features: Features,
    target_grams: Features,
    layer_weights: Mapping[str, Weight],
    masks: Features | None = None,
    relative: bool = False,
) -> torch.Tensor:
    """sum_l w_l * mean((G(F_l) - A_l)^2), one value per batch item: (B,). Relative: each layer / mean(A_l^2).

    `features[l]` is (B,C,H,W); `target_grams[l]` is a Gram matrix (1,C,C) or (B,C,C).
    Each absolute term equals 4 * Gatys' E_l (see `gram_matrix`). With `masks` ({l: (1,1,H_l,W_l)})
    only the masked region is compared, through `guided_gram_matrix`.
    """
    def gram(layer: str) -> torch.Tensor:
        return gram_matrix(features[layer]) if masks is None else guided_gram_matrix(features[layer], masks[layer])

    if relative:
        layer_weights = relative_weights(layer_weights, target_grams)
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


def blended_grams(targets: StyleTargets, layers: Iterable[str]) -> dict[str, torch.Tensor]:
    """The targets' weighted average {layer: sum_k a_k A_k / sum_k a_k}, (1,C,C): for one target, its own Grams."""
    total = sum(alpha for alpha, _ in targets)
    return {layer: sum(alpha * grams[layer] for alpha, grams in targets) / total for layer in layers}


def blended_style_loss(
    features: Features,
    targets: StyleTargets,
    layer_weights: Mapping[str, Weight],
    masks: Sequence[Features] | None = None,
) -> torch.Tensor:
    """sum_k a_k * style_loss(features, targets_k): the style loss against blended targets (B,).

    `masks`, if given, holds one {layer: mask} per target: target k is matched only in region k.
    The relative form is this with `relative_weights(layer_weights, blended_grams(targets, layer_weights))`: every k's
    layer divided by the same constant, the blended target's mean square, so that the "loss" blend
    stays the "gram" blend plus a constant, as in the absolute form (notebook 06).
    """
    masks = masks if masks is not None else [None] * len(targets)
    return sum(alpha * style_loss(features, grams, layer_weights, m) for (alpha, grams), m in zip(targets, masks))


class Objective(nn.Module):
    """The full weighted objective of neural style transfer.

    total = content_weight * content + style_weight * style + tv_weight * tv

    with each term in the form `loss` ("relative" or "absolute", see the module docstring).
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
        loss: "relative" or "absolute".
        content_tv: the content image's `tv_loss`, (1,) or (B,): the relative TV term's divisor.
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
        loss: str = "relative",
        content_tv: torch.Tensor | None = None,
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
        if loss not in LOSS_FORMS:
            raise ValueError(f"loss={loss!r}: choose one of {', '.join(LOSS_FORMS)}")
        if loss == "relative" and content_tv is None:
            raise ValueError("the relative objective needs content_tv, the content image's tv_loss")
        self.loss = loss
        self.content_tv = content_tv
        # The per-layer weights and the TV factor the terms are computed with. The relative form is the absolute
        # one with each weight over its target's mean square and TV over the content's: constants of the run,
        # computed here once rather than at every step.
        self.content_scales: dict[str, Weight] = dict(self.content_layers)
        self.style_scales: dict[str, Weight] = dict(self.style_layers)
        self.tv_scale: Weight = 1.0
        if loss == "relative":
            self.content_scales = relative_weights(self.content_layers, self.content_targets)
            blended = blended_grams(self.style_targets, self.style_layers)
            self.style_scales = relative_weights(self.style_layers, blended)
            self.tv_scale = 1 / content_tv.clamp_min(TV_FLOOR)

    def target_scales(self) -> list[torch.Tensor]:
        """The scales computed from the targets, in a fixed order ((1,) or (B,) tensors; none in the absolute form)."""
        scales = [*self.content_scales.values(), *self.style_scales.values(), self.tv_scale]
        return [s for s in scales if isinstance(s, torch.Tensor)]

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        feats = self.extractor(image)
        zero = image.new_zeros(image.shape[0])  # keeps (B,) when a term has no layers
        terms = {
            "content": zero + content_loss(feats, self.content_targets, self.content_scales),
            "style": zero + blended_style_loss(feats, self.style_targets, self.style_scales, self.style_masks),
            "tv": self.tv_scale * tv_loss(image),
        }
        terms["total"] = (
            self.content_weight * terms["content"]
            + self.style_weight * terms["style"]
            + self.tv_weight * terms["tv"]
        )
        return terms
