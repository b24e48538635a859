"""The errors nstlib raises for problems a user can fix. Each message names the file or parameter and says what to do;
the command line prints it as one line and exits with code 2."""

from __future__ import annotations

from typing import Any


class NstlibError(Exception):
    """Base class: a user-fixable problem with a one-line explanation."""


class ImageLoadError(NstlibError, ValueError):
    """An input picture is missing, unreadable, corrupt, too large or too small."""


class OutputError(NstlibError, OSError):
    """An output cannot be written (exists, is an input, unwritable folder, full disk)."""


class WeightsError(NstlibError, RuntimeError):
    """Network weights cannot be found, downloaded or understood."""


class DownloadError(NstlibError, OSError):
    """A download failed or did not verify; nothing was left in the cache."""


class MissingExtraError(NstlibError, ImportError):
    """An optional extra is not installed (pip install "nstlib[offline]" or "nstlib[compare]")."""


class ParameterError(NstlibError, ValueError):
    """An argument is out of range or unknown; the message lists the valid choices."""


class RunStoppedError(NstlibError):
    """A run that stopped early; `.result` holds a `StylizeResult` with the last good image (or None)."""

    def __init__(self, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.result = result


class NonFiniteLossError(RunStoppedError, FloatingPointError):
    """The objective became NaN or infinite. `.result` holds the last finite image."""


class MemoryLimitError(RunStoppedError, MemoryError):
    """A run needs more memory than there is (refused before it starts, or the GPU ran out); `.result` as above."""
