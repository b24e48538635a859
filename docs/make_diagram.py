"""Draw the method diagram docs/method.png and the library's map docs/architecture.png.

    python docs/make_diagram.py [--out docs/method.png] [--architecture docs/architecture.png] [--force]

The method: the photo, the painting and the generated image go through the same frozen network; the photo's deep
features and the painting's Gram matrices are the targets; the generated image is compared with both, plus its total
variation; the gradient of the weighted sum flows back to the generated image's pixels, the only thing that changes.
The map: nstlib's parts, what each may import, and the path of one `nstlib stylize` run through them. Drawn with
matplotlib only (no images are read), written atomically; an existing file is replaced only with --force.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from nstlib.core.errors import OutputError
from nstlib.course.plots import save_figure
from nstlib.io.files import check_output_path

COLOURS = {"image": "#dbe9f6", "net": "#e8e8e8", "target": "#fff2cc", "loss": "#f8d7da", "total": "#d4edda",
           "core": "#d4edda", "wrap": "#dbe9f6", "boundary": "#fff2cc", "top": "#f3e5f5"}


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str, kind: str, size: float = 9.5) -> None:
    """A rounded box centred on (x, y), in axes units, with its label."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.015",
                                facecolor=COLOURS[kind], edgecolor="#555555", linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=size)


def arrow(ax: Axes, start: tuple[float, float], end: tuple[float, float], colour: str = "#333333",
          rad: float = 0.0) -> None:
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=12, color=colour, linewidth=1.3,
                                 connectionstyle=f"arc3,rad={rad}"))


def draw() -> Figure:
    fig = Figure(figsize=(11.5, 5.8))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, 1.02), ylim=(-0.1, 1))
    ax.axis("off")
    rows = {"photo": 0.82, "generated": 0.5, "painting": 0.18}
    box(ax, 0.09, rows["photo"], 0.14, 0.12, "content photo $p$\n(fixed)", "image")
    box(ax, 0.09, rows["generated"], 0.14, 0.14, "generated image $x$\nthe only thing\nthat changes", "image")
    box(ax, 0.09, rows["painting"], 0.14, 0.12, "style painting $a$\n(fixed)", "image")
    box(ax, 0.33, 0.5, 0.15, 0.8, "VGG\n(frozen,\npretrained on\nImageNet)\n\nthe same\nnetwork for\nall three", "net")
    for y in rows.values():
        arrow(ax, (0.16, y), (0.255, y))
    box(ax, 0.56, 0.82, 0.18, 0.1, "$P$: features at relu4_2", "target")
    box(ax, 0.56, 0.62, 0.18, 0.1, "$F(x)$ at relu4_2", "image")
    box(ax, 0.56, 0.40, 0.18, 0.1, "$G(x)$: Gram matrices,\nrelu1_1 … relu5_1", "image")
    box(ax, 0.56, 0.18, 0.18, 0.1, "$A$: Gram matrices,\nrelu1_1 … relu5_1", "target")
    arrow(ax, (0.405, 0.82), (0.47, 0.82))
    arrow(ax, (0.405, 0.56), (0.47, 0.62))
    arrow(ax, (0.405, 0.44), (0.47, 0.40))
    arrow(ax, (0.405, 0.18), (0.47, 0.18))
    box(ax, 0.79, 0.72, 0.17, 0.1, "content term\n$|F - P|^2 / |P|^2$", "loss")
    box(ax, 0.79, 0.29, 0.17, 0.1, "style term\n$|G - A|^2 / |A|^2$", "loss")
    box(ax, 0.79, 0.51, 0.17, 0.1, "TV term: how rough\n$x$'s pixels are\n(vs the photo's)", "loss")
    for start, end in [((0.65, 0.82), (0.705, 0.75)), ((0.65, 0.62), (0.705, 0.70)),
                       ((0.65, 0.40), (0.705, 0.31)), ((0.65, 0.18), (0.705, 0.27))]:
        arrow(ax, start, end)
    box(ax, 0.955, 0.51, 0.08, 0.3, "total\n$\\mathcal{L} =$\n$\\alpha\\,$content\n$+\\,\\beta\\,$style\n"
        "$+\\,\\gamma\\,$TV", "total")
    for y in (0.72, 0.51, 0.29):
        arrow(ax, (0.875, y), (0.914, 0.51 + (y - 0.51) * 0.45))
    arrow(ax, (0.955, 0.355), (0.09, 0.425), colour="#c0392b", rad=-0.38)
    ax.text(0.5, -0.07, "gradient $\\partial\\mathcal{L}/\\partial x$ back through the frozen network to the pixels: "
            "an optimiser (L-BFGS or Adam) changes $x$, and the loop repeats", ha="center", fontsize=9.5,
            color="#c0392b")
    ax.text(0.5, 0.975, "Neural style transfer (Gatys et al. 2016) as nstlib computes it: every term relative to its "
            "target", ha="center", va="top", fontsize=10.5, weight="bold")
    return fig


def step(ax: Axes, x: float, y: float, n: int) -> None:
    """The number `n` of a step of the run's path, in a red disc at (x, y)."""
    ax.text(x, y, str(n), ha="center", va="center", fontsize=9, color="white", weight="bold",
            bbox={"boxstyle": "circle,pad=0.25", "facecolor": "#c0392b", "edgecolor": "none"})


def draw_architecture() -> Figure:
    """The parts of nstlib, bottom (the core) to top (the programs), and one run's path through them."""
    fig = Figure(figsize=(12.5, 8))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, 1), ylim=(0, 1))
    ax.axis("off")
    ax.text(0.5, 0.98, "nstlib's layout: each part imports only the parts below it; the core imports nothing else",
            ha="center", va="top", fontsize=11.5, weight="bold")
    box(ax, 0.26, 0.87, 0.48, 0.09, "apps/  cli (the command line), fast_style (train a feed-forward\nnetwork), "
        "compare (a pretrained one)", "top")
    box(ax, 0.76, 0.87, 0.44, 0.09, "course/  the notebooks' helpers (setup, show_source, check),\nplots, the "
        "explorer (widgets: the view; worker: the thread)", "top")
    box(ax, 0.5, 0.72, 0.98, 0.1, "api.py  stylize, stylize_grid, evaluate, and the one boundary every entry point "
        "goes through: Run.begin (the preamble),\nGuard (Ctrl-C keeps the image so far; running out of memory is one "
        "clear error)        checks.py  every argument, checked once", "boundary")
    box(ax, 0.16, 0.545, 0.3, 0.13, "controls/  perceptual controls\ncolor (keep the photo's colours)\npyramid "
        "(coarse-to-fine)", "wrap")
    box(ax, 0.5, 0.545, 0.34, 0.13, "io/  images (pictures in and out), data\n(samples, paintings), weights "
        "(torchvision's\nVGG19 file, the packaged VGG16), downloads, files", "wrap")
    box(ax, 0.84, 0.545, 0.3, 0.13, "engine/  how the steps run\nruntime (device, precision),\ngraphs (CUDA "
        "graphs), memory", "wrap")
    box(ax, 0.5, 0.3, 0.98, 0.25, "", "core")
    ax.text(0.5, 0.405, "core/  what the course teaches, read top to bottom", ha="center", fontsize=10.5)
    parts = ["features\ntorchvision's VGG,\nnamed layers", "losses\nGram matrix;\ncontent, style, TV",
             "objective\ntargets, once;\nthe weighted sum", "settings\nevery knob and\nits default",
             "loop\noptimize: take_step\n× steps (lbfgs, Adam)", "result\nStylizeResult,\nProgress"]
    for i, text in enumerate(parts):
        box(ax, 0.1 + i * 0.16, 0.29, 0.14, 0.13, text, "total", size=9)
    # the run's steps, each at the top left corner of the part it is in
    marks = [(0.035, 0.9), (0.025, 0.755), (0.345, 0.595), (0.042, 0.34), (0.362, 0.34), (0.705, 0.595),
             (0.682, 0.34), (0.842, 0.34)]
    for (x0, y0), (x1, y1) in zip(marks, marks[1:]):
        arrow(ax, (x0, y0), (x1, y1), colour="#c0392b", rad=0.15)
    for n, (x, y) in enumerate(marks, start=1):
        step(ax, x, y, n)
    ax.text(0.01, 0.02, "One run, nstlib stylize photo.jpg painting.jpg -o out.png:  (1) the command checks its files "
            "and calls stylize;  (2) its preamble checks every setting;  (3) the pictures and the network's\nweights "
            "are loaded;  (4) torchvision builds the VGG;  (5) the targets are computed once and weighted into the "
            "objective;  (6) the runtime hands the loop its engine (eager, or a\nCUDA graph);  (7) optimize calls "
            "take_step, which runs the optimiser's step, its closure, the objective, the style loss and the Gram "
            "matrix: 8 frames from stylize;\n(8) the result comes back up, and save_image writes it atomically.",
            fontsize=9, va="bottom")
    return fig


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/method.png"), help="where to write the method")
    parser.add_argument("--architecture", type=Path, default=Path("docs/architecture.png"),
                        help="where to write the library's map")
    parser.add_argument("--force", action="store_true", help="replace existing files")
    args = parser.parse_args(argv)
    try:
        for path in (args.out, args.architecture):
            check_output_path(path, overwrite=args.force, extensions={".png"})
    except OutputError as e:  # the library's one-line message, exit 2
        parser.error(str(e))
    for figure, path in ((draw(), args.out), (draw_architecture(), args.architecture)):
        save_figure(figure, path, overwrite=args.force, dpi=110)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
