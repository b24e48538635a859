"""The explorer's update latency: from a style-weight change to the first frame of the new run.

Builds `StyleExplorer` on the bundled astronaut and stained glass (random weights cost the same time
as ImageNet ones) at each preview size, waits for the first run, then changes the style weight
`--changes` times, waiting for each run, and reads `explorer.latency`. Prints a Markdown table.

    python bench/explorer_latency.py                      # cpu: 64 128 256 px; cuda: 128 256 512 px
    python bench/explorer_latency.py --device cuda --sizes 256
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time

import torch

from nstlib.course.widgets import StyleExplorer
from nstlib.engine.runtime import Runtime, pick_device
from nstlib.io.data import sample

STEPS = 3


def measure(device: torch.device, size: int, changes: int) -> tuple[list[float], float]:
    """Latencies (s) of `changes` style-weight changes at a `size` px preview, and the median seconds
    per step after the first (a run's time from the change to its end, less the latency, over STEPS - 1)."""
    explorer = StyleExplorer(sample("astronaut", size), sample("stained_glass", size), network="random",
                             runtime=device, preview_size=size, steps=STEPS)
    try:
        explorer.wait()
        latencies, per_step = [], []
        for _ in range(changes):
            start = time.perf_counter()
            explorer.style_weight.value *= 2
            explorer.wait()
            latencies.append(explorer.latency)
            per_step.append((time.perf_counter() - start - explorer.latency) / (STEPS - 1))
        return latencies, statistics.median(per_step)
    finally:
        explorer.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--sizes", type=int, nargs="+", help="preview sizes in px")
    parser.add_argument("--changes", type=int, default=5, help="style-weight changes per size")
    args = parser.parse_args(argv)
    device = pick_device(args.device)
    sizes = args.sizes or ([64, 128, 256] if device.type == "cpu" else [128, 256, 512])
    threads = f"{device} ({torch.get_num_threads()} threads)"
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else threads
    print(f"{datetime.date.today()} · {name} · torch {torch.__version__} · L-BFGS, debounce 0.2 s · random weights\n")
    print("| preview | latency median (min–max) | seconds per step |\n|---|---|---|")
    for size in sizes:
        latencies, per_step = measure(device, size, args.changes)
        default = " (the default)" if Runtime.create(device).sizes.preview == size else ""
        spread = f"{min(latencies):.2f}–{max(latencies):.2f}"
        print(f"| {size} px{default} | {statistics.median(latencies):.2f} s ({spread}) | {per_step:.3f} |", flush=True)


if __name__ == "__main__":
    main()
