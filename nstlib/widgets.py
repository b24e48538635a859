"""An interactive explorer: drag the weight sliders and watch the optimisation follow.

`StyleExplorer(content, style)` is an ipywidgets box; show it in a notebook cell:

    from nstlib.widgets import StyleExplorer
    explorer = StyleExplorer(content, style, weights=C.weights, device=C.device)
    explorer

How it works, top to bottom:

1. the controls (log-scale sliders for the content, style and TV weights and for each style
   layer, linear sliders for the blend weights of several styles, blend and init dropdowns, Reset
   and Run/Pause) only record the new settings and wake a background thread: the kernel never
   blocks;
2. the thread waits until the sliders have been still for `debounce` seconds (a drag is a burst
   of changes; it becomes one run), builds the `Objective` with the new weights and calls
   `optimize_image`, continuing from the current picture at the preview size;
3. that run's per-step callback shows a new frame every `frame_every` steps (and after the first
   step), updates the loss readout, and returns True as soon as anything changes, so a new change
   or Pause stops the work within one optimisation step;
4. "Render full size" runs the current settings at full resolution, starting from the preview
   upscaled, with a progress bar, and offers the result as a download link or saves it.

The thread updates the display only by assigning widget values (Image.value, HTML.value,
IntProgress.value): that is the thread-safe path. It never uses an Output widget's context manager.
Works with ipywidgets 7.6+ (Colab) and 8.x (JupyterLab 4).
"""

from __future__ import annotations

import base64
import io
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ipywidgets as widgets
import torch

from nstlib.blend import BLEND_METHODS, style_targets
from nstlib.errors import NonFiniteLossError, NstlibError, ParameterError
from nstlib.fast import FastFeatures, LossScale, fast_path
from nstlib.features import VGGFeatures
from nstlib.images import ImageLike, resize, save_image, to_pil
from nstlib.losses import Objective, StyleTargets
from nstlib.optimize import (
    DEFAULT_CONTENT_LAYERS,
    DEFAULT_CONTENT_WEIGHT,
    DEFAULT_STYLE_LAYERS,
    DEFAULT_STYLE_WEIGHT,
    DEFAULT_TV_WEIGHT,
    INITS,
    Step,
    StylizeResult,
    check_layer_weights,
    check_params,
    initial_image,
    make_extractor,
    optimize_image,
    pick_device,
    prepare_images,
)
from nstlib.weights import Weights

#: Default preview long side in pixels: 256 on a GPU; 128 on a CPU, where one VGG19 step at
#: 256 px takes seconds and the picture would lag behind the slider.
PREVIEW_SIZE = {"cuda": 256, "mps": 256, "cpu": 128}

#: Log-scale sliders span this many decades either side of the starting weight.
DECADES = 3

#: Targets kept for this many recent (image size, blend method, blend weights): at a 1024 px render
#: one entry is tens of MB on the GPU, and every position of a blend slider is a new entry.
TARGET_CACHE = 8

_WIDE = {"description_width": "110px"}


def _log_slider(description: str, value: float, decades: float = DECADES) -> widgets.FloatLogSlider:
    """A base-10 log slider centred on `value` (which must be > 0)."""
    centre = math.log10(value)
    return widgets.FloatLogSlider(
        value=value, base=10, min=centre - decades, max=centre + decades, step=0.05,
        description=description, readout_format=".3g", continuous_update=True, style=_WIDE,
        layout=widgets.Layout(width="420px"),
    )


def _png(image: torch.Tensor) -> bytes:
    """(1,3,H,W) in [0,1] -> PNG bytes."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


class StyleExplorer(widgets.VBox):
    """Live sliders for the style-transfer weights, re-optimising as you drag.

    Args:
        content: the content picture (path, PIL, array or (1,3,H,W) tensor).
        styles: one style picture or a list of them (several get blend-weight sliders).
        weights, device, extractor, seed: as for `stylize` (one network, built once).
        size: long side of the full-size render (None keeps the content's size).
        preview_size: long side while exploring (default `PREVIEW_SIZE[device type]`, at most `size`).
        content_weight, style_weight, tv_weight: starting values (> 0) of the log-scale sliders.
        content_layers, style_layers: {layer: weight}; each style layer gets its own log slider.
        blend, blend_weights, init, style_scale: starting settings, as for `stylize`.
        optimizer, lr: the optimiser of each run ("lbfgs" restarts its history on every change).
        steps: steps per run; the explorer idles after that until a setting changes or Run is pressed.
        render_steps: steps of the full-size render.
        frame_every: show a new picture every this many steps (and after each run's first step).
        debounce: seconds the sliders must be still before a new run starts.
        autostart: start optimising as soon as the explorer exists (else press Run).
        fast: the fast path for previews and renders, as for `stylize` (None: on for CUDA only).

    Attributes:
        history: one dict per step of every run: the loss terms ("content", "style", "tv", "total"
            as in `stylize`), "run" (index into `runs`) and the run's global weights.
        runs: the settings of every run, in order.
        image: the current preview (1,3,H,W) on the CPU.
        result: the last full-size render (a `StylizeResult`), or None.
        latency: seconds from the last setting change to the first frame that used it.
    """

    def __init__(
        self,
        content: ImageLike,
        styles: ImageLike | Sequence[ImageLike],
        *,
        weights: str | Weights = "imagenet",
        device: str | torch.device = "auto",
        size: int | None = None,
        preview_size: int | None = None,
        content_weight: float = DEFAULT_CONTENT_WEIGHT,
        style_weight: float = DEFAULT_STYLE_WEIGHT,
        tv_weight: float = DEFAULT_TV_WEIGHT,
        content_layers: Mapping[str, float] | None = None,
        style_layers: Mapping[str, float] | None = None,
        blend: str = "gram",
        blend_weights: Sequence[float] | None = None,
        init: str = "content",
        style_scale: float = 1.0,
        optimizer: str = "lbfgs",
        lr: float | None = None,
        steps: int = 200,
        render_steps: int = 300,
        frame_every: int = 3,
        debounce: float = 0.2,
        extractor: VGGFeatures | None = None,
        seed: int = 0,
        autostart: bool = True,
        fast: bool | None = None,
    ) -> None:
        content_layers = check_layer_weights("content_layers", content_layers or DEFAULT_CONTENT_LAYERS)
        style_layers = check_layer_weights("style_layers", style_layers or DEFAULT_STYLE_LAYERS)
        check_params(steps=steps, optimizer=optimizer, init=init, blend=blend, lr=lr, style_scale=style_scale,
                     content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight)
        check_params(steps=render_steps)
        for name, value in (("content_weight", content_weight), ("style_weight", style_weight),
                            ("tv_weight", tv_weight), *style_layers.items()):
            if not value > 0:
                raise ParameterError(f"{name}={value}: the explorer's sliders are log-scale; start from a value > 0")
        if frame_every < 1 or debounce < 0:
            raise ParameterError(f"frame_every={frame_every}, debounce={debounce}: use frame_every >= 1, debounce >= 0")

        self.device = pick_device(device)
        full, full_styles = prepare_images(content, styles, size, style_scale)
        side = min(preview_size or PREVIEW_SIZE.get(self.device.type, 128), max(full.shape[-2:]))
        small, small_styles = prepare_images(full, full_styles, side, style_scale)
        self._full = (full.to(self.device), [s.to(self.device) for s in full_styles])
        self._preview = (small.to(self.device), [s.to(self.device) for s in small_styles])
        self.extractor = make_extractor([*content_layers, *style_layers], weights, extractor=extractor).to(self.device)
        self._path = fast_path(fast, self.device)
        self._features = FastFeatures(self.extractor, self._path) if self._path else self.extractor
        self.content_layers = content_layers
        self.optimizer, self.lr, self.seed = optimizer, lr, seed
        self.steps, self.render_steps, self.frame_every, self.debounce = steps, render_steps, frame_every, debounce
        self._targets: OrderedDict[tuple[Any, ...], tuple[dict[str, torch.Tensor], StyleTargets]] = OrderedDict()

        # --- the controls ---------------------------------------------------------------------
        self.content_weight = _log_slider("content weight", content_weight)
        self.style_weight = _log_slider("style weight", style_weight)
        self.tv_weight = _log_slider("TV weight", tv_weight)
        self.layer_weights = {layer: _log_slider(layer, w) for layer, w in style_layers.items()}
        n = len(full_styles)
        start_blend = blend_weights if blend_weights is not None else [1.0 / n] * n
        self.blend_weights = [
            widgets.FloatSlider(value=float(w), min=0.0, max=1.0, step=0.01, description=f"style {i + 1}",
                                continuous_update=True, style=_WIDE, layout=widgets.Layout(width="420px"))
            for i, w in enumerate(start_blend)
        ]
        self.blend = widgets.Dropdown(options=list(BLEND_METHODS), value=blend, description="blend",
                                      disabled=n == 1, style=_WIDE)
        self.init = widgets.Dropdown(options=list(INITS), value=init, description="init", style=_WIDE)
        self.reset_button = widgets.Button(description="Reset", icon="undo")
        self.run_button = widgets.ToggleButton(value=autostart, description="Pause" if autostart else "Run",
                                               icon="pause" if autostart else "play")
        self.render_button = widgets.Button(description="Render full size", icon="image")
        self.save_path = widgets.Text(value="stylized.png", description="save as", style={"description_width": "60px"})
        self.save_button = widgets.Button(description="Save", icon="save")
        # --- what the thread updates ----------------------------------------------------------
        self.picture = widgets.Image(value=_png(small), format="png",
                                     layout=widgets.Layout(width=f"{max(256, side)}px", min_width="256px"))
        self.readout = widgets.HTML(value="")
        self.status = widgets.HTML(value="")
        self.progress = widgets.IntProgress(value=0, min=0, max=render_steps, description="full size",
                                            layout=widgets.Layout(visibility="hidden"))
        self.download = widgets.HTML(value="")

        for w in (self.content_weight, self.style_weight, self.tv_weight, *self.layer_weights.values(),
                  *self.blend_weights, self.blend):
            w.observe(self._on_change, names="value")
        self.init.observe(self._on_reset, names="value")
        self.reset_button.on_click(self._on_reset)
        self.run_button.observe(self._on_run, names="value")
        self.render_button.on_click(self._on_render)
        self.save_button.on_click(self._on_save)

        sliders = [self.content_weight, self.style_weight, self.tv_weight,
                   widgets.HTML("<b>style layers</b>"), *self.layer_weights.values()]
        if n > 1:
            sliders += [widgets.HTML("<b>blend weights</b>"), *self.blend_weights]
        sliders += [self.blend, self.init, widgets.HBox([self.reset_button, self.run_button])]
        super().__init__([
            widgets.HBox([widgets.VBox(sliders), widgets.VBox([self.picture]), self.readout]),
            widgets.HBox([self.render_button, self.progress]),
            widgets.HBox([self.save_path, self.save_button, self.download]),
            self.status,
        ])

        # --- state shared with the worker thread (guarded by _cond) ---------------------------
        self.history: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.image = initial_image(init, *self._preview, seed).cpu()
        self.result: StylizeResult | None = None
        self.latency: float | None = None
        self._cond = threading.Condition()
        self._settings = self._read_settings()
        self._version = 0  # bumped by every change; a run stops when it no longer matches
        self._changed_at = time.perf_counter()
        self._pending = True  # there is preview work to do
        self._restart = False  # start again from the init image
        self._render = False  # a full-size render was asked for
        self._active = autostart
        self._closed = False
        self._busy = False
        self._thread = threading.Thread(target=self._work, name="StyleExplorer", daemon=True)
        self._thread.start()

    # --- main thread: controls record settings and wake the worker -----------------------------
    def _read_settings(self) -> dict[str, Any]:
        return {
            "content_weight": self.content_weight.value,
            "style_weight": self.style_weight.value,
            "tv_weight": self.tv_weight.value,
            "style_layers": {layer: s.value for layer, s in self.layer_weights.items()},
            "blend": self.blend.value,
            "blend_weights": [s.value for s in self.blend_weights],
            "init": self.init.value,
        }

    def _request(self, *, restart: bool = False, render: bool = False) -> None:
        with self._cond:
            self._settings = self._read_settings()
            self._version += 1
            self._changed_at = time.perf_counter()
            self._pending |= not render  # a render pauses the preview; it goes on afterwards if unfinished
            self._restart |= restart
            self._render |= render
            self._cond.notify_all()

    def _on_change(self, change: Mapping[str, Any]) -> None:
        old, new = change["old"], change["new"]
        if isinstance(old, float) and isinstance(new, float) and math.isclose(old, new, rel_tol=1e-9):
            return  # the browser echoing a log slider's value back, rounded: not a change
        self._request()

    def _on_reset(self, _event: Any = None) -> None:
        self._request(restart=True)

    def _on_render(self, _event: Any = None) -> None:
        self._request(render=True)

    def _on_run(self, change: Mapping[str, Any]) -> None:
        running = bool(change["new"])
        self.run_button.description, self.run_button.icon = ("Pause", "pause") if running else ("Run", "play")
        with self._cond:
            self._active = running
            self._pending |= running
            self._version += 1
            self._cond.notify_all()

    def _on_save(self, _event: Any = None) -> None:
        try:
            self.status.value = f"saved {self.save(self.save_path.value)}"
        except NstlibError as e:
            self.status.value = f"<span style='color:#c00'>{e}</span>"

    def run(self) -> None:
        """Resume optimising (the Run button)."""
        self.run_button.value = True

    def pause(self) -> None:
        """Stop within one optimisation step (the Pause button); the kernel does not wait for it."""
        self.run_button.value = False

    def render(self) -> None:
        """Ask for a full-size render of the current settings (the "Render full size" button)."""
        self._on_render()

    def save(self, path: str) -> Any:
        """Write the full-size render if there is one, else the preview, atomically (see `save_image`)."""
        return save_image(self.result.image if self.result is not None else self.image, path)

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the worker has nothing left to do (for scripts and tests); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._busy or (self._active and self._pending) or self._render:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._closed:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        """Stop the worker thread and close the widgets."""
        if "_thread" in self.__dict__:  # ipywidgets' __del__ calls close() even when __init__ failed
            with self._cond:
                self._closed = True
                self._cond.notify_all()
            if threading.current_thread() is not self._thread:
                self._thread.join(timeout=10)
        super().close()

    # --- worker thread --------------------------------------------------------------------------
    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._closed and not self._render and not (self._active and self._pending):
                    self._busy = False
                    self._cond.notify_all()
                    self._cond.wait()
                while not self._closed:  # debounce: wait until the controls have been still
                    quiet = time.perf_counter() - self._changed_at
                    if quiet >= self.debounce:
                        break
                    self._cond.wait(self.debounce - quiet)
                if self._closed:
                    self._busy = False
                    self._cond.notify_all()
                    return
                self._busy = True
                settings, version, changed_at = self._settings, self._version, self._changed_at
                render, restart = self._render, self._restart
                self._render = self._restart = False
            try:
                if render:
                    self._render_full(settings, version)
                else:
                    self._run_preview(settings, version, changed_at, restart)
            except Exception as e:  # a bad setting or NaN: say so, keep the thread alive, wait for a change
                if isinstance(e, NonFiniteLossError) and e.result is not None:
                    self.image = e.result.image[:1]
                self.status.value = f"<span style='color:#c00'>{type(e).__name__}: {e}</span>"
                with self._cond:
                    self._pending = False

    def _stale(self, version: int, render: bool = False) -> bool:
        """True when the work for `version` should stop: a newer change, a render request, Pause or close."""
        return self._closed or version != self._version or not (self._active or render)

    def _objective(self, settings: Mapping[str, Any], images: tuple[torch.Tensor, list[torch.Tensor]]) -> Objective:
        """The objective for `settings`. The targets of the last `TARGET_CACHE` (image size, blend method,
        blend weights) are kept, so going back to a recent setting is instant and memory stays bounded."""
        content, styles = images
        key = (tuple(content.shape), settings["blend"], tuple(settings["blend_weights"]))
        if key in self._targets:
            self._targets.move_to_end(key)
        else:
            with torch.no_grad():
                content_targets = {k: v for k, v in self._features(content).items() if k in self.content_layers}
            targets = style_targets(self._features, styles, self.layer_weights, settings["blend_weights"],
                                    settings["blend"])
            self._targets[key] = (content_targets, targets)
            while len(self._targets) > TARGET_CACHE:
                self._targets.popitem(last=False)
        content_targets, targets = self._targets[key]
        return Objective(self._features, content_targets, targets, self.content_layers, settings["style_layers"],
                         settings["content_weight"], settings["style_weight"], settings["tv_weight"])

    def _optimize(self, objective: Objective, start: torch.Tensor, steps: int,
                  callback: Callable[[Step], bool]) -> StylizeResult:
        """One run of `optimize_image` with the explorer's optimiser (no progress bar of its own)."""
        loss_scale = LossScale() if self._path and self._path.loss_scaling else None
        return optimize_image(objective, start, steps=steps, optimizer=self.optimizer, lr=self.lr, callback=callback,
                              progress=False, loss_scale=loss_scale)

    def _run_preview(self, settings: dict[str, Any], version: int, changed_at: float, restart: bool) -> None:
        if restart:
            self.image = initial_image(settings["init"], *self._preview, self.seed).cpu()
        objective = self._objective(settings, self._preview)
        run = len(self.runs)
        self.runs.append(settings)
        started = time.perf_counter()
        self.status.value = f"run {run}: optimising at {self._preview[0].shape[-1]}x{self._preview[0].shape[-2]} px"

        def callback(step: Step) -> bool:
            terms = {k: float(v[0]) for k, v in step.terms.items()}
            self.history.append({"run": run, "step": step.step, **terms, "content_weight": settings["content_weight"],
                                 "style_weight": settings["style_weight"], "tv_weight": settings["tv_weight"]})
            if step.step == 1 or step.step % self.frame_every == 0:
                self.image = step.image.clamp(0, 1).cpu()
                self.picture.value = _png(self.image)
                if step.step == 1:
                    self.latency = time.perf_counter() - changed_at
                self._show_terms(run, step.step, terms, settings, (time.perf_counter() - started) / step.step)
            return self._stale(version)

        result = self._optimize(objective, self.image.to(self.device), self.steps, callback)
        self.image = result.image
        self.picture.value = _png(self.image)
        with self._cond:
            if not result.interrupted and version == self._version:
                self._pending = False
                self.status.value = f"run {run}: done ({self.steps} steps); move a slider or press Run to go on"
            elif not self._active:
                self.status.value = f"paused after {len(result.history) - 1} steps of run {run}"

    def _render_full(self, settings: dict[str, Any], version: int) -> None:
        content, styles = self._full
        objective = self._objective(settings, self._full)
        start = resize(self.image.to(self.device), tuple(content.shape[-2:]))
        self.progress.max, self.progress.value = self.render_steps, 0
        self.progress.layout.visibility = "visible"
        self.status.value = f"rendering {content.shape[-1]}x{content.shape[-2]} px"

        def callback(step: Step) -> bool:
            self.progress.value = step.step
            return self._stale(version, render=True)

        result = self._optimize(objective, start, self.render_steps, callback)
        if result.interrupted:
            self.status.value = "full-size render cancelled (a setting changed or Pause)"
            return
        self.result = result
        data = base64.b64encode(_png(result.image)).decode()
        self.download.value = (f"<a download='stylized.png' href='data:image/png;base64,{data}'>"
                               f"download the {content.shape[-1]}x{content.shape[-2]} px PNG</a>")
        self.status.value = f"full-size render done in {result.seconds:.1f} s; download it or Save"

    def _show_terms(self, run: int, step: int, terms: Mapping[str, float], settings: Mapping[str, Any],
                    seconds_per_step: float) -> None:
        weighted = {t: settings[f"{t}_weight"] * terms[t] for t in ("content", "style", "tv")}
        rows = "".join(f"<tr><td>{t}</td><td>{terms[t]:.3g}</td><td>{weighted[t]:.3g}</td></tr>" for t in weighted)
        latency = f"{self.latency:.2f} s" if self.latency is not None else "-"
        self.readout.value = (
            f"<table><tr><th>term</th><th>loss</th><th>× weight</th></tr>{rows}"
            f"<tr><td><b>total</b></td><td></td><td><b>{terms['total']:.4g}</b></td></tr></table>"
            f"<div>run {run}, step {step}<br>style weight {settings['style_weight']:.3g}<br>"
            f"{seconds_per_step:.2f} s/step<br>update latency {latency}</div>"
        )
