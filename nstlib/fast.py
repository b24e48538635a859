"""The fast path: everything that makes one style-transfer iteration quick, in one place.

`stylize(..., fast=None)` uses it on CUDA and not elsewhere; `fast=False` gives the plain float32
path (for teaching comparisons), `fast=True` asks for it on any device. It does four things:

1. channels_last (NHWC) memory for the network's weights and its input, which is what tensor-core
   convolutions want; on CUDA also `torch.backends.cudnn.benchmark`, which times the convolution
   algorithms once for the (fixed) image size and keeps the fastest.
2. runs VGG19 under autocast: bfloat16 where the GPU supports it, else float16 with a dynamic
   loss scale (`LossScale`), because small float16 gradients underflow to zero. The weights are
   stored once in that dtype, so autocast does not re-cast them every iteration.
3. the Gram matrices and the losses stay in float32: `losses.Objective` upcasts the features and
   switches autocast off. (A float16 Gram matrix sums H*W products of activations and overflows
   65504 at ordinary image sizes: inf, then NaN.)
4. losses are copied to the host every `LOG_EVERY` steps instead of every step (each copy waits
   for the GPU to finish). This removes every host sync from an Adam step; torch's L-BFGS still
   reads a few scalars on the host inside each step (its convergence tests).

On a CPU it keeps only channels_last (float32): bfloat16 is used only where the CPU has native
bfloat16 support, since emulated bfloat16 is slower than float32. `benchmarks.md` has the numbers.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

#: Steps between host copies of the losses on the fast path.
LOG_EVERY = 10


@dataclass(frozen=True)
class FastPath:
    """How the fast path runs the network on one device.

    Attributes:
        dtype: autocast dtype (torch.bfloat16 or torch.float16), or None to stay in float32.
        channels_last: store weights and input as NHWC.
        benchmark: set `torch.backends.cudnn.benchmark` (CUDA only).
    """

    dtype: torch.dtype | None = None
    channels_last: bool = True
    benchmark: bool = False

    @property
    def loss_scaling(self) -> bool:
        """float16 needs a loss scale; bfloat16 has float32's exponent range and does not."""
        return self.dtype == torch.float16


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


def fast_path(fast: bool | None, device: torch.device) -> FastPath | None:
    """The fast-path settings for `device`, or None for the plain float32 path.

    fast=None means: on for CUDA, off elsewhere.
    """
    if fast is None:
        fast = device.type == "cuda"
    if not fast:
        return None
    return FastPath(dtype=autocast_dtype(device), channels_last=device.type in ("cuda", "cpu"),
                    benchmark=device.type == "cuda")


class FastFeatures(nn.Module):
    """A copy of a `VGG19Features` that runs under the fast path; same outputs, lower precision.

    The copy holds the weights in `path.dtype` and channels_last memory, so the extractor passed
    in is left as it was (it can still serve the plain path). Call it like the extractor: (B,3,H,W)
    in [0,1] -> {layer: (B,C,h,w)}, the maps in `path.dtype`; `Objective` upcasts them.
    """

    def __init__(self, extractor: nn.Module, path: FastPath) -> None:
        super().__init__()
        self.path = path
        self.layers = extractor.layers
        self.extractor = copy.deepcopy(extractor)
        self.extractor.net.to(dtype=path.dtype or torch.float32,
                              memory_format=torch.channels_last if path.channels_last else torch.preserve_format)
        if path.benchmark:
            torch.backends.cudnn.benchmark = True

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.path.channels_last:
            image = image.contiguous(memory_format=torch.channels_last)
        if self.path.dtype is None:
            return self.extractor(image)
        with torch.autocast(image.device.type, dtype=self.path.dtype):
            return self.extractor(image)


class LossScale:
    """Dynamic loss scaling for float16, like `torch.amp.GradScaler` but without host syncs.

    `backward(loss, image)` back-propagates loss * scale, so that small gradients survive float16,
    then divides `image.grad` by the scale. If the gradient overflowed (inf/NaN) it is set to zero
    and the scale halved: Adam then coasts on its momentum for that step and L-BFGS stays where it
    is. After `growth_interval` finite gradients in a row the scale doubles. The bookkeeping is
    done with tensors on the device, so it never waits for the GPU.
    """

    def __init__(self, init_scale: float = 2.0**16, growth_interval: int = 100) -> None:
        self.scale = torch.tensor(float(init_scale))
        self.good_steps = torch.tensor(0)
        self.growth_interval = growth_interval

    def backward(self, loss: torch.Tensor, image: torch.Tensor) -> None:
        """Set image.grad to d(loss)/d(image) (zero if it overflowed) and update the scale."""
        self.scale = self.scale.to(loss.device)
        self.good_steps = self.good_steps.to(loss.device)
        (loss * self.scale).backward()
        grad = image.grad
        finite = torch.isfinite(grad).all()
        grad.copy_(torch.where(finite, grad / self.scale, torch.zeros_like(grad)))
        self.good_steps = torch.where(finite, self.good_steps + 1, torch.zeros_like(self.good_steps))
        grow = self.good_steps >= self.growth_interval
        self.scale = torch.where(finite, torch.where(grow, self.scale * 2, self.scale), self.scale / 2)
        self.good_steps = torch.where(grow, torch.zeros_like(self.good_steps), self.good_steps)
