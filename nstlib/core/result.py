"""What a run gives back: `Progress` (what a per-step callback sees) and `StylizeResult` (the outcome)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import torch

#: The loss terms an `Objective` returns and a history entry records, in this order.
TERMS = ("content", "style", "tv", "total")


@dataclass
class Progress:
    """What a per-step callback sees: the steps done, the live (B,3,H,W) image (read it, do not change it) and the
    loss terms {name: (B,)} at the image before the step, on the device (copies: a callback may keep them)."""

    step: int
    image: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class StylizeResult:
    """The outcome of a run.

    Attributes:
        image: (1,3,H,W) in [0,1] on the CPU ((B,3,H,W) for `stylize_grid`).
        history: one dict per step, {"step", "content", "style", "tv", "total", "time"}, from the starting image to the
            returned one: unweighted terms, the weighted "total", seconds since the start; lists for a grid.
        frames: (1,3,H,W) CPU snapshots every `frame_every` steps, with the first and the last.
        interrupted, status: whether and why the run stopped early ("complete", "interrupted after step 41", ...).
        settings: for `stylize_grid`, the weights of each batch image.
        network: the network, weights and preprocessing that made it; `status` and `network` go into saved PNGs.
        inputs: the input files it was made from: `nstlib.save_image` refuses to write over them.
    """

    image: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)
    steps: int = 0
    interrupted: bool = False
    status: str = "complete"
    seconds: float = 0.0
    evaluations: int = 0
    settings: list[dict[str, float]] = field(default_factory=list)
    network: str = ""
    inputs: list[str | os.PathLike] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """The loss terms of the returned image."""
        return self.history[-1]


def history_entry(step: int, values: torch.Tensor, seconds: float) -> dict[str, Any]:
    """(4,B) tensor of terms -> one history dict (floats for B=1, lists otherwise)."""
    rows = values.tolist()
    return {"step": step, **{name: row[0] if len(row) == 1 else row for name, row in zip(TERMS, rows)},
            "time": seconds}
