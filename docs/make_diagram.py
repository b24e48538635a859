"""Draw the method diagram docs/method.png: what neural style transfer computes, on one page.

    python docs/make_diagram.py [--out docs/method.png] [--force]

The photo, the painting and the generated image go through the same frozen network; the photo's deep features and
the painting's Gram matrices are the targets; the generated image is compared with both, plus its total variation;
the gradient of the weighted sum flows back to the generated image's pixels, the only thing that changes. Drawn
with matplotlib only (no images are read), written atomically; an existing file is replaced only with --force.
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

COLOURS = {"image": "#dbe9f6", "net": "#e8e8e8", "target": "#fff2cc", "loss": "#f8d7da", "total": "#d4edda"}


def box(ax: Axes, x: float, y: float, w: float, h: float, text: str, kind: str) -> None:
    """A rounded box centred on (x, y), in axes units, with its label."""
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.01,rounding_size=0.015",
                                facecolor=COLOURS[kind], edgecolor="#555555", linewidth=1))
    ax.text(x, y, text, ha="center", va="center", fontsize=9.5)


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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/method.png"), help="where to write the PNG")
    parser.add_argument("--force", action="store_true", help="replace an existing file")
    args = parser.parse_args(argv)
    try:
        check_output_path(args.out, overwrite=args.force, extensions={".png"})
    except OutputError as e:  # the library's one-line message, exit 2
        parser.error(str(e))
    save_figure(draw(), args.out, overwrite=args.force, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
