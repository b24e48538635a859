"""The runtime: where and how a run computes, decided once, before any work (nanoGPT-style).

`Runtime.create(device, mixed_precision, compile_model)` picks the device and everything that
depends on it; the rest of the library asks the runtime and never looks at the device type itself:

1. the device: "auto" is cuda, else mps, else cpu (`pick_device`);
2. mixed precision (on by default on CUDA only; `mixed_precision=False` gives the plain float32
   path the notebooks explain, True asks for it on any device), a `Precision`:

   - channels_last (NHWC) memory for the network's weights and its input, what tensor-core
     convolutions want. Not `torch.backends.cudnn.benchmark`: measured on an H100 it was
     pure cost, 1.4-6 s on the first float32 step of every new image size (0.7-4 s for bf16, and a
     pyramid has about 6 sizes) for the same 4 ms steady-state step as without it;
   - VGG under autocast: bfloat16 where the device computes it natively, else float16 with a
     dynamic loss scale (`LossScale`), because small float16 gradients underflow to zero. The
     weights are stored once in that dtype, so autocast does not re-cast them every iteration;
   - the Gram matrices and the losses stay in float32: `PrecisionFeatures` hands the losses float32
     maps and autocast ends with the network (a float16 Gram matrix overflows 65504 at ordinary
     image sizes), so the losses are the same plain maths on every path. Autocast's weight cache
     is off: the weights are already in the autocast dtype, and torch asks for it off in a CUDA graph.

   On a CPU it keeps only channels_last (float32), and bfloat16 only where the CPU has it natively.
3. `torch.compile` of the objective (`compile_model`): faster steps on a GPU, after a slow first one;
4. how often the losses are copied to the host (`log_every`): every step on the plain path, every
   `LOG_EVERY` steps with mixed precision, since each copy waits for the GPU to finish;
5. CUDA graphs (`cuda_graph`, on by default on CUDA with bfloat16 mixed precision): each step is
   captured once per image size and replayed (`nstlib.graphs`: the same `step.take_step` as the
   eager loop), with fused Adam or the sync-free L-BFGS (`nstlib.lbfgs`). Not with
   float16's loss scale, whose bookkeeping a graph cannot hold;
6. coarse-to-fine per device (`pyramid`, a `PyramidPlan`): see `PYRAMID_PLANS`;
7. what sizes suit the device where nstlib picks one (`sizes`, `DeviceSizes`): the explorer's preview
   and the demo's picture;
8. the fallback: if a CUDA graph capture (or its first replay) or `torch.compile` fails, `fall_back`
   warns once, naming the cause, and turns that acceleration off for the rest of the process; the
   run that met it goes on eagerly without losing a step (`nstlib.graphs`, `Runtime.compiled`).

The loop gets its backward pass (`backward`) and the objective it calls (`compiled`) from here.
`prepare` keeps one mixed-precision copy of a network per device and precision for the process,
so later runs with the same extractor find it (and their captured steps) ready.
`docs/benchmarks.md` has the numbers.
"""

from __future__ import annotations

import copy
import re
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
from torch import nn

from nstlib.errors import ParameterError
from nstlib.settings import check_flag

#: Steps between host copies of the losses with mixed precision.
LOG_EVERY = 10


@dataclass(frozen=True)
class PyramidPlan:
    """How one kind of device runs coarse-to-fine (`nstlib.pyramid`).

    Attributes:
        auto_from: `coarse_to_fine="auto"` uses the pyramid from this long side (px) up; None: never.
        start: the smallest scale when `pyramid_start` is None (size // 2 for small targets).
        share: the fraction of the step budget that each scale gets.
    """

    auto_from: int | None = 512
    start: int = 128
    share: float = 0.25


#: Coarse-to-fine per device type (others: `PyramidPlan()`, the CPU's). On a CPU a step costs in
#: proportion to the pixels, and the √2 pyramid from 128 px reached single-scale's objective 2.3x
#: faster at 512² (docs/benchmarks.md). On CUDA a step below about 512² is launch-bound (no cheaper
#: than a larger one), and the pyramid was measured slower than single-scale at 512² on an
#: H100 (1.47 s against 0.77 s to the same objective): "auto" stays single-scale there, and an
#: explicit pyramid starts at 256 px. Not yet measured at 1024² and 2048²: bench/coarse_to_fine.py
#: --device cuda measures time to a fixed objective, to set these from.
PYRAMID_PLANS = {"cuda": PyramidPlan(auto_from=None, start=256)}
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class DeviceSizes:
    """Sizes that suit one kind of device where nstlib picks them (long sides in pixels).

    Attributes:
        preview: the style explorer's preview: small enough that the picture follows the slider
            (one VGG step at 256 px takes seconds on a CPU).
        demo, demo_steps: the picture `nstlib demo` makes, and its step count (a minute on a CPU).
    """

    preview: int = 128
    demo: int = 192
    demo_steps: int = 60


DEVICE_SIZES = {"cuda": DeviceSizes(256, 512, 300), "mps": DeviceSizes(256, 512, 300)}
#: Accelerations that failed in this process ({"cuda_graph" or "compile": the cause}); see `fall_back`.
FAILED: dict[str, str] = {}
_FALLBACK_WHAT = {"cuda_graph": "CUDA graph capture", "compile": "torch.compile"}
_DEVICE_NAME = re.compile(r"(auto|cpu|cuda|mps)(?::(\d{1,4}))?")


def _mps_available() -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """'auto' -> cuda if available, else mps, else cpu; other names are checked and returned."""
    if not isinstance(device, (str, torch.device)):
        raise ParameterError(f"device={device!r}: give a name such as 'cpu', 'cuda' or 'cuda:1'")
    name = str(device)
    match = _DEVICE_NAME.fullmatch(name)
    if match is None or (match[2] is not None and match[1] not in ("cuda", "cpu")):
        raise ParameterError(f"device={name!r}: choose one of {', '.join(DEVICES)} (or e.g. 'cuda:1')")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu")
    if match[1] == "cuda" and not torch.cuda.is_available():
        raise ParameterError(f"device={name!r}: CUDA is not available here; use device='cpu' or 'auto'")
    if match[1] == "cuda" and match[2] is not None and int(match[2]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ParameterError(f"device={name!r}: there are {count} CUDA devices here (cuda:0 to cuda:{count - 1})")
    if match[1] == "cpu" and match[2] not in (None, "0"):
        raise ParameterError(f"device={name!r}: there is one CPU device; use device='cpu'")
    if name == "mps" and not _mps_available():
        raise ParameterError("device='mps': MPS is not available here; use device='cpu' or 'auto'")
    return torch.device(name)


def fall_back(kind: str, error: BaseException) -> None:
    """`kind` ("cuda_graph" or "compile") failed with `error`: warn once, naming the cause, and leave it
    off for the rest of the process (the caller goes on eagerly)."""
    if kind not in FAILED:
        FAILED[kind] = f"{type(error).__name__}: {error}".splitlines()[0]
        warnings.warn(f"{_FALLBACK_WHAT[kind]} failed ({FAILED[kind]}); this run goes on eagerly from where it was, "
                      "and so does every later run in this process", RuntimeWarning, stacklevel=3)


def is_out_of_memory(error: BaseException) -> bool:
    """True for torch's out-of-memory errors (CUDA's is a RuntimeError subclass since torch 1.13; a plain
    RuntimeError saying 'out of memory' before that, and on other devices)."""
    oom = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom is not None and isinstance(error, oom)) or (
        isinstance(error, RuntimeError) and "out of memory" in str(error)
    )


def empty_cache(device: torch.device) -> None:
    """Return the allocator's cached blocks to `device` (CUDA, MPS; nothing to do on a CPU)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """bfloat16 where `device` computes it natively, float16 on older GPUs, else None (float32)."""
    if device.type == "cuda":
        # Native bfloat16 convolutions need compute capability 8.0 (Ampere: A100, L4) or newer. Asked
        # directly, because torch.cuda.is_bf16_supported() also counts emulated bfloat16 (e.g. on
        # Colab's T4, 7.5) from torch 2.3, and only torch >= 2.4 can be told not to.
        if torch.version.hip:  # ROCm: no such emulation
            native = torch.cuda.is_bf16_supported()
        else:
            native = torch.cuda.get_device_capability(device)[0] >= 8
        return torch.bfloat16 if native else torch.float16
    if device.type == "cpu" and torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Precision:
    """How the network runs with mixed precision on one device.

    Attributes:
        dtype: autocast dtype (torch.bfloat16 or torch.float16), or None to stay in float32.
        channels_last: store weights and input as NHWC.
    """

    dtype: torch.dtype | None = None
    channels_last: bool = True

    @property
    def loss_scaling(self) -> bool:
        """float16 needs a loss scale; bfloat16 has float32's exponent range and does not."""
        return self.dtype == torch.float16


def precision_for(mixed_precision: bool | None, device: torch.device) -> Precision | None:
    """The mixed-precision settings for `device`, or None for the plain float32 path (None: on for CUDA)."""
    if mixed_precision is None:
        mixed_precision = device.type == "cuda"
    if not mixed_precision:
        return None
    return Precision(dtype=autocast_dtype(device), channels_last=device.type in ("cuda", "cpu"))


#: extractor (while it lives) -> {(device, precision): (its weights' versions, mixed-precision copy)}
_PRECISION_COPIES: weakref.WeakKeyDictionary[nn.Module, dict[tuple, tuple]] = weakref.WeakKeyDictionary()


def cuda_graph_for(cuda_graph: bool | None, device: torch.device, precision: Precision | None) -> bool:
    """Whether steps are captured in CUDA graphs (None: on CUDA with mixed precision, unless float16)."""
    if cuda_graph is None:
        return device.type == "cuda" and precision is not None and not precision.loss_scaling
    if cuda_graph and device.type != "cuda":
        raise ParameterError(f"cuda_graph=True: CUDA graphs need a CUDA device, not {device.type!r}; use None")
    if cuda_graph and precision is not None and precision.loss_scaling:
        raise ParameterError("cuda_graph=True: float16's loss scale cannot be captured (this GPU has no native "
                             "bfloat16); use mixed_precision=False or cuda_graph=None")
    return bool(cuda_graph)


class PrecisionFeatures(nn.Module):
    """A copy of a `VGGFeatures` that runs with mixed precision; same outputs, lower precision.

    The copy holds the weights in `precision.dtype` and channels_last memory, so the extractor passed
    in is left as it was (it can still serve the plain path). Call it like the extractor: (B,3,H,W)
    in [0,1] -> {layer: (B,C,h,w)}, computed in `precision.dtype` and returned in float32.
    """

    def __init__(self, extractor: nn.Module, precision: Precision) -> None:
        super().__init__()
        self.precision = precision
        self.layers, self.source = extractor.layers, getattr(extractor, "source", "")
        self.extractor = copy.deepcopy(extractor)
        self.extractor.net.to(dtype=precision.dtype or torch.float32,
                              memory_format=torch.channels_last if precision.channels_last else torch.preserve_format)

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.precision.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.precision.dtype is None:
            return self.extractor(image)
        with torch.autocast(image.device.type, dtype=self.precision.dtype, cache_enabled=False):
            maps = self.extractor(image)
        return {layer: m.float() for layer, m in maps.items()}  # the losses compute in float32


class LossScale:
    """Dynamic loss scaling for float16, like `torch.amp.GradScaler` but without host syncs.

    `backward(loss, *leaves)` back-propagates loss * scale, so that small gradients survive float16,
    then divides each leaf's `.grad` (the image's, or a network's weights') by the scale. If a
    gradient overflowed (inf/NaN) they are all set to zero and the scale halved: Adam then coasts on
    its momentum for that step and L-BFGS stays where it is. After `growth_interval` finite
    gradients in a row the scale doubles. The bookkeeping is done with tensors on the device, so it
    never waits for the GPU.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_interval: int = 100) -> None:
        self.scale = torch.tensor(float(init_scale))
        self.good_steps = torch.tensor(0)
        self.growth_interval = growth_interval

    def backward(self, loss: torch.Tensor, *leaves: torch.Tensor) -> None:
        """Set each leaf's .grad to d(loss)/d(leaf) (all zero if one overflowed) and update the scale."""
        self.scale = self.scale.to(loss.device)
        self.good_steps = self.good_steps.to(loss.device)
        (loss * self.scale).backward()
        grads = [leaf.grad for leaf in leaves if leaf.grad is not None]
        finite = torch.stack([torch.isfinite(g).all() for g in grads]).all()
        for grad in grads:
            grad.copy_(torch.where(finite, grad / self.scale, torch.zeros_like(grad)))
        self.good_steps = torch.where(finite, self.good_steps + 1, torch.zeros_like(self.good_steps))
        grow = self.good_steps >= self.growth_interval
        self.scale = torch.where(finite, torch.where(grow, self.scale * 2, self.scale), self.scale / 2)
        self.good_steps = torch.where(grow, torch.zeros_like(self.good_steps), self.good_steps)


def plain_backward(loss: torch.Tensor, *leaves: torch.Tensor) -> None:
    """loss.backward(): sets the leaves' .grad (the image's, or a network's weights')."""
    loss.backward()


#: ``backward(loss, *leaves)``: set each leaf's .grad to d(loss)/d(leaf).
Backward = Callable[..., None]


class CompiledObjective:
    """`torch.compile` of an objective for one image size; if compiling fails (no triton, say) it
    falls back to the objective itself (`fall_back`), in the same call: no step is lost."""

    def __init__(self, objective: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> None:
        self.objective = objective
        self.compiled = torch.compile(objective, dynamic=False)

    def __call__(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if "compile" not in FAILED:
            try:
                return self.compiled(image)
            except Exception as e:
                if is_out_of_memory(e):
                    raise
                fall_back("compile", e)
        return self.objective(image)


@dataclass(frozen=True)
class Runtime:
    """Where and how a run computes (see the module docstring); build it with `Runtime.create`.

    Attributes:
        device: where the network, the images and the optimiser live.
        precision: mixed-precision settings, or None for plain float32.
        compile_model: run the objective through `torch.compile`.
        log_every: steps between host copies of the losses (and NaN checks).
        cuda_graph: capture each step in a CUDA graph and replay it (`nstlib.graphs`), as asked;
            `graphed` says whether it still does (not after a failed capture in this process).
        pyramid: how coarse-to-fine runs on this device (`PYRAMID_PLANS`).
        sizes: the preview and demo sizes that suit this device (`DEVICE_SIZES`).
    """

    device: torch.device
    precision: Precision | None = None
    compile_model: bool = False
    log_every: int = 1
    cuda_graph: bool = False
    pyramid: PyramidPlan = PyramidPlan()
    sizes: DeviceSizes = DeviceSizes()

    @classmethod
    def create(cls, device: str | torch.device = "auto", mixed_precision: bool | None = None,
               compile_model: bool = False, log_every: int | None = None,
               cuda_graph: bool | None = None) -> Runtime:
        """Decide everything for `device` ("auto": cuda > mps > cpu); see the module docstring."""
        if log_every is not None and (isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1):
            raise ParameterError(f"log_every={log_every!r}: give a whole number >= 1 or None")
        check_flag("mixed_precision", mixed_precision, None)  # None: decided by the device
        check_flag("cuda_graph", cuda_graph, None)
        check_flag("compile_model", compile_model)
        dev = pick_device(device)
        precision = precision_for(mixed_precision, dev)
        return cls(dev, precision, compile_model, log_every or (LOG_EVERY if precision else 1),
                   cuda_graph_for(cuda_graph, dev, precision), PYRAMID_PLANS.get(dev.type, PyramidPlan()),
                   DEVICE_SIZES.get(dev.type, DeviceSizes()))

    @classmethod
    def of(cls, value: Runtime | str | torch.device) -> Runtime:
        """What the `runtime=` argument of `stylize` and friends takes: a `Runtime`, or a device name for
        `Runtime.create(value)` with everything else decided by the device."""
        if isinstance(value, Runtime):
            return value
        if isinstance(value, (str, torch.device)):
            return cls.create(value)
        raise ParameterError(f"runtime={value!r}: give a device name ('auto', 'cpu', 'cuda', 'mps') or a "
                             "nstlib Runtime, e.g. Runtime.create('cuda', mixed_precision=False)")

    def for_scoring(self) -> Runtime:
        """The same device in plain float32, eager: scores that compare images of different methods exactly."""
        return replace(self, precision=None, compile_model=False, cuda_graph=False, log_every=1)

    @property
    def graphed(self) -> bool:
        """Whether steps are captured in CUDA graphs now: asked for, and no capture failed in this process."""
        return self.cuda_graph and "cuda_graph" not in FAILED

    @property
    def on_cpu(self) -> bool:
        """True when the run computes in the host's RAM (what the memory check guards)."""
        return self.device.type == "cpu"

    def prepare(self, extractor: nn.Module) -> nn.Module:
        """The extractor as this runtime runs it: moved to the device, with mixed precision if on.

        The mixed-precision copy is made once per extractor and kept while the extractor lives
        (a new one if its weights were changed in place), so a later run reuses it."""
        extractor = extractor.to(self.device)
        if not self.precision:
            return extractor
        copies = _PRECISION_COPIES.setdefault(extractor, {})
        version = tuple(p._version for p in extractor.parameters())  # bumped by in-place changes
        cached = copies.get((self.device, self.precision))
        if cached is None or cached[0] != version:
            cached = copies[self.device, self.precision] = (version, PrecisionFeatures(extractor, self.precision))
        return cached[1]

    def compiled(self, objective: Callable[[torch.Tensor], dict[str, torch.Tensor]]) -> Callable:
        """The objective to call in the loop: through `torch.compile` (for one image size) if asked and
        it has not failed in this process (`CompiledObjective`)."""
        return CompiledObjective(objective) if self.compile_model and "compile" not in FAILED else objective

    def backward(self) -> Backward:
        """The backward pass of one run: a fresh `LossScale` for float16, else plain `loss.backward()`."""
        return LossScale().backward if self.precision and self.precision.loss_scaling else plain_backward

    def without_compile(self) -> Runtime:
        """The same runtime, eager (for a pyramid's short, smaller scales)."""
        return replace(self, compile_model=False)
