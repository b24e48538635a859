"""An interactive explorer: drag the weight sliders and watch the optimisation follow (docs/widgets.md). The worker's
hooks update the display only by assigning widget values, the thread-safe path. ipywidgets 7.6+ (Colab) and 8.x."""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as widgets
import torch

from nstlib.api import NetworkLike, RuntimeLike
from nstlib.checks import resolve
from nstlib.core.errors import ParameterError
from nstlib.core.result import StylizeResult
from nstlib.core.settings import BLEND_METHODS, INITS, Settings
from nstlib.course.worker import ExplorerWorker
from nstlib.io.images import ImageLike, save_image, to_pil

_WIDE = {"description_width": "110px"}


def _log_slider(description: str, value: float) -> widgets.FloatLogSlider:
    """A base-10 log slider spanning 3 decades either side of `value` (> 0)."""
    centre = math.log10(value)
    return widgets.FloatLogSlider(value=value, base=10, min=centre - 3, max=centre + 3, step=0.05,
                                  description=description, readout_format=".3g", style=_WIDE,
                                  layout=widgets.Layout(width="420px"))


def _png(image: torch.Tensor) -> bytes:
    """(1,3,H,W) in [0,1] -> PNG bytes."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()


class StyleExplorer(widgets.VBox):
    """Live sliders for the style-transfer weights, re-optimising as you drag.

    `content`, `styles` (several get blend-weight sliders), `settings` (and keyword overrides), `network` and `runtime`
    are as for `stylize`; the log-scale sliders start at the settings' weights (> 0), `steps` (200 here) are the steps
    per run and `size` the full-size render's. `preview_size` is the long side while exploring (default: the runtime's),
    `frame_every` the steps between pictures, `debounce` the seconds the sliders must be still before a new run.
    `worker` is the `ExplorerWorker` doing the work.
    """

    def __init__(self, content: ImageLike, styles: ImageLike | Sequence[ImageLike], settings: Settings | None = None, *,
                 network: NetworkLike = "imagenet", runtime: RuntimeLike = "auto", preview_size: int | None = None,
                 render_steps: int = 300, frame_every: int = 3, debounce: float = 0.2, autostart: bool = True,
                 **overrides: Any) -> None:
        settings = resolve(settings, overrides if settings is not None else {"steps": 200, **overrides})
        for name, value in (*settings.loss_weights.items(), *settings.style_layers.items()):
            if not value > 0:
                raise ParameterError(f"{name}={value}: the explorer's sliders are log-scale; start from a value > 0")
        self.worker = ExplorerWorker(content, styles, settings, network=network, runtime=runtime,
                                     preview_size=preview_size, render_steps=render_steps, frame_every=frame_every,
                                     debounce=debounce, autostart=autostart)
        n = len(self.worker.pictures)
        self._build_controls(settings, n, autostart)
        side = max(256, *self.worker.preview_shape)
        self.picture = widgets.Image(value=_png(self.worker.image), format="png",
                                     layout=widgets.Layout(width=f"{side}px", min_width="256px"))
        self.readout = widgets.HTML()
        self.status = widgets.HTML()
        self.progress = widgets.IntProgress(max=render_steps, description="full size",
                                            layout=widgets.Layout(visibility="hidden"))
        self.download = widgets.HTML()
        sliders = [self.content_weight, self.style_weight, self.tv_weight,
                   widgets.HTML("<b>style layers</b>"), *self.layer_weights.values()]
        if n > 1:
            sliders += [widgets.HTML("<b>blend weights</b>"), *self.blend_weights]
        sliders += [self.blend, self.init, widgets.HBox([self.reset_button, self.run_button])]
        super().__init__([
            widgets.HBox([widgets.VBox(sliders), widgets.VBox([self.picture]), self.readout]),
            widgets.HBox([self.render_button, self.progress, self.download]),
            self.status,
        ])
        for hook in ("image", "terms", "status", "progress", "render"):
            setattr(self.worker, f"on_{hook}", getattr(self, f"_show_{hook}"))
        self.worker.start()

    def _build_controls(self, settings: Settings, n: int, autostart: bool) -> None:
        self.content_weight = _log_slider("content weight", settings.content_weight)
        self.style_weight = _log_slider("style weight", settings.style_weight)
        self.tv_weight = _log_slider("TV weight", settings.tv_weight)
        self.layer_weights = {layer: _log_slider(layer, w) for layer, w in settings.style_layers.items()}
        start_blend = settings.blend_weights if settings.blend_weights is not None else [1.0 / n] * n
        self.blend_weights = [
            widgets.FloatSlider(value=float(w), min=0.0, max=1.0, step=0.01, description=f"style {i + 1}",
                                style=_WIDE, layout=widgets.Layout(width="420px"))
            for i, w in enumerate(start_blend)
        ]
        self.blend = widgets.Dropdown(options=list(BLEND_METHODS), value=settings.blend, description="blend",
                                      disabled=n == 1, style=_WIDE)
        self.init = widgets.Dropdown(options=list(INITS), value=settings.init, description="init", style=_WIDE)
        self.reset_button = widgets.Button(description="Reset", icon="undo")
        self.run_button = widgets.ToggleButton(value=autostart, description="Pause" if autostart else "Run",
                                               icon="pause" if autostart else "play")
        self.render_button = widgets.Button(description="Render full size", icon="image")
        for w in (self.content_weight, self.style_weight, self.tv_weight, *self.layer_weights.values(),
                  *self.blend_weights, self.blend):
            w.observe(self._on_change, names="value")
        self.init.observe(self._on_reset, names="value")
        self.reset_button.on_click(self._on_reset)
        self.run_button.observe(self._on_run, names="value")
        self.render_button.on_click(lambda _button: self.render())

    def read_settings(self) -> Settings:
        """The settings the controls show now."""
        return self.worker.settings.replace(
            content_weight=self.content_weight.value, style_weight=self.style_weight.value,
            tv_weight=self.tv_weight.value, style_layers={layer: s.value for layer, s in self.layer_weights.items()},
            blend=self.blend.value, blend_weights=[s.value for s in self.blend_weights], init=self.init.value)

    def _on_change(self, change: Mapping[str, Any]) -> None:
        old, new = change["old"], change["new"]
        if isinstance(old, float) and isinstance(new, float) and math.isclose(old, new, rel_tol=1e-9):
            return  # the browser echoing a log slider's value back, rounded: not a change
        self.worker.update(self.read_settings())

    def _on_reset(self, _event: Any = None) -> None:
        self.worker.update(self.read_settings(), restart=True)

    def _on_run(self, change: Mapping[str, Any]) -> None:
        running = bool(change["new"])
        self.run_button.description, self.run_button.icon = ("Pause", "pause") if running else ("Run", "play")
        self.worker.update(active=running)

    # --- what the worker's hooks show (called on its thread) ----------------------------------------
    def _show_image(self, image: torch.Tensor) -> None:
        self.picture.value = _png(image)

    def _show_terms(self, run: int, step: int, terms: Mapping[str, float], settings: Settings,
                    seconds_per_step: float) -> None:
        weighted = {t: getattr(settings, f"{t}_weight") * terms[t] for t in ("content", "style", "tv")}
        rows = "".join(f"<tr><td>{t}</td><td>{terms[t]:.3g}</td><td>{weighted[t]:.3g}</td></tr>" for t in weighted)
        self.readout.value = (
            f"<table><tr><th>term</th><th>loss</th><th>× weight</th></tr>{rows}"
            f"<tr><td><b>total</b></td><td></td><td><b>{terms['total']:.4g}</b></td></tr></table>"
            f"<div>run {run}, step {step}<br>style weight {settings.style_weight:.3g}<br>"
            f"{seconds_per_step:.2f} s per step</div>"
        )

    def _show_status(self, text: str, error: bool) -> None:
        self.status.value = f"<span style='color:#c00'>{text}</span>" if error else text

    def _show_progress(self, step: int, total: int) -> None:
        self.progress.max, self.progress.value = total, step
        self.progress.layout.visibility = "visible"

    def _show_render(self, result: StylizeResult) -> None:
        h, w = result.image.shape[-2:]
        data = base64.b64encode(_png(result.image)).decode()
        self.download.value = (f"<a download='stylized.png' href='data:image/png;base64,{data}'>"
                               f"download the {w}x{h} px PNG</a>")
        self.status.value = f"full-size render done in {result.seconds:.1f} s; download it, or explorer.save(path)"

    # --- the public API -----------------------------------------------------------------------------
    history = property(lambda self: self.worker.history, doc="See `ExplorerWorker.history`.")
    runs = property(lambda self: self.worker.runs, doc="See `ExplorerWorker.runs`.")
    image = property(lambda self: self.worker.image, doc="The current preview (1,3,h,w) on the CPU.")
    result = property(lambda self: self.worker.result, doc="The last full-size render, or None.")
    latency = property(lambda self: self.worker.latency, doc="Seconds from the last change to its first frame.")

    def run(self) -> None:
        """Resume optimising (the Run button)."""
        self.run_button.value = True

    def pause(self) -> None:
        """Stop within one optimisation step (the Pause button); the kernel does not wait for it."""
        self.run_button.value = False

    def render(self) -> None:
        """Ask for a full-size render of the current settings (the "Render full size" button)."""
        self.worker.update(self.read_settings(), render=True)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write the full-size render if there is one, else the preview, atomically (see `save_image`): never over the
        content or a style file, nor over an existing file unless `overwrite`."""
        return save_image(self.result.image if self.result is not None else self.image, path,
                          inputs=self.worker.inputs, overwrite=overwrite)

    def wait(self, timeout: float = 60.0) -> bool:
        """Block until the worker has nothing left to do (for scripts and tests); False on timeout."""
        return self.worker.wait(timeout)

    def close(self) -> None:
        """Stop the worker thread and close the widgets."""
        if "worker" in self.__dict__:  # ipywidgets' __del__ calls close() even when __init__ failed
            self.worker.close()
        super().close()
