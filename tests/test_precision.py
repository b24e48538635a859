"""The mixed-precision path computes the same objective as the plain float32 path, within rounding of its dtype.

No timing here: speed is measured by bench/bench.py. The autocast code is tested on the CPU, where
torch runs bfloat16 and float16 autocast too (slowly: it is only the default on CUDA).
"""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch

from nstlib.api import stylize
from nstlib.core.errors import ParameterError
from nstlib.core.losses import gram_matrix
from nstlib.core.objective import Targets
from nstlib.core.settings import Settings
from nstlib.engine.graphs import _kind
from nstlib.engine.runtime import (
    LOG_EVERY,
    BFloat16Grams,
    LossScale,
    Precision,
    PrecisionFeatures,
    Runtime,
    autocast_dtype,
)


def make_objective(extractor, content: torch.Tensor, style: torch.Tensor, settings: Settings | None = None):
    settings = settings or Settings()
    return Targets.build(extractor, content, [style], settings).objective(settings)


@pytest.fixture(scope="module")
def image(content) -> torch.Tensor:
    """A point half way between the content and noise, where every loss term is non-zero."""
    return (content + torch.rand(content.shape, generator=torch.Generator().manual_seed(0))) / 2


def terms_and_grad(objective, image: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    x = image.clone().requires_grad_(True)
    terms = objective(x)
    (grad,) = torch.autograd.grad(terms["total"].sum(), x)
    return {k: v.detach() for k, v in terms.items()}, grad


def test_channels_last_gives_the_same_features(vgg, image) -> None:
    fast = PrecisionFeatures(vgg, Precision(dtype=None, channels_last=True))
    assert fast.extractor.net[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert vgg.net[0].weight.is_contiguous()  # the extractor passed in is left as it was
    with torch.no_grad():
        plain, nhwc = vgg(image), fast(image)
    for layer in vgg.layers:
        assert nhwc[layer].is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(nhwc[layer], plain[layer], rtol=1e-5, atol=1e-5 * plain[layer].abs().max())


# Stated tolerance: every loss term within 1% (bf16, 8 mantissa bits) or 0.1% (fp16, 11 bits) of
# the float32 value, and a gradient pointing the same way (cosine similarity > 0.98 / 0.995; measured on the random
# VGG19 of torchvision's initialisation: 0.983 / 0.9976).
@pytest.mark.parametrize(("dtype", "rel", "cosine"), [(torch.bfloat16, 1e-2, 0.98), (torch.float16, 1e-3, 0.995)])
def test_mixed_precision_loss_terms_match_float32(vgg, content, style, image, dtype, rel: float, cosine: float) -> None:
    plain = make_objective(vgg, content, style)
    fast_features = PrecisionFeatures(vgg, Precision(dtype=dtype))
    fast = make_objective(fast_features, content, style)
    ran_in = []
    hook = fast_features.extractor.net[0].register_forward_hook(lambda module, args, out: ran_in.append(out.dtype))
    maps = fast_features(image)
    hook.remove()
    assert ran_in == [dtype]  # the network really ran in low precision
    assert all(m.dtype == torch.float32 for m in maps.values())  # and hands the losses float32 maps
    want, want_grad = terms_and_grad(plain, image)
    # bfloat16 steps run inside BFloat16Grams: bfloat16 maps, their Gram matrices by `_Gram` (here its CPU form)
    with BFloat16Grams() if dtype == torch.bfloat16 else nullcontext():
        got, got_grad = terms_and_grad(fast, image)
    for term in ("content", "style", "tv", "total"):
        assert got[term].dtype == torch.float32  # losses are computed in float32
        assert got[term].item() == pytest.approx(want[term].item(), rel=rel), term
    assert got["total"].item() != want["total"].item()  # it did not silently run in float32
    assert torch.nn.functional.cosine_similarity(got_grad.flatten(), want_grad.flatten(), dim=0) > cosine


def test_mixed_precision_gram_does_not_overflow_where_fp16_gram_would(vgg) -> None:
    """Activations around 300 overflow a float16 Gram matrix (sum of 64*64 products > 65504)."""
    bright = torch.full((1, 3, 64, 64), 1.0)
    fast = PrecisionFeatures(vgg, Precision(dtype=torch.float16))
    fast.extractor.net[0].weight.data *= 50  # make relu1_1 large
    with torch.no_grad():
        feats = fast(bright)["relu1_1"]
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()  # fp16 maps, handed over in float32
    half = feats.half().flatten(2)
    assert not torch.isfinite(half @ half.transpose(1, 2)).all()  # an fp16 Gram: inf
    assert torch.isfinite(gram_matrix(feats)).all()  # what Objective computes


def test_policy_on_for_cuda_only_by_default(monkeypatch) -> None:
    assert Runtime.create("cpu").precision is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)  # torch 2.3 says so on a T4 too
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100
    assert Runtime.create("cuda", mixed_precision=False).precision is None
    on = Runtime.create("cuda")
    assert on.precision == Precision(dtype=torch.bfloat16, channels_last=True) and not on.precision.loss_scaling
    assert on.cuda_graph  # captured steps: the CUDA default with bf16
    plain = Runtime.create("cuda", mixed_precision=False)
    assert not plain.cuda_graph and plain.log_every == LOG_EVERY  # eager, but no sync at every step on a GPU
    assert Runtime.create("cpu").log_every == 1
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4: bf16 only emulated
    assert autocast_dtype(torch.device("cuda")) == torch.float16
    fp16 = Runtime.create("cuda")
    assert fp16.precision.loss_scaling and fp16.cuda_graph  # the loss scale lives on the device: captured too
    with pytest.raises(ParameterError, match="cuda_graph=True: CUDA graphs need a CUDA device"):
        Runtime.create("cpu", cuda_graph=True)
    assert Runtime.create("cpu", mixed_precision=True).precision.channels_last
    cpu = Runtime.create("cpu", mixed_precision=True)
    assert not cpu.cuda_graph


def test_mixed_precision_leaves_cudnn_benchmark_alone_and_keeps_one_copy_per_network(vgg) -> None:
    """cudnn.benchmark cost seconds per new image size on an H100 for no steady-state gain (nstlib.engine.runtime)."""
    torch.backends.cudnn.benchmark = False
    runtime = Runtime.create("cpu", mixed_precision=True)
    first = runtime.prepare(vgg)
    assert runtime.prepare(vgg) is first and not torch.backends.cudnn.benchmark  # reused by the next run
    with torch.no_grad():
        vgg.net[0].bias.add_(0.0)  # an in-place change of the weights: a new copy
    assert runtime.prepare(vgg) is not first


def test_loss_scale_unscales_and_backs_off_on_overflow() -> None:
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    scaler = LossScale(init_scale=1024.0, growth_interval=2)
    state = {name: value.data_ptr() for name, value in vars(scaler).items() if isinstance(value, torch.Tensor)}
    scaler.backward((x**2).sum(), x)  # true gradient 2x
    torch.testing.assert_close(x.grad, torch.tensor([2.0, 4.0]))
    assert scaler.scale.item() == 1024.0
    x.grad = None
    scaler.backward((x**2).sum(), x)  # second finite step in a row: the scale grows
    assert scaler.scale.item() == 2048.0
    x.grad = None
    scaler.backward((x.half() * 60000).float().sum(), x)  # 60000 * 2048 overflows in the fp16 backward
    assert torch.equal(x.grad, torch.zeros(2)) and scaler.scale.item() == 1024.0
    x.grad = None
    scaler.backward((x.half() * 30).float().sum(), x)
    torch.testing.assert_close(x.grad, torch.tensor([30.0, 30.0]))
    # updated in place, so that a CUDA graph can hold it
    assert state and state == {name: value.data_ptr() for name, value in vars(scaler).items() if name in state}


def test_stylize_fast_lowers_the_objective_and_logs_every_step(vgg, content, style) -> None:
    result = stylize(content, style, size=64, steps=12, optimizer="adam", network=vgg,
                     runtime=Runtime.create("cpu", mixed_precision=True), progress=False)
    assert result.final["total"] < result.history[0]["total"] / 2
    assert [h["step"] for h in result.history] == list(range(13))  # synced every LOG_EVERY, logged every step
    assert LOG_EVERY > 1


def test_a_captured_step_is_reused_only_for_the_same_optimiser_settings(vgg, content, style) -> None:
    """What a CUDA graph bakes in is part of its cache key: the optimiser's settings, max_step included
    (a replayed step with another trust region would silently keep the old one)."""
    objective = make_objective(vgg, content, style)
    key = _kind(objective, content, Settings())
    assert key == _kind(make_objective(vgg, content, style, Settings(style_weight=9.0)), content, Settings())
    for changed in (Settings(max_step=1.0), Settings(history_size=7), Settings(lr=0.5)):
        assert _kind(objective, content, changed) != key
    absolute = make_objective(vgg, content, style, Settings(loss="absolute"))
    assert _kind(absolute, content, Settings()) != key
