"""The bundled sample images (see data/SOURCES.md for where each one comes from)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

from nstlib.errors import ImageLoadError
from nstlib.images import load_image

CONTENT_SAMPLES = ("astronaut", "chelsea", "coffee", "grace_hopper", "rocket")
STYLE_SAMPLES = ("stained_glass", "waves", "hubble_deep_field", "immunohistochemistry", "brick", "gravel")
MASK_SAMPLES = ("astronaut_mask",)  # grey PNG masks for spatial control (see nstlib.masks)
SAMPLES = CONTENT_SAMPLES + STYLE_SAMPLES + MASK_SAMPLES


def sample_path(name: str) -> Path:
    """The file of the bundled sample `name` (one of `SAMPLES`)."""
    if name not in SAMPLES:
        raise ImageLoadError(f"unknown sample '{name}'; choose one of {', '.join(SAMPLES)}")
    suffix = ".png" if name in MASK_SAMPLES else ".jpg"
    return Path(str(resources.files("nstlib.samples") / f"{name}{suffix}"))


def sample(name: str, size: int | None = None) -> torch.Tensor:
    """Load the bundled sample `name` as (1,3,H,W) in [0,1], long side resized to `size` if given."""
    return load_image(sample_path(name), size)
