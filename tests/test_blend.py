"""Each blend method's defining identity, and blend-weight validation."""

from __future__ import annotations

import pytest
import torch

from nstlib.core.errors import ParameterError
from nstlib.core.losses import gram_matrix
from nstlib.core.objective import Targets, normalize_blend_weights, style_targets
from nstlib.core.settings import BLEND_METHODS, DEFAULT_STYLE_LAYERS, LOSS_FORMS, Settings

LAYERS = list(DEFAULT_STYLE_LAYERS)


def test_single_style_gives_identical_targets_for_every_method(vgg, style) -> None:
    targets = {m: style_targets(vgg, [style], LAYERS, method=m) for m in BLEND_METHODS}
    for method, t in targets.items():
        assert len(t) == 1 and t[0][0] == 1.0, method
        for layer in LAYERS:
            assert torch.allclose(t[0][1][layer], targets["gram"][0][1][layer], atol=1e-6), (method, layer)


def test_gram_method_is_the_weighted_mean_of_gram_matrices(vgg, style, style2) -> None:
    (w, blended), = style_targets(vgg, [style, style2], LAYERS, [3, 1], "gram")
    f1, f2 = vgg(style), vgg(style2)
    for layer in LAYERS:
        expected = 0.75 * gram_matrix(f1[layer]) + 0.25 * gram_matrix(f2[layer])
        assert torch.allclose(blended[layer], expected, rtol=1e-5, atol=1e-6)


def test_features_method_is_the_gram_of_the_mean_feature_map(vgg, style, style2) -> None:
    (_, blended), = style_targets(vgg, [style, style2], LAYERS, [1, 1], "features")
    f1, f2 = vgg(style), vgg(style2)
    for layer in LAYERS:
        assert torch.allclose(blended[layer], gram_matrix(0.5 * f1[layer] + 0.5 * f2[layer]), rtol=1e-5, atol=1e-6)
    # ...which is not the mean of the Grams: the cross terms between styles remain
    (_, by_gram), = style_targets(vgg, [style, style2], LAYERS, [1, 1], "gram")
    assert not torch.allclose(blended["relu1_1"], by_gram["relu1_1"], rtol=1e-3)


def test_features_method_resizes_styles_to_the_first(vgg, style) -> None:
    big = torch.nn.functional.interpolate(style, size=(96, 80), mode="bilinear")
    (_, blended), = style_targets(vgg, [style, big], LAYERS, None, "features")
    assert blended["relu1_1"].shape == (1, 64, 64)


@pytest.mark.parametrize("loss", LOSS_FORMS)
def test_loss_method_sums_weighted_losses_and_differs_from_gram_by_a_constant(vgg, style, style2, loss: str) -> None:
    """In both forms of the objective: the relative one divides every target's layer by the same constant."""
    by_loss = style_targets(vgg, [style, style2], LAYERS, [1, 3], "loss")
    by_gram = style_targets(vgg, [style, style2], LAYERS, [1, 3], "gram")
    assert [w for w, _ in by_loss] == [0.25, 0.75]
    gen = torch.Generator().manual_seed(0)
    xs = [torch.rand(1, 3, 64, 64, generator=gen, requires_grad=True) for _ in range(2)]
    gaps, grads = [], []
    for x in xs:
        settings = Settings(loss=loss, content_weight=0.0, tv_weight=0.0)
        a, b = (Targets(vgg, vgg(x.detach()), t, torch.ones(1)).objective(settings)(x)["style"].sum()
                for t in (by_loss, by_gram))
        ga, = torch.autograd.grad(a, x, retain_graph=True)
        gb, = torch.autograd.grad(b, x)
        gaps.append((a - b).item())
        grads.append((ga, gb))
    # sum_k a_k |G - A_k|^2 = |G - sum_k a_k A_k|^2 + const: same gradient, constant gap
    assert gaps[0] > 0 and gaps[0] == pytest.approx(gaps[1], rel=1e-3)
    for ga, gb in grads:
        assert torch.allclose(ga, gb, rtol=1e-3, atol=1e-6 * ga.abs().max().item())  # float32 cancellation


def test_normalize_blend_weights() -> None:
    assert normalize_blend_weights(None, 4) == [0.25] * 4
    assert normalize_blend_weights([2, 6], 2) == [0.25, 0.75]
    assert normalize_blend_weights([1e308, 1e308], 2) == [0.5, 0.5]  # no overflow to inf, and 0 weights
    with pytest.raises(ParameterError, match=">= 0"):
        normalize_blend_weights([1, -1], 2)
    with pytest.raises(ParameterError, match="at least one of them positive"):
        normalize_blend_weights([0, 0], 2)
    with pytest.raises(ParameterError, match="2 style images"):
        normalize_blend_weights([1, 2, 3], 2)


def test_unknown_blend_method_lists_choices(vgg, style) -> None:
    with pytest.raises(ParameterError, match="gram, features, loss"):
        style_targets(vgg, [style], LAYERS, method="average")
