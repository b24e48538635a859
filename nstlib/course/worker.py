"""The style explorer's worker: re-optimise in a background thread whenever the settings change, through the same
core loop and boundary as `stylize`. It knows nothing of widgets (`nstlib.course.widgets.StyleExplorer` is its view,
through the `on_*` hooks); docs/widgets.md says how it debounces, caches targets and stops within one step."""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from nstlib.api import Guard, NetworkLike, Run, RuntimeLike, as_list, input_files, load_inputs
from nstlib.checks import validate
from nstlib.controls.pyramid import smallest_size
from nstlib.core.errors import NonFiniteLossError, ParameterError
from nstlib.core.loop import Watch, optimize
from nstlib.core.objective import Objective, Targets, initial_image, resize, target_size
from nstlib.core.result import TERMS, Progress, StylizeResult
from nstlib.core.settings import Settings, check_number
from nstlib.io.images import ImageLike

#: Targets kept for this many recent (size, blend, blend weights): one is tens of MB at a 1024 px render.
TARGET_CACHE = 8

log = logging.getLogger(__name__)

#: The settings the explorer's controls change; each entry of `runs` records them.
EXPLORED = ("content_weight", "style_weight", "tv_weight", "style_layers", "blend", "blend_weights", "init")


def _ignore(*args: Any) -> None:
    """A view hook that shows nothing."""


class ExplorerWorker:
    """Optimise in a background thread, following the latest `settings` (docs/widgets.md).

    `history` holds one dict per step of every run (the loss terms, "run", "step" and the run's weights), `runs` the
    explored settings of each run, `image` the current preview (1,3,h,w) on the CPU, `result` the last full-size render
    (or None), `latency` the seconds from the last change to its first frame.
    """

    def __init__(self, content: ImageLike, styles: ImageLike | Sequence[ImageLike], settings: Settings, *,
                 network: NetworkLike = "imagenet", runtime: RuntimeLike = "auto", preview_size: int | None = None,
                 render_steps: int = 300, frame_every: int = 3, debounce: float = 0.2,
                 autostart: bool = True) -> None:
        if not isinstance(settings, Settings):
            raise ParameterError(f"settings={type(settings).__name__}: give a nstlib.Settings, e.g. "
                                 "Settings(style_weight=10.0)")
        run = Run.begin(settings, {"steps": render_steps, "preserve_color": None}, network, runtime)
        check_number("frame_every", frame_every, whole=True, low=1)
        check_number("preview_size", preview_size, whole=True, low=1, allow_none=True)
        check_number("debounce", debounce, low=0)
        if not isinstance(autostart, (bool, np.bool_)):
            raise ParameterError(f"autostart={autostart!r}: give True or False")
        self.runtime, self.settings = run.runtime, settings
        self.render_steps, self.frame_every, self.debounce = render_steps, frame_every, debounce
        self.inputs = input_files(content, *as_list(styles))  # before loading: Pillow then drops its file
        self.photo, self.pictures, _ = load_inputs(content, as_list(styles), [], run.settings, run.runtime.device)
        # never so small that the content or a style falls under the network's minimum
        shape = tuple(self.photo.shape[-2:])
        smallest = smallest_size(shape, [tuple(s.shape[-2:]) for s in self.pictures], settings.style_scale)
        self.preview_shape = target_size(shape, min(max(preview_size or run.runtime.sizes.preview, smallest),
                                                    max(shape)))
        self.net = run.runtime.prepare(run.network())
        self.targets: OrderedDict[tuple[Any, ...], Targets] = OrderedDict()
        self.on_image: Callable[[torch.Tensor], None] = _ignore
        self.on_terms: Callable[[int, int, dict[str, float], Settings, float], None] = _ignore
        self.on_status: Callable[[str, bool], None] = _ignore
        self.on_progress: Callable[[int, int], None] = _ignore
        self.on_render: Callable[[StylizeResult], None] = _ignore
        self._failed_hooks: set[str] = set()

        self.history: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.image = self._initial(settings)
        self.result: StylizeResult | None = None
        self.latency: float | None = None
        # --- the protocol with the thread, all guarded by _cond ----------------------------------
        self._cond = threading.Condition()
        self._version = 0  # bumped by every change; a run stops when it no longer matches
        self._changed_at = time.perf_counter()
        self._pending = True  # there is preview work to do
        self._restart = False  # start again from the init image
        self._render = False  # a full-size render was asked for
        self.active = bool(autostart)
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="StyleExplorer", daemon=True)

    def start(self) -> None:
        """Start the thread (after the view has set its hooks); a second call does nothing."""
        if self._thread.ident is None:
            self._thread.start()

    # --- the caller's side: record and wake ---------------------------------------------------------
    def update(self, settings: Settings | None = None, *, restart: bool = False, render: bool = False,
               active: bool | None = None) -> None:
        """Work with `settings` from now on (None: keep them); `restart` from the init image; `render` full size;
        `active` False pauses (within one optimisation step), True runs on."""
        with self._cond:
            self.settings = settings or self.settings
            self.active = self.active if active is None else active
            self._version += 1
            self._changed_at = time.perf_counter()
            self._pending |= not render  # a render pauses the preview; it goes on afterwards if unfinished
            self._restart |= restart
            self._render |= render
            self._cond.notify_all()

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the worker has nothing left to do (for scripts and tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or (self.active and self._pending) or self._render:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        """Stop the thread (within one step) and wait for it."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=10)

    def objective(self, settings: Settings, full: bool = False) -> Objective:
        """The objective of `settings` at the preview (or full) size, from the `TARGET_CACHE` recent targets."""
        shape = tuple(self.photo.shape[-2:]) if full else self.preview_shape
        key = (shape, settings.blend, tuple(settings.blend_weights or ()))
        if key in self.targets:
            self.targets.move_to_end(key)
        else:
            side = round(max(shape) * settings.style_scale)
            self.targets[key] = Targets.build(self.net, resize(self.photo, shape),
                                              [resize(p, side) for p in self.pictures], settings)
            while len(self.targets) > TARGET_CACHE:
                self.targets.popitem(last=False)
        return self.targets[key].objective(settings)

    def _initial(self, settings: Settings) -> torch.Tensor:
        """The init image of `settings` at the preview size, on the CPU."""
        content = resize(self.photo, self.preview_shape)
        return initial_image(settings.init, content, self.pictures, settings.seed).cpu()

    # --- the worker thread ------------------------------------------------------------------------
    def _emit(self, hook: str, *args: Any) -> None:
        """Call the view's hook `on_<hook>`; one that raises is logged once, and the work goes on."""
        try:
            getattr(self, f"on_{hook}")(*args)
        except Exception:
            if hook not in self._failed_hooks:
                self._failed_hooks.add(hook)
                log.exception("the explorer's on_%s hook failed (later failures of it are not logged); the explorer "
                              "goes on", hook)

    def _next(self) -> tuple[Settings, int, float, bool, bool] | None:
        """Wait for work, then for the debounce; the work to do, or None once closed."""
        with self._cond:
            self._busy = False
            self._cond.notify_all()
            while not self._closed and not self._render and not (self.active and self._pending):
                self._cond.wait()
            while not self._closed:  # debounce: wait until the settings have been still
                quiet = time.perf_counter() - self._changed_at
                if quiet >= self.debounce:
                    break
                self._cond.wait(self.debounce - quiet)
            if self._closed:
                return None
            self._busy = True
            work = (self.settings, self._version, self._changed_at, self._render, self._restart)
            self._render = self._restart = False
            return work

    def _work(self) -> None:
        while (work := self._next()) is not None:
            settings, version, changed_at, render, restart = work
            try:
                settings = validate(settings)
                if render:
                    self._render_full(settings, version)
                else:
                    self._run_preview(settings, version, changed_at, restart)
            except Exception as e:  # a bad setting or NaN: say so, keep the thread alive, wait for a change
                if isinstance(e, NonFiniteLossError) and e.result is not None:
                    self.image = e.result.image[:1]
                self._emit("status", f"{type(e).__name__}: {e}", True)
                with self._cond:
                    self._pending = False

    def _run_preview(self, settings: Settings, version: int, changed_at: float, restart: bool) -> None:
        if restart:
            self.image = self._initial(settings)
        objective = self.objective(settings)
        run = len(self.runs)
        self.runs.append({name: getattr(settings, name) for name in EXPLORED})
        weights = settings.loss_weights
        started = time.perf_counter()
        height, width = self.preview_shape
        self._emit("status", f"run {run}: optimising at {width}x{height} px", False)

        pending: list[tuple[int, torch.Tensor]] = []  # (step, its (4,) terms on the device) not yet in history

        def callback(step: Progress) -> bool:
            pending.append((step.step, torch.stack([step.terms[t][0] for t in TERMS])))
            if step.step == 1 or step.step % self.frame_every == 0:  # the picture goes to the host: the terms too
                self._record(run, pending, weights)
                self.image = step.image.clamp(0, 1).cpu()
                self._emit("image", self.image)
                if step.step == 1:
                    self.latency = time.perf_counter() - changed_at
                terms = {t: self.history[-1][t] for t in TERMS}
                self._emit("terms", run, step.step, terms, settings, (time.perf_counter() - started) / step.step)
            return self._closed or version != self._version or not self.active  # a newer change or render, Pause

        result = self._optimize(objective, self.image.to(self.runtime.device), settings, callback)
        self._record(run, pending, weights)
        self.image = result.image
        self._emit("image", self.image)
        with self._cond:
            if not result.interrupted and version == self._version:
                self._pending = False
                self._emit("status", f"run {run}: done ({settings.steps} steps); move a slider or press Run to go on",
                           False)
            elif not self.active:
                self._emit("status", f"paused after {result.steps} steps of run {run}", False)

    def _record(self, run: int, pending: list[tuple[int, torch.Tensor]], weights: dict[str, Any]) -> None:
        """Move the pending steps' loss terms to `history`: one host copy for them all (none per step)."""
        if pending:
            values = torch.stack([v for _, v in pending]).cpu().tolist()
            self.history += [{"run": run, "step": step, **dict(zip(TERMS, row)), **weights}
                             for (step, _), row in zip(pending, values)]
            pending.clear()

    def _render_full(self, settings: Settings, version: int) -> None:
        height, width = self.photo.shape[-2:]
        start = resize(self.image.to(self.runtime.device), (height, width))
        self._emit("progress", 0, self.render_steps)
        self._emit("status", f"rendering {width}x{height} px", False)

        def callback(step: Progress) -> bool:
            self._emit("progress", step.step, self.render_steps)
            return self._closed or version != self._version  # a change or Pause bumps the version

        result = self._optimize(self.objective(settings, full=True), start, settings.replace(steps=self.render_steps),
                                callback)
        if result.interrupted:
            self._emit("status", "full-size render cancelled (a setting changed or Pause)", False)
            return
        self.result = result
        self._emit("render", result)

    def _optimize(self, objective: Objective, start: torch.Tensor, settings: Settings,
                  callback: Callable[[Progress], bool]) -> StylizeResult:
        """The core loop, guarded as `stylize` is (running out of device memory frees it and says so)."""
        with Guard(self.runtime.device, f"at {start.shape[-1]}x{start.shape[-2]}", "try a smaller preview_size, or "
                   "render at a smaller size") as guard:
            guard.results.append(optimize(objective, start, settings, Watch(callback, progress=False), self.runtime))
        return guard.result
