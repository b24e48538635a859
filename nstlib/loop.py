"""The optimisation loop, and the monitor that watches it.

`optimization_loop` is the whole algorithm: `settings.steps` times `nstlib.step.take_step` (evaluate
the objective, back-propagate to the *pixels*, take an L-BFGS or Adam step, clamp the pixels to
[0,1]), then report. The runtime decides how each step runs: eagerly, or recorded once in a CUDA
graph and replayed (`nstlib.graphs`, where `Runtime.graphed`); it is the same `take_step` either way.
`Monitor` does the bookkeeping around it (history, deferred NaN checks with a rollback to the last
finite image, animation frames, the progress bar, the user's callback (`Watch`), Ctrl-C), and
`optimize` puts the two together (`nstlib.optimize.optimize_image` is its checked public form).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from types import TracebackType

import torch
from tqdm.auto import tqdm

from nstlib.errors import MemoryLimitError, NonFiniteLossError, ParameterError
from nstlib.graphs import graphed_step, release_graphs
from nstlib.losses import Objective
from nstlib.memory import oom_guard, out_of_memory_error
from nstlib.result import TERMS, Step, StylizeResult, history_entry
from nstlib.runtime import Runtime
from nstlib.settings import Settings, check_whole
from nstlib.step import Terms, make_optimizer, take_step

Callback = Callable[[Step], "bool | None"]


@dataclass(frozen=True)
class Watch:
    """What a run reports while it works: `callback(Step)` after every step (numbers restart at each
    pyramid scale; returning True stops the run), a tqdm progress bar with the loss terms (`progress`),
    and a snapshot every `frame_every` steps for an animation (0: none)."""

    callback: Callback | None = None
    progress: bool = True
    frame_every: int = 0

    def check(self) -> Watch:
        """Refuse a callback that is not callable and a frame interval that is not a whole number >= 0."""
        if self.callback is not None and not callable(self.callback):
            raise ParameterError(f"callback={self.callback!r}: give a function of a Step, or None")
        check_whole("frame_every", self.frame_every, 0)
        return self


def optimization_loop(objective: Objective, image: torch.Tensor, settings: Settings, monitor: Monitor,
                      runtime: Runtime) -> None:
    """Optimise the pixels of `image` (B,3,H,W) in [0,1], in place, for `settings.steps` steps of `take_step`.

    With CUDA graphs the steps work on the graph's own copy of `image`, copied back at the end (also
    on Ctrl-C); otherwise on `image` itself, with this runtime's objective (compiled or not) and
    backward pass (with float16's loss scale or not)."""
    if runtime.graphed and not settings.line_search:
        with graphed_step(objective, image, settings, runtime) as step:
            try:
                _run_steps(step, step.image, settings, monitor)
            finally:
                with torch.no_grad():
                    image.copy_(step.image)
    else:
        optimizer = make_optimizer(image, settings)
        _run_steps(partial(take_step, runtime.compiled(objective), image, optimizer, runtime.backward()), image,
                   settings, monitor)


def _run_steps(step: Callable[[], tuple[Terms, int]], image: torch.Tensor, settings: Settings,
               monitor: Monitor) -> None:
    """Call `step()` `settings.steps` times, with the monitor's bookkeeping around each; stop early if it says so."""
    for i in range(settings.steps):
        monitor.step_starts(i, image)
        monitor.evaluated(*step())
        if monitor.step_done(i + 1, image):  # history, progress bar, callback; True: stop
            break


class Monitor:
    """Watches the loop: keeps the history, checks for NaN, records frames, shows progress.

    Losses are copied to the host every `log_every` steps (one device sync for them all), which is
    also when they are checked: a NaN/inf stops the run with `NonFiniteLossError`, keeping the newest
    image whose objective was finite. Use it as a context manager: Ctrl-C inside ends the run
    (marked interrupted) with the image so far.
    """

    def __init__(self, start: torch.Tensor, settings: Settings, watch: Watch, log_every: int = 1) -> None:
        self.settings, self.log_every = settings, log_every
        self.frame_every, self.callback = watch.frame_every, watch.callback
        self.result = StylizeResult(image=start.detach().cpu())
        self.checked = start.detach().clone()  # the newest image whose objective is known to be finite
        self.pending: list[tuple[int, torch.Tensor]] = []  # (step, (4,B) terms) not yet on the host
        self.first_terms: dict[str, torch.Tensor] | None = None  # the loss at the start of this step
        self.before: torch.Tensor | None = None
        self.done = 0  # completed steps
        self.evaluations = 0
        self.bar = tqdm(total=settings.steps, disable=not watch.progress, desc="stylize", leave=False)
        self.start_time = time.perf_counter()

    def __enter__(self) -> Monitor:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> bool:
        self.bar.close()
        if kind is KeyboardInterrupt:  # Ctrl-C, possibly in the middle of step done + 1
            self._stop(f"interrupted at step {self.done + 1}")
            return True
        return False

    def evaluated(self, terms: Terms, evaluations: int = 1) -> None:
        """Record a step's loss terms (at the image before it) and how many evaluations it took."""
        self.evaluations += evaluations
        self.first_terms = terms

    def step_starts(self, step: int, image: torch.Tensor) -> None:
        if self.frame_every and step % self.frame_every == 0:
            self.result.frames.append(image.detach()[:1].clamp(0, 1).cpu())
        self.before = image.detach().clone() if (step + 1) % self.log_every == 0 else None
        self.first_terms = None

    def step_done(self, done: int, image: torch.Tensor) -> bool:
        """Record step `done`; True if the callback asks to stop."""
        self.done = done
        assert self.first_terms is not None
        self.pending.append((done - 1, torch.stack([self.first_terms[t] for t in TERMS])))
        if self.before is not None:
            self._flush()
            self.checked = self.before
            last = self.result.history[-1]
            self.bar.set_postfix({t: f"{last[t]:.3g}" for t in TERMS} if not isinstance(last["total"], list) else {})
        self.bar.update(1)
        if self.callback is not None and self.callback(Step(done, image.detach(), self.first_terms)):
            self._stop(f"interrupted at step {done}")
            return True
        return False

    def _stop(self, status: str) -> None:
        self.result.interrupted, self.result.status = True, status

    def _flush(self) -> None:
        """Copy pending losses to the host, check them, and extend the history."""
        values = torch.stack([v for _, v in self.pending]).cpu()  # (n,4,B): one sync for n steps
        bad = ~torch.isfinite(values)
        if bad.any():
            step = self.pending[int(bad.flatten(1).any(1).nonzero()[0])][0]
            self.result.image = self.checked.clamp(0, 1).cpu()
            self.result.status = f"stopped: non-finite loss at step {step}"
            cause = (
                "already at the start: the loss weights (style_weight, content_weight) or the network weights "
                "overflow; lower the loss weights or check the weights file" if step == 0 else
                f"at step {step}: the learning rate (lr={self.settings.optimizer_lr:g}) or the loss weights are "
                "probably too large; lower lr or style_weight, or try optimizer='adam'"
            )
            raise NonFiniteLossError(f"the objective became NaN/inf {cause}", self.result)
        seconds = time.perf_counter() - self.start_time
        self.result.history.extend(history_entry(step, v, seconds) for (step, _), v in zip(self.pending, values))
        self.pending.clear()

    def out_of_memory(self, image: torch.Tensor) -> MemoryLimitError:
        """The error for running out of device memory now, keeping the last good image."""
        now = image.detach()
        self.result.image = (now if torch.isfinite(now).all() else self.checked).clamp(0, 1).cpu()
        self._stop(f"stopped: out of memory at step {self.done}")
        return out_of_memory_error(*image.shape[-2:], self.done, self.settings.optimizer, self.result)

    def finish(self, objective: Objective, image: torch.Tensor) -> StylizeResult:
        """The result: the final image (or the last finite one) scored as the history's last entry."""
        if self.pending:
            self._flush()
        final = image.detach().clamp(0, 1)
        if not torch.isfinite(final).all():
            final = self.checked.clamp(0, 1)
        with torch.no_grad():
            terms = objective(final)
        result = self.result
        result.seconds = time.perf_counter() - self.start_time
        result.evaluations = self.evaluations
        result.history.append(history_entry(self.done, torch.stack([terms[t] for t in TERMS]).cpu(), result.seconds))
        result.image = final.cpu()
        if self.frame_every:
            result.frames.append(final[:1].cpu())
        return result


def optimize(objective: Objective, start: torch.Tensor, settings: Settings, runtime: Runtime,
             watch: Watch) -> StylizeResult:
    """Optimise the pixels of `start` (B,3,H,W) in [0,1] to minimise `objective`, with checked `settings` and
    `watch` (see `nstlib.optimize.optimize_image`): the loop with its monitor, Ctrl-C and out-of-memory
    handling around it."""
    image = start.detach().contiguous().clone().requires_grad_(True)
    monitor = Monitor(start, settings, watch, runtime.log_every)
    try:
        with oom_guard(image.device, lambda: monitor.out_of_memory(image)), monitor:
            optimization_loop(objective, image, settings, monitor, runtime)
    except MemoryLimitError:
        release_graphs()  # the cached graphs of other sizes hold memory too
        raise
    return monitor.finish(objective, image)
