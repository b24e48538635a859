"""The maths of neural style transfer: the Gram matrix, and the content, style and total-variation losses.

Two forms of the content and style terms:

- absolute (Gatys et al. 2016): mean((F - P)^2) and mean((G - A)^2), whose size depends on the network, its
  preprocessing, the style picture and the layer, so one set of weights cannot mean the same everywhere;
- relative (the default): each over its target's mean square, mean((F - P)^2) / mean(P^2), 1 where the error is as
  large as the target. It is the absolute term with the per-layer weight 1/mean(P^2) (`relative_weights`).

`gaussian_w2` matches a Gaussian fit of the features (mean and covariance) by the Wasserstein-2 distance instead of the
Gram matrix, as crowsonkb's style-transfer-pytorch does. (B,...) inputs give (B,) losses, one per image.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

Features = Mapping[str, torch.Tensor]
Weight = float | torch.Tensor  # a float, or a (B,) tensor giving each batch item its own weight
#: The floor of a relative term's divisor, for an all-zero target (a dead channel map); any real target is far above.
NORM_FLOOR = 1e-30


def mean_square(target: torch.Tensor) -> torch.Tensor:
    """A relative term's divisor: the mean square of (1,...) or (B,...) targets, (1,) or (B,), floored."""
    return target.pow(2).mean(dim=tuple(range(1, target.ndim))).clamp_min(NORM_FLOOR)


def relative_weights(layer_weights: Mapping[str, Weight], targets: Features) -> dict[str, torch.Tensor]:
    """{layer: w_l / mean(T_l^2)}, each (1,) or (B,): the per-layer weights that make an absolute term relative."""
    return {layer: weight / mean_square(targets[layer]) for layer, weight in layer_weights.items()}


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Channel correlations of a feature map: (B,C,H,W) -> (B,C,C).

    G[b,i,j] = sum_p F[b,i,p] F[b,j,p] / (H*W), with p running over the H*W positions: the *average* outer product of
    the feature vectors, so it does not grow with the image's size.

    Gatys et al. use the unnormalised G' = M*G (M = H*W) and E_l = 1/(4 N^2 M^2) sum (G' - A')^2 with N = C, so our
    per-layer loss mean((G - A)^2) = 1/N^2 sum (G - A)^2 = 4 E_l.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    return flat @ flat.transpose(1, 2) / (h * w)


def guided_gram_matrix(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of one region: (B,C,H,W) features and a (1,1,H,W) mask in [0,1] -> (B,C,C).

    G[b,i,j] = sum_p m_p^2 F[b,i,p] F[b,j,p] / sum_p m_p^2: the average outer product inside the region (Gatys et al.
    2017's guided Gram, over the region's area so that it compares with a whole style picture's Gram matrix; an all-ones
    mask gives exactly `gram_matrix`).
    """
    area = mask.pow(2).sum().clamp_min(1e-8)
    return gram_matrix(features * mask) * (features.shape[-2] * features.shape[-1]) / area


def moment_matrix(features: torch.Tensor) -> torch.Tensor:
    """The Gram matrix of the feature maps with a map of ones appended: (B,C,H,W) -> (B,C+1,C+1) = [[G, m], [mᵀ, 1]].

    It holds the second moments G and the mean m of the feature vectors, and blends like a Gram matrix (an average of
    moment matrices is the moment matrix of the mixture): the style statistic of `gaussian_w2`.
    """
    return gram_matrix(torch.cat([features, torch.ones_like(features[:, :1])], dim=1))


def covariance_root(moments: torch.Tensor) -> torch.Tensor:
    """T^½, the symmetric square root of the covariance T = G - m mᵀ held in a (1,C+1,C+1) `moment_matrix`: (1,C,C)."""
    c = moments.shape[-1] - 1
    mean = moments[:, :c, c:]
    values, vectors = torch.linalg.eigh((moments[:, :c, :c] - mean @ mean.transpose(1, 2)).double())
    return (vectors * values.clamp_min(0).sqrt()[:, None, :] @ vectors.transpose(1, 2)).to(moments.dtype)


#: `gaussian_w2` counts eigenvalues below this fraction of the largest as 0 (float32 noise; √ has infinite slope at 0).
EIGEN_FLOOR = 1e-8


def gaussian_w2(features: torch.Tensor, moments: torch.Tensor, root: torch.Tensor) -> torch.Tensor:
    """The squared Wasserstein-2 distance from the Gaussian fit of each feature map (B,C,H,W) to a style's: (B,).

    With m, S the mean and covariance of the output's feature vectors and m_t, T the style's (its `moment_matrix`
    (1,C+1,C+1) and T^½ = `root` (1,C,C)):

        W2² = |m - m_t|² + tr S + tr T - 2 tr (T^½ S T^½)^½

    The last trace is the sum of the singular values of T^½ X, where S = X Xᵀ (X: the centred features over √(H·W)):
    taken as the square roots of the eigenvalues of (T^½X)(T^½X)ᵀ, a (C,C) matrix, when there are at least as many
    positions as channels, else by an SVD. Either way no square root of a matrix that depends on the image is needed.
    """
    b, c, h, w = features.shape
    flat = features.reshape(b, c, h * w)
    mean = flat.mean(2)
    centred = (flat - mean[..., None]) / (h * w) ** 0.5
    style_mean = moments[:, :c, c]
    style_trace = moments[:, :c, :c].diagonal(dim1=1, dim2=2).sum(1) - style_mean.pow(2).sum(1)
    spread = root @ centred
    if h * w < c:
        cross = torch.linalg.svdvals(spread).sum(1)
    else:
        values = torch.linalg.eigvalsh(spread @ spread.transpose(1, 2))
        cross = values.clamp_min(EIGEN_FLOOR * values[:, -1:].detach().clamp_min(NORM_FLOOR)).sqrt().sum(1)
    return (mean - style_mean).pow(2).sum(1) + centred.pow(2).sum((1, 2)) + style_trace - 2 * cross


def grid_cells(features: Features, n: int) -> list[dict[str, torch.Tensor]]:
    """The n*n cells of an n x n grid laid over every map of `features` ({layer: (B,C,H,W)}), row by row: each cell is
    {layer: (B,C,h,w)}, the same part of the picture at every layer, its edges at floor(i*H/n) and floor(j*W/n).

    A Gram matrix of the whole picture can be matched by painting only part of it; matching the style in every cell
    (`Settings.style_grid`) asks for it everywhere.
    """
    def cell(f: torch.Tensor, i: int, j: int) -> torch.Tensor:
        h, w = f.shape[-2:]
        return f[..., i * h // n:(i + 1) * h // n, j * w // n:(j + 1) * w // n]
    return [{layer: cell(f, i, j) for layer, f in features.items()} for i in range(n) for j in range(n)]


def content_loss(features: Features, targets: Features, layer_weights: Mapping[str, Weight],
                 relative: bool = False) -> torch.Tensor:
    """sum_l w_l * mean((F_l - P_l)^2), one value per batch item: (B,). Relative: each layer over mean(P_l^2).

    `features[l]` is (B,C,H,W); `targets[l]` is (1,C,H,W) or (B,C,H,W).
    """
    if relative:
        layer_weights = relative_weights(layer_weights, targets)
    return sum(weight * (features[layer] - targets[layer]).pow(2).mean(dim=(1, 2, 3))
               for layer, weight in layer_weights.items())


def style_loss(features: Features, target_grams: Features, layer_weights: Mapping[str, Weight],
               masks: Features | None = None, relative: bool = False) -> torch.Tensor:
    """sum_l w_l * mean((G(F_l) - A_l)^2), one value per batch item: (B,). Relative: each layer over mean(A_l^2).

    `features[l]` is (B,C,H,W); `target_grams[l]` is a Gram matrix (1,C,C) or (B,C,C). With `masks` ({l: (1,1,H_l,W_l)})
    only the masked region is compared, through `guided_gram_matrix`.
    """
    if relative:
        layer_weights = relative_weights(layer_weights, target_grams)
    total = 0
    for layer, weight in layer_weights.items():
        gram = gram_matrix(features[layer]) if masks is None else guided_gram_matrix(features[layer], masks[layer])
        total = total + weight * (gram - target_grams[layer]).pow(2).mean(dim=(1, 2))
    return total


def w2_relative_weights(layer_weights: Mapping[str, Weight], moments: Features) -> dict[str, torch.Tensor]:
    """{layer: w_l / tr G_l}: W2² relative to the style's mean squared feature norm E|f|² = tr G (1 where the output's
    features are all 0), from (1,C+1,C+1) `moment_matrix` targets (whose trace also counts the 1 of the ones map)."""
    return {layer: weight / (moments[layer].diagonal(dim1=-2, dim2=-1).sum(-1) - 1).clamp_min(NORM_FLOOR)
            for layer, weight in layer_weights.items()}


def w2_style_loss(features: Features, moments: Features, roots: Features, layer_weights: Mapping[str, Weight],
                  relative: bool = False) -> torch.Tensor:
    """sum_l w_l * W2²_l (`gaussian_w2`), one value per batch item: (B,). The style of layer l is its `moment_matrix`
    `moments[l]` (1,C+1,C+1) and `covariance_root` `roots[l]` (1,C,C). Relative: each layer over tr G_l."""
    if relative:
        layer_weights = w2_relative_weights(layer_weights, moments)
    return sum(weight * gaussian_w2(features[layer], moments[layer], roots[layer])
               for layer, weight in layer_weights.items())


def tv_loss(image: torch.Tensor) -> torch.Tensor:
    """Squared (L2) total variation of (B,C,H,W) images: (B,).

    mean((x[i,j+1] - x[i,j])^2) + mean((x[i+1,j] - x[i,j])^2): smooth, so L-BFGS and gradient checks behave, and it
    damps the high-frequency speckle optimisation leaves. The L1 form keeps hard edges better but has no gradient where
    neighbours are equal.
    """
    dx = image[..., :, 1:] - image[..., :, :-1]
    dy = image[..., 1:, :] - image[..., :-1, :]
    return dx.pow(2).mean(dim=(1, 2, 3)) + dy.pow(2).mean(dim=(1, 2, 3))
