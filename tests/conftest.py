"""Shared fixtures: small images and one random-weight VGG19 for the whole session (no network)."""

from __future__ import annotations

import pytest
import torch

from nstlib.data import sample
from nstlib.features import VGG19Features
from nstlib.optimize import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> None:
    """Point the torch hub cache at an empty folder and make any ImageNet download fail loudly."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
    monkeypatch.delenv("NSTLIB_VGG19_WEIGHTS", raising=False)


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
def vgg() -> VGG19Features:
    return VGG19Features([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], weights="random")
