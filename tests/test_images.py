"""Loading every kind of picture as (1,3,H,W) in [0,1], clear errors, and safe saving."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
import torch
from PIL import Image

from nstlib.core.errors import ImageLoadError, OutputError
from nstlib.core.features import MIN_SIDE
from nstlib.io.data import SAMPLES, sample, sample_path
from nstlib.io.images import MAX_PIXELS, load_image, save_gif, save_image, to_pil


def _rgb(h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_all_input_kinds_agree(tmp_path) -> None:
    arr = _rgb()
    path = tmp_path / "a.png"
    Image.fromarray(arr).save(path)
    expected = torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255
    for src in (path, str(path), Image.fromarray(arr), arr, expected[0], expected):
        img = load_image(src)
        assert img.shape == (1, 3, 48, 64) and img.dtype == torch.float32
        assert torch.allclose(img, expected, atol=1e-6), type(src)


def test_resize_keeps_aspect_and_sets_long_side() -> None:
    img = load_image(_rgb(60, 120), size=80)
    assert img.shape == (1, 3, 40, 80)
    assert 0 <= img.min() and img.max() <= 1


def test_grayscale_rgba_palette_and_16_bit(tmp_path) -> None:
    gray = load_image(Image.new("L", (40, 40), 128))
    assert torch.allclose(gray, torch.full((1, 3, 40, 40), 128 / 255))
    rgba = Image.new("RGBA", (40, 40), (255, 0, 0, 0))  # fully transparent red -> white
    assert torch.allclose(load_image(rgba), torch.ones(1, 3, 40, 40))
    half = Image.new("RGBA", (40, 40), (0, 0, 0, 128))  # half-transparent black on white
    assert load_image(half)[0, :, 0, 0].tolist() == pytest.approx([127 / 255] * 3, abs=1 / 255)
    palette = Image.new("RGB", (40, 40), (0, 0, 255)).convert("P")
    assert load_image(palette)[0, :, 0, 0].tolist() == pytest.approx([0, 0, 1], abs=1 / 255)
    deep = np.full((40, 40), 65535 // 4, dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(deep).save(path)
    assert load_image(path)[0, 0, 0, 0].item() == pytest.approx(0.25, abs=1e-3)


def test_cmyk_and_exif_rotation(tmp_path) -> None:
    cmyk = Image.new("CMYK", (40, 40), (0, 255, 255, 0))  # red
    cmyk.save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg")[0, :, 20, 20].tolist() == pytest.approx([1, 0, 0], abs=0.1)
    img = Image.new("RGB", (64, 32), (0, 255, 0))
    exif = img.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    img.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").shape == (1, 3, 64, 32)


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        (lambda p: None, "not found"),
        (lambda p: p.write_bytes(b"hello, not a picture"), "not an image"),
        (lambda p: p.write_bytes(b""), "not an image"),
        (lambda p: p.mkdir(), "directory"),
    ],
)
def test_bad_files_raise_image_load_error_naming_the_file(tmp_path, make, cause: str) -> None:
    path = tmp_path / "input.png"
    make(path)
    with pytest.raises(ImageLoadError, match=cause) as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_truncated_image(tmp_path) -> None:
    buf = io.BytesIO()
    Image.fromarray(_rgb(128, 128)).save(buf, format="PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageLoadError, match="truncated or corrupt"):
        load_image(path)


def test_decompression_bomb_is_refused(tmp_path) -> None:
    side = int(MAX_PIXELS**0.5) + 100
    path = tmp_path / "bomb.png"
    Image.new("1", (side, side)).save(path)  # a tiny file that declares a huge image
    assert path.stat().st_size < 2_000_000
    with pytest.raises(ImageLoadError, match="pixel limit"):
        load_image(path)


def test_too_small_states_the_minimum() -> None:
    with pytest.raises(ImageLoadError, match=f"at least {MIN_SIDE} px"):
        load_image(np.zeros((1, 1, 3), dtype=np.uint8))
    with pytest.raises(ImageLoadError, match="minimum side"):
        load_image(_rgb(), size=8)


def test_save_is_atomic_and_refuses_inputs(tmp_path) -> None:
    img = load_image(_rgb())
    out = save_image(img, tmp_path / "out.png")
    assert torch.allclose(load_image(out), img, atol=1 / 255)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]  # no temporary files left
    old = os.umask(0o022)
    try:
        assert stat.S_IMODE(save_image(img, tmp_path / "perm.png").stat().st_mode) == 0o644  # not mkstemp's 0600
    finally:
        os.umask(old)
    with pytest.raises(OutputError, match="input"):
        save_image(img, out, inputs=[str(out)])
    with pytest.raises(OutputError, match="already exists"):
        save_image(img, out, overwrite=False)
    with pytest.raises(OutputError, match="unknown image extension"):
        save_image(img, tmp_path / "out.txt")


def test_failed_write_leaves_nothing(tmp_path, monkeypatch) -> None:
    def full_disk(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", full_disk)
    with pytest.raises(OutputError, match="No space left"):
        save_image(load_image(_rgb()), tmp_path / "out.png")
    assert list(tmp_path.iterdir()) == []


def test_gif_has_all_frames(tmp_path) -> None:
    frames = [torch.full((1, 3, 32, 32), v) for v in (0.0, 0.5, 1.0)]
    path = save_gif(frames, tmp_path / "a.gif")
    with Image.open(path) as gif:
        assert gif.n_frames == 3


def test_gif_shares_one_palette_and_is_smaller_than_a_palette_per_frame(tmp_path) -> None:
    a, b = sample("astronaut", 96), sample("chelsea", 144)[..., :96, :96]
    frames = [torch.lerp(a, b, t) for t in torch.linspace(0, 1, 8).tolist()]
    path = save_gif(frames, tmp_path / "a.gif")
    per_frame = tmp_path / "per_frame.gif"  # Pillow's default: each frame quantised on its own
    pils = [to_pil(f) for f in frames]
    pils[0].save(per_frame, save_all=True, append_images=pils[1:], duration=80, loop=0)
    assert path.stat().st_size < per_frame.stat().st_size
    with Image.open(path) as gif:
        for i, frame in enumerate(frames):
            gif.seek(i)
            got = torch.from_numpy(np.asarray(gif.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
            assert (got - frame[0]).pow(2).mean().sqrt() < 0.05, i  # RMSE under 5% of the range


def test_samples_are_bundled_and_small() -> None:
    for name in SAMPLES:
        img = sample(name)
        assert max(img.shape[-2:]) <= 512, name
        assert sample_path(name).exists()
    assert sample("astronaut", 64).shape[-1] == 64
    with pytest.raises(ImageLoadError, match="astronaut"):
        sample("mona_lisa")
