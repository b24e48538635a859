"""Feed-forward network vs optimisation: wall time and nstlib's objective terms on the same pairs.

    pip install -e '.[compare]'
    python bench/feed_forward.py [--size 256] [--steps 30] [--threads 2] [--weights random]

Uses `nstlib.compare.compare` (the function notebook 08 uses); results go to docs/feed_forward.md by hand.
"""

from __future__ import annotations

import argparse
import platform

import torch

import nstlib
from nstlib import compare
from nstlib.features import VGG19Features
from nstlib.optimize import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS

PAIRS = (("astronaut", "stained_glass"), ("chelsea", "waves"))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default="random")
    p.add_argument("--out", help="save the pictures (content, style, feed-forward, optimisation) here (PNG)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, {platform.machine()}, "
          f"{args.threads} threads, {args.size} px, {args.steps} L-BFGS steps, weights={args.weights}")
    net = VGG19Features([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], weights=args.weights)
    pictures = []
    for content, style in PAIRS:
        images, rows = compare.compare(nstlib.sample_path(content), nstlib.sample_path(style), size=args.size,
                                       steps=args.steps, threads=args.threads, network_weights=args.weights,
                                       device="cpu", extractor=net, progress=False)
        print(f"\n| {content} + {style} | seconds | content | style | tv | total |\n|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['method']} | {r['seconds']:.3f} | {r['content']:.4g} | {r['style']:.4g} | {r['tv']:.4g} "
                  f"| {r['total']:.4g} |")
        pictures += [nstlib.sample(content, args.size), nstlib.sample(style, args.size), *images.values()]
    if args.out:
        titles = ["content", "style", "feed-forward", f"optimisation ({args.steps} steps)"] * len(PAIRS)
        nstlib.plots.show_images(pictures, titles, ncols=4).savefig(args.out)


if __name__ == "__main__":
    main()
