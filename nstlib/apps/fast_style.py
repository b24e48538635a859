"""Fast style transfer: train one small feed-forward network per style (Johnson et al. 2016; Ulyanov et al. 2016).

Instead of the pixels of one picture (`nstlib.stylize`), optimise the weights of an image-to-image network once, over
random crops of photos, on the very objective `stylize` minimises (each crop its own content target); afterwards a new
photo costs one forward pass."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import trange

from nstlib.api import Guard, NetworkLike, Run, RuntimeLike
from nstlib.core.errors import MissingExtraError, ParameterError, WeightsError
from nstlib.core.losses import tv_loss
from nstlib.core.objective import Targets
from nstlib.core.result import TERMS
from nstlib.core.settings import Settings, check_number
from nstlib.io.data import CONTENT_SAMPLES, sample_path
from nstlib.io.files import atomic_write, check_input_file, open_input
from nstlib.io.images import ImageLike, load_image

#: Adam's learning rate for the network's weights (Johnson et al. 2016) and the crop size in pixels, for lr/size None.
TRAIN_LR, TRAIN_SIZE = 1e-3, 256


def conv(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Conv2d:
    """A convolution with reflection padding that keeps the size (stride 1) or halves it (stride 2)."""
    return nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, padding_mode="reflect")


def conv_norm_relu(c_in: int, c_out: int, kernel: int, stride: int = 1) -> nn.Sequential:
    """conv -> instance norm (a learned scale and shift per channel) -> ReLU."""
    return nn.Sequential(conv(c_in, c_out, kernel, stride), nn.InstanceNorm2d(c_out, affine=True), nn.ReLU())


class ResidualBlock(nn.Module):
    """x + body(x), body = conv-norm-ReLU-conv-norm; (B,C,H,W) -> (B,C,H,W)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(conv_norm_relu(channels, channels, 3), conv(channels, channels, 3),
                                  nn.InstanceNorm2d(channels, affine=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class Upsample(nn.Module):
    """Nearest-neighbour resize x2, then conv-norm-ReLU: (B,C_in,H,W) -> (B,C_out,2H,2W)."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.layer = conv_norm_relu(c_in, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class FastStyleNet(nn.Module):
    """Johnson et al.'s image transformation network, small: (B,3,H,W) in [0,1] -> (B,3,H,W) in [0,1].

    Downsampling convolutions, `blocks` residual blocks at 1/4 resolution (Johnson: 5), upsampling by resize +
    convolution (no checkerboard artefacts, Odena et al. 2016), instance norm after every convolution but the last, a
    sigmoid output; `width` channels first (Johnson: 32). The output is always resized to the input's size, so that the
    ONNX export takes any H and W (a test of the size would be traced as a constant).
    """

    def __init__(self, width: int = 16, blocks: int = 3) -> None:
        super().__init__()
        check_number("width", width, whole=True, low=1)
        check_number("blocks", blocks, whole=True, low=0)
        self.width, self.blocks = width, blocks
        self.net = nn.Sequential(
            conv_norm_relu(3, width, 9), conv_norm_relu(width, 2 * width, 3, 2),
            conv_norm_relu(2 * width, 4 * width, 3, 2),
            *[ResidualBlock(4 * width) for _ in range(blocks)],
            Upsample(4 * width, 2 * width), Upsample(2 * width, width), conv(width, 3, 9),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        out = nn.functional.interpolate(self.net(image), size=image.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(out)

    @property
    def config(self) -> dict[str, int]:
        """What rebuilds this architecture: {"width", "blocks"}."""
        return {"width": self.width, "blocks": self.blocks}


def random_crops(images: Sequence[torch.Tensor], size: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """`n` random `size` x `size` crops from (1,3,H,W) `images` (a random image each): (n,3,size,size)."""
    if not images:
        raise ParameterError("images=[]: give at least one photo to crop from")
    small = [tuple(img.shape[-2:]) for img in images if min(img.shape[-2:]) < size]
    if small:
        raise ParameterError(f"size={size}: larger than a photo to crop from ({small[0][0]}x{small[0][1]})")
    crops = []
    for _ in range(n):
        img = images[int(torch.randint(len(images), (1,), generator=generator))]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=generator))
        left = int(torch.randint(w - size + 1, (1,), generator=generator))
        crops.append(img[0, :, top:top + size, left:left + size])
    return torch.stack(crops)


def train(style: ImageLike, photos: Sequence[ImageLike] | None = None, settings: Settings | None = None, *,
          batch: int = 4, width: int = 16, blocks: int = 3, photo_scale: float = 2.0, network: NetworkLike = "imagenet",
          runtime: RuntimeLike = "auto", progress: bool = True,
          **overrides: Any) -> tuple[FastStyleNet, list[dict[str, float]]]:
    """Train a `FastStyleNet` for one `style` on random crops of `photos` (default: the bundled photos): (the network,
    its history of batch-mean terms). Adam minimises `stylize`'s objective for `steps` steps at `lr` (default
    `TRAIN_LR`) on `size` px crops (default `TRAIN_SIZE`) of the photos loaded at `photo_scale` x `size`; `seed` makes
    it repeatable."""
    run = Run.begin(settings, overrides, network, runtime)
    settings, dev, backward = run.settings, run.runtime.device, run.runtime.backward()
    check_number("batch", batch, whole=True, low=1)
    check_number("photo_scale", photo_scale, low=1)  # photos at least as big as a crop
    size, lr = settings.size or TRAIN_SIZE, settings.lr or TRAIN_LR
    generator = torch.Generator().manual_seed(settings.seed)
    torch.manual_seed(settings.seed)  # the network's initial weights
    model = FastStyleNet(width, blocks).to(dev)
    images = [load_image(p, round(size * photo_scale))
              for p in (photos if photos is not None else map(sample_path, CONTENT_SAMPLES))]
    extractor = run.runtime.prepare(run.network())
    # the style at the photos' scale, as `stylize` loads it at the content's (times style_scale)
    style_img = load_image(style, round(size * photo_scale * settings.style_scale)).to(dev)
    targets = Targets.build(extractor, style_img, [style_img], settings)  # the style's Gram targets, once
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    history: list[dict[str, float]] = []
    with Guard(dev, f"training on {size} px crops", "try a smaller batch or size"):
        for _ in trange(settings.steps, desc="training", disable=not progress):
            crops = random_crops(images, size, batch, generator).to(dev)
            with torch.no_grad():
                content = {k: v for k, v in extractor(crops).items() if k in settings.content_layers}
            crop_targets = dataclasses.replace(targets, content=content, content_tv=tv_loss(crops))
            terms = crop_targets.objective(settings)(model(crops))
            optimizer.zero_grad(set_to_none=True)
            backward(terms["total"].mean(), *model.parameters())
            optimizer.step()
            means = torch.stack([terms[t].detach().mean() for t in TERMS]).tolist()  # one host copy per step
            history.append(dict(zip(TERMS, means)))
    return model.eval(), history


@torch.no_grad()
def apply(model: FastStyleNet, image: ImageLike, size: int | None = None) -> torch.Tensor:
    """Stylise one picture (long side `size`, None keeps it) with a trained network: (1,3,H,W) in [0,1]."""
    return model.eval()(load_image(image, size).to(next(model.parameters()).device)).cpu()


def save(model: FastStyleNet, path: str | os.PathLike) -> Path:
    """Write the network's architecture and weights with torch.save, atomically."""
    state = {"config": model.config, "state_dict": {k: v.cpu() for k, v in model.state_dict().items()}}
    return atomic_write(path, lambda f: torch.save(state, f))


def load(path: str | os.PathLike) -> FastStyleNet:
    """A `FastStyleNet` written by `save` (on the CPU, in eval mode)."""
    with open_input(check_input_file(path, WeightsError, "a fast-style network"), WeightsError) as f:
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
            model = FastStyleNet(**state["config"])
            model.load_state_dict(state["state_dict"])
        except Exception as e:  # not a checkpoint of `save`: a one-line reason
            raise WeightsError(f"{path}: not a network written by nstlib.apps.fast_style.save ({e})") from None
    return model.eval()


def export_onnx(model: FastStyleNet, path: str | os.PathLike, size: int = 256) -> Path:
    """Export the network to ONNX (input "image" (B,3,H,W) in [0,1], any B, H and W), atomically; needs `onnx`."""
    if importlib.util.find_spec("onnx") is None:  # torch's exporter needs it
        raise MissingExtraError("ONNX export needs the onnx package: pip install onnx (or pip install -e '.[offline]')")
    model = model.eval()
    example = torch.rand(1, 3, size, size, device=next(model.parameters()).device)
    axes = {0: "batch", 2: "height", 3: "width"}
    with warnings.catch_warnings():  # instance norm exports "with train=True": right, it uses each image's statistics
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return atomic_write(path, lambda f: torch.onnx.export(model, (example,), f, input_names=["image"],
                                                              output_names=["stylized"], dynamo=False,
                                                              dynamic_axes={"image": axes, "stylized": axes}))
