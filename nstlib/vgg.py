"""The VGG networks nstlib uses: their layouts, human layer names and input preprocessing.

VGG19 (Simonyan & Zisserman 2015, configuration E) is the network of Gatys et al.; VGG16
(configuration D) has one convolution fewer in each of blocks 3-5, so it has no conv3_4, conv4_4
or conv5_4. Every other name (relu1_1 ... relu5_1, relu4_2, pool5) exists in both.

A network is only right with the preprocessing its weights were trained with:

- torchvision's ImageNet weights take RGB in [0,1], minus the ImageNet mean, divided by its std;
- Caffe/Keras weights (the packaged VGG16) take BGR in 0-255 minus the mean pixel.

`Preprocessing` describes either; the extractor (`nstlib.features`) applies it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from nstlib.errors import ParameterError

#: Convolutions per block of each network.
NETWORKS: dict[str, tuple[int, ...]] = {"vgg19": (2, 2, 4, 4, 4), "vgg16": (2, 2, 3, 3, 3)}
#: Output channels of each block (both networks).
CHANNELS = (64, 128, 256, 512, 512)


def check_network(network: str) -> str:
    """Return `network` if it is one of NETWORKS, else a `ParameterError` listing them."""
    if network not in NETWORKS:
        raise ParameterError(f"network={network!r}: choose one of {', '.join(NETWORKS)}")
    return network


@cache
def layer_names(network: str = "vgg19") -> tuple[str, ...]:
    """All layer names of `network` in order; layer_names()[i] is torchvision's `vgg19().features[i]`."""
    names = []
    for b, convs in enumerate(NETWORKS[check_network(network)], start=1):
        for c in range(1, convs + 1):
            names += [f"conv{b}_{c}", f"relu{b}_{c}"]
        names.append(f"pool{b}")
    return tuple(names)


@cache
def layer_index(network: str = "vgg19") -> dict[str, int]:
    """{layer name: position in the network's `features` stack}."""
    return {name: i for i, name in enumerate(layer_names(network))}


#: All 37 VGG19 layer names, in order; LAYER_NAMES[i] is torchvision's `vgg19().features[i]`.
LAYER_NAMES: tuple[str, ...] = layer_names("vgg19")
LAYER_INDEX: dict[str, int] = layer_index("vgg19")


def check_layers(layers: Iterable[str], network: str = "vgg19") -> list[str]:
    """Validate layer names for `network`; return them sorted by depth."""
    layers, index = list(layers), layer_index(network)
    unknown = [name for name in layers if name not in index]
    if unknown:
        missing_here = [name for name in unknown if name in LAYER_INDEX]
        if missing_here:
            raise ParameterError(
                f"{network.upper()} has no layer(s) {missing_here}: its blocks 3-5 have only "
                f"{NETWORKS[network][2]} convolutions. Use e.g. relu3_1, relu4_2, relu5_1, or VGG19 weights")
        raise ParameterError(f"unknown {network.upper()} layer(s) {unknown}; valid names are {', '.join(index)}")
    if not layers:
        raise ParameterError("no layers requested; name at least one, e.g. 'relu4_2'")
    return sorted(set(layers), key=index.__getitem__)


def _block(name: str) -> int:
    """Block number (1-5) of a layer name: conv3_2 -> 3, pool3 -> 3."""
    return int(name[4])


def layer_channels(name: str) -> int:
    """Number of channels of layer `name` (e.g. 256 for relu3_1)."""
    return CHANNELS[_block(name) - 1]


def layer_stride(name: str) -> int:
    """How many input pixels one step on the layer's grid covers (1 in block 1, 2 after pool1, ...)."""
    block = _block(name)
    return 2 ** (block if name.startswith("pool") else block - 1)


def layer_receptive_field(name: str, network: str = "vgg19") -> int:
    """Side in input pixels of the square that one position of layer `name` sees (3 for conv1_1).

    Walk the network from the input: a 3x3 convolution (stride 1) widens the field by 2 steps of
    the current grid, a 2x2 pool with stride 2 widens it by 1 step and doubles the step.
    ReLUs change nothing. r_out = r_in + (k - 1) * s_in, s_out = s_in * stride.
    """
    field, step = 1, 1
    for layer in layer_names(network)[: layer_index(network)[check_layers([name], network)[0]] + 1]:
        if layer.startswith("conv"):
            field += 2 * step
        elif layer.startswith("pool"):
            field += step
            step *= 2
    return field


def build_vgg(network: str = "vgg19") -> nn.Sequential:
    """The `features` stack of `network`, laid out exactly as torchvision's (same indices and state_dict keys).

    Built here rather than with `torchvision.models.vgg19()`, which would also build and
    initialise the 120M-parameter classifier we never use (seconds on a CPU). The ReLUs are
    out-of-place: an in-place ReLU would overwrite the conv outputs we return.
    """
    layers: list[nn.Module] = []
    in_channels = 3
    for convs, channels in zip(NETWORKS[check_network(network)], CHANNELS):
        for _ in range(convs):
            layers += [nn.Conv2d(in_channels, channels, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = channels
        layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def state_dict_shapes(network: str) -> dict[str, torch.Size]:
    """{state_dict key: shape} of `build_vgg(network)`, without allocating any weights."""
    with torch.device("meta"):
        return {k: v.shape for k, v in build_vgg(network).state_dict().items()}


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Caffe's ImageNet mean pixel in B, G, R order and 0-255 units (Keras' `preprocess_input`).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Preprocessing:
    """How a batch of RGB images in [0,1] becomes the network's input: optionally swap to BGR,
    then subtract `mean` and divide by `std` (per channel, in the input's channel order and in
    [0,1] units: a Caffe input of 0-255 minus the mean pixel is mean = pixel/255, std = 1/255).
    """

    name: str
    bgr: bool
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    description: str


TORCHVISION = Preprocessing("torchvision", False, IMAGENET_MEAN, IMAGENET_STD,
                            "RGB in [0,1], minus the ImageNet mean, divided by its std (torchvision)")
CAFFE = Preprocessing("caffe", True, tuple(m / 255 for m in CAFFE_MEAN_BGR), (1 / 255,) * 3,
                      "BGR in 0-255, minus the ImageNet mean pixel (Caffe/Keras)")
