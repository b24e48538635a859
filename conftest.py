"""Test-session defaults: notebooks run in FAST mode, with no network, on the best weights installed
(the packaged pretrained VGG16 of the `offline` extra; random VGG19 weights if it is missing)."""

import os

os.environ.setdefault("NSTLIB_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
