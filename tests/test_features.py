"""The VGG extractor: torchvision's network with human layer names, truncation, frozen weights, weight loading."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models import vgg16, vgg19

from nstlib.core.errors import ParameterError, WeightsError
from nstlib.core.features import (
    VGGFeatures,
    layer_channels,
    layer_names,
    layer_receptive_field,
    layer_stride,
    random_weights,
)
from nstlib.core.objective import layer_masks
from nstlib.io.weights import IMAGENET, hub_file, load_weights


@pytest.mark.parametrize(("network", "build", "count"), [("vgg19", vgg19, 37), ("vgg16", vgg16, 31)])
def test_layer_names_name_torchvisions_modules(network: str, build, count: int) -> None:
    """The names walk torchvision's own `features` stack: conv, relu and pool where torchvision has them."""
    with torch.device("meta"):
        net = build(weights=None).features
    names = layer_names(network)
    assert len(names) == len(net) == count
    for name, module in zip(names, net):
        assert isinstance(module, {"conv": nn.Conv2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}[name[:4]]), name
        if name.startswith("conv"):
            assert module.out_channels == layer_channels(name, network), name
    spot = {"conv1_1": 0, "relu1_1": 1, "pool1": 4, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20, "relu4_2": 22,
            "relu5_1": 29, "pool5": 36}
    if network == "vgg19":
        assert {k: names.index(k) for k in spot} == spot
    assert [layer_channels(f"relu{b}_1") for b in range(1, 6)] == [64, 128, 256, 512, 512]
    ours = VGGFeatures(["pool5"], random_weights(network=network)).net
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in net.state_dict().items()}


def test_returns_requested_layers_with_the_right_shapes(vgg, content) -> None:
    feats = vgg(content)
    assert list(feats) == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu4_2", "relu5_1"]
    for name, f in feats.items():
        assert f.shape == (1, layer_channels(name), 64 // layer_stride(name), 64 // layer_stride(name))
    assert (feats["relu1_1"] >= 0).all()


def test_pooling_rounds_up_so_every_pixel_reaches_every_layer() -> None:
    # 75 x 50: neither side a multiple of 2, 16 or 32. Rounding down would give pool1 37 x 25 and drop the last row
    # and column; rounded up, each layer's grid covers the whole picture, and the masks' grids (spatial control) match.
    net = VGGFeatures(["relu1_1", "pool1", "relu3_1", "relu5_1", "pool5"], random_weights())
    feats = net(torch.rand(1, 3, 75, 50))
    strides = {"relu1_1": 1, "pool1": 2, "relu3_1": 4, "relu5_1": 16, "pool5": 32}
    expected = {name: (-(-75 // s), -(-50 // s)) for name, s in strides.items()}
    assert {name: tuple(f.shape[-2:]) for name, f in feats.items()} == expected
    assert expected["pool1"] == (38, 25) and expected["pool5"] == (3, 2)
    masks = layer_masks(torch.ones(1, 1, 75, 50), ["relu3_1", "relu5_1"])
    assert {name: tuple(m.shape[-2:]) for name, m in masks.items()} == {k: expected[k] for k in masks}


def test_truncated_after_deepest_layer_and_frozen() -> None:
    net = VGGFeatures(["conv3_1", "relu1_2"], random_weights())
    assert len(net.net) == layer_names().index("conv3_1") + 1
    assert net.layers == ["relu1_2", "conv3_1"]
    assert all(not p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = net(x)
    assert (out["conv3_1"] < 0).any(), "conv outputs must not be rectified by an in-place ReLU"
    out["conv3_1"].sum().backward()
    assert x.grad is not None and all(p.grad is None for p in net.parameters())


def test_random_weights_are_deterministic_per_seed_and_he_initialised() -> None:
    a, b, c = (random_weights(s).state_dict for s in (0, 0, 1))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["0.weight"], c["0.weight"])
    std = a["2.weight"].std().item()  # torchvision's init: He, std = sqrt(2 / fan_out), fan_out = 64*3*3
    assert std == pytest.approx((2 / 576) ** 0.5, rel=0.05)
    assert not a["2.bias"].any()


def test_weights_must_be_weights() -> None:
    with pytest.raises(ParameterError, match="load_weights"):
        VGGFeatures(["relu1_1"], "random")


@pytest.mark.parametrize("form", ["full", "features"])
def test_weights_file_round_trips(tmp_path, content, form: str) -> None:
    state = random_weights(3).state_dict
    if form == "full":  # torchvision's whole-model layout; the classifier, which is ignored, as small stand-ins
        with torch.device("meta"):
            names = vgg19(weights=None).state_dict()
        to_save = {name: state[name.removeprefix("features.")] if name.startswith("features.") else torch.zeros(1)
                   for name in names}
    else:
        to_save = state
    path = tmp_path / "w.pth"
    torch.save(to_save, path)
    loaded = VGGFeatures(["relu3_1"], load_weights(str(path)))
    direct = VGGFeatures(["relu3_1"], random_weights(3))
    assert torch.equal(loaded(content)["relu3_1"], direct(content)["relu3_1"])


def test_imagenet_resolution_order_env_then_hub_cache(tmp_path, monkeypatch, content) -> None:
    """A file torchvision already downloaded (torch.hub's cache, its file name) is found; the variable comes first."""
    env_file, cached = tmp_path / "env.pth", hub_file()
    assert cached.name == "vgg19-dcbb9e9d.pth" and cached.parent.name == "checkpoints"
    torch.save(random_weights(1).state_dict, env_file)
    cached.parent.mkdir(parents=True, exist_ok=True)
    torch.save(random_weights(2).state_dict, cached)
    by_seed = {s: VGGFeatures(["relu1_1"], random_weights(s))(content)["relu1_1"] for s in (1, 2)}
    monkeypatch.setenv("NSTLIB_WEIGHTS", str(env_file))
    assert torch.equal(VGGFeatures(["relu1_1"], load_weights())(content)["relu1_1"], by_seed[1])
    monkeypatch.delenv("NSTLIB_WEIGHTS")
    assert torch.equal(VGGFeatures(["relu1_1"], load_weights())(content)["relu1_1"], by_seed[2])


def test_missing_imagenet_weights_say_how_to_supply_them(monkeypatch) -> None:
    calls = []

    def offline(url, dest, **kwargs):
        calls.append((url, kwargs["sha256_prefix"]))
        from nstlib.core.errors import DownloadError

        raise DownloadError(f"{url}: download failed (offline)")

    monkeypatch.setattr("nstlib.io.weights.download", offline)
    with pytest.raises(WeightsError) as info:
        load_weights("vgg19-imagenet")
    assert calls == [(IMAGENET.url, "dcbb9e9d")]  # torchvision's enum names the file and its hash
    for hint in ("NSTLIB_WEIGHTS", "weights='random'", str(hub_file()), "vgg19-dcbb9e9d.pth"):
        assert hint in str(info.value)


def test_bad_weight_files_are_explained(tmp_path) -> None:
    with pytest.raises(WeightsError, match="not found"):
        load_weights(str(tmp_path / "nope.pth"))
    truncated = tmp_path / "truncated.pth"
    torch.save(random_weights(0).state_dict, truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(WeightsError, match="truncated"):
        load_weights(str(truncated))
    other = tmp_path / "resnet.pth"
    torch.save(nn.Conv2d(3, 8, 3).state_dict(), other)
    with pytest.raises(WeightsError, match="not a torchvision VGG19 state_dict"):
        load_weights(str(other))


def test_unknown_layer_lists_valid_names() -> None:
    with pytest.raises(ParameterError, match="relu4_2"):
        VGGFeatures(["relu6_1"], random_weights())


def test_receptive_field_matches_the_gradient_support() -> None:
    """Independent check: with positive weights and average pooling every ReLU passes everything, so the
    input pixels that a centre output depends on (non-zero gradient) form exactly the receptive field."""
    names = ["conv1_1", "relu1_2", "pool1", "conv2_2", "conv3_1", "pool3", "conv4_1"]
    net = VGGFeatures(names, random_weights())
    for i, module in enumerate(net.net):
        if isinstance(module, nn.Conv2d):
            module.weight.data.abs_()
        elif isinstance(module, nn.MaxPool2d):
            net.net[i] = nn.AvgPool2d(2, 2)
    for name in names:
        x = torch.rand(1, 3, 96, 96, requires_grad=True)
        out = net(x)[name]
        out[0, :, out.shape[2] // 2, out.shape[3] // 2].sum().backward()
        rows = x.grad.abs().sum(dim=(0, 1, 3)).nonzero()
        assert int(rows.max() - rows.min() + 1) == layer_receptive_field(name), name


def test_receptive_field_of_the_deepest_layers_and_unknown_names() -> None:
    assert layer_receptive_field("conv5_4") == 252 and layer_receptive_field("pool5") == 268
    with pytest.raises(ParameterError, match="unknown VGG19 layer"):
        layer_receptive_field("conv6_1")
