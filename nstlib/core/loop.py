"""The optimisation loop: `optimize` calls `take_step` `settings.steps` times and keeps the record.

`take_step` is the whole update: evaluate, back-propagate to the *pixels*, let L-BFGS or Adam move them, clamp to [0,1].
The engine decides how each step runs (`Eager` here; `nstlib.engine.Runtime` adds mixed precision and CUDA graphs
around the same call); `Monitor` keeps the history, catches NaNs, records frames and shows the progress bar.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import torch
from tqdm.auto import tqdm

from nstlib.core.errors import NonFiniteLossError
from nstlib.core.lbfgs import SyncFreeLBFGS
from nstlib.core.result import TERMS, Progress, StylizeResult, history_entry
from nstlib.core.settings import Settings

Terms = dict[str, torch.Tensor]
Objective = Callable[[torch.Tensor], Terms]
Callback = Callable[[Progress], "bool | None"]
#: ``backward(loss, *leaves)``: set each leaf's .grad to d(loss)/d(leaf).
Backward = Callable[..., None]
#: One step of a run: the loss terms {name: (B,)} at the image before it, and how many evaluations it took.
Step = Callable[[], tuple[Terms, int]]


def plain_backward(loss: torch.Tensor, *leaves: torch.Tensor) -> None:
    """loss.backward(): sets the leaves' .grad."""
    loss.backward()


def make_optimizer(image: torch.Tensor, settings: Settings, capturable: bool = False) -> torch.optim.Optimizer:
    """L-BFGS (`SyncFreeLBFGS`: one quasi-Newton update per step, no pixel moving more than `settings.max_step`) or
    Adam (`capturable`: the fused Adam a CUDA graph can hold)."""
    if settings.optimizer == "lbfgs":
        return SyncFreeLBFGS([image], lr=settings.optimizer_lr, history_size=settings.history_size, bounds=(0.0, 1.0),
                             max_step=settings.max_step)
    return torch.optim.Adam([image], lr=settings.optimizer_lr, fused=capturable or None, capturable=capturable)


def take_step(objective: Objective, image: torch.Tensor, optimizer: torch.optim.Optimizer,
              backward: Backward = plain_backward) -> tuple[Terms, int]:
    """One step of `image` (B,3,H,W) in [0,1], in place: evaluate, back-propagate to the pixels, update, clamp.

    Returns the loss terms {name: (B,)} at the image *before* the step, and how many evaluations it took (1, or one per
    trial of an optimiser with a line search)."""
    evaluations: list[Terms] = []

    def closure() -> torch.Tensor:
        """One evaluation: the loss of the current pixels, and its gradient in image.grad."""
        optimizer.zero_grad(set_to_none=True)
        terms = objective(image)
        loss = terms["total"].sum()  # batch images are independent: each gets its own gradient
        backward(loss, image)
        evaluations.append(terms)
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        image.clamp_(0, 1)  # projected descent: the pixels stay valid
    return {name: value.detach() for name, value in evaluations[0].items()}, len(evaluations)


class Engine(Protocol):
    """How the steps of a run are taken (`Eager` here; `nstlib.engine.Runtime` on every device)."""

    log_every: int

    def steps(self, objective: Objective, image: torch.Tensor,
              settings: Settings) -> Iterator[tuple[Step, torch.Tensor]]:
        """A context giving the step to call and the image it changes (copied back into `image` at the end)."""


class Eager:
    """`take_step` as it is, on `image` itself, with the losses read every step."""

    log_every = 1

    @contextmanager
    def steps(self, objective: Objective, image: torch.Tensor,
              settings: Settings) -> Iterator[tuple[Step, torch.Tensor]]:
        yield partial(take_step, objective, image, make_optimizer(image, settings)), image


@dataclass(frozen=True)
class Watch:
    """What a run reports: `callback(Progress)` after every step (True stops the run), a progress bar, and a snapshot
    every `frame_every` steps (0: none)."""

    callback: Callback | None = None
    progress: bool = True
    frame_every: int = 0


def optimize(objective: Objective, start: torch.Tensor, settings: Settings, watch: Watch | None = None,
             engine: Engine | None = None) -> StylizeResult:
    """Optimise the pixels of `start` (B,3,H,W) in [0,1] to minimise `objective` for `settings.steps` steps.

    A callback returning True ends the run early (marked interrupted); a NaN/inf loss raises `NonFiniteLossError` with
    the newest finite image; any other error (Ctrl-C too) carries the run so far in its `partial_result`.
    """
    image = start.detach().contiguous().clone().requires_grad_(True)
    engine = engine or Eager()
    monitor = Monitor(start, settings, watch or Watch(), engine.log_every)
    try:
        with engine.steps(objective, image, settings) as (step, live):
            for i in range(settings.steps):
                monitor.step_starts(i, live)
                if monitor.step_done(i + 1, live, *step()):
                    break
        return monitor.finish(objective, image)  # scoring the last image: an interrupt here keeps it too
    except NonFiniteLossError:
        raise
    except BaseException as error:
        error.partial_result = monitor.stopped(image)
        raise
    finally:
        monitor.bar.close()


class Monitor:
    """The loop's bookkeeping: history, NaN checks, frames, the progress bar, the callback.

    The loss terms stay on the device until every `log_every`-th step copies them to the host (one sync) and checks
    them: a NaN/inf stops the run with `NonFiniteLossError`, keeping the newest image whose objective was finite.
    """

    def __init__(self, start: torch.Tensor, settings: Settings, watch: Watch, log_every: int = 1) -> None:
        self.settings, self.watch, self.log_every = settings, watch, log_every
        self.result = StylizeResult(image=start.detach().cpu())
        self.checked = start.detach().clone()  # the newest image whose objective is known to be finite
        self.before: torch.Tensor | None = None  # the image this step's terms belong to, if they are checked now
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, (4,B) terms) not yet on the host
        self.average = torch.zeros_like(start) if settings.ema else None  # the iterates' moving average, if asked
        self.bar = tqdm(total=settings.steps, disable=not watch.progress, desc="stylize", leave=False)
        self.start_time = time.perf_counter()

    def step_starts(self, i: int, image: torch.Tensor) -> None:
        if self.watch.frame_every and i % self.watch.frame_every == 0:
            self.result.frames.append(image.detach()[:1].clamp(0, 1).cpu())
        self.before = image.detach().clone() if (i + 1) % self.log_every == 0 else None

    def step_done(self, done: int, image: torch.Tensor, terms: Terms, evaluations: int) -> bool:
        """Record step `done` (its terms, at the image before it); True if the callback asks to stop."""
        self.result.steps, self.result.evaluations = done, self.result.evaluations + evaluations
        self.pending.append((done - 1, torch.stack([terms[t] for t in TERMS])))
        if self.average is not None:
            self.average.lerp_(image.detach(), 1 - self.settings.ema)
        if self.before is not None:
            self._flush()
            self.checked = self.before
            last = self.result.history[-1]
            self.bar.set_postfix({t: f"{last[t]:.3g}" for t in TERMS} if not isinstance(last["total"], list) else {})
        self.bar.update(1)
        callback = self.watch.callback
        if callback is not None and callback(Progress(done, image.detach(), {k: v.clone() for k, v in terms.items()})):
            self.result.interrupted, self.result.status = True, f"interrupted after step {done}"
            return True
        return False

    def _flush(self, check: bool = True) -> None:
        """Copy the pending losses to the host (one sync), check them, and extend the history."""
        values = torch.stack([v for _, v in self.pending]).cpu()  # (n,4,B)
        bad = ~torch.isfinite(values).flatten(1).all(1)
        if check and bad.any():
            step = self.pending[int(bad.nonzero()[0])][0]
            self.result.image = self.checked.clamp(0, 1).cpu()
            self.result.status, self.result.interrupted = f"stopped: non-finite loss at step {step}", True
            cause = ("already at the start: the loss weights or the network's weights overflow; lower the loss "
                     "weights or check the weights file" if step == 0 else
                     f"at step {step}: the learning rate (lr={self.settings.optimizer_lr:g}) or the loss weights are "
                     "probably too large; lower lr or style_weight, or try optimizer='adam'")
            raise NonFiniteLossError(f"the objective became NaN/inf {cause}", self.result)
        seconds = time.perf_counter() - self.start_time
        self.result.history += [history_entry(step, v, seconds) for (step, _), v, b in zip(self.pending, values, bad)
                                if not b]
        self.pending.clear()

    def stopped(self, image: torch.Tensor) -> StylizeResult:
        """The run so far, when an error ends it: the current image (or the last finite one), marked stopped."""
        if self.pending:
            self._flush(check=False)
        now = self._last(image)
        self.result.image = (now if torch.isfinite(now).all() else self.checked).clamp(0, 1).cpu()
        self.result.interrupted, self.result.status = True, f"stopped after step {self.result.steps}"
        self.result.seconds = time.perf_counter() - self.start_time
        return self.result

    def _last(self, image: torch.Tensor) -> torch.Tensor:
        """The run's answer: the last iterate, or with `settings.ema` the average of the iterates so far (the moving
        average divided by 1 - decay^steps, so that its weights sum to 1 however few the steps)."""
        if self.average is None or self.result.steps == 0:
            return image.detach()
        return self.average / (1 - self.settings.ema ** self.result.steps)

    def finish(self, objective: Objective, image: torch.Tensor) -> StylizeResult:
        """The result: the final image (or the last finite one), scored as the history's last entry."""
        if self.pending:
            self._flush()
        final = self._last(image).clamp(0, 1)
        if not torch.isfinite(final).all():
            final = self.checked.clamp(0, 1)
        with torch.no_grad():
            terms = objective(final)
        result = self.result
        result.seconds = time.perf_counter() - self.start_time
        result.history.append(history_entry(result.steps, torch.stack([terms[t] for t in TERMS]).cpu(),
                                            result.seconds))
        result.image = final.cpu()
        if self.watch.frame_every:
            result.frames.append(final[:1].cpu())
        return result
