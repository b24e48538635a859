"""Memory: estimate what a run needs before it starts, and free what a run that ran out still holds.

On the CPU a too-large `size` does not fail cleanly: the machine swaps or the kernel kills the process, so
`check_memory` refuses runs that the estimate says need more than the free RAM (`estimate_bytes`, and decoding the
inputs), free as the process's own cgroup sees it (`available_bytes`). On a
GPU running out raises mid-run; the entry points' boundary (`nstlib.api`) frees what the failed work held
(`release_memory`) and raises `MemoryLimitError` with the last good image and `advice`.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterable
from pathlib import Path

import torch

from nstlib.core.errors import MemoryLimitError
from nstlib.core.features import check_layers, layer_names, layout
from nstlib.core.settings import Settings

BYTES_PER_FLOAT = 4
#: Bytes per pixel of decoding a picture: Pillow's 8-bit RGB(A) copy (4), the float32 (H,W,3)
#: array and the tensor made from it (12 each), and one more float copy while clamping (12).
DECODE_BYTES_PER_PIXEL = 40


def optimizer_buffers(optimizer: str, history_size: int) -> int:
    """Image-sized buffers an optimiser keeps: `SyncFreeLBFGS` a ring of m+1 (s, y) pairs plus its last step and
    previous gradient; Adam its two moment estimates."""
    return 2 * (history_size + 1) + 2 if optimizer == "lbfgs" else 2


def network_cost(height: int, width: int, deepest: str) -> tuple[int, int, int]:
    """(kept elements, largest map, parameter count) per image for VGG19 truncated after `deepest`.

    VGG19, whichever network the run uses: the estimate is made before the weights are resolved, and VGG16 (without
    conv3_4, conv4_4 and conv5_4) needs less, so for it this is an upper bound.

    Autograd keeps what the backward pass needs: every ReLU output (also the next conv's input) and every pooling
    output, plus max pooling's int64 indices (2 floats' worth per output element). Conv outputs are transient (the
    in-between value before its ReLU), so they only count through the largest map. Pooling halves the grid, rounding
    down.
    """
    kept, largest, params, channels_in, h, w = 0, 0, 0, 3, height, width
    for name, channels in layout()[: layer_names().index(deepest) + 1]:
        if name.startswith("pool"):
            h, w = h // 2, w // 2
            kept += 3 * channels * h * w
        elif name.startswith("relu") or name == deepest:
            kept += channels * h * w
        if name.startswith("conv"):
            params += channels_in * channels * 9 + channels
            channels_in = channels
        largest = max(largest, channels * h * w)
    return kept, largest, params


def estimate_bytes(height: int, width: int, layers: Iterable[str] = ("relu5_1",), *, optimizer: str = "lbfgs",
                   history_size: int = 50, batch: int = 1) -> int:
    """Estimated peak memory of optimising a (batch,3,height,width) image, in bytes:

        4 * (batch * (K + 3*L + (3 + k) * 3*H*W) + P)

    - K: elements autograd keeps for the backward pass, L: the largest feature map (`network_cost`); 3*L covers a conv
      output before its ReLU and the gradients flowing in and out of a layer;
    - 3 image-sized buffers: the image, its gradient and the normalised network input;
    - k: the optimiser's image-sized buffers (`optimizer_buffers`; L-BFGS fills its history over the first
      `history_size` steps);
    - P: the parameters of the truncated network (frozen: no gradients).

    The style and content targets are small (Gram matrices, one content layer) and left out.
    It errs on the safe side: for 3 L-BFGS steps at 512x512 with the default layers (CPU), the process's peak RSS grew
    by 272 MiB against an estimate of 654 MiB (history filled to 3).
    """
    kept, largest, params = network_cost(height, width, check_layers(layers)[-1])
    image = 3 * height * width
    per_image = kept + 3 * largest + (3 + optimizer_buffers(optimizer, history_size)) * image
    return BYTES_PER_FLOAT * (batch * per_image + params)


def available_bytes(root: Path = Path("/")) -> int | None:
    """Free RAM in bytes: /proc/meminfo's MemAvailable (else os.sysconf), capped by what the memory limit of the
    process's cgroup, and of each cgroup above it, leaves (`cgroup_files`). None if it cannot be read. `root` is where
    /proc and /sys are (a test points it at a fake tree)."""
    free = None
    try:
        for line in (root / "proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if free is None:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for limit, usage in cgroup_files(root):
        try:
            cap = int(limit.read_text()) - int(usage.read_text())
        except (OSError, ValueError):  # no such cgroup here, or no limit ("max")
            continue
        free = min(free, max(cap, 0))
    return free


def cgroup_files(root: Path = Path("/")) -> list[tuple[Path, Path]]:
    """The (limit, usage) files of the memory cgroup the process is in, and of every cgroup above it up to the mount's
    root, as /proc/self/cgroup names it: v2 ("0::/path": memory.max, memory.current) and v1 ("N:memory:/path", under
    the memory controller's folder: memory.limit_in_bytes, memory.usage_in_bytes). SLURM, `systemd-run -p MemoryMax=`
    and JupyterHub's spawners limit such a cgroup, not the root."""
    mount = root / "sys/fs/cgroup"
    try:
        lines = (root / "proc/self/cgroup").read_text().splitlines()
    except OSError:  # not Linux, or no /proc: the roots alone
        lines = ["0::/", "0:memory:/"]
    files = []
    for line in lines:
        controllers, _, path = line.partition(":")[2].partition(":")
        if not controllers:
            base, limit, usage = mount, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit, usage = mount / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = base / path.strip("/")
        files += [(level / limit, level / usage) for level in (folder, *folder.parents) if level.is_relative_to(base)]
    return files


def advice(height: int, width: int, optimizer: str, fits: float | None = None) -> str:
    side = max(height, width)
    smaller = max(32, int(side * (fits**0.5 if fits else 0.5)) // 32 * 32)
    adam = "" if optimizer == "adam" else ", or optimizer='adam' instead of L-BFGS (no 2*m image history)"
    return f"try a smaller size (e.g. size={smaller}), coarse-to-fine (a small run, then upscale and refine){adam}"


def forward_bytes(height: int, width: int, layers: Iterable[str]) -> int:
    """Peak memory of one pass without gradients (computing a style image's targets), in bytes: the image, the input and
    output maps of the largest layer, and the parameters."""
    _, largest, params = network_cost(height, width, check_layers(layers)[-1])
    return BYTES_PER_FLOAT * (3 * height * width + 2 * largest + params)


def check_memory(shape: tuple[int, int], settings: Settings, *, styles: Iterable[tuple[int, int]] = (),
                 sources: Iterable[tuple[int, int]] = (), on_cpu: bool = True) -> None:
    """Raise `MemoryLimitError` if a step of a run of `settings` at (H,W) `shape` needs more than the free RAM.

    Checked, each on its own (they happen one after another): decoding or resizing a picture to each (H,W) in `sources`
    (in RAM on any device); on the CPU also the style targets, one pass per style image at its working (H,W) in `styles`
    (`style_scale` makes them large), and optimising the batch of images (`estimate_bytes` with the settings' layers,
    optimiser and batch).
    """
    free = available_bytes()
    if free is None:
        return
    (height, width), layers, optimizer, parts = shape, settings.layers, settings.optimizer, []
    if on_cpu:
        need = estimate_bytes(height, width, layers, optimizer=optimizer, history_size=settings.history_size,
                              batch=settings.batch)
        parts.append((need, f"{width}x{height}", advice(height, width, optimizer, free / need)))
        parts += [(forward_bytes(h, w, layers), f"the {w}x{h} style image (style_scale x the content size)",
                   "try a smaller style_scale or size") for h, w in styles]
    parts += [(DECODE_BYTES_PER_PIXEL * h * w, f"loading a {w}x{h} picture", "shrink the picture or the size")
              for h, w in sources]
    for need, what, fix in parts:
        if need > free:  # the estimate is an upper bound already: what it says will not fit is refused
            raise MemoryLimitError(f"{what} needs about {need / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB of "
                                   f"RAM is free; {fix}")


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA's `OutOfMemoryError`, a RuntimeError; other devices say so)."""
    return isinstance(error, torch.cuda.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error))


def release_memory(error: BaseException, device: torch.device) -> None:
    """Free the device memory that an out-of-memory `error` still holds, so a retry can use it.

    The error's traceback keeps the frames it passed through alive, and with them the failed step's activations and
    autograd graph (Jupyter keeps the last error, so this lasts): clear those frames' variables, then return the
    allocator's cached blocks to the device.
    """
    traceback.clear_frames(error.__traceback__)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
