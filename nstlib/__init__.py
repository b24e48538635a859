"""nstlib: neural style transfer, taught.

Modules, in the order the course meets them:
images -> features -> losses -> blend -> settings -> runtime -> targets -> step -> loop -> optimize -> plots /
worker / widgets -> cli; then the perceptual controls color, pyramid and masks, and compare (optional extra).
Each imports only modules before it.
"""

import importlib
from typing import Any

from nstlib.errors import (
    DownloadError,
    ImageLoadError,
    MemoryLimitError,
    NonFiniteLossError,
    NstlibError,
    OutputError,
    ParameterError,
    WeightsError,
)

#: Where each public name lives. They are imported on first use (PEP 562), so `import nstlib.cli`
#: does not load torch: the command can then answer Ctrl-C during that slow import itself.
_LAZY = {
    **dict.fromkeys(["color", "masks", "plots", "pyramid"], ""),
    **dict.fromkeys(["BLEND_METHODS", "normalize_blend_weights", "style_targets"], "blend"),
    **dict.fromkeys(["PAINTINGS", "SAMPLES", "painting", "sample", "sample_path", "style_image"], "data"),
    **dict.fromkeys(["LAYER_INDEX", "LAYER_NAMES"], "vgg"),
    **dict.fromkeys(["Network", "VGGFeatures"], "features"),
    **dict.fromkeys(["Weights", "resolve_weights"], "weights"),
    **dict.fromkeys(["load_image", "resize", "save_gif", "save_image", "to_pil"], "images"),
    **dict.fromkeys(["Objective", "content_loss", "gram_matrix", "style_loss", "tv_loss"], "losses"),
    **dict.fromkeys(["DEFAULT_CONTENT_LAYERS", "DEFAULT_CONTENT_WEIGHT", "DEFAULT_STYLE_LAYERS", "DEFAULT_STYLE_WEIGHT",
                     "DEFAULT_TV_WEIGHT", "Settings"], "settings"),
    **dict.fromkeys(["Runtime", "pick_device"], "runtime"),
    **dict.fromkeys(["Step", "StylizeResult"], "result"),
    **dict.fromkeys(["Targets", "make_objective"], "targets"),
    **dict.fromkeys(["make_optimizer", "take_step"], "step"),
    **dict.fromkeys(["Watch", "optimization_loop"], "loop"),
    **dict.fromkeys(["evaluate", "optimize_image", "stylize", "stylize_grid"], "optimize"),
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'nstlib' has no attribute {name!r}")
    module = importlib.import_module(f"nstlib.{_LAZY[name] or name}")
    value = module if not _LAZY[name] else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__version__ = "0.1.0"

__all__ = [
    "plots", "BLEND_METHODS", "DEFAULT_CONTENT_LAYERS", "DEFAULT_CONTENT_WEIGHT", "DEFAULT_STYLE_LAYERS",
    "DEFAULT_STYLE_WEIGHT", "DEFAULT_TV_WEIGHT", "DownloadError", "ImageLoadError", "LAYER_INDEX", "LAYER_NAMES",
    "MemoryLimitError", "NonFiniteLossError", "NstlibError", "Objective", "OutputError", "PAINTINGS", "ParameterError",
    "SAMPLES", "painting", "style_image",
    "Network", "Step", "StylizeResult", "VGGFeatures", "Watch", "Weights", "WeightsError", "content_loss", "evaluate",
    "gram_matrix", "load_image",
    "normalize_blend_weights", "pick_device", "Settings", "Runtime", "Targets", "make_objective", "make_optimizer",
    "take_step", "optimization_loop", "optimize_image", "resize", "sample", "sample_path", "save_gif", "save_image",
    "style_loss", "style_targets", "stylize", "stylize_grid", "to_pil", "tv_loss", "resolve_weights",
]
__all__ += ["color", "masks", "pyramid"]  # the perceptual controls (nstlib.compare needs the optional extra)
