"""The tuning panel: default settings on content × style pairs, scored by an independent metric, with a figure.

    python bench/tuning.py [--size 256] [--steps 150] [--style-weight W] [--paintings DIR] [--figure FILE] [--force]

Each pair is stylised with nstlib's defaults (but `--steps` and `--style-weight`) on the packaged pretrained VGG16
and scored with the scale-free distances of bench/metric.py, which do not depend on the loss weights.

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
from figures import add_figure_options, check_figure, write_figure  # bench/figures.py
from metric import fractions, metric_network  # bench/metric.py

import nstlib

PAIRS = (("chelsea", "stained_glass"), ("astronaut", "waves"), ("coffee", "hubble_deep_field"),
         ("rocket", "immunohistochemistry"))
PAINTING_PAIRS = (("astronaut", "starry_night"), ("chelsea", "great_wave"))


def main(argv: Sequence[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--style-weight", type=float, default=nstlib.DEFAULT_STYLE_WEIGHT)
    p.add_argument("--paintings", type=Path, default=None, help="a folder with starry_night.jpg and great_wave.jpg")
    add_figure_options(p)
    args = p.parse_args(argv)
    check_figure(p, args)
    net = metric_network()
    pairs = [(c, s, nstlib.sample(s, args.size)) for c, s in PAIRS]
    if args.paintings is not None:
        pairs += [(c, s, nstlib.load_image(args.paintings / f"{s}.jpg", args.size)) for c, s in PAINTING_PAIRS]
    print(f"{net.source}; {args.size} px, {args.steps} L-BFGS steps, style weight {args.style_weight:g}, otherwise "
          f"default settings; torch {torch.__version__}, {platform.machine()}\n")
    print("| content | style | style distance (fraction) | content distance (fraction) | seconds |")
    print("|---|---|---|---|---|")
    images, titles = [], []
    for content_name, style_name, style in pairs:
        content = nstlib.sample(content_name, args.size)
        start = time.perf_counter()
        out = nstlib.stylize(content, style, steps=args.steps, style_weight=args.style_weight, network=net,
                             progress=False).image
        seconds = time.perf_counter() - start
        s, c = fractions(net, out, content, style)
        print(f"| {content_name} | {style_name} | {s:.3f} | {c:.3f} | {seconds:.0f} |", flush=True)
        if style_name not in nstlib.PAINTINGS:
            images += [content, style, out]
            titles += [content_name, style_name, f"result: style {s:.2f}, content {c:.2f}"]
    write_figure(args, images, titles, 3, f"Style weight {args.style_weight:g}, otherwise default settings, "
                 f"{args.size} px, {args.steps} L-BFGS steps; {net.source.split(';')[0]}")


if __name__ == "__main__":
    main()
