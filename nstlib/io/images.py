"""Images in and out: every picture in nstlib is a float tensor of shape (1,3,H,W) with values in [0,1].

`load_image` accepts a path, a PIL image, a NumPy array or a tensor and always returns that shape (`load_mask`: a grey
(1,1,H,W) mask). `save_image` and `save_gif` write atomically (a temporary file, then a rename), so a crash or a full
disk never leaves a half-written picture behind, and they refuse to overwrite an input.
"""

from __future__ import annotations

import os
import reprlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

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

#: Largest image we decode, in pixels (width x height). Anything larger is treated as a
#: decompression bomb: a small file that would expand to gigabytes in memory.
MAX_PIXELS = 64_000_000


def _pixels(img: Image.Image, name: str) -> np.ndarray:
    """A PIL image's pixels as an array that `_unit_range` reads by its dtype, so that a file's values mean what
    its mode says, whatever their range: 16-bit modes ("I;16", ...) as uint16; 32-bit integers ("I": Pillow's mode for
    16-bit PGM files and, before Pillow 10, 16-bit grey PNGs) as uint16 too, refused beyond 0..65535; floats ("F") as
    float32, which must lie in [0,1] as for arrays; everything else as 8-bit RGB, or RGBA when it has transparency
    (composited on white later)."""
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
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))


#: Pillow reads a 16-bit colour PNG (these raw modes) keeping only the high byte of each sample. The raw mode
#: that decodes the same file's low bytes instead; grey+alpha (Pillow mode RGBA) has none, but "RGBA" reads its
#: four raw bytes per pixel: grey and alpha, big-endian.
_PNG16_LOW_BYTES = {"RGB;16B": "RGB;16L", "RGBA;16B": "RGBA;16L", "LA;16B": "RGBA"}


def _decode_as(file: BinaryIO, rawmode: str) -> np.ndarray:
    """The PNG in `file` decoded with the raw mode `rawmode`, upright (EXIF orientation applied)."""
    file.seek(0)
    with Image.open(file) as img:
        img.tile = [(*tile[:3], rawmode) for tile in img.tile]
        return np.asarray(ImageOps.exif_transpose(img))


def _png16(file: BinaryIO, rawmode: str) -> np.ndarray:
    """A 16-bit colour PNG's exact values, (H,W,3) or (H,W,4) uint16, upright: high and low bytes joined."""
    if rawmode == "LA;16B":
        raw = _decode_as(file, "RGBA").astype(np.uint16)
        grey, alpha = raw[..., 0] << 8 | raw[..., 1], raw[..., 2] << 8 | raw[..., 3]
        return np.stack([grey, grey, grey, alpha], axis=-1)
    return _decode_as(file, rawmode).astype(np.uint16) << 8 | _decode_as(file, _PNG16_LOW_BYTES[rawmode])


def _decode(path: Path) -> np.ndarray:
    """Open and fully decode a file to an array (`_pixels`), translating every failure into ImageLoadError.

    Only regular files are opened (`check_input_file`: a FIFO would block forever). Pillow raises many exception types
    for damaged files (OSError, SyntaxError, struct.error, IndexError, ...), so anything it raises while decoding counts
    as a corrupt file.
    """
    name = show(path)
    with open_input(check_input_file(path)) as file:
        try:
            return _decode_open(file, name)
        except ImageLoadError:
            raise
        except UnidentifiedImageError:
            raise ImageLoadError(f"{name}: not an image Pillow can read (is it really a picture?)") from None
        except Image.DecompressionBombError as e:
            raise ImageLoadError(f"{name}: decompression bomb refused ({e})") from None
        except Exception as e:  # noqa: BLE001 - see the docstring
            raise ImageLoadError(f"{name}: truncated or corrupt image ({type(e).__name__}: {e})") from None


def _decode_open(file: BinaryIO, name: str) -> np.ndarray:
    with Image.open(file) as img:
        if img.width * img.height > MAX_PIXELS:
            raise ImageLoadError(
                f"{name}: {img.width}x{img.height} is over the {MAX_PIXELS:,}-pixel limit "
                "(decompression bomb guard); shrink the image first"
            )
        img.seek(0)  # first frame of an animation
        rawmode = img.tile[0][3] if img.format == "PNG" and img.tile else None
        if rawmode in _PNG16_LOW_BYTES:
            return _png16(file, rawmode)
        img = ImageOps.exif_transpose(img)
        img.load()
        return _pixels(img, name)


#: Float pixels may overshoot [0,1] by this much (rounding noise) before they count as out of range.
FLOAT_TOLERANCE = 1e-3


def as_list(items: ImageLike | Sequence[ImageLike] | None) -> list[ImageLike]:
    """One picture (a style, a mask, an input), a sequence of them, or None -> a list."""
    if items is None:
        return []
    if isinstance(items, (str, torch.Tensor, Image.Image)) or not isinstance(items, Sequence):
        return [items]
    return list(items)


def _unit_range(arr: np.ndarray, name: str) -> np.ndarray:
    """Pixel values -> float32 in [0,1], by dtype: uint8 /255, uint16 /65535, other integers must hold 8-bit values
    0..255 (/255), bool is 0/1, floats must already lie in [0,1] (NaN is left to the caller)."""
    if arr.dtype == bool:
        return arr.astype(np.float32)
    if arr.dtype == np.uint16:
        return arr.astype(np.float32) / 65535.0
    if np.issubdtype(arr.dtype, np.integer):
        low, high = int(arr.min(initial=0)), int(arr.max(initial=0))
        if low < 0 or high > 255:
            raise ImageLoadError(f"{name}: {arr.dtype} values span {low}..{high}, not 8-bit 0..255; pass uint8, "
                                 "uint16 or floats in [0,1]")
        return arr.astype(np.float32) / 255.0
    if not np.issubdtype(arr.dtype, np.floating):
        raise ImageLoadError(f"{name}: unsupported dtype {arr.dtype}; use uint8, uint16 or floats in [0,1]")
    arr = arr.astype(np.float32)
    if np.isfinite(arr).all():
        low, high = float(arr.min(initial=0)), float(arr.max(initial=0))
        if low < -FLOAT_TOLERANCE or high > 1 + FLOAT_TOLERANCE:
            raise ImageLoadError(f"{name}: float values span {low:g}..{high:g}, not [0,1]; divide 0-255 data by "
                                 "255 (or pass it as uint8)")
    return arr


def _array_to_tensor(arr: np.ndarray, name: str) -> torch.Tensor:
    """(H,W), (H,W,1), (H,W,3) or (H,W,4) array of any supported dtype (`_unit_range`) -> (1,3,H,W) in [0,1]."""
    arr = _unit_range(arr, name)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 3, 4):
        raise ImageLoadError(f"{name}: array shape {arr.shape} is not (H,W), (H,W,3) or (H,W,4)")
    if arr.shape[-1] == 4:
        alpha = arr[..., 3:]
        arr = arr[..., :3] * alpha + (1 - alpha)
    if arr.shape[-1] == 1:
        arr = np.repeat(arr, 3, axis=-1)
    return torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None].contiguous()


def _tensor_to_batch(t: torch.Tensor, name: str) -> torch.Tensor:
    """(H,W), (3,H,W) or (1,3,H,W) tensor of any supported dtype (`_unit_range`) -> (1,3,H,W) float."""
    t = t.detach().cpu()
    if t.dtype in (torch.float16, torch.bfloat16):
        t = t.float()
    t = torch.from_numpy(_unit_range(t.numpy(), name))
    if t.ndim == 2:
        t = t[None]
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] not in (1, 3):
        raise ImageLoadError(f"{name}: tensor shape {tuple(t.shape)} is not (H,W), (3,H,W) or (1,3,H,W)")
    return t.expand(1, 3, *t.shape[2:]).clone()


def check_source(src: ImageLike, name: str) -> None:
    """Refuse an array or tensor with no pixels to read, before anything looks at its shape: an empty one, a meta tensor
    (a shape without data) or a sparse one. `load_image` checks everything else."""
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

    Args:
        src: a file path (a regular file), a PIL image, an ndarray (H,W[,C]) or a tensor ((H,W),
            (3,H,W) or (1,3,H,W)). Array and tensor values are read by dtype: uint8 0..255, uint16
            0..65535, other integers 0..255, bool 0/1, floats in [0,1] (0-255 floats are refused).
        size: if given, resize so that the long side is `size` pixels (aspect ratio kept).
        min_side: reject images whose short side is below this, before or after resizing; VGG19 needs 32.

    Files get their EXIF orientation applied; grayscale, palette, CMYK, 16-bit and images with transparency (composited
    on white) all become RGB. File pixels are read by the file's mode like arrays by their dtype (`_pixels`): 16-bit
    files keep their full precision whatever their values, and a float file (TIFF mode "F") must hold values in [0,1].

    Raises:
        ImageLoadError: naming the file and the cause (missing, not a regular file, not an image,
            truncated or corrupt, over `MAX_PIXELS`, smaller than `min_side`, values out of range).
    """
    min_side = check_number("min_side", min_side, whole=True, low=1)
    if isinstance(src, (str, os.PathLike)):
        name = show(src)
        tensor = _array_to_tensor(_decode(Path(src)), name)
    elif isinstance(src, Image.Image):
        name = "PIL image"
        tensor = _array_to_tensor(_pil_pixels(src), name)
    elif isinstance(src, np.ndarray):
        name = "array"
        tensor = _array_to_tensor(src, name)
    elif isinstance(src, torch.Tensor):
        name = "tensor"
        tensor = _tensor_to_batch(src, name)
    else:
        raise ImageLoadError(f"cannot load an image from {type(src).__name__}; pass a path, PIL image, array or tensor")
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


def _pil_pixels(img: Image.Image) -> np.ndarray:
    """A PIL image's pixels (`_pixels`); a closed or (lazily) truncated image is `ImageLoadError`."""
    try:
        return _pixels(ImageOps.exif_transpose(img), "PIL image")
    except ImageLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - Pillow raises many types (ValueError when closed, OSError truncated)
        raise ImageLoadError(f"PIL image: cannot read its pixels ({type(e).__name__}: {e}); is it closed or "
                             "truncated? Load it from the file again") from None


def _check_side(tensor: torch.Tensor, name: str, min_side: int) -> None:
    h, w = tensor.shape[-2:]
    if min(h, w) < min_side:
        raise ImageLoadError(
            f"{name}: {w}x{h} is too small; the network needs at least {min_side} px on each side"
        )


def to_pil(img: torch.Tensor) -> Image.Image:
    """(1,C,H,W) or (C,H,W) tensor in [0,1] -> 8-bit PIL image: RGB for C=3, grey ("L") for C=1."""
    if img.ndim == 4:
        img = img[0]
    arr = (img.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    return Image.fromarray(arr[0].numpy() if arr.shape[0] == 1 else arr.permute(1, 2, 0).numpy())


#: Output formats by extension.
FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
           ".tiff": "TIFF", ".gif": "GIF"}

#: The longest side a WebP file can hold (its width and height fields have 14 bits).
WEBP_MAX_SIDE = 16383


def check_fits(path: str | os.PathLike, width: int, height: int) -> None:
    """Refuse, before any work, a width x height picture that the format of `path` (by extension) cannot hold: WebP
    stops at 16383 px a side, and Pillow would find out only while encoding, after the whole run."""
    if FORMATS.get(Path(path).suffix.lower()) == "WEBP" and max(width, height) > WEBP_MAX_SIDE:
        raise OutputError(f"{show(path)}: {width}x{height} is over WebP's limit of {WEBP_MAX_SIDE}x{WEBP_MAX_SIDE} "
                          "pixels; save it as .png instead (or choose a smaller size)")


def check_room(path: str | os.PathLike, width: int, height: int, frames: int = 1) -> None:
    """Refuse, before any work, a width x height picture (`frames` of them: a GIF) that the disk of `path` may not hold
    (`check_space`): up to 3 bytes a pixel, 1 in a GIF (a palette), so the threshold grows with the picture."""
    gif = FORMATS.get(Path(path).suffix.lower()) == "GIF"
    check_space(Path(path), width * height * frames * (1 if gif else 3),
                f"{frames} {width}x{height} pictures" if frames > 1 else f"a {width}x{height} picture")


def _writable(img: object, path: object) -> Image.Image:
    """The PIL image to write for `img`, which must be one picture that `load_image` would take, read by the same rules
    (`_unit_range`: uint8 /255, floats in [0,1], ...): not a meta, sparse or empty tensor (`check_source`), nor a closed
    or truncated PIL image; a tensor (1,C,H,W) or (C,H,W) with C 3 or 1 (grey), not a batch of several, without NaN or
    infinite values (they would be written as black)."""
    where = show(str(path))
    try:
        if isinstance(img, Image.Image):
            if 0 in img.size:
                raise ImageLoadError(f"{where}: the picture is empty ({img.width}x{img.height})")
            _unit_range(_pil_pixels(img), where)
            return img
        if not (isinstance(img, torch.Tensor) and img.ndim in (3, 4) and img.shape[-3] in (1, 3)):
            raise OutputError(f"{where}: cannot save {type(img).__name__}; pass a tensor (1,3,H,W) or (3,H,W) in "
                              "[0,1], or a PIL image")
        check_source(img, where)
        if img.ndim == 4 and img.shape[0] > 1:
            raise OutputError(f"{where}: the tensor {tuple(img.shape)} holds {img.shape[0]} images; save them one at "
                              "a time (image[i] for each i)")
        t = img.detach().cpu()
        pixels = _unit_range((t.float() if t.dtype in (torch.float16, torch.bfloat16) else t).numpy(), where)
    except ImageLoadError as e:
        raise OutputError(f"{e}; nothing was written") from None
    if not np.isfinite(pixels).all():
        raise OutputError(f"{where}: the image contains NaN or infinite values; nothing was written (they would "
                          "be saved as black: find where they come from, or use torch.nan_to_num)")
    return to_pil(torch.from_numpy(pixels))


def _check_text(text: object) -> None:
    """PNG text chunks: a mapping of strings to strings, else `ParameterError` naming the first bad entry."""
    if text is None:
        return
    if not isinstance(text, Mapping):
        raise ParameterError(f"text={reprlib.repr(text)}: give a dict of strings, e.g. {{'author': 'me'}}")
    for key, value in text.items():
        if not (isinstance(key, str) and isinstance(value, str)):
            raise ParameterError(f"text={{{reprlib.repr(key)}: {reprlib.repr(value)}, ...}}: PNG text chunks are "
                                 "strings; pass str(value)")


def save_image(image: torch.Tensor | Image.Image | StylizeResult, path: str | os.PathLike, *,
               inputs: Sequence[ImageLike] = (), overwrite: bool = True, text: Mapping[str, str] | None = None) -> Path:
    """Write a picture atomically; the format follows the extension (.png, .jpg, .webp, ...).

    Args:
        image: a tensor (1,3,H,W) or (3,H,W) in [0,1] ((1,1,H,W) or (1,H,W): saved grey), a PIL image, or a
            `StylizeResult`: its image, never over the files it was made from, and in a PNG its status and network
            as the text chunks "nstlib:status" and "nstlib:network".
        path: where to write; a .webp side is at most 16383 px (`check_fits`).
        inputs: the picture, or pictures, this one was made from; writing over any of them is refused.
        overwrite: if False, an existing file at `path` is an error.
        text: more PNG text chunks, e.g. {"author": "me"} (read back with `Image.open(path).text`).

    Raises:
        OutputError: the path cannot be written (`check_output_path`), the picture does not fit the format, or
            it is not one picture that `load_image` would take (`_writable`: a batch, empty, meta, NaN, 0-255 floats).
        ParameterError: `text` is not a dict of strings.
    """
    inputs = as_list(inputs)
    if isinstance(image, StylizeResult):
        if image.image.shape[0] > 1:
            n = image.image.shape[0]
            raise OutputError(f"{show(str(path))}: this result holds {n} images (a stylize_grid batch); save each "
                              f"one: save_image(result.image[i], ...) for i in range({n}) (result.settings[i] says "
                              "which weights made it)")
        _check_text(text)
        text = {"nstlib:status": image.status, "nstlib:network": image.network, **(text or {})}
        image, inputs = image.image, [*image.inputs, *inputs]
    out = check_output_path(path, inputs, overwrite=overwrite, extensions=FORMATS)
    pil = _writable(image, out)
    _check_text(text)
    check_fits(out, *pil.size)
    check_room(out, *pil.size)
    fmt = FORMATS[out.suffix.lower()]
    extra = {}
    if text and fmt == "PNG":
        extra["pnginfo"] = PngImagePlugin.PngInfo()
        for key, value in text.items():
            extra["pnginfo"].add_text(key, value)
    return atomic_write(out, lambda f: pil.save(f, format=fmt, **extra), overwrite=overwrite)


def save_gif(frames: Sequence[torch.Tensor | Image.Image] | StylizeResult, path: str | os.PathLike, *,
             duration_ms: int = 80, inputs: Sequence[ImageLike] = (), overwrite: bool = True) -> Path:
    """Write frames (each (1,3,H,W) in [0,1] or PIL; or a `StylizeResult`'s, never over its inputs) as a looping
    animated GIF, atomically.

    All frames share one 256-colour palette, taken from the first, middle and last frames, and are not dithered:
    dithering noise defeats the GIF's compression and one palette keeps the colours steady, so the file is smaller and
    flickers less than with a palette per frame.
    """
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
    left = 0
    for key in keys:  # side by side
        strip.paste(key, (left, 0))
        left += key.width
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


def same_aspect(mask: tuple[int, int], content: tuple[int, int]) -> bool:
    """Whether a mask of (H,W) `mask` fits a content of (H,W) `content`: their aspect ratios agree within 2% (a mask
    drawn at another resolution), or within one pixel of rounding of a side of either."""
    (h, w), (th, tw) = mask, content
    # |w*th - h*tw| over h*tw is the ratios' relative difference; over w, how many pixels the content's height is
    # off the height the mask's ratio gives it (over h, th, tw: the content's width, the mask's width, height).
    return abs(w * th - h * tw) <= max(0.02 * h * tw, h, w, th, tw)


def load_mask(src: ImageLike, shape: tuple[int, int], name: str = "mask") -> torch.Tensor:
    """A mask picture (path, PIL, array or tensor) as (1,1,H,W) in [0,1] at the content's (H,W) `shape`: white where a
    style goes (Gatys et al. 2017's spatial control; `nstlib.Targets.build`).

    Colour masks are turned grey by averaging the channels. A mask may have any resolution, but its aspect ratio must be
    the content's (`same_aspect`): a stretched mask would put the styles in the wrong places.
    """
    if not (isinstance(shape, Sequence) and len(shape) == 2):
        raise ParameterError(f"shape={shape!r}: give the content's (height, width)")
    th, tw = (check_number("shape", side, whole=True, low=1) for side in shape)
    img = load_image(src, min_side=1).mean(dim=1, keepdim=True)
    h, w = img.shape[-2:]
    if not same_aspect((h, w), (th, tw)):
        raise ParameterError(f"{source_name(src, name)}: the mask is {w}x{h} but the content is {tw}x{th}; give a "
                             "mask with the content's aspect ratio (e.g. drawn over the content image)")
    return resize(img, (th, tw))
