"""Pictures of what happened: image rows and grids, loss curves, feature maps. Every function returns a matplotlib
Figure, which notebooks show and scripts save with `save_figure`."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from nstlib.core.errors import ParameterError
from nstlib.io.files import atomic_write, check_output_path
from nstlib.io.images import to_pil


def show_images(images: Sequence[torch.Tensor], titles: Sequence[str] | None = None, *, ncols: int | None = None,
                size: float = 3.0) -> Figure:
    """Images (each (1,3,H,W) or (3,H,W) in [0,1]) side by side, `ncols` per row, with titles."""
    ncols = ncols or len(images)
    nrows = -(-len(images) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (ax, img) in enumerate(zip(axes.flat, images)):
        ax.imshow(to_pil(img))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def show_result(inputs: Sequence[torch.Tensor], titles: Sequence[str], result: torch.Tensor, title: str = "") -> Figure:
    """A result beside what it was made from: the `inputs` (each (1,3,H,W) or (3,H,W) in [0,1]) small, one above the
    other, titled by `titles` (long ones wrapped), and `result` large on their right, 720 px wide in the figure (drawn
    at 100 dpi); a tall result is made narrower so that it is at most 960 px tall."""
    aspect = result.shape[-2] / result.shape[-1]
    width = min(720, round(960 / aspect))
    height, side = width * aspect, width * 0.4
    fig = plt.figure(figsize=((width + side) / 100 + 0.2, height / 100 + 0.4), dpi=100)
    grid = fig.add_gridspec(len(inputs), 2, width_ratios=(side, width), left=0.01, right=0.99, bottom=0.01,
                            top=1 - 0.35 / (height / 100 + 0.4), wspace=0.03, hspace=0.25)
    for i, (img, label) in enumerate(zip(inputs, titles)):
        ax = fig.add_subplot(grid[i, 0])
        ax.imshow(to_pil(img))
        ax.set_title(textwrap.fill(label, 44), fontsize=8)
        ax.axis("off")
    ax = fig.add_subplot(grid[:, 1])
    ax.imshow(to_pil(result))
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return fig


def show_grid(images: torch.Tensor, row_labels: Sequence[str], col_labels: Sequence[str], *,
              size: float = 2.2) -> Figure:
    """A (R*C,3,H,W) batch in [0,1], row-major (as `stylize_grid` returns it), as R rows x C columns."""
    rows, cols = len(row_labels), len(col_labels)
    if images.shape[0] != rows * cols:
        raise ParameterError(f"images: {images.shape[0]} images do not fill {rows} rows x {cols} columns; give one "
                             "label per row and per column")
    aspect = images.shape[-2] / images.shape[-1]  # each cell `size` wide, as tall as the pictures are
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols + 0.8, size * aspect * rows + 0.4), squeeze=False,
                             layout="constrained")
    for i, ax in enumerate(axes.flat):
        ax.imshow(to_pil(images[i]))
        ax.set(xticks=[], yticks=[])
    for ax, label in zip(axes[-1], col_labels):
        ax.set_xlabel(label, fontsize=9)
    for ax, label in zip(axes[:, 0], row_labels):
        ax.set_ylabel(label, fontsize=9)
    return fig


def plot_history(histories: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
                 terms: Sequence[str] = ("total", "content", "style", "tv"), *, x: str = "step") -> Figure:
    """Loss curves (log scale) against `x` ("step" or "time"); pass {label: history} to compare runs."""
    if not isinstance(histories, Mapping):
        histories = {"": histories}
    fig, axes = plt.subplots(1, len(terms), figsize=(3.6 * len(terms), 3), squeeze=False)
    for ax, term in zip(axes[0], terms):
        for label, history in histories.items():
            ax.plot([h[x] for h in history], [max(h[term], 1e-12) for h in history], label=label or None)
        ax.set_yscale("log")
        ax.set_title(term)
        ax.set_xlabel("seconds" if x == "time" else "step")
        if any(histories):
            ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def show_feature_maps(features: torch.Tensor, *, channels: int = 16, ncols: int = 8, title: str = "") -> Figure:
    """The first `channels` channels of a feature map (1,C,H,W), each normalised to its own range."""
    maps = features[0, :channels].detach().float().cpu()
    nrows = -(-len(maps) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.6 * ncols, 1.6 * nrows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, fmap in zip(axes.flat, maps):
        ax.imshow(fmap, cmap="viridis")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def show_grams(grams: Sequence[torch.Tensor], titles: Sequence[str] | None = None, *, channels: int = 32,
               size: float = 3.4) -> Figure:
    """Heatmaps of the top-left `channels` x `channels` block of Gram matrices (each (1,C,C) or (C,C)), on one colour
    scale, so that brighter means a larger correlation in every panel."""
    mats = [g.detach().float().cpu().reshape(g.shape[-2:])[:channels, :channels].numpy() for g in grams]
    low = min(0.0, *(float(m.min()) for m in mats))
    top = max(float(m.max()) for m in mats) or 1.0
    fig, axes = plt.subplots(1, len(mats), figsize=(size * len(mats) + 0.8, size), squeeze=False)
    for i, (ax, mat) in enumerate(zip(axes[0], mats)):
        shown = ax.imshow(mat, cmap="magma", vmin=low, vmax=top)
        ax.set(xticks=[], yticks=[])
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.colorbar(shown, ax=axes[0].tolist(), shrink=0.8)
    return fig


def show_receptive_fields(image: torch.Tensor, fields: Mapping[str, int], *, size: float = 5.0) -> Figure:
    """Squares of side `fields[layer]` pixels centred on (1,3,H,W) `image`: what one position of each layer sees."""
    img = to_pil(image)
    cx, cy = img.width / 2, img.height / 2
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(img)
    colours = plt.cm.viridis([i / max(len(fields) - 1, 1) for i in range(len(fields))])
    for colour, (layer, side) in zip(colours, fields.items()):
        ax.add_patch(plt.Rectangle((cx - side / 2, cy - side / 2), side, side, fill=False, lw=2, color=colour,
                                   label=f"{layer}: {side}px"))
    pad = max(fields.values()) / 2
    ax.set_xlim(min(0, cx - pad) - 2, max(img.width, cx + pad) + 2)
    ax.set_ylim(max(img.height, cy + pad) + 2, min(0, cy - pad) - 2)
    ax.set(xticks=[], yticks=[])
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, *, overwrite: bool = False, dpi: int = 80) -> Path:
    """Write `fig` to `path` atomically, cropped to what is drawn, in the format of its suffix."""
    formats = {f".{name}" for name in fig.canvas.get_supported_filetypes()}  # .png, .jpg, .pdf, .svg, ...
    out = check_output_path(path, overwrite=overwrite, extensions=formats)  # a clear error before any drawing
    file_format = out.suffix.lower().lstrip(".")
    options: dict[str, Any] = {"pil_kwargs": {"quality": 85}} if file_format in {"jpg", "jpeg"} else {}
    return atomic_write(path, lambda f: fig.savefig(f, format=file_format, dpi=dpi, bbox_inches="tight", **options),
                        overwrite=overwrite)
