"""Regenerate the bundled sample images in this folder (see SOURCES.md).

Run from the repository root with scikit-image installed:

    pip install scikit-image && python data/make_samples.py

Photos and textures are copied from scikit-image's and matplotlib's bundled data and resized so that
their long side is 384 px; ``stained_glass`` and ``waves`` are drawn here from a fixed seed, and
``astronaut_mask.png`` (person white, background black) is drawn here by hand-placed shapes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
LONG_SIDE = 384


def _save(img: Image.Image, name: str) -> None:
    img = img.convert("RGB")
    scale = LONG_SIDE / max(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    img.save(HERE / name, quality=90)


def stained_glass(size: int = LONG_SIDE, cells: int = 60, seed: int = 0) -> Image.Image:
    """Voronoi cells in bold colours with dark leading between them."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(0, size, (cells, 2))
    colours = rng.uniform(0.15, 1.0, (cells, 3)) ** 0.7
    yy, xx = np.mgrid[0:size, 0:size]
    d = np.hypot(yy[..., None] - points[:, 0], xx[..., None] - points[:, 1])
    order = np.sort(d, axis=-1)
    nearest = d.argmin(-1)
    edge = np.clip((order[..., 1] - order[..., 0]) / 4.0, 0, 1)[..., None]
    img = colours[nearest] * edge
    return Image.fromarray((img * 255).astype(np.uint8))


def waves(size: int = LONG_SIDE, seed: int = 1) -> Image.Image:
    """Swirling colour bands from a sum of random sinusoids."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    field = sum(
        np.sin(2 * np.pi * (f * (np.cos(a) * xx + np.sin(a) * yy)) + p)
        for f, a, p in zip(rng.uniform(1, 4, 5), rng.uniform(0, np.pi, 5), rng.uniform(0, 6, 5))
    )
    phase = 3 * field
    img = np.stack([np.sin(phase), np.sin(phase + 2.1), np.sin(phase + 4.2)], -1) * 0.5 + 0.5
    return Image.fromarray((img**1.5 * 255).astype(np.uint8))


def astronaut_mask(size: int = LONG_SIDE) -> Image.Image:
    """A two-region mask for astronaut.jpg: white over the person (an ellipse for the head and a polygon
    for the suit, drawn by hand on a 384 px grid), black over the background. Rough on purpose."""
    s = size / 384
    img = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(img)
    draw.ellipse([112 * s, 8 * s, 230 * s, 128 * s], fill=255)
    suit = [(95, 125), (240, 125), (268, 190), (276, 384), (18, 384), (16, 300), (28, 220), (58, 175)]
    draw.polygon([(x * s, y * s) for x, y in suit], fill=255)
    return img


def main() -> None:
    import matplotlib.cbook
    from skimage import data

    for name in ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry"]:
        _save(Image.fromarray(getattr(data, name)()), f"{name}.jpg")
    for name in ["brick", "gravel"]:
        _save(Image.fromarray(getattr(data, name)()), f"{name}.jpg")
    _save(Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg")), "grace_hopper.jpg")
    _save(stained_glass(), "stained_glass.jpg")
    _save(waves(), "waves.jpg")
    astronaut_mask().save(HERE / "astronaut_mask.png")


if __name__ == "__main__":
    main()
