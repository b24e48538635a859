"""nstlib: neural style transfer, taught.

The folders are the map (docs/architecture.md): `core` is what the course teaches and imports nothing else from nstlib;
`controls` (colour, coarse-to-fine), `io`, `engine` (device, precision, graphs, memory), `api` (the entry points and
their one boundary), `course` and `apps` wrap it. The public names below are imported on first use (PEP 562), so
`import nstlib` is quick and the command line can answer Ctrl-C while torch is still loading.
"""

import functools
import importlib
import sys
from pathlib import Path
from typing import Any

from nstlib.core.errors import (
    DownloadError,
    ImageLoadError,
    MemoryLimitError,
    NonFiniteLossError,
    NstlibError,
    OutputError,
    ParameterError,
    WeightsError,
)

__version__ = "0.1.0"


@functools.cache
def project_urls() -> dict[str, str]:
    """pyproject.toml's ``[project.urls]`` ({"Repository": ..., ...}): from the clone's file if there is one, else from
    the package metadata."""
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    if pyproject.is_file() and sys.version_info >= (3, 11):
        import tomllib

        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
        if project.get("name") == "nstlib":
            return dict(project["urls"])
    from importlib import metadata

    entries = metadata.metadata("nstlib").get_all("Project-URL") or []  # "Repository, https://..."
    return dict(entry.split(", ", 1) for entry in entries)


#: Where each public name lives.
_LAZY = {
    **dict.fromkeys(["VGGFeatures", "Weights", "random_weights", "layer_names"], "core.features"),
    **dict.fromkeys(["gram_matrix", "content_loss", "style_loss", "tv_loss"], "core.losses"),
    **dict.fromkeys(["Targets", "Objective", "style_targets", "initial_image", "resize"], "core.objective"),
    **dict.fromkeys(["Settings", "DEFAULT_CONTENT_LAYERS", "DEFAULT_STYLE_LAYERS", "DEFAULT_CONTENT_WEIGHT",
                     "DEFAULT_STYLE_WEIGHT", "DEFAULT_TV_WEIGHT"], "core.settings"),
    **dict.fromkeys(["optimize", "take_step", "make_optimizer", "Watch"], "core.loop"),
    **dict.fromkeys(["Progress", "StylizeResult"], "core.result"),
    **dict.fromkeys(["load_image", "load_mask", "save_image", "save_gif", "to_pil"], "io.images"),
    **dict.fromkeys(["PAINTINGS", "SAMPLES", "painting", "sample", "sample_path", "style_image"], "io.data"),
    **dict.fromkeys(["load_weights"], "io.weights"),
    **dict.fromkeys(["Runtime"], "engine.runtime"),
    **dict.fromkeys(["stylize", "stylize_grid", "evaluate"], "api"),
}

__all__ = [
    *_LAZY, "project_urls", "DownloadError", "ImageLoadError", "MemoryLimitError", "NonFiniteLossError", "NstlibError",
    "OutputError", "ParameterError", "WeightsError",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nstlib' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"nstlib.{_LAZY[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
