"""Test-session defaults: notebooks run in FAST mode on random VGG19 weights, with no network."""

import os

os.environ.setdefault("NSTLIB_FAST", "1")
os.environ.setdefault("NSTLIB_WEIGHTS", "random")
os.environ.setdefault("MPLBACKEND", "Agg")
