"""A GPU that is only claimed: CPU tensors that say they live on cuda:0 (or mps:0), for testing GPU paths on a CPU.

No GPU has run nstlib in CI, and torch's own fake tensors cannot run a backward pass without a real
CUDA context (the autograd engine asks the driver about the device). So this layer keeps the real
CPU computation, and therefore real values, and changes what the tensors *claim*:

- `Claimed` is a CPU tensor whose `.device` is cuda:0 (mps:0 for `fake_gpu("mps")`). Every torch call
  goes through the `FakeGpu` function mode: a tensor made with `device="cuda"` or moved with `.to("cuda")` is
  claimed, results of calls on claimed tensors are claimed, and a call that mixes a claimed tensor
  with a plain CPU tensor of one or more dimensions fails as it fails on a GPU ("Expected all
  tensors to be on the same device"). As on CUDA, 0-dim CPU tensors mix freely, and `copy_`/`to`
  move data across. As on MPS, a claimed float64 tensor fails there (MPS has no float64).
- Autocast for the claimed device runs as CPU autocast with the same dtype, so bf16/fp16 outputs, and with them
  dtype mismatches, show up as they would on the GPU. Every autocast region is logged, and so is every matrix product
  and convolution (`FakeGpu.matmuls`); under autocast each one's dtype is checked against CUDA's rule (the autocast
  dtype), so that the CPU's own autocast lists can never hide a difference. CUDA's float32-output product of half
  inputs (`torch.bmm(..., out_dtype=torch.float32)`) runs as the float32 product.
- Reading a claimed tensor on the host (`item`, `bool`, `float`, `tolist`, `cpu`, `numpy`, `.to("cpu")`), or calling
  an op that waits for the GPU inside (`SYNCING`: `linalg.solve`, `nonzero`, a boolean mask as an index, ...), is
  counted, and inside a captured CUDA graph it raises `HostSync`: a graph cannot hold one.
- `torch.cuda` answers as one GPU of the given compute capability (or `torch.backends.mps` as an
  Apple GPU); CUDA graphs are emulated: the
  capture runs the step once (that step's work, which on a GPU the first replay does), each later
  replay runs it again and copies its outputs into the captured ones, both with host reads refused.
  As on a GPU, one capture runs at a time in a process, and a replay reads the memory the capture saw: the
  addresses of every claimed tensor the step's owner holds (its image, objective, optimiser state, network) are
  recorded at the capture and checked at every replay, so a static input rebound instead of copied into fails
  (`StaleInput`) rather than being read afresh by the re-run Python.

What this cannot show: kernel speed, real memory use, and the numerics of CUDA's own kernels.
"""

from __future__ import annotations

import contextlib
import threading
import types
from collections.abc import Callable, Iterator
from copy import deepcopy
from typing import Any
from unittest import mock

import torch
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

#: The device that `Claimed` tensors claim (set by `fake_gpu`).
CLAIMED = [torch.device("cuda", 0)]


class HostSync(RuntimeError):
    """A captured step read a device value on the host (a CUDA graph cannot hold that)."""


class StaleInput(RuntimeError):
    """A replay would read memory its graph no longer owns: a static input was rebound after the capture."""


class Claimed(torch.Tensor):
    """A CPU tensor that claims to live on the GPU (its data, autograd and kernels stay the CPU's)."""

    __torch_function__ = torch._C._disabled_torch_function_impl  # all calls go through `FakeGpu`

    @property
    def device(self) -> torch.device:  # type: ignore[override]
        return CLAIMED[0]

    @property
    def is_cuda(self) -> bool:  # type: ignore[override]
        return CLAIMED[0].type == "cuda"

    @property
    def is_mps(self) -> bool:  # type: ignore[override]
        return CLAIMED[0].type == "mps"

    @property
    def is_cpu(self) -> bool:  # type: ignore[override]
        return False

    def __deepcopy__(self, memo: dict) -> Claimed:
        """A claimed copy (with a parameter's flags), as `copy.deepcopy` of a module on the GPU gives."""
        if id(self) not in memo:
            copy = self.detach().clone().requires_grad_(self.requires_grad)
            copy.__dict__.update(deepcopy(self.__dict__, memo))
            memo[id(self)] = copy
        return memo[id(self)]


def _claim(value: Any) -> Any:
    """A tensor as a claimed one (the same data and autograd history); anything else as it is."""
    return value.as_subclass(Claimed) if isinstance(value, torch.Tensor) and not isinstance(value, Claimed) else value


def _names_gpu(device: Any) -> bool:
    return isinstance(device, (str, torch.device)) and torch.device(device).type == CLAIMED[0].type


def _names_cpu(device: Any) -> bool:
    return isinstance(device, (str, torch.device)) and torch.device(device).type == "cpu"


HOST_READS = {torch.Tensor.item, torch.Tensor.__bool__, torch.Tensor.__float__, torch.Tensor.__int__,
              torch.Tensor.__index__, torch.Tensor.tolist, torch.Tensor.numpy, torch.Tensor.cpu}
#: Ops that wait for the GPU inside: a result whose size depends on values, or an error check of a solver.
SYNCING = {torch.linalg.solve, torch.linalg.inv, torch.inverse, torch.Tensor.inverse, torch.linalg.cholesky,
           torch.cholesky, torch.Tensor.cholesky, torch.linalg.eigh, torch.linalg.eigvalsh, torch.linalg.svd, torch.svd,
           torch.linalg.lstsq, torch.linalg.pinv, torch.nonzero, torch.Tensor.nonzero, torch.argwhere,
           torch.masked_select, torch.Tensor.masked_select, torch.unique, torch.Tensor.unique, torch.unique_consecutive,
           torch.bincount, torch.Tensor.bincount, torch.repeat_interleave, torch.Tensor.repeat_interleave}
#: Matrix products and convolutions: what CUDA's autocast runs in its low-precision dtype.
MATMULS = {torch.matmul, torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.mm,
           torch.Tensor.mm, torch.bmm, torch.Tensor.bmm, torch.mv, torch.Tensor.mv, torch.addmm, torch.baddbmm,
           torch.nn.functional.linear, torch.conv2d, torch.conv_transpose2d}
#: Calls that take tensors on two devices on a GPU too.
CROSS_DEVICE = {torch.Tensor.copy_, torch.Tensor.to, torch._has_compatible_shallow_copy_type}


def _syncs(func: Callable, args: tuple) -> bool:
    """True for an op that waits for the GPU: one of `SYNCING`, `torch.where(condition)`, or a boolean mask index."""
    if func is torch.Tensor.__getitem__:
        index = args[1] if isinstance(args[1], tuple) else (args[1],)
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
    return func in SYNCING or (func is torch.where and len(args) == 1)


class FakeGpu(TorchFunctionMode):
    """The function mode behind `fake_cuda` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.host_reads = 0
        self._thread = threading.local()  # `captured` is per thread, as a stream's capture is
        self.autocasts: list[dict[str, Any]] = []
        self.matmuls: list[dict[str, Any]] = []  # every product: its name, input and output dtypes, output shape
        self.captures = self.replays = 0
        self.under_way = 0  # captures under way in the process (CUDA graphs share torch's one capture stream)
        self._lock = threading.Lock()

    @property
    def captured(self) -> bool:
        """Inside an (emulated) CUDA graph in this thread: host reads raise."""
        return getattr(self._thread, "captured", False)

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = dict(kwargs or {})
        tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        claimed = any(isinstance(t, Claimed) for t in tensors)
        to_cuda, to_host = _names_gpu(kwargs.get("device")), func in HOST_READS
        if to_cuda:
            kwargs["device"] = "cpu"
        if func in (torch.Tensor.to, torch.Tensor.cuda):
            to_cuda |= func is torch.Tensor.cuda or any(_names_gpu(a) for a in args[1:])
            to_host |= any(_names_cpu(a) for a in args[1:])
            args = (args[0], *("cpu" if _names_gpu(a) else a for a in args[1:]))
            func = torch.Tensor.to if func is torch.Tensor.to else (lambda t, *a, **k: t)
        name = getattr(func, "__name__", str(func))
        if claimed and (to_host or _syncs(func, args)):
            self.host_reads += 1
            if self.captured:
                what = "reads a GPU tensor on the host" if to_host else "waits for the GPU (it syncs inside)"
                raise HostSync(f"{name} {what} inside a captured CUDA graph step")
        if claimed and func not in CROSS_DEVICE:
            for t in tensors:
                if not isinstance(t, Claimed) and t.dim() > 0:
                    raise RuntimeError("Expected all tensors to be on the same device, but found at least two "
                                       f"devices, {CLAIMED[0]} and {t.device}! ({name})")
        out_dtype = kwargs.pop("out_dtype", None) if func in (torch.bmm, torch.mm) else None
        if out_dtype is not None:  # CUDA's product of half inputs with a float32 result; none on the CPU
            args = tuple(a.to(out_dtype) if isinstance(a, torch.Tensor) else a for a in args)
        out = func(*args, **kwargs)
        if func in MATMULS and claimed:
            self._matmul(name, tensors, out)
        if to_host and not (to_cuda and func is torch.Tensor.to):
            return pytree.tree_map(lambda o: o.as_subclass(torch.Tensor) if isinstance(o, Claimed) else o, out)
        if claimed or to_cuda:
            if CLAIMED[0].type == "mps" and any(isinstance(o, torch.Tensor) and o.dtype == torch.float64
                                                 for o in pytree.tree_leaves(out)):
                raise TypeError("Cannot convert a MPS Tensor to float64 dtype as the MPS framework doesn't support "
                                f"float64. Please use float32 instead. ({name})")
            return pytree.tree_map(_claim, out)
        return out

    def _matmul(self, name: str, inputs: list[torch.Tensor], out: torch.Tensor) -> None:
        """Log a product; under autocast, fail unless it has the dtype CUDA's autocast gives it (the autocast dtype,
        unless an input is float64, which CUDA's autocast leaves alone)."""
        self.matmuls.append({"op": name, "inputs": [t.dtype for t in inputs], "dtype": out.dtype,
                             "shape": tuple(out.shape), "autocast": torch.is_autocast_enabled("cpu")})
        if torch.is_autocast_enabled("cpu") and all(t.dtype != torch.float64 for t in inputs):
            expected = torch.get_autocast_dtype("cpu")
            if out.dtype != expected:
                raise AssertionError(f"{name} under autocast gave {out.dtype} on the CPU where CUDA gives {expected}; "
                                     "the fake GPU cannot stand in for this op")

    @contextlib.contextmanager
    def capturing(self) -> Iterator[None]:
        """Host reads raise inside this block (an emulated CUDA graph's capture or replay), in this thread."""
        before, self._thread.captured = self.captured, True
        try:
            yield
        finally:
            self._thread.captured = before


class _Stream:
    """A CUDA stream that does nothing (the CPU runs everything in order)."""

    def __init__(self, mode: FakeGpu | None = None) -> None:
        self.mode = mode

    def is_capturing(self) -> bool:
        return self.mode is not None and self.mode.captured

    def wait_stream(self, other: _Stream) -> None:
        pass

    def synchronize(self) -> None:
        pass


def addresses(owner: Any) -> dict[str, int]:
    """{path: data_ptr} of every claimed tensor `owner` holds: through attributes, dicts (their values, by key if a
    string, else by position), lists, tuples and bound methods, not into tensors, functions, modules or the fake GPU."""
    found: dict[str, int] = {}
    seen: set[int] = set()

    def walk(value: Any, path: str) -> None:
        if id(value) in seen or isinstance(value, (FakeGpu, FakeGraph, type, types.ModuleType, types.FunctionType)):
            return
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            if isinstance(value, Claimed):
                found[path] = value.data_ptr()
            return
        if isinstance(value, dict):
            items = [(f"[{k if isinstance(k, str) else i}]", v) for i, (k, v) in enumerate(value.items())]
        elif isinstance(value, (list, tuple)):
            items = [(f"[{i}]", v) for i, v in enumerate(value)]
        elif hasattr(value, "__self__"):  # a bound method: what it is bound to
            items = [("", value.__self__)]
        else:
            items = [(f".{k}", v) for k, v in getattr(value, "__dict__", {}).items()]
        for key, item in items:
            walk(item, path + key)

    walk(owner, "step")
    return found


class FakeGraph:
    """An emulated `torch.cuda.CUDAGraph`: the step runs again at every replay, with host reads refused, after a check
    that the step's owner still holds every tensor at the address the capture saw."""

    def __init__(self, mode: FakeGpu, step: Callable[[], Any]) -> None:
        self.mode, self.step = mode, step
        self.outputs: Any = None
        self.pending_first = True
        self.addresses = addresses(getattr(step, "__self__", step))

    def replay(self) -> None:
        self.mode.replays += 1
        now = addresses(getattr(self.step, "__self__", self.step))
        moved = [path for path, address in self.addresses.items() if now.get(path) != address]
        if moved:
            raise StaleInput(f"{', '.join(moved[:3])} moved since the capture: the graph would read the old memory "
                             "(copy new values into a static input, never rebind it)")
        if self.pending_first:  # the capture already did this step's work
            self.pending_first = False
            return
        with self.mode.capturing():
            fresh = self.step()
        for mine, new in zip(pytree.tree_leaves(self.outputs), pytree.tree_leaves(fresh), strict=True):
            if isinstance(mine, torch.Tensor):
                mine.copy_(new)


def emulated_capture(mode: FakeGpu) -> Callable[[Callable[[], Any]], tuple[FakeGraph, Any]]:
    """A stand-in for `nstlib.engine.graphs.capture`: run `step` once with host reads refused, keep it for replays.
    A second capture while one is under way fails, as on torch's shared capture stream."""
    def capture(step: Callable[[], Any]) -> tuple[FakeGraph, Any]:
        with mode._lock:
            mode.under_way += 1
            clash = mode.under_way > 1
        try:
            if clash:
                raise RuntimeError("CUDA error: operation not permitted when stream is capturing (another thread is "
                                   "capturing on the shared capture stream)")
            mode.captures += 1
            graph = FakeGraph(mode, step)
            with mode.capturing():
                graph.outputs = step()
            return graph, graph.outputs
        finally:
            with mode._lock:
                mode.under_way -= 1

    return capture


def _autocast(mode: FakeGpu) -> type:
    class Autocast(torch.amp.autocast_mode.autocast):
        """Autocast for the claimed device run as the CPU's, with the same dtype; logged in `mode.autocasts`."""

        def __init__(self, device_type: str, dtype: torch.dtype | None = None, enabled: bool = True,
                     cache_enabled: bool | None = None) -> None:
            mode.autocasts.append({"device_type": device_type, "dtype": dtype, "enabled": enabled,
                                   "cache_enabled": cache_enabled})
            super().__init__("cpu" if device_type == CLAIMED[0].type else device_type,
                             dtype=dtype or torch.bfloat16, enabled=enabled, cache_enabled=cache_enabled)

    return Autocast


@contextlib.contextmanager
def fake_gpu(kind: str = "cuda", capability: tuple[int, int] = (8, 0),
             free_bytes: int = 40 * 2**30) -> Iterator[FakeGpu]:
    """One claimed GPU: CUDA of `capability` ((8, 0): an A100, bf16 + CUDA graphs; (7, 5): a T4, fp16 and
    a loss scale), or `kind="mps"` (an Apple GPU: plain float32)."""
    from nstlib.engine import graphs

    mode = FakeGpu()
    patches = [mock.patch("torch.autocast", _autocast(mode)), mock.patch("torch.accelerator.current_stream",
                                                                         return_value=_Stream(mode))]
    if kind == "mps":
        patches += [mock.patch("torch.backends.mps.is_available", return_value=True),
                    mock.patch("torch.mps.empty_cache")]
    else:
        patches += [
            mock.patch("torch.cuda.is_available", return_value=True),
            mock.patch("torch.cuda.device_count", return_value=1),
            mock.patch("torch.cuda.current_device", return_value=0),
            mock.patch("torch.cuda.get_device_capability", return_value=capability),
            mock.patch("torch.cuda.is_bf16_supported", return_value=capability >= (8, 0)),
            mock.patch("torch.cuda.mem_get_info", return_value=(free_bytes, 2 * free_bytes)),
            mock.patch("torch.cuda.is_current_stream_capturing", lambda: mode.captured),
            mock.patch("torch.cuda.empty_cache"),
            mock.patch("torch.cuda.synchronize"),
            mock.patch("torch.cuda.device", return_value=contextlib.nullcontext()),
            mock.patch("torch.cuda.Stream", _Stream),
            mock.patch("torch.cuda.current_stream", return_value=_Stream(mode)),
            mock.patch("torch.cuda.stream", return_value=contextlib.nullcontext()),
            mock.patch.object(graphs, "capture", emulated_capture(mode)),
        ]
    overwrite = torch.__future__.get_overwrite_module_params_on_conversion()
    torch.__future__.set_overwrite_module_params_on_conversion(True)  # a moved parameter becomes a claimed one
    CLAIMED[0] = torch.device(kind, 0)
    graphs.release_graphs()
    try:
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            with mode:
                yield mode
    finally:
        graphs.release_graphs()
        CLAIMED[0] = torch.device("cuda", 0)
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
