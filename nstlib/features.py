"""VGG19 feature maps with human layer names (conv1_1, relu1_1, ..., pool5).

`VGG19Features(layers)` returns a dict {layer name: (B,C,h,w) feature map} for an image batch
(B,3,H,W) in [0,1]. ImageNet normalisation happens inside, the network stops after the deepest
requested layer, and its parameters never require grad.

Weights (`weights=`):
- ``"imagenet"`` (default): an explicit `weights_path`, else the ``NSTLIB_VGG19_WEIGHTS`` env var,
  else torchvision's file in the torch hub cache, else a download of that file (with progress).
- ``"random"``: seeded, deterministic He-initialised weights, for tests and offline work.
- a path to a torchvision-format state_dict (the full model or `features` only).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from nstlib.download import download
from nstlib.errors import DownloadError, ParameterError, WeightsError

#: Convolutions per block in VGG19 (Simonyan & Zisserman 2015, configuration E).
BLOCKS = (2, 2, 4, 4, 4)
#: Output channels of each block.
CHANNELS = (64, 128, 256, 512, 512)


def _layer_names() -> list[str]:
    names = []
    for b, convs in enumerate(BLOCKS, start=1):
        for c in range(1, convs + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        names.append(f"pool{b}")
    return names


#: All 37 layer names, in order; LAYER_NAMES[i] is torchvision's `vgg19().features[i]`.
LAYER_NAMES: tuple[str, ...] = tuple(_layer_names())
LAYER_INDEX: dict[str, int] = {name: i for i, name in enumerate(LAYER_NAMES)}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: torchvision's ImageNet VGG19 file; the hex part is the start of its SHA-256.
IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
IMAGENET_FILE = "vgg19-dcbb9e9d.pth"
WEIGHTS_ENV = "NSTLIB_VGG19_WEIGHTS"


def layer_channels(name: str) -> int:
    """Number of channels of layer `name` (e.g. 256 for relu3_1)."""
    return CHANNELS[_block(name) - 1]


def _block(name: str) -> int:
    """Block number (1-5) of a layer name: conv3_2 -> 3, pool3 -> 3."""
    return int(name[4])


def layer_stride(name: str) -> int:
    """How many input pixels one step on the layer's grid covers (1 in block 1, 2 after pool1, ...)."""
    block = _block(name)
    return 2 ** (block if name.startswith("pool") else block - 1)


def layer_receptive_field(name: str) -> int:
    """Side in input pixels of the square that one position of layer `name` sees (3 for conv1_1).

    Walk the network from the input: a 3x3 convolution (stride 1) widens the field by 2 steps of
    the current grid, a 2x2 pool with stride 2 widens it by 1 step and doubles the step.
    ReLUs change nothing. r_out = r_in + (k - 1) * s_in, s_out = s_in * stride.
    """
    field, step = 1, 1
    for layer in LAYER_NAMES[: LAYER_INDEX[check_layers([name])[0]] + 1]:
        if layer.startswith("conv"):
            field += 2 * step
        elif layer.startswith("pool"):
            field += step
            step *= 2
    return field


def check_layers(layers: Iterable[str]) -> list[str]:
    """Validate layer names; return them sorted by depth."""
    layers = list(layers)
    unknown = [name for name in layers if name not in LAYER_INDEX]
    if unknown:
        raise ParameterError(f"unknown VGG19 layer(s) {unknown}; valid names are {', '.join(LAYER_NAMES)}")
    if not layers:
        raise ParameterError("no layers requested; name at least one, e.g. 'relu4_2'")
    return sorted(set(layers), key=LAYER_INDEX.__getitem__)


def _empty_vgg19() -> nn.Sequential:
    """The VGG19 `features` stack, laid out exactly as torchvision's (same indices and state_dict keys).

    Built here rather than with `torchvision.models.vgg19()`, which would also build and
    initialise the 120M-parameter classifier we never use (seconds on a CPU). The ReLUs are
    out-of-place: an in-place ReLU would overwrite the conv outputs we return.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for convs, channels in zip(BLOCKS, CHANNELS):
        for _ in range(convs):
            layers += [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Deterministic He-normal weights (fan-in, ReLU gain) and zero biases for VGG19 `features`.

    He initialisation keeps activation variance roughly constant through the 16 conv layers,
    so random features neither vanish nor explode.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    with torch.device("meta"):  # shapes only, no memory or initialisation
        shapes = {name: param.shape for name, param in _empty_vgg19().state_dict().items()}
    for name, shape in shapes.items():
        if name.endswith("weight"):
            fan_in = shape[1:].numel()
            state[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        else:
            state[name] = torch.zeros(shape)
    return state


def _normalise_state_dict(state: object, source: str) -> dict[str, torch.Tensor]:
    """Accept a full torchvision VGG19 state_dict or just its `features`; return `features` keys."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: expected a VGG19 state_dict (a dict of tensors), got {type(state).__name__}")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    with torch.device("meta"):
        expected = {k: v.shape for k, v in _empty_vgg19().state_dict().items()}
    missing = sorted(set(expected) - set(state), key=lambda k: int(k.split(".")[0]))
    wrong = [k for k in expected if k in state and getattr(state[k], "shape", None) != expected[k]]
    if missing or wrong:
        found = state[wrong[0]] if wrong else None
        detail = f"missing {missing[:3]}" if missing else (
            f"{wrong[0]} has shape {tuple(found.shape)}" if isinstance(found, torch.Tensor)
            else f"{wrong[0]} is a {type(found).__name__}, not a tensor")
        raise WeightsError(
            f"{source}: not a torchvision VGG19 state_dict ({detail}); expected keys like "
            f"'features.0.weight' of shape (64, 3, 3, 3). Use torchvision's {IMAGENET_FILE} or weights='random'"
        )
    broken = [k for k in expected if not torch.isfinite(state[k]).all()]
    if broken:
        raise WeightsError(
            f"{source}: {broken[0]} contains NaN or infinite values; the file is damaged. Expected finite weights "
            f"such as torchvision's {IMAGENET_FILE}; download it again or use weights='random'"
        )
    return {k: state[k] for k in expected}


@lru_cache(maxsize=4)
def _read_weights_file(path: str, mtime: float) -> dict[str, torch.Tensor]:
    """Load (and cache, keyed by path and modification time) a weights file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"{path}: weights file not found") from None
    except Exception as e:  # torch raises many types for a bad file: pickle, zip, EOF, runtime
        raise WeightsError(
            f"{path}: cannot read this weights file ({type(e).__name__}: {str(e)[:120]}); it may be truncated. "
            f"Expected torchvision's {IMAGENET_FILE} (548 MB)"
        ) from None
    return _normalise_state_dict(state, path)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a torchvision-format VGG19 state_dict (full model or features only) from `path`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found; expected torchvision's {IMAGENET_FILE}")
    return _read_weights_file(str(path.resolve()), path.stat().st_mtime)


def hub_cache_file() -> Path:
    """Where torchvision keeps its downloaded VGG19 file ($TORCH_HOME/hub/checkpoints/...)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def imagenet_state_dict(weights_path: str | os.PathLike | None = None, *, progress: bool = True) -> dict:
    """Find ImageNet VGG19 weights: explicit path, env var, torch hub cache, then a download."""
    for candidate in (weights_path, os.environ.get(WEIGHTS_ENV)):
        if candidate:
            return load_state_dict(candidate)
    cached = hub_cache_file()
    if not cached.is_file():
        try:
            download(IMAGENET_URL, cached, sha256_prefix="dcbb9e9d", progress=progress)
        except DownloadError as e:
            raise WeightsError(
                f"ImageNet VGG19 weights are not available ({e}). Download {IMAGENET_URL} on a machine "
                f"with internet and either put it at {cached}, set {WEIGHTS_ENV}=/path/to/{IMAGENET_FILE}, "
                "or pass weights='/path/to/file'. To run without them use weights='random' "
                "(results are much weaker)."
            ) from None
    return load_state_dict(cached)


def resolve_weights(weights: str | os.PathLike, seed: int = 0) -> dict[str, torch.Tensor]:
    """Turn a `weights=` argument ("imagenet", "random" or a path) into a `features` state_dict."""
    if weights == "imagenet":
        return imagenet_state_dict()
    if weights == "random":
        return random_state_dict(seed)
    if isinstance(weights, (str, os.PathLike)) and (Path(weights).suffix or os.sep in str(weights)):
        return load_state_dict(weights)
    raise ParameterError(f"weights={weights!r}: use 'imagenet', 'random' or a path to a .pth file")


class VGG19Features(nn.Module):
    """VGG19 feature extractor returning named feature maps.

    Args:
        layers: layer names to return, e.g. ``["relu1_1", "relu4_2"]``.
        weights: ``"imagenet"``, ``"random"`` or a path to a torchvision state_dict.
        pooling: ``"max"`` (the network as trained) or ``"avg"`` (Gatys et al. found average
            pooling gives slightly smoother results).
        seed: seed for ``weights="random"``.

    Call it on (B,3,H,W) images in [0,1] to get ``{name: (B,C,H/s,W/s)}`` with s the layer's stride.
    """

    def __init__(
        self,
        layers: Iterable[str],
        weights: str | os.PathLike = "imagenet",
        pooling: str = "max",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ParameterError(f"pooling={pooling!r}: use 'max' or 'avg'")
        self.layers = check_layers(layers)
        self.weights = str(weights)
        self.pooling = pooling
        net = _empty_vgg19()
        net.load_state_dict(resolve_weights(weights, seed))
        if pooling == "avg":
            for i, module in enumerate(net):
                if isinstance(module, nn.MaxPool2d):
                    net[i] = nn.AvgPool2d(kernel_size=2, stride=2)
        self.net = net[: LAYER_INDEX[self.layers[-1]] + 1]  # truncate after the deepest layer
        self.net.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,H,W) in [0,1] -> {layer: (B,C,h,w)} for every requested layer."""
        x = (image - self.mean) / self.std
        wanted = set(self.layers)
        out = {}
        for name, module in zip(LAYER_NAMES, self.net):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out

    def extra_repr(self) -> str:
        return f"layers={self.layers}, weights={self.weights!r}, pooling={self.pooling!r}"
