"""Images in and out: every picture in nstlib is a float tensor of shape (1,3,H,W) with values in [0,1].

`load_image` takes a path, a PIL image, a NumPy array or a tensor; `save_image` and `save_gif` write atomically (a
crash or a full disk never leaves a half-written picture) and never over an input.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from nstlib.core.errors import ImageLoadError, OutputError, ParameterError
from nstlib.core.features import MIN_SIDE
from nstlib.core.objective import resize
from nstlib.core.result import StylizeResult
from nstlib.core.settings import check_number
from nstlib.io.files import atomic_write, check_input_file, check_output_path, check_space, open_input, show

ImageLike = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor

#: Largest image we decode, in pixels: anything larger is a decompression bomb (a small file, gigabytes decoded).
MAX_PIXELS = 64_000_000
#: Float pixels may overshoot [0,1] by this much (rounding noise) before they count as out of range.
FLOAT_TOLERANCE = 1e-3


def _pil_pixels(img: Image.Image, name: str,
                damaged: str = "closed or truncated image; load it from the file again") -> np.ndarray:
    """A PIL image's pixels, turned upright (EXIF), typed by its mode for `_unit_range`: 16-bit and "I" (16-bit PGM)
    as uint16, "F" as float32, the rest 8-bit RGB, or RGBA if transparent. Any Pillow error is `damaged`."""
    try:
        img = ImageOps.exif_transpose(img)
        if img.mode.startswith("I;16"):
            return np.asarray(img).astype(np.uint16)
        if img.mode == "I":
            arr = np.asarray(img)
            low, high = int(arr.min(initial=0)), int(arr.max(initial=0))
            if low < 0 or high > 65535:
                raise ImageLoadError(f"{name}: 32-bit integer pixels span {low}..{high}, beyond 16-bit 0..65535; "
                                     "convert the picture to 8 or 16 bits per channel")
            return arr.astype(np.uint16)
        if img.mode == "F":
            return np.asarray(img, dtype=np.float32)
        transparent = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "P" and "transparency" in img.info)
        return np.asarray(img.convert("RGBA" if transparent else "RGB"))
    except ImageLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many types (OSError, SyntaxError, struct.error, ...)
        raise ImageLoadError(f"{name}: {damaged} ({type(e).__name__}: {e})") from None


def _decode(path: Path) -> np.ndarray:
    """The first frame of a regular file (a FIFO would block) as `_pil_pixels`; every failure is one line."""
    name = show(path)
    with open_input(check_input_file(path)) as file:
        try:
            img = Image.open(file)
        except UnidentifiedImageError:
            raise ImageLoadError(f"{name}: not an image Pillow can read (is it really a picture?)") from None
        except Image.DecompressionBombError as e:
            raise ImageLoadError(f"{name}: decompression bomb refused ({e})") from None
        except Exception as e:  # noqa: BLE001 - a damaged header, as in `_pil_pixels`
            raise ImageLoadError(f"{name}: truncated or corrupt image ({type(e).__name__}: {e})") from None
        with img:
            if img.width * img.height > MAX_PIXELS:
                raise ImageLoadError(f"{name}: {img.width}x{img.height} is over the {MAX_PIXELS:,}-pixel limit "
                                     "(decompression bomb guard); shrink the image first")
            return _pil_pixels(img, name, "truncated or corrupt image")


def as_list(items: ImageLike | Sequence[ImageLike] | None) -> list[ImageLike]:
    """One picture (a style, a mask, an input), a sequence of them, or None -> a list."""
    if items is None:
        return []
    if isinstance(items, (str, torch.Tensor, Image.Image)) or not isinstance(items, Sequence):
        return [items]
    return list(items)


def _unit_range(pixels: np.ndarray | torch.Tensor, name: str) -> np.ndarray:
    """Pixel values -> float32 in [0,1], by dtype: uint8 /255, uint16 /65535, other integers must hold 8-bit values
    0..255 (/255), bool is 0/1, floats must already lie in [0,1] (NaN is left to the caller)."""
    if isinstance(pixels, torch.Tensor):
        pixels = pixels.detach().cpu()
        pixels = (pixels.float() if pixels.is_floating_point() else pixels).numpy()  # NumPy has no bfloat16
    if pixels.dtype == bool:
        return pixels.astype(np.float32)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / 65535.0
    if np.issubdtype(pixels.dtype, np.integer):
        low, high = int(pixels.min(initial=0)), int(pixels.max(initial=0))
        if low < 0 or high > 255:
            raise ImageLoadError(f"{name}: {pixels.dtype} values span {low}..{high}, not 8-bit 0..255; pass uint8, "
                                 "uint16 or floats in [0,1]")
        return pixels.astype(np.float32) / 255.0
    if not np.issubdtype(pixels.dtype, np.floating):
        raise ImageLoadError(f"{name}: unsupported dtype {pixels.dtype}; use uint8, uint16 or floats in [0,1]")
    pixels = pixels.astype(np.float32)
    if np.isfinite(pixels).all():
        low, high = float(pixels.min(initial=0)), float(pixels.max(initial=0))
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            raise ImageLoadError(f"{name}: float values span {low:g}..{high:g}, not [0,1]; divide 0-255 data by "
                                 "255 (or pass it as uint8)")
    return pixels


def _to_batch(src: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """An array (H,W[,C]) with C 1, 3 or 4 (alpha composited on white), or a tensor (H,W), (C,H,W) or (1,C,H,W) with
    C 1 or 3, of any dtype `_unit_range` reads -> (1,3,H,W) float."""
    t = torch.from_numpy(_unit_range(src, name))
    if isinstance(src, np.ndarray):
        if t.ndim == 2:
            t = t[..., None]
        if t.ndim != 3 or t.shape[-1] not in (1, 3, 4):
            raise ImageLoadError(f"{name}: array shape {tuple(t.shape)} is not (H,W), (H,W,3) or (H,W,4)")
        if t.shape[-1] == 4:
            t = t[..., :3] * t[..., 3:] + (1 - t[..., 3:])
        t = t.permute(2, 0, 1)
    if t.ndim == 2:
        t = t[None]
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] not in (1, 3):
        raise ImageLoadError(f"{name}: tensor shape {tuple(t.shape)} is not (H,W), (3,H,W) or (1,3,H,W)")
    return t.expand(1, 3, *t.shape[2:]).contiguous()


def check_source(src: ImageLike, name: str) -> None:
    """Refuse, before anything looks at its shape, an array or tensor with no pixels: empty, meta or sparse."""
    if isinstance(src, torch.Tensor) and (src.is_meta or src.layout != torch.strided):
        kind = "meta" if src.is_meta else str(src.layout).removeprefix("torch.")
        raise ImageLoadError(f"{name}: a {kind} tensor has no pixels to read; pass an ordinary tensor with its "
                             "data (e.g. x.to_dense() for a sparse one)")
    if isinstance(src, (torch.Tensor, np.ndarray)) and 0 in src.shape:
        raise ImageLoadError(f"{name}: an empty {type(src).__name__} of shape {tuple(src.shape)}; pass a picture")


def peek_shape(src: ImageLike, name: str = "image") -> tuple[int, int]:
    """(H,W) of a picture without decoding its pixels (a file's header, EXIF rotation included)."""
    check_source(src, name)
    if isinstance(src, (str, os.PathLike)):
        path = check_input_file(src)
        try:
            with Image.open(path) as img:
                w, h = img.size
                rotated = img.getexif().get(0x0112) in (5, 6, 7, 8)
        except Exception:  # noqa: BLE001 - let load_image report the exact cause
            return _decode(path).shape[:2]
        return (w, h) if rotated else (h, w)
    if isinstance(src, Image.Image):
        return src.height, src.width
    if isinstance(src, (np.ndarray, torch.Tensor)) and src.ndim >= 2:
        return tuple(src.shape[-2:]) if isinstance(src, torch.Tensor) else tuple(src.shape[:2])
    return tuple(load_image(src).shape[-2:])


def load_image(src: ImageLike, size: int | None = None, *, min_side: int = MIN_SIDE) -> torch.Tensor:
    """Load any picture as a float tensor (1,3,H,W) in [0,1].

    `src` is a file path, a PIL image, an array (H,W[,C]) or a tensor ((H,W), (3,H,W) or (1,3,H,W)), read by dtype
    (files by mode): uint8 0..255, uint16 0..65535, other integers 0..255, bool 0/1, floats in [0,1]. Files are turned
    upright (EXIF); grey, palette, CMYK and transparent pictures (composited on white) become RGB. `size` resizes the
    long side; a short side under `min_side` (VGG needs 32) is refused. Every failure is an `ImageLoadError` naming
    the file and the cause.
    """
    min_side = check_number("min_side", min_side, whole=True, low=1)
    if isinstance(src, (str, os.PathLike)):
        name, pixels = show(src), _decode(Path(src))
    elif isinstance(src, Image.Image):
        name, pixels = "PIL image", _pil_pixels(src, "PIL image")
    elif isinstance(src, (np.ndarray, torch.Tensor)):
        name, pixels = "array" if isinstance(src, np.ndarray) else "tensor", src
    else:
        raise ImageLoadError(f"cannot load an image from {type(src).__name__}; pass a path, PIL image, array or tensor")
    tensor = _to_batch(pixels, name)
    if not torch.isfinite(tensor).all():
        raise ImageLoadError(f"{name}: contains NaN or infinite values; pass pixel values in [0,1]")
    _check_side(tensor, name, min_side)  # a tiny picture has nothing to upscale
    if size is not None:
        size = check_number("size", size, whole=True, low=1)
        if size < min_side:
            raise ImageLoadError(f"{name}: size={size} is below the network's minimum side of {min_side} px")
        tensor = resize(tensor, size)
        _check_side(tensor, name, min_side)
    return tensor.clamp(0, 1)


def _check_side(tensor: torch.Tensor, name: str, min_side: int) -> None:
    h, w = tensor.shape[-2:]
    if min(h, w) < min_side:
        raise ImageLoadError(f"{name}: {w}x{h} is too small; the network needs at least {min_side} px on each side")


def to_pil(img: torch.Tensor) -> Image.Image:
    """(1,C,H,W) or (C,H,W) tensor in [0,1] -> 8-bit PIL image: RGB for C=3, grey ("L") for C=1."""
    if img.ndim == 4:
        img = img[0]
    arr = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy())


FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".gif": "GIF"}

def check_room(path: str | os.PathLike, width: int, height: int, frames: int = 1) -> None:
    """Refuse, before any work, `frames` pictures that the disk of `path` may not hold: 3 bytes a pixel, 1 in a GIF."""
    gif = FORMATS.get(Path(path).suffix.lower()) == "GIF"
    check_space(Path(path), width * height * frames * (1 if gif else 3),
                f"{frames} {width}x{height} pictures" if frames > 1 else f"a {width}x{height} picture")


def _writable(img: object, path: Path) -> Image.Image:
    """The PIL image to write for `img` (PIL, or a tensor (1,C,H,W) or (C,H,W) with C 3 or 1), refused where
    `load_image` would refuse it, or where it holds NaN (which would be written as black)."""
    where = show(path)
    try:
        if isinstance(img, Image.Image):
            if 0 in img.size:
                raise ImageLoadError(f"{where}: the picture is empty ({img.width}x{img.height})")
            _unit_range(_pil_pixels(img, where), where)
            return img
        if not (isinstance(img, torch.Tensor) and img.ndim in (3, 4) and img.shape[-3] in (1, 3)):
            raise OutputError(f"{where}: cannot save {type(img).__name__}; pass a tensor (1,3,H,W) or (3,H,W) in "
                              "[0,1], or a PIL image")
        check_source(img, where)
        if img.ndim == 4 and img.shape[0] > 1:
            raise OutputError(f"{where}: the tensor {tuple(img.shape)} holds {img.shape[0]} images; save them one at "
                              "a time (image[i] for each i)")
        pixels = _unit_range(img, where)
    except ImageLoadError as e:
        raise OutputError(f"{e}; nothing was written") from None
    if not np.isfinite(pixels).all():
        raise OutputError(f"{where}: the image contains NaN or infinite values; nothing was written (they would "
                          "be saved as black: find where they come from, or use torch.nan_to_num)")
    return to_pil(torch.from_numpy(pixels))


def save_image(image: torch.Tensor | Image.Image | StylizeResult, path: str | os.PathLike, *,
               inputs: Sequence[ImageLike] = (), overwrite: bool = True) -> Path:
    """Write a tensor (1,3,H,W) or (3,H,W) in [0,1] (one channel: saved grey), a PIL image or a `StylizeResult`
    atomically, in the format of the extension (.png, .jpg, .webp, ...); never over `inputs` (a result's own included)
    nor, unless `overwrite`, an existing file; any refusal is an `OutputError`. A PNG of a result keeps its status and
    network as the text chunks "nstlib:status" and "nstlib:network"."""
    inputs, text = as_list(inputs), PngImagePlugin.PngInfo()
    if isinstance(image, StylizeResult):
        if image.image.shape[0] > 1:
            n = image.image.shape[0]
            raise OutputError(f"{show(str(path))}: this result holds {n} images (a stylize_grid batch); save each "
                              f"one: save_image(result.image[i], ...) for i in range({n}) (result.settings[i] says "
                              "which weights made it)")
        text.add_text("nstlib:status", image.status)
        text.add_text("nstlib:network", image.network)
        image, inputs = image.image, [*image.inputs, *inputs]
    out = check_output_path(path, inputs, overwrite=overwrite, extensions=FORMATS)
    pil = _writable(image, out)
    check_room(out, *pil.size)
    fmt = FORMATS[out.suffix.lower()]
    return atomic_write(out, lambda f: pil.save(f, format=fmt, pnginfo=text), overwrite=overwrite)  # PNG reads text


def save_gif(frames: Sequence[torch.Tensor | Image.Image] | StylizeResult, path: str | os.PathLike, *,
             duration_ms: int = 80, inputs: Sequence[ImageLike] = (), overwrite: bool = True) -> Path:
    """Write frames (each (1,3,H,W) in [0,1] or PIL; or a `StylizeResult`'s, never over its inputs) as a looping
    animated GIF, atomically. One undithered palette, from the first, middle and last frames, keeps the file small and
    the colours steady."""
    inputs = as_list(inputs)
    if isinstance(frames, StylizeResult):
        frames, inputs = frames.frames, [*frames.inputs, *inputs]
    out = check_output_path(path, inputs, overwrite=overwrite, extensions={".gif"})
    duration_ms = check_number("duration_ms", duration_ms, whole=True, low=1)
    if isinstance(frames, (torch.Tensor, Image.Image)) or not isinstance(frames, Sequence) or not frames:
        raise OutputError(f"{show(out)}: no frames to write; pass a list of frames (stylize with frame_every=k "
                          "records some)")
    rgb = [_writable(frame, out).convert("RGB") for frame in frames]
    check_room(out, *rgb[0].size, frames=len(rgb))
    keys = [rgb[0], rgb[len(rgb) // 2], rgb[-1]]
    strip = Image.new("RGB", (sum(k.width for k in keys), max(k.height for k in keys)))
    for i, key in enumerate(keys):  # side by side
        strip.paste(key, (sum(k.width for k in keys[:i]), 0))
    palette = strip.quantize(256, method=Image.Quantize.MEDIANCUT)
    pils = [f.quantize(palette=palette, dither=Image.Dither.NONE) for f in rgb]
    return atomic_write(
        out,
        lambda f: pils[0].save(f, format="GIF", save_all=True, append_images=pils[1:], duration=duration_ms, loop=0),
        overwrite=overwrite,
    )


def source_name(src: ImageLike, fallback: str) -> str:
    """How a message names an input picture: its file, else `fallback` (e.g. "masks[1]")."""
    return show(src) if isinstance(src, (str, os.PathLike)) else fallback


def load_mask(src: ImageLike, shape: tuple[int, int], name: str = "mask") -> torch.Tensor:
    """A mask picture as (1,1,H,W) in [0,1] at the content's (H,W) `shape`, white where a style goes (Gatys et al.
    2017's spatial control). Colour is averaged to grey. Any resolution, but the content's aspect ratio: a stretched
    mask would put the styles in the wrong places."""
    if not (isinstance(shape, Sequence) and len(shape) == 2):
        raise ParameterError(f"shape={shape!r}: give the content's (height, width)")
    th, tw = (check_number("shape", side, whole=True, low=1) for side in shape)
    img = load_image(src, min_side=1).mean(dim=1, keepdim=True)
    h, w = img.shape[-2:]
    # The ratios agree within 2%, or within one pixel of rounding of any side (|w*th - h*tw| / w: the pixels by which
    # the content's height is off the one the mask's ratio gives it).
    if abs(w * th - h * tw) > max(0.02 * h * tw, h, w, th, tw):
        raise ParameterError(f"{source_name(src, name)}: the mask is {w}x{h} but the content is {tw}x{th}; give a "
                             "mask with the content's aspect ratio (e.g. drawn over the content image)")
    return resize(img, (th, tw))
