"""The runtime: where and how a run computes, decided once, before any work (nanoGPT-style).

`Runtime.create(device, mixed_precision)` picks the device and everything that depends on it, and
`Runtime.steps` is the engine the core loop is given; nothing else in nstlib looks at the device type:

1. the device: "auto" is cuda, else mps, else cpu;
2. mixed precision (`Precision`; on by default on CUDA only): channels_last memory for the network and its input; VGG
   under autocast, in bfloat16 where the device computes it natively, else float16 with a loss scale (`LossScale`: small
   float16 gradients underflow to zero); the Gram matrices and losses in float32 (a float16 Gram matrix overflows at
   ordinary sizes). Not `cudnn.benchmark`: measured on an H100 it cost 1.4-6 s on the first step of every new image size
   for the same 4 ms step;
3. how often the losses reach the host (`log_every`: every `LOG_EVERY` steps with mixed precision, since each copy
   waits for the GPU);
4. CUDA graphs (on by default on CUDA with bfloat16): each step captured once and replayed (`nstlib.engine.graphs`); a
   capture that fails warns once and leaves graphs off, losing no step;
5. the pyramid plan (`PyramidPlan`) and the sizes nstlib picks on this device (`DeviceSizes`).

docs/benchmarks.md has the numbers.
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import partial

import torch
from torch import nn

from nstlib.core.errors import ParameterError
from nstlib.core.loop import Backward, Objective, Step, make_optimizer, plain_backward, take_step
from nstlib.core.settings import Settings, check_number
from nstlib.engine.graphs import FAILED, graphed_step

#: Steps between host copies of the losses with mixed precision.
LOG_EVERY = 10
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class PyramidPlan:
    """How one kind of device runs coarse-to-fine (`nstlib.controls.pyramid`): "auto" uses the pyramid from `auto_from`
    px up (None: never), from `start` px, each scale getting `share` of the step budget."""

    auto_from: int | None = 512
    start: int = 128
    share: float = 0.25


#: On a CPU a step costs in proportion to the pixels, and the √2 pyramid from 128 px reached single-scale's
#: objective 2.3x faster at 512² (docs/benchmarks.md). On CUDA a step below about 512² is launch-bound, and the
#: pyramid was measured slower than single-scale at 512² on an H100 (1.47 s against 0.77 s to the same objective):
#: "auto" stays single-scale there, and an explicit pyramid starts at 256 px.
PYRAMID_PLANS = {"cuda": PyramidPlan(auto_from=None, start=256)}


@dataclass(frozen=True)
class DeviceSizes:
    """Sizes (long sides, px) nstlib picks on one kind of device: the style explorer's `preview` (small enough that the
    picture follows the slider), and the picture and step count of `nstlib demo` (a minute on a CPU)."""

    preview: int = 128
    demo: int = 192
    demo_steps: int = 60


DEVICE_SIZES = {"cuda": DeviceSizes(256, 512, 300), "mps": DeviceSizes(256, 512, 300)}


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; other names are parsed by `torch.device` and checked."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
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
    if dev.type in ("cpu", "mps") and dev.index not in (None, 0):
        raise ParameterError(f"device={device!r}: there is one {dev.type.upper()} device; use device='{dev.type}'")
    if dev.type == "mps" and not _mps_available():
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
    """How the network runs with mixed precision: autocast `dtype` (None: float32) and NHWC memory."""

    dtype: torch.dtype | None = None
    channels_last: bool = True

    @property
    def loss_scaling(self) -> bool:
        """float16 needs a loss scale; bfloat16 has float32's exponent range and does not."""
        return self.dtype == torch.float16


class PrecisionFeatures(nn.Module):
    """A copy of a `VGGFeatures` with mixed precision: (B,3,H,W) -> {layer: (B,C,h,w)} computed in `precision.dtype`
    with channels_last weights, returned in float32."""

    def __init__(self, extractor: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.precision, self.layers = precision, extractor.layers
        self.source, self.file = extractor.source, extractor.file  # what made it, and the weights file (an input)
        self.extractor = copy.deepcopy(extractor)
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
        return {layer: m.float() for layer, m in maps.items()}  # the losses compute in float32


class LossScale:
    """Dynamic loss scaling for float16, kept on the device (torch.amp.GradScaler reads its inf check on the host at
    every step, which waits for the GPU).

    `backward(loss, *leaves)` back-propagates loss * scale and divides each leaf's `.grad` by it; if a gradient
    overflowed, all are zeroed and the scale halves (Adam coasts, L-BFGS stays put); after `growth_interval` finite
    steps in a row it doubles.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_interval: int = 100) -> None:
        self.scale = torch.tensor(float(init_scale))
        self.good_steps = torch.tensor(0)
        self.growth_interval = growth_interval

    def backward(self, loss: torch.Tensor, *leaves: torch.Tensor) -> None:
        self.scale, self.good_steps = self.scale.to(loss.device), self.good_steps.to(loss.device)
        (loss * self.scale).backward()
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        for grad in grads:
            grad.copy_(torch.where(finite, grad / self.scale, torch.zeros_like(grad)))
        self.good_steps = torch.where(finite, self.good_steps + 1, torch.zeros_like(self.good_steps))
        grow = self.good_steps >= self.growth_interval
        self.scale = torch.where(finite, torch.where(grow, self.scale * 2, self.scale), self.scale / 2)
        self.good_steps = torch.where(grow, torch.zeros_like(self.good_steps), self.good_steps)


#: extractor (while it lives) -> {(device, precision): (its weights' versions, mixed-precision copy)}
_PRECISION_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes (see the module docstring); build it with `Runtime.create`. `precision` None is
    plain float32; `log_every` the steps between host copies of the losses (and NaN checks); `cuda_graph` as asked
    (`graphed`: and still possible)."""

    device: torch.device
    precision: Precision | None = None
    log_every: int = 1
    cuda_graph: bool = False
    pyramid: PyramidPlan = PyramidPlan()
    sizes: DeviceSizes = DeviceSizes()

    @classmethod
    def create(cls, device: str | torch.device = "auto", mixed_precision: bool | None = None,
               log_every: int | None = None, cuda_graph: bool | None = None) -> Runtime:
        """Decide everything for `device` ("auto": cuda > mps > cpu); see the module docstring."""
        for name, value in (("mixed_precision", mixed_precision), ("cuda_graph", cuda_graph)):
            if value not in (True, False, None) or isinstance(value, int) and not isinstance(value, bool):
                raise ParameterError(f"{name}={value!r}: use True, False or None")
        log_every = check_number("log_every", log_every, whole=True, low=1, allow_none=True)
        dev = pick_device(device)
        precision = None
        if mixed_precision or (mixed_precision is None and dev.type == "cuda"):
            precision = Precision(autocast_dtype(dev), channels_last=dev.type in ("cuda", "cpu"))
        if cuda_graph is None:
            cuda_graph = dev.type == "cuda" and precision is not None and not precision.loss_scaling
        elif cuda_graph and dev.type != "cuda":
            raise ParameterError(f"cuda_graph=True: CUDA graphs need a CUDA device, not {dev.type!r}; use None")
        elif cuda_graph and precision is not None and precision.loss_scaling:
            raise ParameterError("cuda_graph=True: float16's loss scale cannot be captured (this GPU has no native "
                                 "bfloat16); use mixed_precision=False or cuda_graph=None")
        return cls(dev, precision, log_every or (LOG_EVERY if precision else 1), cuda_graph,
                   PYRAMID_PLANS.get(dev.type, PyramidPlan()), DEVICE_SIZES.get(dev.type, DeviceSizes()))

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
        return self.cuda_graph and "cuda_graph" not in FAILED

    @property
    def on_cpu(self) -> bool:
        """True when the run computes in the host's RAM (what the memory check guards)."""
        return self.device.type == "cpu"

    def prepare(self, extractor: nn.Module) -> nn.Module:
        """The extractor on the device, with mixed precision if on: one copy per extractor (a new one if its weights
        change in place), which later runs reuse."""
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
        return LossScale().backward if self.precision and self.precision.loss_scaling else plain_backward

    @contextmanager
    def steps(self, objective: Objective, image: torch.Tensor,
              settings: Settings) -> Iterator[tuple[Step, torch.Tensor]]:
        """The core loop's engine: `take_step` in a CUDA graph (on its own copy of `image`, copied back at the end), or
        eagerly with this runtime's backward pass."""
        if self.graphed:
            with graphed_step(objective, image, settings) as step:
                try:
                    yield step, step.image
                finally:
                    with torch.no_grad():
                        image.copy_(step.image)
            return
        yield partial(take_step, objective, image, make_optimizer(image, settings), self.backward()), image
