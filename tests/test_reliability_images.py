"""Fault injection: loading pictures. Files that must be refused (one clear error, in Python and the
CLI), files that must load upright and in the right colours, and fuzzing the loader.
Rows of docs/reliability.md."""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from common import CONTENT, FAST, STYLE
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, features

from nstlib.apps.cli import main
from nstlib.core.errors import ImageLoadError
from nstlib.core.features import MIN_SIDE
from nstlib.io.images import load_image


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
