"""What several test files share besides fixtures: the bundled photo and style as paths, and the flags and
keywords of a small, quick run on random weights on the CPU (the command line's and the API's)."""

from __future__ import annotations

from typing import Any

from nstlib.data import sample_path

CONTENT, STYLE = str(sample_path("astronaut")), str(sample_path("stained_glass"))
FAST = ["--size", "64", "--steps", "3", "--weights", "random", "--quiet"]
RUN: dict[str, Any] = {"size": 64, "runtime": "cpu", "progress": False}  # with network="random" or a built one
