"""Memory: estimate what a run needs before it starts, and free what a run that ran out still holds.

On the CPU a too-large `size` does not fail cleanly (the machine swaps, or the kernel kills the process), so
`check_memory` refuses a run whose estimate exceeds the free RAM that the process's cgroup sees. On a GPU running out
raises mid-run; the entry points' boundary (`nstlib.api.Guard`) frees what the failed work held (`release_memory`).
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable
from pathlib import Path

import torch

from nstlib.core.errors import MemoryLimitError
from nstlib.core.features import check_layers, layer_names, layout
from nstlib.core.settings import Settings

BYTES_PER_FLOAT = 4
#: Bytes per pixel of decoding a picture: Pillow's RGB(A) copy (4), three float32 copies (array, tensor, clamped).
DECODE_BYTES_PER_PIXEL = 40


def network_cost(height: int, width: int, deepest: str) -> tuple[int, int, int]:
    """(kept elements, largest map, parameter count) per image for VGG19 truncated after `deepest` (an upper bound for
    VGG16: the weights are not resolved yet). Autograd keeps every ReLU and pooling output, plus max pooling's int64
    indices (2 floats' worth each); conv outputs are transient, so they count only through the largest map."""
    kept, largest, params, channels_in, h, w = 0, 0, 0, 3, height, width
    for name, channels in layout()[: layer_names().index(deepest) + 1]:
        if name.startswith("pool"):
            h, w = -(-h // 2), -(-w // 2)  # pooling rounds up
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

    K: the elements autograd keeps, L: the largest map (`network_cost`; 3*L: a conv output and the gradients in and out
    of a layer); 3 image-sized buffers (the image, its gradient, the network's input); k: the optimiser's (L-BFGS: m+1
    (s, y) pairs, its last step and gradient; Adam: two moments); P: the parameters. The targets are small and left
    out. It errs on the safe side: 3 L-BFGS steps at 512x512 grew the peak RSS by 272 MiB against an estimate of 654.
    """
    kept, largest, params = network_cost(height, width, check_layers(layers)[-1])
    image = 3 * height * width
    buffers = 2 * (history_size + 1) + 2 if optimizer == "lbfgs" else 2
    per_image = kept + 3 * largest + (3 + buffers) * image
    return BYTES_PER_FLOAT * (batch * per_image + params)


def available_bytes(root: Path = Path("/")) -> int | None:
    """Free RAM in bytes (None if unknown, as off Linux): MemAvailable, capped by what the limits leave of the memory
    cgroup that /proc/self/cgroup names (v2 or v1) and of every cgroup above it: SLURM, `systemd-run -p MemoryMax=`
    and JupyterHub limit such a cgroup, not the root. `root` is where /proc and /sys are (a test points it at a fake
    tree)."""
    try:
        meminfo = (root / "proc/meminfo").read_text().splitlines()
        free = next(int(line.split()[1]) * 1024 for line in meminfo if line.startswith("MemAvailable:"))
        cgroups = (root / "proc/self/cgroup").read_text().splitlines()
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    mount = root / "sys/fs/cgroup"
    for line in cgroups:
        controllers, _, path = line.partition(":")[2].partition(":")
        if not controllers:
            base, limit, usage = mount, "memory.max", "memory.current"
        elif "memory" in controllers.split(","):
            base, limit, usage = mount / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes"
        else:
            continue
        folder = base / path.strip("/")
        for level in (folder, *folder.parents):
            if not level.is_relative_to(base):  # above the mount
                break
            try:
                cap = int((level / limit).read_text()) - int((level / usage).read_text())
            except (OSError, ValueError):  # no such cgroup here (a container's path), or no limit ("max")
                continue
            free = min(free, max(cap, 0))
    return free


def advice(height: int, width: int, optimizer: str, fits: float | None = None) -> str:
    side = max(height, width)
    smaller = max(32, int(side * (fits**0.5 if fits else 0.5)) // 32 * 32)
    adam = "" if optimizer == "adam" else ", or optimizer='adam' instead of L-BFGS (no 2*m image history)"
    return f"try a smaller size (e.g. size={smaller}), coarse-to-fine (a small run, then upscale and refine){adam}"


def forward_bytes(height: int, width: int, layers: Iterable[str]) -> int:
    """Peak memory of one pass without gradients (a style's targets), in bytes."""
    _, largest, params = network_cost(height, width, check_layers(layers)[-1])
    return BYTES_PER_FLOAT * (3 * height * width + 2 * largest + params)


def check_memory(shape: tuple[int, int], settings: Settings, *, styles: Iterable[tuple[int, int]] = (),
                 sources: Iterable[tuple[int, int]] = (), on_cpu: bool = True) -> None:
    """Raise `MemoryLimitError` if a part of a run of `settings` at (H,W) `shape` needs more than the free RAM, each
    part on its own (they come one after another): decoding each picture of (H,W) `sources`, and on the CPU the pass of
    each style of (H,W) `styles` and the optimisation (`estimate_bytes`)."""
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
    """True for torch's out-of-memory errors (RuntimeErrors that say so, CUDA's `OutOfMemoryError` among them)."""
    return isinstance(error, RuntimeError) and "out of memory" in str(error)


def release_memory(error: BaseException, device: torch.device) -> None:
    """Free the device memory that an out-of-memory `error` still holds: its traceback's frames keep the failed step's
    activations alive (Jupyter keeps the last error), so clear them, then empty the allocator's cache."""
    traceback.clear_frames(error.__traceback__)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
