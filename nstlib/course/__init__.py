"""Helpers the notebooks share: one `setup()` call, the learner's own photo in and the result out (`load_photo`,
`offer_download`), showing library source, and exercise checks (`check`, `check_terms`). `plots` draws pictures and
curves, `widgets` is the interactive explorer.

Environment variables:

- ``NSTLIB_FAST``: unset, full size on a GPU and a smaller size on a CPU (a few minutes a notebook); ``1``: tiny images
  and few steps (CI runs every notebook this way); ``0``: full size even on a CPU;
- ``NSTLIB_WEIGHTS``: any `weights=` value (see `nstlib.io.weights`);
- ``NSTLIB_OUTPUT_DIR``: where `offer_download` saves outside Colab (default: the working folder, the notebook's own).
"""

from __future__ import annotations

import inspect
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

import nstlib
from nstlib.core.features import Weights
from nstlib.core.result import StylizeResult
from nstlib.engine.runtime import Runtime
from nstlib.io.data import sample
from nstlib.io.download import download
from nstlib.io.images import load_image, save_image
from nstlib.io.weights import load_weights

REPOSITORY = nstlib.project_urls()["Repository"]
#: The install line of every notebook's Colab cell (the README names it too).
COLAB_INSTALL = f"%pip install -q git+{REPOSITORY}"
#: The repository's docs/ folder (absent in an installed wheel), its notes as GitHub shows them (the notebooks link
#: there, so that the links work on Colab too) and its files as GitHub serves them (figures).
DOCS = Path(__file__).resolve().parents[2] / "docs"
DOCS_PAGES = f"{REPOSITORY}/blob/main/docs"
DOCS_URL = REPOSITORY.replace("https://github.com/", "https://raw.githubusercontent.com/", 1) + "/main/docs"
#: `load_photo`'s download limits: bytes (a phone's photo is a few MB), seconds to each answer, seconds in all.
PHOTO_MAX_BYTES = 30_000_000
PHOTO_TIMEOUT, PHOTO_DEADLINE = 30.0, 120.0
OUTPUT_DIR_ENV = "NSTLIB_OUTPUT_DIR"


@dataclass
class Course:
    """One notebook's run (`setup`): device, mode ("full", "cpu" or "fast"), weights, image long side and steps."""

    device: torch.device
    mode: str
    weights: Weights
    size: int
    steps: int

    def pick(self, full: Any, fast: Any, cpu: Any = None) -> Any:
        """`full`, or `fast` under NSTLIB_FAST=1, or on a CPU `cpu` if given: ``C.pick(768, 128, cpu=256)``."""
        if self.mode == "fast":
            return fast
        return cpu if self.mode == "cpu" and cpu is not None else full


def setup(size: int = 384, steps: int = 200, cpu_size: int = 128, cpu_steps: int = 100, fast_size: int = 64,
          fast_steps: int = 8) -> Course:
    """Pick the device, the mode with its image size and step count, and the network's weights, and say so."""
    runtime = Runtime.create("auto")
    flag = os.environ.get("NSTLIB_FAST")
    mode = "fast" if flag == "1" else "cpu" if runtime.on_cpu and flag != "0" else "full"
    size, steps = {"full": (size, steps), "cpu": (cpu_size, cpu_steps), "fast": (fast_size, fast_steps)}[mode]
    print(f"device: {runtime.device}")
    weights = load_weights("imagenet")  # NSTLIB_WEIGHTS, if set, chooses (see `nstlib.io.weights`)
    print(f"network: {weights.describe()}")
    if not weights.trained:
        print("RANDOM VGG19 WEIGHTS: everything runs, but a random network only gives a weak stylisation: the "
              "pictures here are not what ImageNet weights produce.")
    if mode == "fast":
        print(f"FAST mode: {size}px images, {steps} steps")
    elif mode == "cpu":
        print(f"CPU mode: {size}px images, {steps} steps, a few minutes on a 2-core CPU. For full size, use a GPU "
              "(on Colab: Runtime > Change runtime type > GPU), or set NSTLIB_FAST=0 and wait much longer.")
    return Course(runtime.device, mode, weights, size, steps)


def load_photo(photo: str | os.PathLike = "", size: int | None = None, *,
               upload: bool = False) -> tuple[torch.Tensor, str]:
    """The learner's photo as (1,3,H,W) in [0,1], long side `size` if given, and a line naming it.

    `photo` is a file path, an http(s) address (downloaded within the `PHOTO_*` limits, kept only if it decodes), or ""
    for the bundled photo 'chelsea'. With `upload=True` on Colab the learner picks a file in the browser instead.
    """
    if upload and "google.colab" in sys.modules:
        from google.colab import files

        uploaded = files.upload()  # {file name: bytes}; waits for the learner
        if uploaded:
            name, data = next(iter(uploaded.items()))
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / ("upload" + Path(name).suffix)
                path.write_bytes(data)
                return load_image(path, size), f"your upload '{name}'"
        print("nothing was uploaded: using PHOTO")
    elif upload:
        print("uploading works on Colab; here, set PHOTO to a file path or an https address")
    text = os.fspath(photo).strip()
    if not text:
        return sample("chelsea", size), "the bundled photo 'chelsea'"
    if text.lower().startswith(("http://", "https://")):
        with tempfile.TemporaryDirectory() as folder:
            path = download(text, Path(folder) / "photo", timeout=PHOTO_TIMEOUT, deadline=PHOTO_DEADLINE,
                            max_bytes=PHOTO_MAX_BYTES, progress=False, verify=load_image)
            return load_image(path, size), text
    return load_image(Path(text).expanduser(), size), text


def offer_download(image: StylizeResult | torch.Tensor, name: str = "stylised.png",
                   folder: str | os.PathLike | None = None) -> Path:
    """Save `image` (a `StylizeResult` or (1,3,H,W) in [0,1]) into `folder` (default $NSTLIB_OUTPUT_DIR, else the
    working folder) as `name`, or name-2.png, ... (never over a file), and offer it: on Colab the browser downloads
    it, elsewhere a link is shown. Returns the path."""
    folder = Path(folder or os.environ.get(OUTPUT_DIR_ENV) or ".")
    path, n = folder / name, 1
    while path.exists():
        n += 1
        path = folder / f"{Path(name).stem}-{n}{Path(name).suffix}"
    saved = save_image(image, path, overwrite=False)
    if "google.colab" in sys.modules:
        from google.colab import files

        files.download(str(saved))
    else:
        from IPython.display import FileLink, display

        display(FileLink(os.path.relpath(saved) if folder == Path(".") else str(saved),
                         result_html_prefix="Your picture, saved: "))
    return saved


def show_source(obj: Callable[..., Any] | type) -> Any:
    """Show the source code of a library function or class, syntax-highlighted (d2l-style)."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def show_figure(name: str, width: int = 900) -> Any:
    """Display the figure docs/`name`, `width` pixels wide: from the clone, else the browser loads the published one."""
    from IPython.display import Image

    local = DOCS / name
    return Image(filename=str(local), width=width) if local.is_file() else Image(url=f"{DOCS_URL}/{name}", width=width)


def check(name: str, yours: Any, reference: Any, rtol: float = 1e-4, atol: float = 1e-6,
          hint: str | None = None) -> bool:
    """Say whether a learner's result matches nstlib's (`torch.testing.assert_close`), and if not, what differs."""
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
    try:
        torch.testing.assert_close(mine, expected, rtol=rtol, atol=atol)
    except AssertionError as e:  # how many values differ, the largest differences and where
        return _wrong(name, " ".join(str(e).split()).replace("Tensor-likes are not close!", "values differ:"), hint)
    print(f"✓ {name}: correct, it matches nstlib")
    return True


def check_terms(name: str, yours: dict[str, float] | None, limits: dict[str, float], hint: str | None = None) -> bool:
    """Judge a result by the objective's terms: each term of `yours` ({"content": ..., ...}) named in `limits` must be
    at most its limit. Prints every term against its limit, which are over, and `hint` if given."""
    if yours is None:
        print(f"… {name}: not done yet; fill in the cell above")
        return False
    missing = [term for term in limits if term not in yours]
    if missing:
        return _wrong(name, f"your result has no {', '.join(missing)} term", hint)
    table = ", ".join(f"{term} {float(yours[term]):.3g} (at most {limit:.3g})" for term, limit in limits.items())
    over = [f"{term} {float(yours[term]):.3g} is over {limit:.3g}" for term, limit in limits.items()
            if not float(yours[term]) <= limit]  # NaN is over
    if over:
        return _wrong(name, f"{'; '.join(over)}. {table}", hint)
    print(f"✓ {name}: every term within its limit: {table}")
    return True


def _wrong(name: str, what: str, hint: str | None) -> bool:
    print(f"✗ {name}: not yet; {what}" + (f"\n  hint: {hint}" if hint else ""))
    return False
