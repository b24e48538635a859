"""What several test files share besides fixtures: the bundled photo and style as paths, and the flags and
keywords of a small, quick run on random weights on the CPU (the command line's and the API's), the browser
the browser tests drive, and a test server's way of dripping."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

from nstlib.io.data import sample_path

CONTENT, STYLE = str(sample_path("astronaut")), str(sample_path("stained_glass"))
FAST = ["--size", "64", "--steps", "3", "--weights", "random", "--quiet"]
RUN: dict[str, Any] = {"size": 64, "runtime": "cpu", "progress": False}  # with network="random" or a built one

CHROMIUM = Path("/usr/bin/chromium")  # Debian's: playwright cannot download its own browsers here
# The network is closed: without these flags Chromium stalls on updates, sync and QUIC probes.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def drip(stream: io.BufferedIOBase, data: bytes, every: float = 0.05, for_seconds: float = 4.0) -> None:
    """A server that drips: write `data` a byte `every` seconds for `for_seconds`, then the rest. Each read is answered
    in time, and the whole is complete only after `for_seconds`."""
    start = time.monotonic()
    for i in range(len(data)):
        if time.monotonic() - start > for_seconds:
            stream.write(data[i:])
            return
        stream.write(data[i:i + 1])
        stream.flush()
        time.sleep(every)
