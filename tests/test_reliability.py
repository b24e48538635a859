"""Fault injection: strange files, bad weights, NaNs, out of memory, Ctrl-C and failing writes.

Every case here is a row of docs/reliability.md. The rule under test: a user error gives one clear
line (an `nstlib.errors` class in Python, exit code 2 in the CLI), never a traceback or a hang, and
no work is lost or half-written. Downloads are tested in test_download.py.
"""

from __future__ import annotations

import io
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

import nstlib.memory
import nstlib.optimize
from nstlib.cli import main
from nstlib.data import sample_path
from nstlib.errors import (
    ImageLoadError,
    MemoryLimitError,
    NonFiniteLossError,
    OutputError,
    ParameterError,
    WeightsError,
)
from nstlib.features import VGG19Features, random_state_dict
from nstlib.images import MIN_SIDE, load_image, save_image
from nstlib.losses import Objective
from nstlib.memory import available_bytes, estimate_bytes, network_cost
from nstlib.optimize import stylize

CONTENT, STYLE = str(sample_path("astronaut")), str(sample_path("stained_glass"))
FAST = ["--size", "64", "--steps", "3", "--weights", "random", "--quiet"]
RUN = {"size": 64, "network_weights": "random", "device": "cpu", "progress": False}


def _encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _noise(h: int = 64, w: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


# --- Images that must be refused -------------------------------------------------------------

BAD_IMAGES = {  # name -> (file name, how to make it, words the error must contain)
    "truncated JPEG": ("cut.jpg", lambda p: p.write_bytes(_encode(_noise(), "JPEG")[:1500]), "truncated or corrupt"),
    "random bytes": ("noise.jpg", lambda p: p.write_bytes(np.random.default_rng(1).bytes(4096)), "not an image"),
    "1x1 image": ("dot.png", lambda p: Image.new("RGB", (1, 1)).save(p), f"at least {MIN_SIDE} px"),
    "below minimum": ("strip.png", lambda p: Image.new("RGB", (200, MIN_SIDE - 1)).save(p), f"at least {MIN_SIDE}"),
    "text file": ("notes.txt", lambda p: p.write_text("a shopping list\n"), "not an image"),
    "SVG": ("logo.svg", lambda p: p.write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64">'
                                              '<rect width="64" height="64" fill="red"/></svg>'), "not an image"),
    # Also refused, tested in test_images.py: truncated PNG, empty file, directory, missing path, bomb.
}


@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_bad_image_files_raise_image_load_error(tmp_path, case: str) -> None:
    name, make, cause = BAD_IMAGES[case]
    path = tmp_path / name
    make(path)
    with pytest.raises(ImageLoadError, match=re.escape(cause)) as info:
        load_image(path)
    assert str(path) in str(info.value)


def _bad_cli_inputs(tmp: Path) -> dict[str, tuple[Path, str]]:
    cases = {case: (tmp / name, cause) for case, (name, make, cause) in BAD_IMAGES.items()}
    for name, make, _ in BAD_IMAGES.values():
        make(tmp / name)
    (tmp / "empty.png").write_bytes(b"")
    (tmp / "folder.png").mkdir()
    bomb = tmp / "bomb.png"
    Image.new("1", (9000, 9000)).save(bomb)
    buf = _encode(_noise(), "PNG")
    (tmp / "cut.png").write_bytes(buf[: len(buf) // 2])
    cases.update({
        "empty file": (tmp / "empty.png", "not an image"),
        "directory": (tmp / "folder.png", "directory"),
        "missing path": (tmp / "missing.png", "not found"),
        "decompression bomb": (bomb, "pixel limit"),
        "truncated PNG": (tmp / "cut.png", "truncated or corrupt"),
    })
    return cases


@pytest.mark.parametrize("case", [*BAD_IMAGES, "empty file", "directory", "missing path", "decompression bomb",
                                  "truncated PNG"])
@pytest.mark.parametrize("role", ["content", "style"])
def test_cli_bad_images_are_one_line_exit_2(refuse_work, tmp_path, capsys, case: str, role: str) -> None:
    path, cause = _bad_cli_inputs(tmp_path)[case]
    refuse_work()  # refused before building the network
    images = [str(path), STYLE] if role == "content" else [CONTENT, str(path)]
    code = main(["stylize", *images, "-o", str(tmp_path / "out.png"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "Traceback" not in err, err
    assert str(path) in err and cause in err, err
    assert not (tmp_path / "out.png").exists()


def _no_work(*args, **kwargs):
    raise AssertionError("work started before the bad input was rejected")


# --- Images that must load, with the right orientation and colours ---------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _rgb16_png(pixels: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG written by hand (Pillow cannot write one): (H,W,3) uint16."""
    h, w, _ = pixels.shape
    rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes() for y in range(h))
    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(rows))
            + _png_chunk(b"IEND", b""))


def _halves(mode: str, left, right, size=(64, 48)) -> Image.Image:
    """Left half one colour, right half another: shows both colour and orientation."""
    img = Image.new(mode, size, left)
    img.paste(right, (size[0] // 2, 0, size[0], size[1]))
    return img


RED, BLUE, WHITE = [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]


def _left_right(img: torch.Tensor) -> tuple[list[float], list[float]]:
    h, w = img.shape[-2:]
    return img[0, :, h // 2, w // 4].tolist(), img[0, :, h // 2, 3 * w // 4].tolist()


def test_16_bit_rgb_png(tmp_path) -> None:
    pixels = np.zeros((40, 64, 3), dtype=np.uint16)
    pixels[:, :32, 0] = 65535  # left red
    pixels[:, 32:, 2] = 32768  # right half-bright blue
    path = tmp_path / "deep.png"
    path.write_bytes(_rgb16_png(pixels))
    left, right = _left_right(load_image(path))
    assert left == pytest.approx(RED, abs=1 / 255) and right == pytest.approx([0, 0, 0.5], abs=1 / 255)


def test_palette_png_with_transparency(tmp_path) -> None:
    img = _halves("P", 1, 2)
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    path = tmp_path / "pal.png"
    img.save(path, transparency=2)  # palette entry 2 (the blue right half) is fully transparent
    left, right = _left_right(load_image(path))
    assert left == pytest.approx(RED, abs=1e-6) and right == pytest.approx(WHITE, abs=1e-6)  # on white


def test_exif_rotated_jpeg_is_upright(tmp_path) -> None:
    img = _halves("RGB", (255, 0, 0), (0, 0, 255), size=(64, 32))
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": the left (red) half ends up on top
    path = tmp_path / "rot.jpg"
    img.save(path, exif=exif, quality=95)
    out = load_image(path)
    assert out.shape == (1, 3, 64, 32)
    assert out[0, :, 16, 16].tolist() == pytest.approx(RED, abs=0.08)
    assert out[0, :, 48, 16].tolist() == pytest.approx(BLUE, abs=0.08)


def test_grayscale_and_la(tmp_path) -> None:
    _halves("L", 0, 200).save(tmp_path / "gray.png")
    left, right = _left_right(load_image(tmp_path / "gray.png"))
    assert left == pytest.approx([0] * 3, abs=1e-6) and right == pytest.approx([200 / 255] * 3, abs=1e-6)
    _halves("LA", (0, 255), (0, 0)).save(tmp_path / "la.png")  # opaque black | transparent black
    left, right = _left_right(load_image(tmp_path / "la.png"))
    assert left == pytest.approx([0] * 3, abs=1e-6) and right == pytest.approx(WHITE, abs=1e-6)


def test_animated_gif_gives_the_first_frame(tmp_path) -> None:
    frames = [_halves("RGB", c, (0, 0, 255)) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    left, right = _left_right(load_image(path))
    assert left == pytest.approx(RED, abs=0.02) and right == pytest.approx(BLUE, abs=0.02)


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp(tmp_path) -> None:
    _halves("RGB", (255, 0, 0), (0, 0, 255)).save(tmp_path / "a.webp", lossless=True)
    left, right = _left_right(load_image(tmp_path / "a.webp"))
    assert left == pytest.approx(RED, abs=1e-6) and right == pytest.approx(BLUE, abs=1e-6)


def test_non_finite_arrays_are_refused() -> None:
    arr = np.full((40, 40, 3), 0.5, dtype=np.float32)
    arr[3, 4, 1] = np.nan
    with pytest.raises(ImageLoadError, match="NaN"):
        load_image(arr)


# --- Fuzzing the loader: it returns a valid picture or raises ImageLoadError, nothing else -----------

_SEEDS = [_encode(_noise(40, 48), fmt) for fmt in ("PNG", "JPEG", "GIF", "BMP", "TIFF")]
if features.check("webp"):
    _SEEDS.append(_encode(_noise(40, 48), "WEBP"))


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def _check_loader(folder: Path, data: bytes, suffix: str) -> None:
    path = folder / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        img = load_image(path)
    except ImageLoadError as e:
        assert str(path) in str(e)
        return
    assert img.dtype == torch.float32 and img.ndim == 4 and img.shape[:2] == (1, 3)
    assert min(img.shape[-2:]) >= MIN_SIDE
    assert torch.isfinite(img).all() and img.min() >= 0 and img.max() <= 1


_mutations = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=8)
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(seed=st.sampled_from(range(len(_SEEDS))), edits=_mutations, cut=st.integers(1, 20_000),
       suffix=st.sampled_from([".png", ".jpg", ".gif", ".webp"]))
def test_fuzz_mutated_images(fuzz_dir, seed: int, edits: list[tuple[int, int]], cut: int, suffix: str) -> None:
    data = bytearray(_SEEDS[seed][:cut])
    for position, value in edits:
        data[position % len(data)] = value
    _check_loader(fuzz_dir, bytes(data), suffix)


@_FUZZ
@given(data=st.binary(max_size=4096), suffix=st.sampled_from([".png", ".jpg", ".gif", ".bmp", ".tif", ".webp"]))
def test_fuzz_random_bytes(fuzz_dir, data: bytes, suffix: str) -> None:
    _check_loader(fuzz_dir, data, suffix)


# --- Weights ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("text", "Expected torchvision's vgg19-dcbb9e9d.pth"),
        ("list", "expected a VGG state_dict (a dict of tensors), got list"),
        ("no conv5_4", "missing ['34."),
        ("strings", "0.weight is a str, not a tensor"),
        ("nan", "contains NaN or infinite values"),
    ],
)
def test_wrong_weight_files_say_what_was_expected(tmp_path, case: str, expected: str) -> None:
    path = tmp_path / f"{case}.pth"
    if case == "text":
        path.write_text("this is not a checkpoint")
    elif case == "list":
        torch.save([1, 2, 3], path)
    elif case == "no conv5_4":  # 15 convolutions: neither VGG19 (16) nor VGG16 (13)
        torch.save({k: v for k, v in random_state_dict(0).items() if not k.startswith("34.")}, path)
    elif case == "strings":
        torch.save({k: "x" for k in random_state_dict(0)}, path)
    else:
        state = random_state_dict(0)
        state["28.weight"][0, 0, 0, 0] = float("nan")
        torch.save(state, path)
    with pytest.raises(WeightsError) as info:
        VGG19Features(["relu1_1"], weights=str(path))
    assert str(path) in str(info.value) and expected in str(info.value)


# --- Numerics ---------------------------------------------------------------------------------------

def test_mask_of_the_wrong_shape_is_refused_before_optimising(content, style) -> None:
    wide = torch.ones(1, 3, 64, 128)  # content is 64x64: a 2:1 mask would be stretched
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(VGG19Features, "__init__", _no_work)  # refused before the network is built
        with pytest.raises(ParameterError, match="mask is 128x64 but the content is 64x64"):
            stylize(content, style, steps=5, masks=[wide], **RUN)
    # any resolution with the content's aspect ratio is fine
    assert stylize(content, style, steps=1, masks=[torch.ones(1, 3, 256, 256)], **RUN).image.shape == (1, 3, 64, 64)


def test_huge_learning_rate_is_refused_before_any_work(content, style) -> None:
    # pixels are clamped to [0,1] after every step, so a large lr saturates them instead of
    # overflowing; an absurd one is refused up front with the usual values
    with pytest.raises(ParameterError, match=r"lr=1e\+30: .* try 0.02 for Adam or 1 for L-BFGS"):
        stylize(content, style, steps=5, lr=1e30, **RUN)


def test_blow_up_during_the_run_names_the_cause_and_keeps_a_finite_image(vgg, content, style) -> None:
    with pytest.raises(NonFiniteLossError, match=r"at step [1-9]\d*: the learning rate .* or the loss weights") as info:
        stylize(content, style, steps=5, style_weight=1e38, extractor=vgg, **RUN)
    result = info.value.result
    assert torch.isfinite(result.image).all() and result.image.shape == (1, 3, 64, 64)
    assert result.status.startswith("stopped: non-finite loss at step")


def test_overflowing_weights_at_the_start_name_the_weights(vgg, content, style) -> None:
    # 1e300 is a valid (finite) weight that overflows float32 in the first loss (inf itself is refused up front)
    with pytest.raises(NonFiniteLossError, match="already at the start: the loss weights") as info:
        stylize(content, style, steps=5, style_weight=1e300, extractor=vgg, **RUN)
    assert torch.equal(info.value.result.image, content)  # nothing ran: the start is the last finite image


@pytest.mark.parametrize("save_partial", [True, False])
def test_cli_writes_the_last_finite_image_marked_only_with_save_partial(tmp_path, capsys, save_partial) -> None:
    out = tmp_path / "out.png"
    argv = ["stylize", CONTENT, STYLE, "-o", str(out), *FAST, "--style-weight", "1e38"]
    code = main(argv + (["--save-partial"] if save_partial else []))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "loss weights" in err, err
    assert out.exists() == save_partial and [p.name for p in tmp_path.iterdir()] == (["out.png"] * save_partial)
    if save_partial:
        with Image.open(out) as img:
            assert img.text["nstlib:status"].startswith("stopped: non-finite loss at step")
            assert np.isfinite(np.asarray(img)).all()


# --- Interrupts ---------------------------------------------------------------------------------------

def _fail_on_gradient_call(monkeypatch, number: int, error: BaseException) -> None:
    """Make the `number`-th objective evaluation with gradients (one per L-BFGS step) raise `error`."""
    forward, calls = VGG19Features.forward, [0]

    def failing(self, image):
        if image.requires_grad:
            calls[0] += 1
            if calls[0] == number:
                raise error
        return forward(self, image)

    monkeypatch.setattr(VGG19Features, "forward", failing)


def _three_steps(vgg, content, style) -> torch.Tensor:
    return stylize(content, style, steps=10, callback=lambda s: s.step == 3, extractor=vgg, **RUN).image


def test_ctrl_c_inside_a_step_returns_the_last_complete_image(vgg, content, style, monkeypatch, tmp_path) -> None:
    expected = _three_steps(vgg, content, style)
    _fail_on_gradient_call(monkeypatch, 4, KeyboardInterrupt())  # Ctrl-C during step 4's backward pass
    result = stylize(content, style, steps=10, extractor=vgg, **RUN)
    assert result.interrupted and result.status == "interrupted at step 4"
    assert torch.equal(result.image, expected)  # nothing lost: exactly the image after 3 steps
    with Image.open(result.save(str(tmp_path / "r.png"))) as img:
        assert img.text["nstlib:status"] == "interrupted at step 4"


def _default_sigint() -> None:
    """Run in the child before exec: give it the default SIGINT handler. A background job of a
    non-interactive shell (`pytest &` in a script, some CI runners) starts with SIGINT ignored, and a
    child inherits that, so Python would never raise KeyboardInterrupt and the test would hang."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _run_cli_and_interrupt(out: Path, *extra: str) -> tuple[subprocess.CompletedProcess, str]:
    """Start the CLI, wait until the progress bar shows a finished step, then send SIGINT.
    Returns the finished process and its one 'nstlib: ...' line on stderr."""
    argv = [sys.executable, "-m", "nstlib.cli", "stylize", CONTENT, STYLE, "-o", str(out), "--size", "64",
            "--steps", "100000", "--weights", "random", "--device", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                            preexec_fn=_default_sigint)
    seen: list[bytes] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(lambda: proc.stderr.read(1), b"")), daemon=True)
    reader.start()
    deadline = time.monotonic() + 240
    while not re.search(rb"\b[1-9]\d*/100000", b"".join(seen)):
        assert proc.poll() is None, b"".join(seen).decode()
        assert time.monotonic() < deadline, "the CLI never started optimising"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=120)
    reader.join(timeout=30)
    err = b"".join(seen).decode()
    notices = [line for line in re.split(r"[\r\n]", err) if line.startswith("nstlib")]
    assert len(notices) == 1, err  # exactly one line of explanation besides the progress bar
    return subprocess.CompletedProcess(argv, proc.returncode, proc.stdout.read().decode(), err), notices[0]


@pytest.mark.parametrize("save_partial", [True, False])
def test_cli_ctrl_c_writes_only_with_save_partial(tmp_path, save_partial: bool) -> None:
    out = tmp_path / "out.png"
    proc, last_line = _run_cli_and_interrupt(out, *(["--save-partial"] if save_partial else []))
    assert proc.returncode == 130 and "Traceback" not in proc.stderr, proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == (["out.png"] if save_partial else [])  # no temporary files
    if save_partial:
        assert "wrote the partial result" in last_line, last_line
        with Image.open(out) as img:
            assert img.size == (64, 64) and re.fullmatch(r"interrupted at step \d+", img.text["nstlib:status"])
    else:
        assert "nothing written (use --save-partial" in last_line, last_line


# --- Output safety ---------------------------------------------------------------------------------------

def test_force_overwrites_an_existing_output(tmp_path, capsys) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"old")
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST]) == 2
    assert out.read_bytes() == b"old" and "--force" in capsys.readouterr().err
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST, "--force"]) == 0
    with Image.open(out) as img:
        assert img.size == (64, 64) and img.text["nstlib:status"] == "complete"


def test_output_is_never_an_input_even_by_another_name(refuse_work, tmp_path, capsys) -> None:
    refuse_work()
    content = tmp_path / "content.png"
    content.write_bytes(Path(CONTENT).read_bytes())
    (tmp_path / "link.png").symlink_to(content)
    os.link(content, tmp_path / "hard.png")
    (tmp_path / "sub").mkdir()
    for other in ("link.png", "hard.png", "sub/../content.png"):
        code = main(["stylize", str(content), STYLE, "-o", str(tmp_path / other), *FAST, "--force"])
        assert code == 2 and "refusing to overwrite an input" in capsys.readouterr().err, other
    assert content.read_bytes() == Path(CONTENT).read_bytes()


@pytest.mark.parametrize("where", ["under a regular file", "in /proc"])
def test_unwritable_folder_is_refused_before_any_work_even_as_root(refuse_work, tmp_path, capsys, where) -> None:
    # Permission bits do not stop root, so use places no user can create files in.
    (tmp_path / "file.txt").write_text("x")
    out = tmp_path / "file.txt" / "out.png" if where == "under a regular file" else Path("/proc/nstlib-out.png")
    with pytest.raises(OutputError, match=re.escape(str(out))):
        save_image(torch.rand(1, 3, 32, 32), out)
    refuse_work()
    assert main(["stylize", CONTENT, STYLE, "-o", str(out), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(out) in err and ("not a folder" in err or "cannot write in" in err), err
    assert not out.exists()


def test_full_disk_in_the_cli_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch) -> None:
    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nstlib.images.os.fsync", no_space)  # fails after the bytes were "written"
    code = main(["stylize", CONTENT, STYLE, "-o", str(tmp_path / "out.png"), *FAST])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "No space left on device" in err and "nothing was written" in err
    assert list(tmp_path.iterdir()) == []


# --- Parameters: rejected before any work, listing the valid choices --------------------------------------

@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"content_weight": -1.0}, "content_weight=-1.0: weights must be >= 0"),
        ({"tv_weight": -0.5}, "tv_weight=-0.5: weights must be >= 0"),
        ({"style_layers": {"relu1_1": -1.0, "relu2_1": 2.0}}, "negative weight"),
        ({"style_layers": {"relu1_1": 0.0, "relu3_1": 0.0}}, "weights sum to 0"),
        ({"content_layers": {"relu4_2": 0.0}}, "weights sum to 0"),
        ({"steps": 0}, "whole number >= 1"),
        ({"steps": -5}, "whole number >= 1"),
        ({"steps": 2.5}, "whole number >= 1"),
        ({"style_layers": {"relu4_5": 1.0}}, "valid names are conv1_1, relu1_1"),
        ({"optimizer": "sgd"}, "choose one of lbfgs, adam"),
        ({"device": "tpu"}, "choose one of auto, cpu, cuda, mps"),
        ({"blend_weights": [1.0, 2.0, 3.0]}, "3 values but there are 2 style images"),
        ({"blend_weights": [1.0, -1.0]}, "negative"),
        ({"blend_weights": [0.0, 0.0]}, "sum to 0"),
        ({"init": "zeros"}, "choose one of content, noise, style"),
        ({"lr": 0.0}, "must be > 0"),
    ],
)
def test_bad_parameters_are_rejected_before_any_work(refuse_work, kwargs, match: str) -> None:
    refuse_work()
    with pytest.raises(ParameterError, match=re.escape(match)):
        stylize(CONTENT, [STYLE, STYLE], **{**RUN, **kwargs})


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_rejected_before_any_work(refuse_work) -> None:
    refuse_work()
    with pytest.raises(ParameterError, match="CUDA is not available here; use device='cpu'"):
        stylize(CONTENT, STYLE, **{**RUN, "device": "cuda"})


# --- Determinism ------------------------------------------------------------------------------------------

def test_same_seed_gives_identical_pixels_in_two_processes(tmp_path) -> None:
    args = ["stylize", CONTENT, STYLE, *FAST, "--init", "noise", "--seed", "5", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    subprocess.run([sys.executable, "-m", "nstlib.cli", *args, "-o", str(tmp_path / "a.png")], check=True, env=env,
                   capture_output=True, timeout=300)
    assert main([*args, "-o", str(tmp_path / "b.png")]) == 0
    a, b = (np.asarray(Image.open(tmp_path / name)) for name in ("a.png", "b.png"))
    assert np.array_equal(a, b) and a.std() > 0


# --- Out of memory ---------------------------------------------------------------------------------------

def test_gpu_out_of_memory_keeps_the_last_good_image(vgg, content, style, monkeypatch) -> None:
    expected = _three_steps(vgg, content, style)
    _fail_on_gradient_call(monkeypatch, 4, torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    with pytest.raises(MemoryLimitError) as info:
        stylize(content, style, steps=10, extractor=vgg, **RUN)
    message = str(info.value)
    for words in ("out of GPU memory at 64x64 (step 3)", "smaller size", "coarse-to-fine", "optimizer='adam'"):
        assert words in message, message
    result = info.value.result
    assert torch.equal(result.image, expected) and result.status == "stopped: out of memory at step 3"


def test_out_of_memory_while_computing_targets_keeps_the_coarser_scale(vgg, content, style, monkeypatch) -> None:
    forward = VGG19Features.forward

    def failing(self, image):  # the targets (no gradients) of the last, 64 px scale do not fit
        if not image.requires_grad and image.shape[-1] == 64:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 4 GiB")
        return forward(self, image)

    monkeypatch.setattr(VGG19Features, "forward", failing)
    with pytest.raises(MemoryLimitError, match=r"out of GPU memory at 64x64 \(step 0\)") as info:
        stylize(content, style, steps=4, coarse_to_fine=True, pyramid_start=32, extractor=vgg, **RUN)
    result = info.value.result
    assert result.status == "stopped: out of memory at step 0" and result.image.shape == (1, 3, 64, 64)
    assert (result.image - content).abs().mean() > 1e-3  # the 32 and 45 px scales' work is kept


def _graph_tensors(error: BaseException) -> list[torch.Tensor]:
    """Tensors of an autograd graph still reachable from the variables of the frames that `error`
    (or the error it was raised from) passed through."""
    found = []
    for exc in (error, error.__context__):
        tb = exc.__traceback__ if exc is not None else None
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                values = value.values() if isinstance(value, dict) else [value]
                found += [v for v in values if isinstance(v, torch.Tensor) and v.grad_fn is not None]
            tb = tb.tb_next
    return found


def test_out_of_memory_in_backward_releases_the_failed_steps_graph(vgg, content, style, monkeypatch) -> None:
    forward, calls = Objective.forward, [0]

    def failing(self, image):  # the third step runs out of memory in its backward pass
        terms = forward(self, image)
        calls[0] += image.requires_grad
        if calls[0] == 3 and image.requires_grad:
            terms["total"].register_hook(lambda grad: _raise(torch.cuda.OutOfMemoryError("CUDA out of memory")))
        return terms

    monkeypatch.setattr(Objective, "forward", failing)
    with pytest.raises(MemoryLimitError, match=r"\(step 2\)") as info:
        stylize(content, style, steps=5, extractor=vgg, **RUN)
    assert _graph_tensors(info.value) == []  # Jupyter keeps the last error: it must not pin the activations


def _raise(error: BaseException) -> None:
    raise error


class _NoRoomForTheNetwork(VGG19Features):
    """An extractor that runs out of device memory when moved there."""

    def to(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 80 MiB")


def test_out_of_memory_while_moving_to_the_device_is_one_clear_error(content, style) -> None:
    extractor = _NoRoomForTheNetwork([*nstlib.optimize.DEFAULT_CONTENT_LAYERS, *nstlib.optimize.DEFAULT_STYLE_LAYERS],
                                     weights="random")
    with pytest.raises(MemoryLimitError, match="already while moving the network.*restart the runtime") as info:
        stylize(content, style, steps=2, extractor=extractor, **RUN)
    assert info.value.result is None and info.value.__suppress_context__


def test_out_of_memory_on_old_torch_and_other_errors(vgg, content, style, monkeypatch) -> None:
    monkeypatch.delattr(torch.cuda, "OutOfMemoryError")  # torch < 1.13 raised a plain RuntimeError
    _fail_on_gradient_call(monkeypatch, 2, RuntimeError("CUDA out of memory. Tried to allocate 8.00 GiB"))
    with pytest.raises(MemoryLimitError, match="step 1"):
        stylize(content, style, steps=4, extractor=vgg, **RUN)
    _fail_on_gradient_call(monkeypatch, 2, RuntimeError("a bug, not memory"))
    with pytest.raises(RuntimeError, match="a bug, not memory"):  # other errors are not disguised
        stylize(content, style, steps=4, extractor=vgg, **RUN)


def test_cli_out_of_memory_saves_the_marked_partial_result(tmp_path, capsys, monkeypatch) -> None:
    _fail_on_gradient_call(monkeypatch, 2, torch.cuda.OutOfMemoryError("CUDA out of memory"))
    code = main(["stylize", CONTENT, STYLE, "-o", str(tmp_path / "out.png"), *FAST, "--save-partial"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err and "out of GPU memory at 64x64" in err, err
    with Image.open(tmp_path / "out.png") as img:
        assert img.text["nstlib:status"] == "stopped: out of memory at step 1"


def test_memory_estimate_matches_a_hand_calculation() -> None:
    # 32x32 image, network up to relu2_1. Kept for backward: relu1_1 and relu1_2 (64x32x32 each),
    # pool1 (64x16x16) with its int64 indices (2 floats each), relu2_1 (128x16x16). Largest map: 64x32x32.
    kept = 2 * 64 * 32 * 32 + 3 * 64 * 16 * 16 + 128 * 16 * 16
    params = (3 * 64 * 9 + 64) + (64 * 64 * 9 + 64) + (64 * 128 * 9 + 128)
    assert network_cost(32, 32, "relu2_1") == (kept, 64 * 32 * 32, params) == (212_992, 65_536, 112_576)
    image = 3 * 32 * 32
    lbfgs = 4 * (kept + 3 * 65_536 + (3 + 2 * 10 + 2) * image + params)  # L-BFGS, history 10: 22 buffers
    assert estimate_bytes(32, 32, ["relu1_1", "relu2_1"], optimizer="lbfgs", history_size=10) == lbfgs == 2_395_904
    adam = 4 * (2 * (kept + 3 * 65_536 + (3 + 2) * image) + params)  # batch of 2, Adam: 2 buffers each
    assert estimate_bytes(32, 32, ["relu2_1"], optimizer="adam", batch=2) == adam


def test_huge_size_is_refused_before_allocating(refuse_work, capsys) -> None:
    refuse_work()
    free = available_bytes()
    assert free is not None and free > 0
    with pytest.raises(MemoryLimitError, match=r"100000x100000 needs about [\d.]+ GiB but only") as info:
        stylize(CONTENT, STYLE, **{**RUN, "size": 100_000})
    assert "smaller size" in str(info.value) and info.value.result is None
    assert main(["stylize", CONTENT, STYLE, "-o", "/tmp/never.png", *FAST, "--size", "100000"]) == 2
    assert "GiB of RAM is free" in capsys.readouterr().err
    assert not Path("/tmp/never.png").exists()


def test_refusal_threshold_follows_free_ram(refuse_work, monkeypatch) -> None:
    monkeypatch.setattr(nstlib.memory, "available_bytes", lambda: 2**30)  # pretend 1 GiB is free
    refuse_work()
    need = estimate_bytes(1024, 1024, nstlib.optimize.DEFAULT_STYLE_LAYERS, optimizer="lbfgs", history_size=50)
    assert need > nstlib.memory.MARGIN * 2**30
    with pytest.raises(MemoryLimitError, match="1024x1024"):
        stylize(np.zeros((1024, 1024, 3), dtype=np.uint8), STYLE, **{**RUN, "size": None})
    with pytest.raises(AssertionError, match="work started"):  # a small size passes the check and starts work
        stylize(np.zeros((64, 64, 3), dtype=np.uint8), STYLE, **{**RUN, "size": None})
