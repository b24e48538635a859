"""Benchmark nstlib against a naive implementation and against the compute floor; print a Markdown table.

    python bench/bench.py                   # 256, 512, 1024 px (and 2048 on CUDA), 20 timed steps
    python bench/bench.py --quick           # 64 and 128 px, 3 steps (1 warm-up on a CPU): proves the script works
    python bench/bench.py --device cpu --sizes 256 512 --steps 10 --threads 2

For every size and optimizer (L-BFGS, Adam) it times, in one process, with the same layers and
the same seeded random VGG19 weights:

- fast:   `stylize(runtime=Runtime.create(device, mixed_precision=True))` (channels_last, bf16/fp16
  autocast on CUDA, fp32 losses, on CUDA each step captured in a CUDA graph with fused Adam or the sync-free L-BFGS);
- plain:  `stylize(runtime=Runtime.create(device, mixed_precision=False))`, the float32 path that the
  notebooks explain;
- naive:  the PyTorch tutorial's design, written out below: a copy of VGG19 with loss modules
  inserted after the chosen layers (cut after the last one, as the tutorial does), and a `.item()`
  on the losses after every step;
- compact reference: the ceiling to beat, the shortest fast implementation we know, written out
  below: on CUDA bf16 channels_last VGG, fp32 Grams and losses, the loss through `torch.compile`,
  the whole step in a CUDA graph, fused Adam (or `nstlib.core.lbfgs.SyncFreeLBFGS`); eager fp32 on a CPU.
Every nstlib figure is also printed as a ratio against naive and against the reference of the same
run (below 1: faster). A cold-start row times a fresh process: `import nstlib` and the first
`stylize` result, wall time, as a user's first call meets it.

One iteration = one objective evaluation and its gradient (L-BFGS without line search makes one
per step). ms/iter is timed between the end of the warm-up steps and the last step, with the
device synchronised at both ends. On CUDA the warm-up must hold the `graphs.WARMUP` eager steps
and step `WARMUP` + 1, which captures the graph and replays it the first time, or the one-off
capture is timed as if it were a step: a shorter `--warmup` is refused there, and the default,
`WARMUP` + 2, leaves one replay of margin. FLOPs are counted from the truncated network
(convolutions and Gram matrices, forward + input gradient = 2 x forward, 2 FLOP per multiply-add),
so TFLOP/s is the useful work per second and "% of peak" compares it to the device's dense
bf16/fp16 peak.
Peak memory: CUDA max allocated, CPU peak resident set of the process (VmHWM, reset per run).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import nstlib
from nstlib.core.errors import MemoryLimitError
from nstlib.core.features import VGGFeatures, layer_names, random_weights
from nstlib.core.lbfgs import SyncFreeLBFGS
from nstlib.core.objective import resize
from nstlib.core.settings import (
    DEFAULT_CONTENT_LAYERS,
    DEFAULT_CONTENT_WEIGHT,
    DEFAULT_STYLE_LAYERS,
    DEFAULT_STYLE_WEIGHT,
    DEFAULT_TV_WEIGHT,
)
from nstlib.engine.graphs import WARMUP
from nstlib.engine.memory import is_out_of_memory, release_memory
from nstlib.engine.runtime import autocast_dtype, pick_device
from nstlib.io.data import sample

LAYERS = [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS]
#: Dense bf16/fp16 tensor-core peaks in TFLOP/s (vendor data sheets), matched against the device name.
GPU_PEAK_TFLOPS = {"H100 PCIe": 756, "H100": 989, "H200": 989, "A100": 312, "L4": 121, "A10": 125, "T4": 65,
                   "V100": 125}


# ---------------------------------------------------------------- FLOPs of the network actually used


def iteration_flops(net: VGGFeatures, size: int) -> tuple[float, float]:
    """(conv FLOPs, Gram FLOPs) of one iteration on a (1,3,size,size) image: forward + input gradient."""
    channels, h, w = 3, size, size
    conv_macs = gram_macs = 0
    for name, module in zip(layer_names(), net.net):
        if isinstance(module, nn.Conv2d):
            (kh, kw), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding
            h, w = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
            conv_macs += module.out_channels * channels * kh * kw * h * w
            channels = module.out_channels
        elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
            h, w = -(-h // 2), -(-w // 2)  # nstlib's pooling rounds up
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


def naive_model(net: VGGFeatures, content: torch.Tensor, style: torch.Tensor):
    """The tutorial's model: VGG layers with loss modules inserted, cut after the last loss."""
    model = nn.Sequential(Normalization(net.mean, net.std))
    content_losses, style_losses = [], []
    for name, layer in zip(layer_names(), net.net):
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


# ---------------------------------------------------------------- the compact reference (the ceiling to beat)


def compact_runner(net, content, style, device: torch.device, optimizer: str):
    """Minimal fast style transfer with nstlib's objective (default weights, TV included)."""
    return lambda steps, on_step: run_compact(net, content, style, device, optimizer, steps, on_step)


def run_compact(net, content, style, device: torch.device, optimizer: str, steps: int,
                on_step: Callable[[int], None]) -> None:
    cuda = device.type == "cuda"
    dtype = autocast_dtype(device) if cuda else torch.float32
    vgg = copy.deepcopy(net.net).to(dtype=dtype, memory_format=torch.channels_last)
    wanted = {i: name for i, name in enumerate(layer_names()[: len(vgg)]) if name in LAYERS}

    def features(image: torch.Tensor) -> dict[str, torch.Tensor]:
        x = ((image - net.mean) / net.std).to(dtype).contiguous(memory_format=torch.channels_last)
        out = {}
        for i, module in enumerate(vgg):
            x = module(x)
            if i in wanted:
                out[wanted[i]] = x.float()
        return out

    def gram(f: torch.Tensor) -> torch.Tensor:
        flat = f.flatten(2)
        return flat @ flat.transpose(1, 2) / flat.shape[-1]

    def tv(image: torch.Tensor) -> torch.Tensor:
        return (image[..., 1:] - image[..., :-1]).pow(2).mean() + (image[..., 1:, :] - image[..., :-1, :]).pow(2).mean()

    with torch.no_grad():
        content_target = {k: v for k, v in features(content).items() if k in DEFAULT_CONTENT_LAYERS}
        style_target = {k: gram(v) for k, v in features(style).items() if k in DEFAULT_STYLE_LAYERS}
        content_tv = tv(content)

    def loss(image: torch.Tensor) -> torch.Tensor:
        f = features(image)
        # the relative objective: each term over its target's mean square, TV over the content's
        c = sum(w * (f[k] - content_target[k]).pow(2).mean() / content_target[k].pow(2).mean()
                for k, w in DEFAULT_CONTENT_LAYERS.items())
        s = sum(w * (gram(f[k]) - style_target[k]).pow(2).mean() / style_target[k].pow(2).mean()
                for k, w in DEFAULT_STYLE_LAYERS.items())
        return DEFAULT_CONTENT_WEIGHT * c + DEFAULT_STYLE_WEIGHT * s + DEFAULT_TV_WEIGHT * tv(image) / content_tv

    image = content.clone().requires_grad_(True)
    opt = (SyncFreeLBFGS([image], bounds=(0.0, 1.0)) if optimizer == "lbfgs" else
           torch.optim.Adam([image], lr=0.02, fused=True, capturable=cuda))
    objective = torch.compile(loss, dynamic=False) if cuda else loss

    def step() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        value = objective(image)
        value.backward()
        opt.step()
        with torch.no_grad():
            image.clamp_(0, 1)
        return value.detach()

    if not cuda:
        for i in range(1, steps + 1):
            step()
            on_step(i)
        return
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    warm = min(WARMUP, steps)  # as nstlib's own graphs: step WARMUP + 1 is the first replay
    for i in range(1, warm + 1):  # warm-up (and compile) on a side stream, as torch's CUDA-graph docs do
        with torch.cuda.stream(side):
            step()
        on_step(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    for i in range(warm + 1, steps + 1):
        graph.replay()
        on_step(i)


# ---------------------------------------------------------------- cold start: a fresh process


COLD_START = """
import time, nstlib, sys
result = nstlib.stylize(nstlib.sample_path("astronaut"), nstlib.sample_path("stained_glass"), size={size},
                        steps={steps}, network="random", runtime="{device}", progress=False)
print(result.final["total"])
"""


def cold_start(device: torch.device, size: int, steps: int) -> float:
    """Seconds from starting a fresh Python to the first stylize result (torch import included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", COLD_START.format(size=size, steps=steps, device=device)], check=True,
                   capture_output=True)
    return time.perf_counter() - start


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


def nstlib_runner(net, content, style, device, optimizer: str, mixed_precision: bool):
    def run(total: int, on_step: Callable[[int], None]) -> None:
        runtime = nstlib.Runtime.create(device, mixed_precision=mixed_precision)
        nstlib.stylize(content, style, steps=total, optimizer=optimizer, network=net, runtime=runtime,
                       coarse_to_fine=False, progress=False, callback=lambda s: on_step(s.step))

    return run


def grid_runner(net, content, style, device, n: int):
    """One batched `stylize_grid` run of n images (n content weights), Adam on the default path."""
    def run(total: int, on_step: Callable[[int], None]) -> None:
        nstlib.stylize_grid(content, style, content_weights=[1.0 + k / n for k in range(n)], steps=total,
                            network=net, runtime=device, coarse_to_fine=False, progress=False,
                            callback=lambda s: on_step(s.step))

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
    if device.type == "cuda":  # each new size is warmed up and captured once per process: not part of the time
        nstlib.stylize(content, style, steps=WARMUP + 1, network=net, runtime=device, progress=False,
                       coarse_to_fine=coarse_to_fine)
    start = time.perf_counter()
    seen: dict = {"total": None, "seconds": None, "steps": 0}

    def record(step) -> bool:
        seen["steps"] += 1
        if tuple(step.image.shape[-2:]) != tuple(content.shape[-2:]):
            return False
        seen["total"], seen["seconds"] = float(step.terms["total"].sum()), time.perf_counter() - start
        return target is not None and seen["total"] <= target

    nstlib.stylize(content, style, steps=steps, network=net, runtime=device, progress=False, callback=record,
                   coarse_to_fine=coarse_to_fine)
    seen["reached"] = target is None or seen["total"] <= target
    return seen


# ---------------------------------------------------------------- the table


def fmt(value: float | None, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, torch.device]:
    """The options and the device, with the defaults that depend on them filled in.

    On CUDA the timed window must begin after a graph's capture and first replay (step `WARMUP` + 1
    of nstlib's graphs and of the compact reference), so a `--warmup` of `WARMUP` or less is refused
    there; on a CPU there are no graphs and `--quick` keeps its single warm-up step."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", help="image sides in px (default 256 512 1024, +2048 on CUDA)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per measurement (after --warmup)")
    parser.add_argument("--warmup", type=int, help=f"untimed steps first (default {WARMUP + 2}: {WARMUP} eager steps, "
                        "the step that captures the CUDA graph, one replay; 1 with --quick off CUDA)")
    parser.add_argument("--optimizers", nargs="+", default=["lbfgs", "adam"], choices=["lbfgs", "adam"])
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (CPU)")
    parser.add_argument("--target-size", type=int, default=512, help="size of the time-to-objective row")
    parser.add_argument("--target-steps", type=int, default=50, help="single-scale steps that define the target")
    parser.add_argument("--peak-tflops", type=float, help="override the device's peak TFLOP/s")
    parser.add_argument("--grid", type=int, default=8, help="images in the batched stylize_grid row")
    parser.add_argument("--grid-size", type=int, help="image side of the grid row (default 512 on CUDA; none on a CPU)")
    parser.add_argument("--quick", action="store_true", help="64 and 128 px, 3 steps: a smoke test")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    graphs_timed = device.type == "cuda"
    if args.warmup is None:
        args.warmup = 1 if args.quick and not graphs_timed else WARMUP + 2
    elif graphs_timed and args.warmup <= WARMUP:
        parser.error(f"--warmup {args.warmup} would time the CUDA graph capture: on CUDA give at least {WARMUP + 1} "
                     f"({WARMUP} eager steps, then the step that captures the graph; default {WARMUP + 2})")
    if args.quick:
        args.sizes, args.steps = args.sizes or [64, 128], 3
        args.target_size, args.target_steps = min(args.sizes), 5
        args.grid_size = args.grid_size or min(args.sizes)
    return args, device


def main(argv: list[str] | None = None) -> None:
    args, device = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or ([256, 512, 1024, 2048] if device.type == "cuda" else [256, 512, 1024])
    peak, peak_source = (args.peak_tflops, "given") if args.peak_tflops else peak_tflops(device)

    net = VGGFeatures(LAYERS, random_weights()).to(device)  # one network, shared by all implementations
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

    print("\n| size | optimizer | implementation | ms / iter | × naive | × reference | TFLOP/s | % of peak | "
          "peak memory (MiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for size in sizes:
        content, style = images(size)
        flops = sum(iteration_flops(net, size))
        for optimizer in args.optimizers:
            rows = [("compact reference", None), ("naive (tutorial)", None), ("fast", True), ("plain fp32", False)]
            ms: dict[str, float | None] = {}
            for label, fast in rows:
                if label.startswith("compact"):
                    torch._dynamo.reset()  # compile afresh for this size, not a graph generalised over sizes
                if label.startswith("naive"):
                    run = naive_runner(net, content, style, optimizer)
                elif label.startswith("compact"):
                    run = compact_runner(net, content, style, device, optimizer)
                else:
                    run = nstlib_runner(net, content, style, device, optimizer, fast)
                r = timed(device, args.warmup, args.steps, run)
                ms[label] = r["ms"]
                tflops = flops / (r["ms"] / 1000) / 1e12 if r["ms"] else None
                share = 100 * tflops / peak if tflops and peak else None
                ratios = [fmt(r["ms"] / ms[ref] if r["ms"] and ms[ref] else None, ".2f")
                          for ref in ("naive (tutorial)", "compact reference")] if fast is not None else ["", ""]
                shown = fmt(r["ms"], ".1f") if r["ms"] else r.get("note", "–")
                print(f"| {size}² | {optimizer} | {label} | {shown} | {' | '.join(ratios)} | {fmt(tflops, '.3g')} | "
                      f"{fmt(share, '.2g')} | {fmt(r['mem'], '.0f')} |", flush=True)

    grid_size = args.grid_size or (512 if device.type == "cuda" else None)
    if grid_size:
        content, style = images(grid_size)
        r = timed(device, args.warmup, args.steps, grid_runner(net, content, style, device, args.grid))
        per_image = fmt(r["ms"] / args.grid, ".2f") if r["ms"] else r.get("note", "–")
        print(f"\nBatched grid ({args.grid} × {grid_size}², one `stylize_grid` run, Adam, default path): "
              f"{per_image} ms per image per iteration")

    cold_size, cold_steps = (64, 3) if args.quick else (512, 300 if device.type == "cuda" else 10)
    print(f"\nCold start (a fresh process: Python, import nstlib, the first stylize result of {cold_size}² × "
          f"{cold_steps} steps on {device.type}, default path): {cold_start(device, cold_size, cold_steps):.1f} s wall")

    content, style = images(args.target_size)
    print_time_to_target(net, content, style, device, args.target_steps)


def print_time_to_target(net, content, style, device: torch.device, steps: int) -> None:
    """The time-to-objective table: single-scale L-BFGS for `steps` sets the target, the pyramid
    (the device's plan, a budget of 2 x steps) chases it."""
    single = time_to_target(net, content, style, device, steps, coarse_to_fine=False)
    pyramid = time_to_target(net, content, style, device, 2 * steps, coarse_to_fine=True, target=single["total"])
    size = max(content.shape[-2:])
    print(f"\nTime to objective ≤ {single['total']:.4g} (what single-scale L-BFGS, device default path, reaches in "
          f"{steps} steps) at {size}²; coarse-to-fine gets a budget of {2 * steps} steps over its √2 pyramid:\n")
    print("| method | seconds | steps (all scales) | reached |\n|---|---|---|---|")
    for name, run in (("single-scale", single), ("coarse-to-fine", pyramid)):
        reached = "yes" if run["reached"] else f"no (ended at {run['total']:.4g})"
        print(f"| {name} | {run['seconds']:.2f} | {run['steps']} | {reached} |", flush=True)


if __name__ == "__main__":
    main()
