"""The pictures the course works with, by name (data/SOURCES.md says where each one comes from): the bundled `SAMPLES`
(`sample`), and public-domain `PAINTINGS` on Wikimedia Commons, downloaded on first use and cached (`painting`, or
`style_image`, which falls back to a bundled style offline, and says so).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import torch

from nstlib.core.errors import DownloadError, ImageLoadError, ParameterError
from nstlib.core.settings import check_number
from nstlib.io.download import download
from nstlib.io.files import usable_cache
from nstlib.io.images import load_image

CONTENT_SAMPLES = ("astronaut", "chelsea", "coffee", "grace_hopper", "rocket")
STYLE_SAMPLES = ("stained_glass", "waves", "hubble_deep_field", "immunohistochemistry", "brick", "gravel")
MASK_SAMPLES = ("astronaut_mask",)  # grey PNG masks for spatial control
SAMPLES = CONTENT_SAMPLES + STYLE_SAMPLES + MASK_SAMPLES

#: Where Wikimedia Commons serves its files; `PAINTINGS_URL_ENV` swaps it for a mirror or a local test server.
UPLOAD_ORIGIN = "https://upload.wikimedia.org"
#: Width of the thumbnails we fetch: Commons renders only standard widths; 960 px is about 150-400 kB a painting.
THUMB_WIDTH = 960


def sample_path(name: str) -> Path:
    """The file of the bundled sample `name` (one of `SAMPLES`)."""
    if not isinstance(name, str) or name not in SAMPLES:
        raise ImageLoadError(f"unknown sample '{name}'; choose one of {', '.join(SAMPLES)}")
    suffix = ".png" if name in MASK_SAMPLES else ".jpg"
    return Path(str(resources.files("nstlib.samples") / f"{name}{suffix}"))


def sample(name: str, size: int | None = None) -> torch.Tensor:
    """Load the bundled sample `name` as (1,3,H,W) in [0,1], long side resized to `size` if given."""
    return load_image(sample_path(name), size)


@dataclass(frozen=True)
class Painting:
    """A public-domain painting on Wikimedia Commons: `url` a JPEG thumbnail `THUMB_WIDTH` px wide, `source` the file's
    page (author, date, why it is in the public domain)."""

    name: str
    title: str
    artist: str
    year: str
    url: str
    source: str
    licence: str = "public domain"

    @property
    def credit(self) -> str:
        """One line for a caption: title, artist, year, licence and where the file comes from."""
        return f"{self.title}, {self.artist}, {self.year}, {self.licence} (Wikimedia Commons)"


def _on_commons(name: str, title: str, artist: str, year: str, folder: str, file: str) -> Painting:
    """A `Painting` for the Commons file `file` under `folder`, Commons' hash path "a/ab" (from the MD5 of `file`)."""
    quoted = quote(file)
    return Painting(
        name, title, artist, year,
        url=f"{UPLOAD_ORIGIN}/wikipedia/commons/thumb/{folder}/{quoted}/{THUMB_WIDTH}px-{quoted}",
        source=f"https://commons.wikimedia.org/wiki/File:{file}",
    )


#: The paintings `painting` can fetch, by short name.
PAINTINGS = {p.name: p for p in (
    _on_commons("starry_night", "The Starry Night", "Vincent van Gogh", "1889",
                "e/ea", "Van_Gogh_-_Starry_Night_-_Google_Art_Project.jpg"),
    _on_commons("great_wave", "The Great Wave off Kanagawa", "Katsushika Hokusai", "c. 1831",
                "0/0a", "The_Great_Wave_off_Kanagawa.jpg"),
    _on_commons("scream", "The Scream", "Edvard Munch", "1893", "c/c5",
                "Edvard_Munch,_1893,_The_Scream,_oil,_tempera_and_pastel_on_cardboard,_91_x_73_cm,"
                "_National_Gallery_of_Norway.jpg"),
    _on_commons("composition_vii", "Composition VII", "Wassily Kandinsky", "1913",
                "b/b4", "Vassily_Kandinsky,_1913_-_Composition_7.jpg"),
    _on_commons("fighting_temeraire", "The Fighting Temeraire", "J. M. W. Turner", "1839",
                "3/30", "The_Fighting_Temeraire,_JMW_Turner,_National_Gallery.jpg"),
)}


#: Folder for downloaded paintings; without it, ~/.cache/nstlib/paintings.
CACHE_ENV = "NSTLIB_CACHE"
PAINTINGS_URL_ENV = "NSTLIB_PAINTINGS_URL"
#: Seconds `style_image` waits for the network, all in all, before using the fallback.
STYLE_IMAGE_TIMEOUT = 5.0
#: The most a painting's download may bring: Commons' thumbnails are 150-400 kB.
PAINTING_MAX_BYTES = 16 * 2**20


def _entry(name: str) -> Painting:
    """The catalogue entry of `name`; `ImageLoadError` listing the choices if there is none."""
    if not isinstance(name, str) or name not in PAINTINGS:
        raise ImageLoadError(f"unknown painting '{name}'; choose one of {', '.join(PAINTINGS)}")
    return PAINTINGS[name]


def painting_path(name: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True,
                  timeout: float = 30.0, deadline: float = 300.0) -> Path:
    """The cached file of the painting `name` (one of `PAINTINGS`), downloaded into `cache_dir` on first use and kept
    only if it decodes as a picture (a cached file that no longer decodes is downloaded again). A failure is a one-line
    `DownloadError` that names a bundled style to use offline."""
    entry = _entry(name)
    if cache_dir is not None and not isinstance(cache_dir, (str, os.PathLike)):
        raise ParameterError(f"cache_dir={cache_dir!r}: give a folder (a str or a Path), or None for the default")
    timeout, deadline = check_number("timeout", timeout, above=0), check_number("deadline", deadline, above=0)
    folder = Path(cache_dir or os.environ.get(CACHE_ENV) or Path(os.path.expanduser("~")) / ".cache/nstlib/paintings")
    dest = folder / f"{name}{Path(entry.url).suffix}"
    if os.path.isfile(dest):  # False also if unsearchable
        with contextlib.suppress(ImageLoadError):
            load_image(dest)
            return dest
    usable_cache(folder, "the painting cache", f"set {CACHE_ENV} or cache_dir= to a writable folder", DownloadError)
    origin = os.environ.get(PAINTINGS_URL_ENV, "").rstrip("/") or UPLOAD_ORIGIN
    url = origin + entry.url.removeprefix(UPLOAD_ORIGIN)
    try:
        return download(url, dest, max_bytes=PAINTING_MAX_BYTES, timeout=timeout, deadline=deadline,
                        progress=progress, verify=load_image)
    except DownloadError as e:
        raise DownloadError(f"painting '{name}' ({entry.title}) could not be downloaded: {e}; offline, use a "
                            "bundled style instead, e.g. nstlib.sample('waves')") from None


def painting(name: str, size: int | None = None, *, cache_dir: str | os.PathLike | None = None,
             progress: bool = True) -> torch.Tensor:
    """The painting `name` (one of `PAINTINGS`) as (1,3,H,W) in [0,1], long side `size` if given (`painting_path`)."""
    return load_image(painting_path(name, cache_dir=cache_dir, progress=progress), size)


def style_image(name: str, fallback: str, size: int | None = None) -> tuple[torch.Tensor, str]:
    """The painting `name` as (1,3,H,W) in [0,1] (long side `size`) with its `credit`, or offline (no answer within
    `STYLE_IMAGE_TIMEOUT` seconds) the bundled sample `fallback` with "offline: bundled 'waves' instead of The Starry
    Night". Both names are checked first, so a typo fails online and offline alike."""
    entry = _entry(name)
    sample_path(fallback)
    try:
        path = painting_path(name, progress=False, timeout=STYLE_IMAGE_TIMEOUT, deadline=STYLE_IMAGE_TIMEOUT)
    except DownloadError:
        return sample(fallback, size), f"offline: bundled '{fallback}' instead of {entry.title}"
    return load_image(path, size), entry.credit
