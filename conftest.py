"""Test-session defaults: notebooks run in FAST mode, with no network, on the best weights installed
(the packaged pretrained VGG16 of the `offline` extra; random VGG19 weights if it is missing).

The suite runs in pytest-xdist workers, one per core (pyproject.toml): each worker, and the kernels and
subprocesses it starts, computes on one thread, so that the workers share the cores instead of fighting over them.
What a notebook offers for download (`nstlib.course.offer_download`) goes to a temporary folder, removed at the end,
instead of next to the notebook.
"""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("NSTLIB_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if "NSTLIB_OUTPUT_DIR" not in os.environ:
    os.environ["NSTLIB_OUTPUT_DIR"] = tempfile.mkdtemp(prefix="nstlib-output-")
    atexit.register(shutil.rmtree, os.environ["NSTLIB_OUTPUT_DIR"], ignore_errors=True)
if os.environ.get("PYTEST_XDIST_WORKER"):  # before torch is imported: it reads this once
    os.environ.setdefault("OMP_NUM_THREADS", "1")
