"""The notebooks' exercise checks (`nstlib.course.check`) reject the wrong answers learners give, and say why."""

from __future__ import annotations

import pytest
import torch

import nstlib
from nstlib import course
from nstlib.losses import gram_matrix, guided_gram_matrix


def test_a_right_answer_passes_and_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    assert course.check("gram", [[1.0, 2.0]], torch.tensor([[1.0, 2.0]]))
    assert capsys.readouterr().out == "✓ gram: correct, it matches nstlib\n"


def test_no_answer_yet_is_not_done_rather_than_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    assert not course.check("gram", None, torch.ones(2))
    assert "not done yet" in capsys.readouterr().out


def test_a_scalar_is_not_an_answer_for_one_value_per_image(capsys: pytest.CaptureFixture[str]) -> None:
    """torch.allclose broadcasts: the mean over the batch would pass for a (B,) answer without the shape check."""
    per_image = torch.tensor([0.5, 0.5])
    assert torch.allclose(per_image.mean(), per_image)
    assert not course.check("content loss", per_image.mean(), per_image)
    assert "yours has shape (), nstlib's has (2,)" in capsys.readouterr().out


def test_a_wrong_value_names_where_and_by_how_much_and_gives_the_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert not course.check("tv loss", torch.tensor([1.0, 2.5]), torch.tensor([1.0, 2.0]), hint="mean, not sum")
    out = capsys.readouterr().out
    assert "largest difference 0.5 at index (1,) (yours 2.5, nstlib's 2)" in out and "hint: mean, not sum" in out


def test_nan_and_non_numbers_are_named(capsys: pytest.CaptureFixture[str]) -> None:
    assert not course.check("gram", torch.tensor([1.0, float("nan")]), torch.ones(2))
    assert not course.check("gram", "abc", torch.ones(2))
    out = capsys.readouterr().out
    assert "1 NaN or infinite values" in out and "not a tensor of numbers" in out


def test_the_guided_gram_exercise_tells_m_from_m_squared() -> None:
    """Notebook 07's inputs: on a 0/1 mask m = m^2, so dividing by sum(m) or weighting by m^4 would pass; its soft
    mask catches both."""
    features = torch.rand(2, 8, 6, 5, generator=torch.Generator().manual_seed(0))
    soft = torch.linspace(0.1, 1.0, 30).reshape(1, 1, 6, 5)
    half = torch.zeros(1, 1, 6, 5)
    half[..., :3, :] = 1

    def by_sum_of_m(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        flat = (f * m).flatten(2)
        return flat @ flat.transpose(1, 2) / m.sum()

    def by_m_squared_twice(f: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        flat = (f * m * m).flatten(2)
        return flat @ flat.transpose(1, 2) / m.pow(2).sum()

    for wrong in (by_sum_of_m, by_m_squared_twice):
        assert course.check("guided Gram", wrong(features, half), guided_gram_matrix(features, half))
        assert not course.check("guided Gram", wrong(features, soft), guided_gram_matrix(features, soft))


def test_the_batch_loss_exercise_needs_the_tv_term() -> None:
    """Notebook 08's inputs (on random weights): leaving out the relative TV term changes the total beyond rtol."""
    net = nstlib.VGGFeatures([*nstlib.DEFAULT_CONTENT_LAYERS, *nstlib.DEFAULT_STYLE_LAYERS], weights="random")
    contents = torch.cat([nstlib.resize(nstlib.sample(n, 64), (64, 64)) for n in ("astronaut", "chelsea")])
    outputs = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    style = nstlib.sample("waves", 64)
    reference = torch.tensor(sum(nstlib.evaluate(outputs[i:i + 1], contents[i:i + 1], style, runtime="cpu",
                                                 network=net)["total"] for i in range(2)) / 2)
    with torch.no_grad():
        fo, fc, fs = net(outputs), net(contents), net(style)
    grams = {layer: gram_matrix(fs[layer]) for layer in nstlib.DEFAULT_STYLE_LAYERS}
    content_and_style = (
        nstlib.DEFAULT_CONTENT_WEIGHT * nstlib.content_loss(fo, fc, nstlib.DEFAULT_CONTENT_LAYERS, relative=True)
        + nstlib.DEFAULT_STYLE_WEIGHT * nstlib.style_loss(fo, grams, nstlib.DEFAULT_STYLE_LAYERS, relative=True))
    tv = nstlib.DEFAULT_TV_WEIGHT * nstlib.tv_loss(outputs) / nstlib.tv_loss(contents)
    assert course.check("batch loss", (content_and_style + tv).mean(), reference, rtol=1e-4)
    assert not course.check("batch loss", content_and_style.mean(), reference, rtol=1e-4)
