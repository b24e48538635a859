"""Blending several style images into one style target.

Given styles s_1..s_n with blend weights a_1..a_n (non-negative, normalised to sum to 1):

- ``"gram"`` (default): average the Gram matrices, A_l = sum_k a_k G_l(s_k), and match that.
- ``"features"``: average the feature maps (styles resized to the first one's size first),
  F_l = sum_k a_k F_l(s_k), and match the Gram matrix of the average, G_l(F_l).
- ``"loss"``: keep every style's Gram matrices and sum the weighted losses,
  sum_k a_k * style_loss(x, s_k).

"loss" and "gram" always have the same gradient: ``sum_k a_k |G - A_k|^2 = |G - sum_k a_k A_k|^2 + const``.
"features" is different: the Gram matrix of an average contains cross terms between styles.

All three return the same `StyleTargets` form, a list of (weight, {layer: Gram (1,C,C)}), so
the loss code never needs to know which method made them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from nstlib.errors import ParameterError
from nstlib.images import resize
from nstlib.losses import StyleTargets, gram_matrix

BLEND_METHODS = ("gram", "features", "loss")


def normalize_blend_weights(weights: Sequence[float] | None, n: int) -> list[float]:
    """Validate blend weights for `n` styles and scale them to sum to 1 (None means equal weights)."""
    if weights is None:
        return [1.0 / n] * n
    weights = [float(w) for w in weights]
    if len(weights) != n:
        raise ParameterError(f"blend_weights has {len(weights)} values but there are {n} style images; give one each")
    if any(w < 0 for w in weights):
        raise ParameterError(f"blend_weights {weights} contain a negative value; use weights >= 0")
    total = sum(weights)
    if total <= 0:
        raise ParameterError(f"blend_weights {weights} sum to 0; give at least one positive weight")
    return [w / total for w in weights]


@torch.no_grad()
def style_targets(
    extractor: Callable[[torch.Tensor], dict[str, torch.Tensor]],
    styles: Sequence[torch.Tensor],
    layers: Iterable[str],
    weights: Sequence[float] | None = None,
    method: str = "gram",
) -> StyleTargets:
    """Gram targets for one or more style images (each (1,3,H,W) in [0,1]).

    Returns [(weight, {layer: (1,C,C)}), ...]: one entry for "gram" and "features",
    one per style for "loss".
    """
    if method not in BLEND_METHODS:
        raise ParameterError(f"blend={method!r}: choose one of {', '.join(BLEND_METHODS)}")
    if not styles:
        raise ParameterError("no style image given; pass at least one")
    layers = list(layers)
    alphas = normalize_blend_weights(weights, len(styles))

    if method == "features":
        size = tuple(styles[0].shape[-2:])
        feats = [extractor(resize(s, size)) for s in styles]
        mixed = {layer: sum(a * f[layer] for a, f in zip(alphas, feats)) for layer in layers}
        return [(1.0, {layer: gram_matrix(mixed[layer]) for layer in layers})]

    grams = []
    for style in styles:
        feats = extractor(style)
        grams.append({layer: gram_matrix(feats[layer]) for layer in layers})
    if method == "loss":
        return list(zip(alphas, grams))
    return [(1.0, {layer: sum(a * g[layer] for a, g in zip(alphas, grams)) for layer in layers})]
