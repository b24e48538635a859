"""Test-session defaults: notebooks run in FAST mode, with no network, on the best weights installed
(the packaged pretrained VGG16 of the `offline` extra; random VGG19 weights if it is missing).

The suite runs in pytest-xdist workers, one per core (pyproject.toml): each worker, and the kernels and
subprocesses it starts, computes on one thread, so that the workers share the cores instead of fighting over them.
"""

import os

os.environ.setdefault("NSTLIB_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch is imported: it reads this once
    os.environ.setdefault("OMP_NUM_THREADS", "1")
