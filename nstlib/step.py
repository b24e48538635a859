"""One optimisation step of the pixels, the same on every device.

`take_step` is the whole update: evaluate the objective, back-propagate to the pixels, let the
optimiser move them, clamp them to [0,1]. The eager loop (`nstlib.loop`) calls it once per step;
with CUDA graphs (`nstlib.graphs`) the very same call is recorded once and replayed. Whether it runs
eagerly or captured, and in which precision, is decided around it by `nstlib.runtime`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from nstlib.lbfgs import SyncFreeLBFGS
from nstlib.runtime import Backward, plain_backward
from nstlib.settings import Settings

Terms = dict[str, torch.Tensor]


def make_optimizer(image: torch.Tensor, settings: Settings, capturable: bool = False) -> torch.optim.Optimizer:
    """L-BFGS (one quasi-Newton update per step, no pixel moving more than `settings.max_step`) or Adam.

    L-BFGS is nstlib's `SyncFreeLBFGS`, which knows the box [0,1] (`take_step` clamps); with `line_search`
    it is torch's, with a strong-Wolfe line search (several evaluations per step, host syncs).
    `capturable`: the Adam a CUDA graph can hold (fused, its step count on the device)."""
    if settings.optimizer == "lbfgs" and settings.line_search:
        return torch.optim.LBFGS([image], lr=settings.optimizer_lr, max_iter=1, history_size=settings.history_size,
                                 line_search_fn="strong_wolfe")
    if settings.optimizer == "lbfgs":
        return SyncFreeLBFGS([image], lr=settings.optimizer_lr, history_size=settings.history_size, bounds=(0.0, 1.0),
                             max_step=settings.max_step)
    return torch.optim.Adam([image], lr=settings.optimizer_lr, fused=capturable or None, capturable=capturable)


def take_step(objective: Callable[[torch.Tensor], Terms], image: torch.Tensor, optimizer: torch.optim.Optimizer,
              backward: Backward = plain_backward) -> tuple[Terms, int]:
    """One step of `image` (B,3,H,W) in [0,1], in place: evaluate, back-propagate to the pixels, update, clamp.

    Returns the loss terms {name: (B,)} at the image *before* the step, and the number of
    evaluations it took (1, or more for L-BFGS with a line search, which calls `closure` per trial).
    """
    evaluations: list[Terms] = []

    def closure() -> torch.Tensor:
        """One evaluation: the loss of the current pixels, and its gradient in image.grad."""
        optimizer.zero_grad(set_to_none=True)
        terms = objective(image)
        loss = terms["total"].sum()  # batch items are independent: each gets its own gradient
        backward(loss, image)
        evaluations.append(terms)
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        image.clamp_(0, 1)  # projected descent: the pixels stay valid
    return {name: value.detach() for name, value in evaluations[0].items()}, len(evaluations)
