"""The old home of the mixed-precision ("fast") path; it now lives in `nstlib.runtime`.

`from nstlib.fast import FastFeatures, FastPath, LossScale, fast_path, ...` keeps working, with a
DeprecationWarning naming the new name. (The course's NSTLIB_FAST mode is `course.Course.fast`.)
"""

from __future__ import annotations

import warnings
from typing import Any

from nstlib import runtime

#: old name -> its name in `nstlib.runtime`
_RENAMED = {"FastPath": "Precision", "FastFeatures": "PrecisionFeatures", "fast_path": "precision_for",
            "LossScale": "LossScale", "autocast_dtype": "autocast_dtype", "LOG_EVERY": "LOG_EVERY"}


def __getattr__(name: str) -> Any:
    if name not in _RENAMED:
        raise AttributeError(f"module 'nstlib.fast' has no attribute {name!r}")
    warnings.warn(f"nstlib.fast.{name} is now nstlib.runtime.{_RENAMED[name]}", DeprecationWarning, stacklevel=2)
    return getattr(runtime, _RENAMED[name])
