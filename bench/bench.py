"""Benchmark nstlib against a naive implementation and against the compute floor; print a Markdown table.

    python bench/bench.py                   # 256, 512, 1024 px (and 2048 on CUDA), 20 timed steps
    python bench/bench.py --quick           # 64 and 128 px, 3 steps: proves the script works
    python bench/bench.py --device cpu --sizes 256 512 --steps 10 --threads 2

For every size and optimizer (L-BFGS, Adam) it times, in one process, with the same layers and
the same seeded random VGG19 weights:

- fast:   `nstlib.stylize(mixed_precision=True)` (channels_last, bf16/fp16 autocast on CUDA, fp32 losses);
- fast + compile (Adam; CUDA, or with --compile): the same through `torch.compile`;
- plain:  `nstlib.stylize(mixed_precision=False)`, the float32 path that the notebooks explain;
- naive:  the PyTorch tutorial's design, written out below: a copy of VGG19 with loss modules
  inserted after the chosen layers (cut after the last one, as the tutorial does), and a `.item()`
  on the losses after every step.

One iteration = one objective evaluation and its gradient (L-BFGS without line search makes one
per step). ms/iter is timed between the end of the warm-up steps and the last step, with the
device synchronised at both ends. FLOPs are counted from the truncated network (convolutions and
Gram matrices, forward + input gradient = 2 x forward, 2 FLOP per multiply-add), so TFLOP/s is
the useful work per second and "% of peak" compares it to the device's dense bf16/fp16 peak.
Peak memory: CUDA max allocated, CPU peak resident set of the process (VmHWM, reset per run).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nstlib
from nstlib.data import sample
from nstlib.errors import MemoryLimitError
from nstlib.features import LAYER_NAMES, VGG19Features
from nstlib.images import resize
from nstlib.memory import is_out_of_memory, release_memory
from nstlib.runtime import pick_device
from nstlib.settings import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS

LAYERS = [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS]
#: Dense bf16/fp16 tensor-core peaks in TFLOP/s (vendor data sheets), matched against the device name.
GPU_PEAK_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "A100": 312, "L4": 121, "A10": 125, "T4": 65,
                   "V100": 125}


# ---------------------------------------------------------------- FLOPs of the network actually used


def iteration_flops(net: VGG19Features, size: int) -> tuple[float, float]:
    """(conv FLOPs, Gram FLOPs) of one iteration on a (1,3,size,size) image: forward + input gradient."""
    channels, h, w = 3, size, size
    conv_macs = gram_macs = 0
    for name, module in zip(LAYER_NAMES, net.net):
        if isinstance(module, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            conv_macs += module.out_channels * channels * kh * kw * h * w
            channels = module.out_channels
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            h, w = h // 2, w // 2
        if name in DEFAULT_STYLE_LAYERS:
            gram_macs += channels * channels * h * w
    # 2 FLOP per multiply-add; the input gradient costs about as much as the forward pass.
    return 4.0 * conv_macs, 4.0 * gram_macs


# ---------------------------------------------------------------- the naive tutorial-style reference


class ContentLoss(nn.Module):
    """Tutorial style: a pass-through layer that remembers its loss."""

    def __init__(self, target: torch.Tensor) -> None:
        super().__init__()
        self.target = target.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(x, self.target)
        return x


def tutorial_gram(x: torch.Tensor) -> torch.Tensor:
    a, b, c, d = x.size()
    f = x.view(a * b, c * d)
    return torch.mm(f, f.t()).div(a * b * c * d)


class StyleLoss(nn.Module):
    def __init__(self, target_feature: torch.Tensor) -> None:
        super().__init__()
        self.target = tutorial_gram(target_feature).detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = F.mse_loss(tutorial_gram(x), self.target)
        return x


class Normalization(nn.Module):
    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        return (img - self.mean) / self.std


def naive_model(net: VGG19Features, content: torch.Tensor, style: torch.Tensor):
    """The tutorial's model: VGG layers with loss modules inserted, cut after the last loss."""
    model = nn.Sequential(Normalization(net.mean, net.std))
    content_losses, style_losses = [], []
    for name, layer in zip(LAYER_NAMES, net.net):
        model.add_module(name, nn.ReLU(inplace=False) if isinstance(layer, nn.ReLU) else layer)
        if name in DEFAULT_CONTENT_LAYERS:
            loss = ContentLoss(model(content))
            model.add_module(f"content_loss_{name}", loss)
            content_losses.append(loss)
        if name in DEFAULT_STYLE_LAYERS:
            loss = StyleLoss(model(style))
            model.add_module(f"style_loss_{name}", loss)
            style_losses.append(loss)
    return model, content_losses, style_losses


def naive_runner(net, content, style, optimizer: str) -> Callable[[int, Callable[[int], None]], None]:
    """The tutorial's loop. Its Gram/(B*C*H*W) with style weight 1e6 equals nstlib's objective (minus TV)."""
    return lambda steps, on_step: run_naive(net, content, style, optimizer, steps, on_step)


def run_naive(net, content, style, optimizer: str, steps: int, on_step: Callable[[int], None]) -> None:
    model, content_losses, style_losses = naive_model(net, content, style)
    model.eval().requires_grad_(False)
    input_img = content.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([input_img], max_iter=1) if optimizer == "lbfgs" else torch.optim.Adam([input_img], 0.02)
    history = []

    def closure() -> torch.Tensor:
        with torch.no_grad():
            input_img.clamp_(0, 1)
        opt.zero_grad()
        model(input_img)
        style_score = 1e6 * sum(sl.loss for sl in style_losses)
        content_score = 1.0 * sum(cl.loss for cl in content_losses)
        loss = style_score + content_score
        loss.backward()
        history.append((style_score.item(), content_score.item()))  # a host sync every step
        return loss

    for step in range(1, steps + 1):
        opt.step(closure)
        on_step(step)


# ---------------------------------------------------------------- timing and memory


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def peak_memory(device: torch.device, out: dict) -> Iterator[None]:
    """Record the run's peak memory in out["mem"] (MiB): CUDA max allocated, else peak RSS."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    else:
        with contextlib.suppress(OSError):
            Path("/proc/self/clear_refs").write_text("5")  # Linux: reset the peak RSS (VmHWM)
    yield
    if device.type == "cuda":
        out["mem"] = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        status = Path("/proc/self/status")
        hwm = [line for line in status.read_text().splitlines() if line.startswith("VmHWM")] if status.exists() else []
        if hwm:
            out["mem"] = int(hwm[0].split()[1]) / 1024
        else:
            import resource

            out["mem"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(device: torch.device, warmup: int, steps: int, run: Callable[[int, Callable[[int], None]], None]) -> dict:
    """Run `run(total_steps, on_step)`; return ms per step after the warm-up and the peak memory."""
    marks: dict[int, float] = {}

    def on_step(step: int) -> None:
        if step in (warmup, warmup + steps):
            sync(device)
            marks[step] = time.perf_counter()

    out: dict = {}
    try:
        with peak_memory(device, out):
            run(warmup + steps, on_step)
    except (MemoryLimitError, RuntimeError) as e:  # nstlib's own error, or the naive reference's torch OOM
        if isinstance(e, RuntimeError) and not is_out_of_memory(e):
            raise
        release_memory(e, device)  # a torch OOM from the naive reference still pins its graph
        return {"ms": None, "mem": None, "note": "out of memory"}
    out["ms"] = (marks[warmup + steps] - marks[warmup]) * 1000 / steps
    return out


def nstlib_runner(net, content, style, device, optimizer: str, mixed_precision: bool, compile_model: bool):
    def run(total: int, on_step: Callable[[int], None]) -> None:
        nstlib.stylize(content, style, steps=total, optimizer=optimizer, extractor=net, device=device,
                       mixed_precision=mixed_precision, compile_model=compile_model, coarse_to_fine=False,
                       progress=False, callback=lambda s: on_step(s.step))

    return run


# ---------------------------------------------------------------- the device


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {torch.get_num_threads()} threads"


def peak_tflops(device: torch.device) -> tuple[float | None, str]:
    """The device's dense peak (TFLOP/s) and where the number comes from."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        for key, tflops in GPU_PEAK_TFLOPS.items():
            if key in name:
                return float(tflops), f"{key} dense bf16/fp16 data-sheet peak"
        return None, "unknown GPU: pass --peak-tflops"
    if device.type != "cpu":
        return None, "unknown device: pass --peak-tflops"
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo: pass --peak-tflops"
    mhz = max(float(line.split(":")[1]) for line in info.splitlines() if line.startswith("cpu MHz"))
    per_cycle = 64 if " avx512f" in info else 32 if " fma" in info else 8  # fp32 FLOP per cycle per core
    cores = min(torch.get_num_threads(), os.cpu_count() or 1)
    source = f"estimate: {cores} cores x {mhz:.0f} MHz x {per_cycle} fp32 FLOP/cycle"
    return cores * mhz * 1e6 * per_cycle / 1e12, source


# ---------------------------------------------------------------- time to a fixed objective


def time_to_target(net, content, style, device, steps: int, *, coarse_to_fine: bool,
                   target: float | None = None) -> dict:
    """L-BFGS on the device's default path, stopped when the full-size objective reaches `target`.

    Counts every step (at every scale of a pyramid) and the wall time; the objective is read only
    at the target size. With target=None it runs all `steps` and its last full-size objective
    becomes the target for the other method.
    """
    if device.type == "cuda":  # cudnn.benchmark tunes each new size once: not part of the time (the pyramid has 4)
        nstlib.stylize(content, style, steps=4, extractor=net, device=device, progress=False,
                       coarse_to_fine=coarse_to_fine)
    start = time.perf_counter()
    seen: dict = {"total": None, "seconds": None, "steps": 0}

    def record(step) -> bool:
        seen["steps"] += 1
        if tuple(step.image.shape[-2:]) != tuple(content.shape[-2:]):
            return False
        seen["total"], seen["seconds"] = float(step.terms["total"].sum()), time.perf_counter() - start
        return target is not None and seen["total"] <= target

    nstlib.stylize(content, style, steps=steps, extractor=net, device=device, progress=False, callback=record,
                   coarse_to_fine=coarse_to_fine)
    seen["reached"] = target is None or seen["total"] <= target
    return seen


# ---------------------------------------------------------------- the table


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides in px (default 256 512 1024, +2048 on CUDA)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after --warmup)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (cudnn autotune, compile)")
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"], choices=["lbfgs", "adam"])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                        help="also time Adam through torch.compile (default: on CUDA only)")
    parser.add_argument("--target-size", type=int, default=512, help="size of the time-to-objective row")
    parser.add_argument("--target-steps", type=int, default=50, help="single-scale steps that define the target")
    parser.add_argument("--peak-tflops", type=float, help="override the device's peak TFLOP/s")
    parser.add_argument("--quick", action="store_true", help="64 and 128 px, 3 steps, 1 warm-up: a smoke test")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    if args.quick:
        args.sizes, args.steps, args.warmup = args.sizes or [64, 128], 3, 1
        args.target_size, args.target_steps = min(args.sizes), 5
    sizes = args.sizes or ([256, 512, 1024, 2048] if device.type == "cuda" else [256, 512, 1024])
    compile_adam = device.type == "cuda" if args.compile is None else args.compile
    peak, peak_source = (args.peak_tflops, "given") if args.peak_tflops else peak_tflops(device)

    net = VGG19Features(LAYERS, weights="random").to(device)  # one network, shared by all implementations
    content_full, style_full = sample("astronaut"), sample("stained_glass")

    def images(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (resize(content_full, (size, size)).to(device), resize(style_full, (size, size)).to(device))

    print(f"# nstlib benchmark\n\n{datetime.date.today()} · {device_name(device)} · torch {torch.__version__} · "
          f"nstlib {nstlib.__version__} · {args.steps} timed steps after {args.warmup} warm-up · random weights\n")
    print(f"Layers: content {list(DEFAULT_CONTENT_LAYERS)}, style {list(DEFAULT_STYLE_LAYERS)}; network cut after "
          f"{net.layers[-1]}. Device peak: {fmt(peak, '.3g')} TFLOP/s ({peak_source}).\n")
    print("| size | GFLOP / iter (conv + Gram) |\n|---|---|")
    for size in sizes:
        conv, gram = iteration_flops(net, size)
        print(f"| {size}² | {(conv + gram) / 1e9:.1f} ({conv / 1e9:.1f} + {gram / 1e9:.1f}) |")

    print("\n| size | optimizer | implementation | ms / iter | TFLOP/s | % of peak | peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for size in sizes:
        content, style = images(size)
        flops = sum(iteration_flops(net, size))
        for optimizer in args.optimizers:
            rows = [("fast", True, False)]
            if optimizer == "adam" and compile_adam:
                rows.append(("fast + compile", True, True))
            rows += [("plain fp32", False, False), ("naive (tutorial)", False, False)]
            for label, fast, compile in rows:
                torch.backends.cudnn.benchmark = False  # mixed precision turns it on; do not let it leak
                if compile:
                    torch._dynamo.reset()  # compile afresh for this size, not a graph generalised over sizes
                if label.startswith("naive"):
                    run = naive_runner(net, content, style, optimizer)
                else:
                    run = nstlib_runner(net, content, style, device, optimizer, fast, compile)
                warmup = args.warmup + (2 if compile else 0)
                r = timed(device, warmup, args.steps, run)
                tflops = flops / (r["ms"] / 1000) / 1e12 if r["ms"] else None
                share = 100 * tflops / peak if tflops and peak else None
                ms = fmt(r["ms"], ".1f") if r["ms"] else r.get("note", "–")
                print(f"| {size}² | {optimizer} | {label} | {ms} | {fmt(tflops, '.3g')} | {fmt(share, '.2g')} | "
                      f"{fmt(r['mem'], '.0f')} |", flush=True)

    content, style = images(args.target_size)
    single = time_to_target(net, content, style, device, args.target_steps, coarse_to_fine=False)
    pyramid = time_to_target(net, content, style, device, 2 * args.target_steps, coarse_to_fine=True,
                             target=single["total"])
    print(f"\nTime to objective ≤ {single['total']:.4g} (what single-scale L-BFGS, device default path, reaches in "
          f"{args.target_steps} steps) at {args.target_size}²; coarse-to-fine gets a budget of "
          f"{2 * args.target_steps} steps over its √2 pyramid:\n")
    print("| method | seconds | steps (all scales) | reached |\n|---|---|---|---|")
    for name, run in (("single-scale", single), ("coarse-to-fine", pyramid)):
        reached = "yes" if run["reached"] else f"no (ended at {run['total']:.4g})"
        print(f"| {name} | {run['seconds']:.2f} | {run['steps']} | {reached} |")

if __name__ == "__main__":
    main()
