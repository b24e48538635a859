"""Pictures of what happened: image rows and grids, loss curves, feature-map grids.

Every function draws with matplotlib and returns the Figure, so notebooks show it and scripts
can `fig.savefig(...)`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure

from nstlib.images import to_pil


def show_images(
    images: Sequence[torch.Tensor], titles: Sequence[str] | None = None, *, ncols: int | None = None,
    size: float = 3.0,
) -> Figure:
    """Images (each (1,3,H,W) or (3,H,W) in [0,1]) side by side, `ncols` per row, with titles."""
    n = len(images)
    ncols = ncols or n
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, img in enumerate(images):
        ax = axes.flat[i]
        ax.imshow(to_pil(img))
        if titles is not None:
            ax.set_title(titles[i], fontsize=9)
    fig.tight_layout()
    return fig


def plot_history(
    histories: Mapping[str, Sequence[Mapping[str, Any]]] | Sequence[Mapping[str, Any]],
    terms: Sequence[str] = ("total", "content", "style", "tv"),
    *, x: str = "step",
) -> Figure:
    """Loss curves (log scale) from `StylizeResult.history`; pass {label: history} to compare runs.

    `x` is "step" or "time" (seconds).
    """
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
