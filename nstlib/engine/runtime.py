"""The runtime: where and how a run computes, decided once by `Runtime.create` before any work (nanoGPT-style): the
device ("auto": cuda, else mps, else cpu), mixed precision (`Precision`), how often the losses reach the host
(`log_every`), CUDA graphs and the sizes nstlib picks. `Runtime.steps` is the engine the core loop is given; nothing
else in nstlib looks at the device type. Not `cudnn.benchmark`: on an H100 it cost 1.4-6 s on the first step of every
new image size, for the same 4 ms step (docs/benchmarks.md).
"""

from __future__ import annotations

import copy
import math
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from nstlib.core.errors import ParameterError
from nstlib.core.loop import Backward, Objective, Step, Terms, make_optimizer, plain_backward, take_step
from nstlib.core.settings import Settings, check_number
from nstlib.engine.graphs import FAILED, graphed_step

#: Steps between host copies of the losses with mixed precision.
LOG_EVERY = 10
DEVICES = ("auto", "cpu", "cuda", "mps")


class DeviceSizes(NamedTuple):
    """Long sides (px) nstlib picks: the explorer's preview (small enough to follow a slider), and the picture and
    step count of `nstlib demo` (a minute on a CPU)."""

    preview: int
    demo: int
    demo_steps: int


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; other names are parsed by `torch.device` and checked."""
    mps = torch.backends.mps.is_available()
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps else "cpu")
    try:
        dev = torch.device(device) if isinstance(device, (str, torch.device)) else None
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in DEVICES:
        raise ParameterError(f"device={device!r}: choose one of {', '.join(DEVICES)} (or e.g. 'cuda:1')")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={device!r}: CUDA is not available here; use device='cpu' or 'auto'")
    if dev.type == "cuda" and (dev.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ParameterError(f"device={device!r}: there are {count} CUDA devices here (cuda:0 to cuda:{count - 1})")
    if dev.type == "mps" and not mps:
        raise ParameterError("device='mps': MPS is not available here; use device='cpu' or 'auto'")
    return dev


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where `device` computes it natively, float16 on older GPUs, else None (float32)."""
    if device.type == "cuda":
        # Native bfloat16 convolutions need compute capability 8.0 (A100, L4) or newer. Asked directly: from torch
        # 2.3 torch.cuda.is_bf16_supported() also counts emulated bfloat16 (e.g. on Colab's T4, 7.5).
        native = (torch.cuda.is_bf16_supported() if torch.version.hip else
                  torch.cuda.get_device_capability(device)[0] >= 8)
        return torch.bfloat16 if native else torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Precision:
    """Mixed precision (on CUDA by default): VGG under autocast in `dtype` (bfloat16 where the device has it, else
    float16 with a loss scale; None: float32), NHWC memory; Gram matrices and losses in float32 (float16's overflow)."""

    dtype: torch.dtype | None = None
    channels_last: bool = True

    @property
    def loss_scaling(self) -> bool:
        """float16 needs a loss scale; bfloat16 has float32's exponent range and does not."""
        return self.dtype == torch.float16


class PrecisionFeatures(nn.Module):
    """A copy of a `VGGFeatures` with mixed precision: (B,3,H,W) -> {layer: (B,C,h,w)} computed in `precision.dtype`,
    returned in float32 (in bfloat16 inside `BFloat16Grams`).

    float16 ends at 65504, and a Caffe network (pixels in 0-255) gives maps of 1e4 and more. So in float16 the input
    and the biases are divided by `unit`, the power of two nearest 1/std (256 for Caffe, 4 for torchvision): every map
    is exactly `unit` times smaller inside (ReLU and max pooling commute with it), and comes back multiplied by it.
    """

    def __init__(self, extractor: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.precision, self.layers = precision, extractor.layers
        self.source, self.file = extractor.source, extractor.file  # what made it, and the weights file (an input)
        self.extractor = copy.deepcopy(extractor)
        self.unit = 2.0 ** round(-math.log2(min(extractor.preprocessing.std))) if precision.loss_scaling else 1.0
        with torch.no_grad():
            self.extractor.std.mul_(self.unit)
            for conv in (m for m in self.extractor.net if isinstance(m, nn.Conv2d)):
                conv.bias.div_(self.unit)
        self.extractor.net.to(dtype=precision.dtype or torch.float32,
                              memory_format=torch.channels_last if precision.channels_last else torch.preserve_format)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.precision.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.precision.dtype is None:
            return self.extractor(image)
        # autocast's weight cache is off: the weights are already in its dtype, and a CUDA graph wants it off
        with torch.autocast(image.device.type, dtype=self.precision.dtype, cache_enabled=False):
            maps = self.extractor(image)
        if getattr(_threads, "grams", False) and self.precision.dtype == torch.bfloat16:
            return maps
        return {layer: m.float() * self.unit for layer, m in maps.items()}  # the losses compute in float32


_threads = threading.local()  # .grams: inside `BFloat16Grams` in this thread


class _Gram(torch.autograd.Function):
    """F Fᵀ for bfloat16 F (B,C,N) -> (B,C,C) in float32, keeping only F for the backward pass (on CUDA one bfloat16
    product with a float32 result, elsewhere through a float32 copy dropped at once)."""

    @staticmethod
    def forward(ctx: Any, flat: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(flat)
        if flat.is_cuda and hasattr(torch.ops.aten.bmm, "dtype"):
            return torch.bmm(flat, flat.mT, out_dtype=torch.float32)
        wide = flat.float()
        return wide @ wide.mT

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (flat,) = ctx.saved_tensors
        return torch.bmm((grad + grad.mT).to(flat.dtype), flat)  # d(F Fᵀ) = (dG + dGᵀ) F


class BFloat16Grams(TorchFunctionMode):
    """The steps of a bfloat16 run: inside, `PrecisionFeatures` hands over its bfloat16 maps, and a Gram matrix of them
    (`nstlib.core.losses.gram_matrix`'s ``flat @ flat.transpose(1, 2)``) is `_Gram`: on the tensor cores, in float32,
    without the float32 copies of the maps (a third of the backward pass's memory at 128²). The core stays as taught."""

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in (torch.Tensor.matmul, torch.matmul):
            a, b = args  # F Fᵀ of one bfloat16 (B,C,N) F: b is a's transpose
            if (a.dtype == torch.bfloat16 and a.dim() == 3 and b.data_ptr() == a.data_ptr()
                    and b.shape == a.mT.shape and b.stride() == a.mT.stride()):
                return _Gram.apply(a)
        return func(*args, **(kwargs or {}))

    def __enter__(self) -> BFloat16Grams:
        _threads.grams = True
        return super().__enter__()

    def __exit__(self, *error: Any) -> None:
        _threads.grams = False
        super().__exit__(*error)


class LossScale:
    """Dynamic loss scaling for float16, kept on the device so that a CUDA graph can hold it (torch.amp.GradScaler
    reads its inf check on the host at every step, which waits for the GPU). An overflow zeroes the gradients and
    halves the scale, `growth_interval` finite steps in a row double it; all zeros is the fresh state."""

    def __init__(self, init_scale: float = 2.0**16, growth_interval: int = 100,
                 device: torch.device | str = "cpu") -> None:
        self.init_scale, self.growth_interval = init_scale, growth_interval
        self.exponent = torch.zeros((), device=device)
        self.good_steps = torch.zeros((), dtype=torch.long, device=device)

    @property
    def scale(self) -> torch.Tensor:
        return self.init_scale * torch.exp2(self.exponent)

    def backward(self, loss: torch.Tensor, *leaves: torch.Tensor) -> None:
        scale = self.scale
        (loss * scale).backward()
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        for grad in grads:
            grad.copy_(torch.where(finite, grad / scale, torch.zeros_like(grad)))
        self.good_steps.copy_(torch.where(finite, self.good_steps + 1, 0))
        grow = self.good_steps >= self.growth_interval
        self.exponent.add_(torch.where(finite, grow.float(), -1.0))
        self.good_steps.masked_fill_(grow, 0)


#: extractor (while it lives) -> {(device, precision): (its weights' versions, mixed-precision copy)}
_PRECISION_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes (see the module docstring); build it with `Runtime.create`."""

    device: torch.device
    precision: Precision | None = None
    log_every: int = 1
    cuda_graph: bool = False

    @classmethod
    def create(cls, device: str | torch.device = "auto", mixed_precision: bool | None = None,
               log_every: int | None = None, cuda_graph: bool | None = None) -> Runtime:
        """Decide everything for `device` ("auto": cuda > mps > cpu); see the module docstring."""
        for name, value in (("mixed_precision", mixed_precision), ("cuda_graph", cuda_graph)):
            if value is not None and not isinstance(value, bool):
                raise ParameterError(f"{name}={value!r}: use True, False or None")
        log_every = check_number("log_every", log_every, whole=True, low=1, allow_none=True)
        dev = pick_device(device)
        precision = None
        if mixed_precision or (mixed_precision is None and dev.type == "cuda"):
            precision = Precision(autocast_dtype(dev), channels_last=dev.type in ("cuda", "cpu"))
        if cuda_graph is None:
            cuda_graph = dev.type == "cuda" and precision is not None
        elif cuda_graph and dev.type != "cuda":
            raise ParameterError(f"cuda_graph=True: CUDA graphs need a CUDA device, not {dev.type!r}; use None")
        return cls(dev, precision, log_every or (LOG_EVERY if precision or dev.type != "cpu" else 1), cuda_graph)

    @classmethod
    def of(cls, value: Runtime | str | torch.device) -> Runtime:
        """What `runtime=` takes: a `Runtime`, or a device name for `Runtime.create(value)`."""
        if isinstance(value, Runtime):
            return value
        if isinstance(value, (str, torch.device)):
            return cls.create(value)
        raise ParameterError(f"runtime={value!r}: give a device name ('auto', 'cpu', 'cuda', 'mps') or a nstlib "
                             "Runtime, e.g. Runtime.create('cuda', mixed_precision=False)")

    def for_scoring(self) -> Runtime:
        """The same device in plain float32, eager: scores that compare images of different methods exactly."""
        return replace(self, precision=None, cuda_graph=False, log_every=1)

    @property
    def graphed(self) -> bool:
        """Whether steps are captured in CUDA graphs now: asked for, and no capture failed in this process."""
        return self.cuda_graph and not FAILED

    @property
    def sizes(self) -> DeviceSizes:
        """GPUs (cuda, mps) take larger pictures."""
        return DeviceSizes(128, 192, 60) if self.on_cpu else DeviceSizes(256, 512, 300)

    @property
    def on_cpu(self) -> bool:
        """True when the run computes in the host's RAM (what the memory check guards)."""
        return self.device.type == "cpu"

    def prepare(self, extractor: nn.Module) -> nn.Module:
        """The extractor on the device, with mixed precision if on (one copy per extractor and weights, kept)."""
        extractor = extractor.to(self.device)
        if not self.precision:
            return extractor
        copies = _PRECISION_COPIES.setdefault(extractor, {})
        version = tuple(p._version for p in extractor.parameters())  # bumped by in-place changes
        cached = copies.get((self.device, self.precision))
        if cached is None or cached[0] != version:
            cached = copies[self.device, self.precision] = (version, PrecisionFeatures(extractor, self.precision))
        return cached[1]

    def backward(self) -> Backward:
        """The backward pass of one run: a fresh `LossScale` for float16, else plain `loss.backward()`."""
        scaled = self.precision and self.precision.loss_scaling
        return LossScale(device=self.device).backward if scaled else plain_backward

    @contextmanager
    def steps(self, objective: Objective, image: torch.Tensor,
              settings: Settings) -> Iterator[tuple[Step, torch.Tensor]]:
        """The core loop's engine: `take_step` in a CUDA graph (on its own copy of `image`, copied back at the end), or
        eagerly; with this runtime's backward pass, and in bfloat16 inside `BFloat16Grams`."""
        if self.graphed:
            with graphed_step(objective, image, settings, self.backward()) as step:
                try:
                    yield self._grams(step), step.image
                finally:
                    with torch.no_grad():
                        image.copy_(step.image)
            return
        yield self._grams(partial(take_step, objective, image, make_optimizer(image, settings), self.backward())), image

    def _grams(self, step: Step) -> Step:
        if self.precision is None or self.precision.dtype != torch.bfloat16:
            return step

        def in_bfloat16() -> tuple[Terms, int]:
            with BFloat16Grams():
                return step()

        return in_bfloat16
