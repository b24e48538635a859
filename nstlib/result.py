"""What a run gives back: `Step` (what a per-step callback sees) and `StylizeResult` (the outcome)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image

from nstlib.errors import OutputError
from nstlib.files import show
from nstlib.images import ImageLike, save_gif, save_image, to_pil

#: The loss terms an `Objective` returns and a history entry records, in this order.
TERMS = ("content", "style", "tv", "total")


@dataclass
class Step:
    """What a per-step callback sees: the step number, the current image and the loss terms.

    `image` is the live (B,3,H,W) tensor being optimised (read it, do not modify it); `terms` holds
    (B,) tensors on the device. Reading them with .item() costs a device sync.
    """

    step: int
    image: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class StylizeResult:
    """The outcome of `stylize`.

    Attributes:
        image: (1,3,H,W) float tensor in [0,1] on the CPU ((B,3,H,W) for `stylize_grid`).
        history: one dict per evaluation, {"step", "content", "style", "tv", "total", "time"}; the
            first entry is the starting image, the last the returned image. Losses are unweighted
            terms except "total"; "time" is seconds since the start. For a grid, each loss is a list.
        frames: (1,3,H,W) CPU snapshots every `frame_every` steps (with the first and the last).
        interrupted: True if the run was stopped early (Ctrl-C, a callback, or out of memory).
        status: "complete", "interrupted at step N", "stopped: non-finite loss at step N" or
            "stopped: out of memory at step N"; `save` writes it into PNGs as the text chunk "nstlib:status".
        seconds: wall time of the optimisation.
        evaluations: objective evaluations (L-BFGS line searches use more than one per step).
        settings: for `stylize_grid`, the weights of each batch item.
        network: which network, weights and preprocessing made it (`VGGFeatures.source`); `save`
            writes it into PNGs as the text chunk "nstlib:network".
        inputs: the input files (content, styles, masks) this result was made from; `save` and
            `save_gif` refuse to write over them.
    """

    image: torch.Tensor
    history: list[dict[str, Any]] = field(default_factory=list)
    frames: list[torch.Tensor] = field(default_factory=list)
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

    def pil(self, index: int = 0) -> Image.Image:
        """Image `index` of the batch as a PIL image."""
        return to_pil(self.image[index])

    def save(self, path: str | os.PathLike, *, inputs: Sequence[ImageLike] = (), **kwargs: Any) -> Any:
        """Write the image atomically (see `images.save_image`), marked with `status` and `network` if
        a PNG; never over one of the input files. A grid's batch of N images is refused (`OutputError`):
        writing one of them silently would lose the others, so each is saved by itself."""
        if self.image.ndim == 4 and self.image.shape[0] > 1:
            n = self.image.shape[0]
            raise OutputError(f"{show(str(path))}: this result holds {n} images (a stylize_grid batch); save each one: "
                              f"save_image(result.image[i], ...) for i in range({n}) (result.settings[i] says which "
                              "weights made it)")
        return save_image(self.image, path, text={"nstlib:status": self.status, "nstlib:network": self.network},
                          inputs=[*self.inputs, *inputs], **kwargs)

    def save_gif(
        self, path: str | os.PathLike, duration_ms: int = 80, *, inputs: Sequence[ImageLike] = (), **kwargs: Any
    ) -> Any:
        """Write the recorded frames as an animated GIF (needs frame_every > 0); never over an input file."""
        return save_gif(self.frames, path, duration_ms=duration_ms, inputs=[*self.inputs, *inputs], **kwargs)


def history_entry(step: int, values: torch.Tensor, seconds: float) -> dict[str, Any]:
    """(4,B) tensor of terms -> one history dict (floats for B=1, lists otherwise)."""
    rows = values.tolist()
    single = values.shape[1] == 1
    entry: dict[str, Any] = {"step": step}
    for name, row in zip(TERMS, rows):
        entry[name] = row[0] if single else row
    entry["time"] = seconds
    return entry
