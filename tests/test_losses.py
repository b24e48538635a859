"""The losses against hand computations, explicit loops and autograd's gradcheck."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nstlib.core.losses import (
    NORM_FLOOR,
    content_loss,
    covariance_root,
    gaussian_w2,
    gram_matrix,
    grid_cells,
    moment_matrix,
    style_loss,
    tv_loss,
    w2_style_loss,
)
from nstlib.core.objective import Objective, Targets
from nstlib.core.result import TERMS
from nstlib.core.settings import LOSS_FORMS, Settings
from nstlib.engine import graphs


def test_gram_of_a_tiny_tensor_by_hand() -> None:
    # two channels over four positions (H=W=2): a = [1,2,3,4], b = [0,1,0,1]
    f = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [0.0, 1.0]]]])
    # a.a = 30, a.b = 6, b.b = 2, each divided by H*W = 4
    expected = torch.tensor([[[30.0, 6.0], [6.0, 2.0]]]) / 4
    assert torch.allclose(gram_matrix(f), expected)


def test_gram_matches_explicit_loops() -> None:
    f = torch.randn(2, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    g = gram_matrix(f)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                value = sum(float(f[b, i, y, x] * f[b, j, y, x]) for y in range(4) for x in range(5)) / 20
                assert g[b, i, j].item() == pytest.approx(value, rel=1e-5, abs=1e-6)


def test_gram_is_invariant_to_permuting_positions() -> None:
    f = torch.randn(1, 8, 6, 6, generator=torch.Generator().manual_seed(1))
    perm = torch.randperm(36, generator=torch.Generator().manual_seed(2))
    shuffled = f.reshape(1, 8, 36)[:, :, perm].reshape(1, 8, 6, 6)
    assert torch.allclose(gram_matrix(f), gram_matrix(shuffled), atol=1e-5)
    assert not torch.allclose(f, shuffled)


def test_gram_is_resolution_invariant_on_a_tiled_texture() -> None:
    tile = torch.randn(1, 4, 5, 5, generator=torch.Generator().manual_seed(3))
    small, large = tile.repeat(1, 1, 2, 2), tile.repeat(1, 1, 6, 6)  # 10x10 and 30x30 of the same texture
    assert torch.allclose(gram_matrix(small), gram_matrix(large), atol=1e-5)
    # the unnormalised Gram of Gatys et al. grows with the number of positions M instead
    flat_s, flat_l = small.flatten(2), large.flatten(2)
    assert torch.allclose((flat_l @ flat_l.mT) / (flat_s @ flat_s.mT), torch.full((1, 4, 4), 9.0), rtol=1e-4)


def test_style_layer_loss_is_four_times_gatys_e_l() -> None:
    gen = torch.Generator().manual_seed(4)
    x, s = torch.randn(1, 6, 5, 7, generator=gen), torch.randn(1, 6, 5, 7, generator=gen)
    n, m = 6, 35
    fx, fs = x.reshape(n, m), s.reshape(n, m)
    e_l = ((fx @ fx.T - fs @ fs.T) ** 2).sum() / (4 * n**2 * m**2)  # Gatys et al. (2016), eq. 4
    ours = style_loss({"a": x}, {"a": gram_matrix(s)}, {"a": 1.0})
    assert ours.item() == pytest.approx(4 * e_l.item(), rel=1e-5)


def test_content_and_style_losses_equal_explicit_formulas() -> None:
    gen = torch.Generator().manual_seed(5)
    f1, f2 = torch.randn(2, 4, 3, 3, generator=gen), torch.randn(2, 8, 2, 2, generator=gen)
    p1, p2 = torch.randn(1, 4, 3, 3, generator=gen), torch.randn(1, 8, 2, 2, generator=gen)
    feats, targets = {"l1": f1, "l2": f2}, {"l1": p1, "l2": p2}
    weights = {"l1": 0.3, "l2": 2.0}
    c = content_loss(feats, targets, weights)
    for b in range(2):
        expected = 0.3 * ((f1[b] - p1[0]) ** 2).sum() / 36 + 2.0 * ((f2[b] - p2[0]) ** 2).sum() / 32
        assert c[b].item() == pytest.approx(expected.item(), rel=1e-5)
    grams = {k: gram_matrix(v) for k, v in targets.items()}
    s = style_loss(feats, grams, weights)
    for b in range(2):
        expected = sum(
            w * ((gram_matrix(feats[k][b : b + 1]) - grams[k]) ** 2).sum() / feats[k].shape[1] ** 2
            for k, w in weights.items()
        )
        assert s[b].item() == pytest.approx(expected.item(), rel=1e-5)


def test_tv_loss_by_hand_and_zero_on_constant_images() -> None:
    img = torch.tensor([[[[0.0, 1.0], [1.0, 3.0]]]])
    # horizontal diffs 1, 2 -> mean 2.5; vertical diffs 1, 2 -> mean 2.5
    assert tv_loss(img).item() == pytest.approx(5.0)
    assert tv_loss(torch.full((3, 3, 16, 16), 0.7)).abs().max().item() == 0.0
    noisy = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    assert tv_loss(noisy).item() > tv_loss(torch.full((1, 3, 16, 16), 0.5) + 0.01 * noisy).item()


def test_losses_are_batched_per_item() -> None:
    gen = torch.Generator().manual_seed(7)
    f, p = torch.randn(3, 4, 5, 5, generator=gen), torch.randn(1, 4, 5, 5, generator=gen)
    batched = content_loss({"a": f}, {"a": p}, {"a": 1.0})
    singles = torch.cat([content_loss({"a": f[i : i + 1]}, {"a": p}, {"a": 1.0}) for i in range(3)])
    assert batched.shape == (3,)
    assert torch.allclose(batched, singles)
    assert tv_loss(f).shape == (3,)


@pytest.mark.parametrize("which", ["content", "style", "tv"])
def test_gradcheck_float64(which: str) -> None:
    gen = torch.Generator().manual_seed(8)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randn(1, 3, 4, 4, dtype=torch.float64, generator=gen)
    fns = {
        "content": lambda v: content_loss({"a": v}, {"a": target}, {"a": 0.7}),
        "style": lambda v: style_loss({"a": v}, {"a": gram_matrix(target)}, {"a": 0.7}),
        "tv": tv_loss,
    }
    assert torch.autograd.gradcheck(fns[which], (x,), eps=1e-6, atol=1e-5)


def objective(extractor, content: dict, grams: dict, content_layers: dict, style_layers: dict, weights=(1.0, 1.0, 1.0),
              loss: str = "relative", content_tv: torch.Tensor | None = None) -> Objective:
    """An `Objective` from hand-made targets: features {layer: (1,C,H,W)}, one style target's Gram matrices."""
    settings = Settings(content_layers=content_layers, style_layers=style_layers, loss=loss,
                        **dict(zip(("content_weight", "style_weight", "tv_weight"), weights)))
    tv = content_tv if content_tv is not None else torch.ones(1)
    return Targets(extractor, content, [(1.0, grams)], tv).objective(settings)


def test_objective_runs_on_a_device_without_autocast() -> None:
    """torch < 2.5 refuses even a disabled autocast on MPS; 'meta' (shapes only) stands in for it here."""
    target = torch.ones(1, 3, 8, 8, device="meta")
    terms = objective(lambda x: {"a": x}, {"a": target}, {"a": gram_matrix(target)}, {"a": 1.0}, {"a": 1.0},
                      content_tv=torch.ones(1, device="meta"))(torch.zeros(2, 3, 8, 8, device="meta"))
    assert {k: (v.shape, v.device.type) for k, v in terms.items()} == dict.fromkeys(TERMS, ((2,), "meta"))


def test_a_style_grid_matches_the_style_in_every_cell_by_hand() -> None:
    """One channel, a 2x2 map [[1,2],[3,4]], its own whole Gram matrix as the target (A = (1+4+9+16)/4 = 7.5): the
    whole picture matches exactly, while each cell of a 2x2 grid is one value v with Gram v^2."""
    f = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2)
    grams = {"a": gram_matrix(f)}
    assert grams["a"].item() == 7.5

    def style(grid: int) -> float:
        settings = Settings(content_layers={"a": 1.0}, style_layers={"a": 1.0}, loss="absolute", style_grid=grid)
        return Targets(lambda x: {"a": x}, {"a": f}, [(1.0, grams)], torch.ones(1)).objective(settings)(f)["style"]

    assert style(1).item() == 0
    assert style(2).item() == pytest.approx(((1 - 7.5) ** 2 + (4 - 7.5) ** 2 + (9 - 7.5) ** 2 + (16 - 7.5) ** 2) / 4)


def test_grid_cells_cover_every_position_once() -> None:
    feats = {"a": torch.randn(2, 3, 7, 5), "b": torch.randn(2, 4, 4, 3)}
    cells = grid_cells(feats, 3)
    for layer, f in feats.items():
        rows = [torch.cat([cells[3 * i + j][layer] for j in range(3)], dim=-1) for i in range(3)]
        assert torch.equal(torch.cat(rows, dim=-2), f)
        assert all(c[layer].numel() > 0 for c in cells)


def test_relative_terms_by_hand() -> None:
    p = torch.tensor([1.0, -1.0, 2.0, 0.0]).view(1, 1, 2, 2)  # mean(P^2) = 6/4
    f = p + torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)  # mean((F-P)^2) = 2/4
    assert content_loss({"a": f}, {"a": p}, {"a": 3.0}, relative=True).item() == pytest.approx(3 * (2 / 4) / (6 / 4))
    a = torch.tensor([[[2.0, 0.0], [0.0, 4.0]]])  # mean(A^2) = 20/4
    x = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0]).view(1, 2, 2, 2)  # G = [[1, 0], [0, 0]]
    assert style_loss({"a": x}, {"a": a}, {"a": 1.0}, relative=True).item() == pytest.approx((1 + 16) / 4 / (20 / 4))
    # an all-zero target divides by the floor, not by zero
    zero = torch.zeros(1, 1, 2, 2)
    assert content_loss({"a": f}, {"a": zero}, {"a": 1.0}, relative=True).item() == pytest.approx(
        float(f.pow(2).mean()) / NORM_FLOOR)


def _two_layers(seed: int):
    gen = torch.Generator().manual_seed(seed)
    maps = {"a": torch.nn.Conv2d(3, 4, 3), "b": torch.nn.Conv2d(3, 6, 5)}

    def extractor(img: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: conv(img).relu() for k, conv in maps.items()}

    return extractor, [torch.rand(1, 3, 12, 12, generator=gen) for _ in range(3)]


def test_relative_objective_is_gatys_loss_with_weights_one_over_the_targets_mean_square() -> None:
    """An independent reference: the absolute objective, with each layer weighted by 1/mean(target^2) by hand."""
    extractor, (content, style, image) = _two_layers(9)
    fc, fs = extractor(content), extractor(style)
    grams = {k: gram_matrix(v) for k, v in fs.items()}
    content_tv = tv_loss(content)
    with torch.no_grad():
        rel = objective(extractor, {"a": fc["a"]}, grams, {"a": 0.5}, {"a": 1.0, "b": 2.0}, (1.0, 3.0, 0.2),
                        content_tv=content_tv)(image)
        by_hand = objective(extractor, {"a": fc["a"]}, grams, {"a": 0.5 / float(fc["a"].pow(2).mean())},
                            {k: w / float(grams[k].pow(2).mean()) for k, w in (("a", 1.0), ("b", 2.0))},
                            (1.0, 3.0, 0.2 / float(content_tv)), loss="absolute")(image)
    for term in ("content", "style", "total"):  # the terms the weights scale
        assert rel[term].item() == pytest.approx(by_hand[term].item(), rel=1e-5)
    assert rel["tv"].item() == pytest.approx(by_hand["tv"].item() / content_tv.item(), rel=1e-5)


@pytest.mark.parametrize("k", [2.0**-8, 57.6, 2.0**10])
def test_relative_objective_ignores_the_feature_scale(k: float) -> None:
    """Every feature map times k (a network with larger inputs, another preprocessing): the same relative objective,
    while the absolute one moves by k^2 (content) and k^4 (style)."""
    gen = torch.Generator().manual_seed(10)
    conv = torch.nn.Conv2d(3, 5, 3)
    content, style, image = (torch.rand(1, 3, 10, 10, generator=gen) for _ in range(3))

    def terms(scale: float, loss: str) -> dict[str, torch.Tensor]:
        def extractor(img: torch.Tensor) -> dict[str, torch.Tensor]:
            return {"a": scale * conv(img).relu()}
        with torch.no_grad():
            grams = {"a": gram_matrix(extractor(style)["a"])}
            return objective(extractor, extractor(content), grams, {"a": 1.0}, {"a": 1.0}, loss=loss,
                             content_tv=tv_loss(content))(image)

    one, scaled = terms(1.0, "relative"), terms(k, "relative")
    for term in TERMS:
        assert scaled[term].item() == pytest.approx(one[term].item(), rel=1e-5)
    one, scaled = terms(1.0, "absolute"), terms(k, "absolute")
    assert scaled["content"].item() == pytest.approx(k**2 * one["content"].item(), rel=1e-4)
    assert scaled["style"].item() == pytest.approx(k**4 * one["style"].item(), rel=1e-4)


def test_relative_tv_is_the_images_tv_over_the_contents() -> None:
    extractor, (content, style, _) = _two_layers(11)
    image = content * 0.5  # half the differences: a quarter of the squared TV
    with torch.no_grad():
        terms = objective(extractor, extractor(content), {k: gram_matrix(v) for k, v in extractor(style).items()},
                          {"a": 1.0}, {"a": 1.0}, (0.0, 0.0, 1.0), content_tv=tv_loss(content))(image)
    assert terms["tv"].item() == pytest.approx(0.25, rel=1e-5)
    assert terms["total"].item() == pytest.approx(0.25, rel=1e-5)


def test_relative_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(12)
    x = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    target = torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=gen)  # (B,...) targets: one divisor per item
    assert torch.autograd.gradcheck(lambda v: content_loss({"a": v}, {"a": target}, {"a": 0.7}, relative=True)
                                    + style_loss({"a": v}, {"a": gram_matrix(target)}, {"a": 0.3}, relative=True),
                                    (x,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("loss", LOSS_FORMS)
def test_a_graphed_steps_copy_loaded_with_other_targets_computes_their_objective(loss: str) -> None:
    """A cached CUDA-graph step keeps its own copy of the objective and copies the next run's tensors into it: the
    targets, the scales the relative form computes from them and the weights must all follow."""
    gen = torch.Generator().manual_seed(13)
    conv = torch.nn.Conv2d(3, 4, 3)

    def extractor(img: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"a": conv(img).relu()}

    def make(seed: int, weights: tuple[float, float, float]) -> Objective:
        content, style = (torch.rand(1, 3, 10, 10, generator=torch.Generator().manual_seed(seed + i)) for i in (0, 1))
        with torch.no_grad():
            return objective(extractor, extractor(content), {"a": gram_matrix(extractor(style)["a"])}, {"a": 1.0},
                             {"a": 1.0}, weights, loss=loss, content_tv=tv_loss(content))

    first, second = make(0, (1.0, 2.0, 3.0)), make(5, (0.5, 4.0, 1.0))
    image = torch.rand(1, 3, 10, 10, generator=gen)
    step = graphs.GraphedStep(first, image, Settings(optimizer="adam"))
    step.load(second, image)
    with torch.no_grad():
        ours, theirs, stale = step.objective(image), second(image), first(image)
    for term in TERMS:
        assert ours[term].item() == pytest.approx(theirs[term].item(), rel=1e-6)
    assert ours["total"].item() != pytest.approx(stale["total"].item(), rel=1e-2)  # the two runs do differ
    assert step.objective.extractor is first.extractor  # the copy shares the network


# ---------------------------------------------------------------- the W2 (Gaussian) style loss


def _orthogonal_features(mean: tuple[float, float], spread: tuple[float, float]) -> torch.Tensor:
    """(1,2,2,2) feature maps whose 4 feature vectors have exactly this mean and the covariance diag(spread^2): each
    channel is its mean plus ±its spread in a pattern orthogonal to the other channel's."""
    signs = torch.tensor([[[1.0, -1.0], [1.0, -1.0]], [[1.0, 1.0], [-1.0, -1.0]]], dtype=torch.float64)
    return (torch.tensor(mean, dtype=torch.float64)[:, None, None] + torch.tensor(spread, dtype=torch.float64)[
        :, None, None] * signs)[None]


def test_w2_between_gaussians_with_diagonal_covariances_by_hand() -> None:
    """Diagonal covariances commute, so W2^2 = |m - m_t|^2 + sum_i (s_i - t_i)^2, with s, t the standard deviations."""
    image, style = _orthogonal_features((1.0, -2.0), (3.0, 0.5)), _orthogonal_features((0.0, 1.0), (1.0, 2.0))
    moments = moment_matrix(style)
    assert torch.allclose(moments[0, :2, 2], torch.tensor([0.0, 1.0], dtype=torch.float64))  # the mean
    assert torch.allclose(moments[0, :2, :2], torch.tensor([[1.0, 0.0], [0.0, 5.0]], dtype=torch.float64))  # E[f fᵀ]
    by_hand = (1 + 9) + (3 - 1) ** 2 + (0.5 - 2) ** 2
    assert gaussian_w2(image, moments, covariance_root(moments)).item() == pytest.approx(by_hand, rel=1e-9)
    assert gaussian_w2(style, moments, covariance_root(moments)).item() == pytest.approx(0, abs=1e-9)


def _matrix_root(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


@pytest.mark.parametrize("shape", [(1, 4, 6, 5), (2, 6, 2, 2)])  # more positions than channels, and fewer (an SVD)
def test_w2_matches_the_closed_form_on_small_random_matrices(shape: tuple[int, ...]) -> None:
    """|m - m_t|^2 + tr S + tr T - 2 tr (T^1/2 S T^1/2)^1/2, computed in NumPy from the clouds of feature vectors."""
    gen = torch.Generator().manual_seed(3)
    image = torch.randn(*shape, generator=gen, dtype=torch.float64)
    style = 2 * torch.randn(1, shape[1], 7, 3, generator=gen, dtype=torch.float64) + 1
    moments = moment_matrix(style)
    got = gaussian_w2(image, moments, covariance_root(moments))
    y = style[0].flatten(1).numpy()
    for b in range(shape[0]):
        x = image[b].flatten(1).numpy()
        s, t = np.cov(x, bias=True), np.cov(y, bias=True)
        root = _matrix_root(t)
        want = (np.sum((x.mean(1) - y.mean(1)) ** 2) + np.trace(s) + np.trace(t)
                - 2 * np.trace(_matrix_root(root @ s @ root)))
        assert got[b].item() == pytest.approx(want, rel=1e-7)


def test_w2_gradcheck_float64() -> None:
    gen = torch.Generator().manual_seed(4)
    image = torch.randn(1, 3, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    moments = moment_matrix(torch.randn(1, 3, 5, 5, generator=gen, dtype=torch.float64))
    assert torch.autograd.gradcheck(lambda x: gaussian_w2(x, moments, covariance_root(moments)), (image,))


def test_moment_matrices_blend_like_the_mixture_of_the_styles() -> None:
    """The average of two styles' moment matrices is the moment matrix of both clouds of feature vectors together."""
    gen = torch.Generator().manual_seed(5)
    a, b = torch.randn(1, 3, 4, 4, generator=gen), torch.randn(1, 3, 4, 4, generator=gen) + 2
    assert torch.allclose((moment_matrix(a) + moment_matrix(b)) / 2, moment_matrix(torch.cat([a, b], dim=3)),
                          atol=1e-6)


@pytest.mark.parametrize("k", [2.0**-8, 57.6])
def test_relative_w2_term_ignores_the_feature_scale_and_is_1_at_zero_features(k: float) -> None:
    """In float64: W2^2 is a difference of traces, which float32 keeps to about 1e-3 of its size."""
    gen = torch.Generator().manual_seed(6)
    image, style = (torch.rand(1, 8, 6, 6, generator=gen, dtype=torch.float64) for _ in range(2))

    def term(x: torch.Tensor, scale: float) -> float:
        moments = {"a": moment_matrix(scale * style)}
        roots = {"a": covariance_root(moments["a"])}
        return w2_style_loss({"a": scale * x}, moments, roots, {"a": 1.0}, relative=True).item()

    assert term(image, k) == pytest.approx(term(image, 1.0), rel=1e-9)
    assert term(torch.zeros_like(image), k) == pytest.approx(1.0, rel=1e-9)
