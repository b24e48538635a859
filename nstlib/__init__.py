"""nstlib: neural style transfer, taught.

Modules, in the order the course meets them:
images -> features -> losses -> blend -> optimize -> plots / widgets -> cli;
then the perceptual controls color, pyramid and masks, and compare (optional extra).
"""

from nstlib import color, masks, plots, pyramid
from nstlib.blend import BLEND_METHODS, normalize_blend_weights, style_targets
from nstlib.data import SAMPLES, sample, sample_path
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
from nstlib.features import LAYER_INDEX, LAYER_NAMES, VGG19Features, VGGFeatures
from nstlib.images import load_image, resize, save_gif, save_image, to_pil
from nstlib.losses import Objective, content_loss, gram_matrix, style_loss, tv_loss
from nstlib.optimize import (
    DEFAULT_CONTENT_LAYERS,
    DEFAULT_CONTENT_WEIGHT,
    DEFAULT_STYLE_LAYERS,
    DEFAULT_STYLE_WEIGHT,
    DEFAULT_TV_WEIGHT,
    Step,
    StylizeResult,
    evaluate,
    pick_device,
    stylize,
    stylize_grid,
)
from nstlib.weights import Weights, resolve_weights

__version__ = "0.1.0"

__all__ = [
    "plots", "BLEND_METHODS", "DEFAULT_CONTENT_LAYERS", "DEFAULT_CONTENT_WEIGHT", "DEFAULT_STYLE_LAYERS",
    "DEFAULT_STYLE_WEIGHT", "DEFAULT_TV_WEIGHT", "DownloadError", "ImageLoadError", "LAYER_INDEX", "LAYER_NAMES",
    "MemoryLimitError", "NonFiniteLossError", "NstlibError", "Objective", "OutputError", "ParameterError", "SAMPLES",
    "Step", "StylizeResult", "VGG19Features", "VGGFeatures", "Weights", "WeightsError", "content_loss", "evaluate",
    "gram_matrix", "load_image",
    "normalize_blend_weights", "pick_device", "resize", "sample", "sample_path", "save_gif", "save_image",
    "style_loss", "style_targets", "stylize", "stylize_grid", "to_pil", "tv_loss", "resolve_weights",
]
__all__ += ["color", "masks", "pyramid"]  # the perceptual controls (nstlib.compare needs the optional extra)
