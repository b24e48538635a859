"""VGG feature maps with human layer names (conv1_1, relu1_1, ..., pool5).

torchvision builds the network; `Weights` say which network (VGG19, Gatys et al.'s, or VGG16, which has no conv3_4,
conv4_4 or conv5_4), which preprocessing and where the numbers came from. `VGGFeatures(layers, weights)` maps
(B,3,H,W) images in [0,1] to {layer name: (B,C,h,w)}, stopping after the deepest layer asked for.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache

import torch
import torchvision
from torch import nn

from nstlib.core.errors import ParameterError
from nstlib.core.settings import MAX_SEED, check_number

NETWORKS = ("vgg19", "vgg16")
#: Smallest side the networks take: they halve the image five times (pool1..pool5).
MIN_SIDE = 32


def vgg_stack(network: str = "vgg19", device: str = "cpu") -> nn.Sequential:
    """torchvision's `features` stack of `network`, uninitialised: built on the meta device (the unused classifier
    costs nothing), with out-of-place ReLUs (in-place ones would overwrite the conv outputs we return) and pooling
    that rounds up: a side that is not a multiple of 2 keeps its last row or column as a window of its own, so every
    pixel reaches every layer. (Rounding down drops them: on a 255-pixel side the last 15 rows would get a fraction
    of the others' gradient, and Adam, which steps as far on a small gradient as on a large one, paints a strip.)"""
    if network not in NETWORKS:
        raise ParameterError(f"network={network!r}: choose one of {', '.join(NETWORKS)}")
    with torch.device("meta"):
        features = getattr(torchvision.models, network)().features
    for module in features:
        if isinstance(module, nn.ReLU):
            module.inplace = False
        elif isinstance(module, nn.MaxPool2d):
            module.ceil_mode = True
    return features if device == "meta" else features.to_empty(device=device)


@cache
def layout(network: str = "vgg19") -> tuple[tuple[str, int], ...]:
    """(name, channels) of every layer of `network`, in order: layout()[i] is torchvision's `vgg19().features[i]`."""
    layers, block, conv, channels = [], 1, 0, 3
    for module in vgg_stack(network, "meta"):
        if isinstance(module, nn.Conv2d):
            conv, channels = conv + 1, module.out_channels
            layers.append((f"conv{block}_{conv}", channels))
        elif isinstance(module, nn.ReLU):
            layers.append((f"relu{block}_{conv}", channels))
        else:
            layers.append((f"pool{block}", channels))
            block, conv = block + 1, 0
    return tuple(layers)


def layer_names(network: str = "vgg19") -> tuple[str, ...]:
    """All layer names of `network` in order."""
    return tuple(name for name, _ in layout(network))


def check_layers(layers: Iterable[str], network: str = "vgg19") -> list[str]:
    """`layers` if `network` has them all, sorted by depth; else a `ParameterError` naming what is wrong."""
    if isinstance(layers, (str, bytes, torch.Tensor)) or not isinstance(layers, Iterable):
        raise ParameterError(f"layers={layers!r}: give a list of layer names, e.g. ['relu1_1', 'relu4_2']")
    layers, names = list(layers), layer_names(network)
    unknown = [name for name in layers if name not in names]
    if unknown:
        if all(name in layer_names("vgg19") for name in unknown):
            raise ParameterError(f"{network.upper()} has no layer(s) {unknown}: its blocks 3-5 have one convolution "
                                 "fewer. Use e.g. relu3_1, relu4_2, relu5_1, or VGG19 weights")
        raise ParameterError(f"unknown {network.upper()} layer(s) {unknown}; valid names are {', '.join(names)}")
    if not layers:
        raise ParameterError("no layers requested; name at least one, e.g. 'relu4_2'")
    return sorted(set(layers), key=names.index)


def layer_channels(name: str, network: str = "vgg19") -> int:
    """Number of channels of layer `name` (e.g. 256 for relu3_1)."""
    return dict(layout(network))[check_layers([name], network)[0]]


def layer_stride(name: str) -> int:
    """How many input pixels one step on the layer's grid covers (1 in block 1, 2 after pool1, ...)."""
    block = int(name[4])
    return 2 ** (block if name.startswith("pool") else block - 1)


def layer_receptive_field(name: str, network: str = "vgg19") -> int:
    """Side in input pixels of the square that one position of layer `name` sees (3 for conv1_1).

    Walk the network from the input: a 3x3 convolution (stride 1) widens the field by 2 steps of the current grid, a 2x2
    pool with stride 2 widens it by 1 step and doubles the step; ReLUs change nothing. r_out = r_in + (k - 1) * s_in,
    s_out = s_in * stride.
    """
    field, step = 1, 1
    names = layer_names(network)
    for layer in names[: names.index(check_layers([name], network)[0]) + 1]:
        if layer.startswith("conv"):
            field += 2 * step
        elif layer.startswith("pool"):
            field += step
            step *= 2
    return field


@dataclass(frozen=True)
class Preprocessing:
    """How RGB images in [0,1] become a network's input: optionally swap to BGR, then subtract `mean` and divide by
    `std` per channel (in [0,1] units: Caffe's 0-255 minus the mean pixel is mean = pixel/255, std = 1/255)."""

    name: str
    bgr: bool
    mean: tuple[float, ...]
    std: tuple[float, ...]
    description: str


_IMAGENET = torchvision.models.VGG19_Weights.IMAGENET1K_V1.transforms()
TORCHVISION = Preprocessing("torchvision", False, tuple(_IMAGENET.mean), tuple(_IMAGENET.std),
                            "RGB in [0,1], minus the ImageNet mean, divided by its std (torchvision)")
#: Caffe's ImageNet mean pixel, B, G, R in 0-255 (Keras' `preprocess_input`).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
CAFFE = Preprocessing("caffe", True, tuple(m / 255 for m in CAFFE_MEAN_BGR), (1 / 255,) * 3,
                      "BGR in 0-255, minus the ImageNet mean pixel (Caffe/Keras)")


@dataclass(frozen=True)
class Weights:
    """A network's weights and what they mean: which network, which preprocessing, from where.

    `state_dict` has the keys of torchvision's `features` stack ("0.weight", ...); `trained` is False only for random
    weights; `file` is the file they were read from, if any (an input: no output may overwrite it).
    """

    network: str
    preprocessing: Preprocessing
    source: str
    trained: bool
    state_dict: dict[str, torch.Tensor] = field(repr=False, compare=False)
    file: str = ""

    def describe(self) -> str:
        """One line naming the network, the weights and the preprocessing."""
        return f"{self.network.upper()}, {self.source}; input: {self.preprocessing.description}"


def random_weights(seed: int = 0, network: str = "vgg19") -> Weights:
    """Seeded random weights, initialised as torchvision initialises VGG (He, fan-out; zero biases)."""
    seed = check_number("seed", seed, whole=True, low=0, high=MAX_SEED)
    generator, stack = torch.Generator().manual_seed(seed), vgg_stack(network)
    for module in stack:
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu", generator=generator)
            nn.init.zeros_(module.bias)
    return Weights(network, TORCHVISION, f"RANDOM weights (seed {seed}), not trained", False, stack.state_dict())


class VGGFeatures(nn.Module):
    """A VGG feature extractor: (B,3,H,W) RGB images in [0,1] -> ``{name: (B,C,⌈H/s⌉,⌈W/s⌉)}``, s the layer's stride.

    `layers` are the names to return, e.g. ``["relu1_1", "relu4_2"]``; `weights` (`nstlib.load_weights("imagenet")`,
    `random_weights()`) decide the network and the preprocessing. `self.source` says all three in a line.
    """

    def __init__(self, layers: Iterable[str], weights: Weights) -> None:
        super().__init__()
        if not isinstance(weights, Weights):
            raise ParameterError(f"weights={weights!r}: give nstlib Weights, e.g. nstlib.load_weights('imagenet') "
                                 "or nstlib.random_weights()")
        self.network, self.preprocessing, self.source = weights.network, weights.preprocessing, weights.describe()
        self.file = weights.file
        self.layers = check_layers(layers, self.network)
        self.names = layer_names(self.network)[: layer_names(self.network).index(self.layers[-1]) + 1]
        stack = vgg_stack(self.network)
        stack.load_state_dict(weights.state_dict)
        self.net = stack[: len(self.names)].requires_grad_(False).eval()  # truncated after the deepest layer
        self.register_buffer("mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,H,W) RGB in [0,1] -> {layer: (B,C,h,w)} for every requested layer."""
        x = image.flip(1) if self.preprocessing.bgr else image  # Caffe weights expect BGR
        x = (x - self.mean) / self.std
        out = {}
        for name, module in zip(self.names, self.net):
            x = module(x)
            if name in self.layers:
                out[name] = x
        return out

    def extra_repr(self) -> str:
        return f"layers={self.layers}\nsource: {self.source}"
