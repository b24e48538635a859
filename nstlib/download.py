"""Safe downloads: fetch to a temporary file, verify, then rename into place.

An interrupted or corrupted download never leaves a file that a later run would trust.
Used for the VGG19 weights, for optional extra images in the notebooks, and for the public-domain
paintings of `nstlib.data.PAINTINGS`: `painting(name)` downloads one once into a cache and loads it;
`style_image(name, fallback)` gives the painting online and a bundled style offline, with a caption.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

import nstlib
from nstlib.data import PAINTINGS, UPLOAD_ORIGIN, Painting, sample, sample_path
from nstlib.errors import DownloadError, ImageLoadError, NstlibError
from nstlib.files import commit, new_part, show
from nstlib.images import load_image

CHUNK = 1 << 20
#: Sent with every request: Wikimedia answers 403 to clients that do not say who they are (Python-urllib's
#: default), under its User-Agent policy.
USER_AGENT = (f"nstlib/{nstlib.__version__} (https://github.com/nstlib/nstlib) "
              f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}")
#: Folder for downloaded paintings; without it, ~/.cache/nstlib/paintings.
CACHE_ENV = "NSTLIB_CACHE"
#: Replaces the https://upload.wikimedia.org origin of the painting URLs (a mirror, or a local test server).
PAINTINGS_URL_ENV = "NSTLIB_PAINTINGS_URL"
#: Seconds `style_image` waits for the network (connecting, then each read) before using the fallback.
STYLE_IMAGE_TIMEOUT = 5.0


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    """Open `url` with our `USER_AGENT`; raises what `urllib.request.urlopen` raises."""
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout)


def download(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256_prefix: str | None = None,
    timeout: float = 30.0,
    progress: bool = True,
    verify: Callable[[Path], object] | None = None,
) -> Path:
    """Download `url` to `dest` atomically and return `dest`.

    The bytes go to `dest.part-<pid>-<random>` first (`nstlib.files.new_part`). The file is renamed
    to `dest` only when the transfer is complete (the length matches Content-Length when the server sends one) and,
    if `sha256_prefix` is given, the SHA-256 digest starts with it (torchvision's convention:
    ``vgg19-dcbb9e9d.pth``), and `verify(path)`, if given, accepts the file (it raises an
    `NstlibError` to reject it). Otherwise the partial file is deleted and `DownloadError` raised;
    a dropped connection, a timeout or Ctrl-C also delete it. A process killed outright (SIGKILL)
    cannot clean up: its partial file is removed by the next download to the same `dest`.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = new_part(dest)
    except OSError as e:
        raise DownloadError(f"{url}: cannot write in {dest.parent} ({e.strerror or e})") from None
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f, _open(url, timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                received = 0
                read = getattr(response, "read1", response.read)  # read1: whatever has arrived, for the bar
                while chunk := read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise DownloadError(f"{url}: connection closed after {received} of {total} bytes; try again")
        if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix):
            raise DownloadError(
                f"{url}: checksum mismatch (sha256 {digest.hexdigest()[:12]}..., expected {sha256_prefix}...)"
            )
        if verify is not None:
            try:
                verify(tmp)
            except NstlibError as e:
                raise DownloadError(f"{url}: the downloaded file did not verify ({e})") from None
        commit(tmp, dest, overwrite=True)
        return dest
    except DownloadError:
        raise
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: download failed ({reason})") from None
    finally:
        tmp.unlink(missing_ok=True)


def fetch_image(url: str, cache_dir: str | os.PathLike, fallback: str) -> Path:
    """Return a cached copy of the image at `url`, downloading it once.

    The download follows `download`'s rule (temporary file, checked to decode as a picture, then
    renamed), so the cache only ever holds complete images. When it fails (offline, a dead link, a
    cut connection, not a picture) it warns and returns the bundled sample named `fallback`
    instead, so a notebook always has a picture to work with.
    """
    dest = Path(cache_dir) / Path(url.split("?")[0]).name
    if dest.exists():
        return dest
    try:
        return download(url, dest, progress=False, verify=load_image)
    except DownloadError as e:
        warnings.warn(f"{e}; using the bundled sample '{fallback}' instead", stacklevel=2)
        return sample_path(fallback)


def painting_cache_dir() -> Path:
    """Where downloaded paintings are kept: $NSTLIB_CACHE if set, else ~/.cache/nstlib/paintings.

    Nothing is created here. Like the weights cache (`nstlib.weights`), a default inside a home folder
    that does not exist (HOME=/nonexistent) is refused rather than created from the file system's root.
    """
    home = Path(os.path.expanduser("~"))
    folder = Path(os.environ.get(CACHE_ENV) or home / ".cache" / "nstlib" / "paintings")
    if folder.is_relative_to(home) and not home.is_dir():
        raise DownloadError(f"the painting cache {show(folder)} would be inside the home folder {show(home)} "
                            f"(HOME), which does not exist; set {CACHE_ENV} to a writable folder")
    return folder


def _usable(folder: Path) -> None:
    """Create `folder` and check it is writable (by a probe file: permission bits say nothing to root)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DownloadError(f"cannot use the painting cache {show(folder)} ({e.strerror or e}); set {CACHE_ENV} "
                            "or cache_dir= to a writable folder") from None


def _entry(name: str) -> Painting:
    """The catalogue entry of `name`; `ImageLoadError` listing the choices if there is none."""
    if name not in PAINTINGS:
        raise ImageLoadError(f"unknown painting '{name}'; choose one of {', '.join(PAINTINGS)}")
    return PAINTINGS[name]


def painting_path(
    name: str, *, cache_dir: str | os.PathLike | None = None, progress: bool = True, timeout: float = 30.0
) -> Path:
    """The cached file of the painting `name` (one of `nstlib.data.PAINTINGS`), downloaded on first use.

    The file goes to `cache_dir` (default `painting_cache_dir()`) as ``<name>.jpg``, through `download`:
    it is kept only once complete and decoded as a picture, so an error page, a 404 or a cut connection
    leave nothing behind. Later calls read the cache without any network. A failed download raises a
    one-line `DownloadError` that names the painting and the bundled styles to use offline.
    """
    entry = _entry(name)
    folder = Path(cache_dir) if cache_dir is not None else painting_cache_dir()
    dest = folder / f"{name}{Path(entry.url).suffix}"
    if os.path.isfile(dest):  # only `download` writes it, and only a verified picture; False if unsearchable
        return dest
    _usable(folder)
    origin = os.environ.get(PAINTINGS_URL_ENV, "").rstrip("/") or UPLOAD_ORIGIN
    url = origin + entry.url.removeprefix(UPLOAD_ORIGIN)
    try:
        return download(url, dest, timeout=timeout, progress=progress, verify=load_image)
    except DownloadError as e:
        raise DownloadError(f"painting '{name}' ({entry.title}) could not be downloaded: {e}; offline, use a "
                            "bundled style instead, e.g. nstlib.sample('waves')") from None


def painting(
    name: str, size: int | None = None, *, cache_dir: str | os.PathLike | None = None, progress: bool = True
) -> torch.Tensor:
    """The painting `name` (one of `nstlib.data.PAINTINGS`) as (1,3,H,W) in [0,1], long side resized to
    `size` if given; downloaded once into the cache (`painting_path`), then read from it."""
    return load_image(painting_path(name, cache_dir=cache_dir, progress=progress), size)


def style_image(name: str, fallback: str, size: int | None = None) -> tuple[torch.Tensor, str]:
    """A style for the notebooks: the painting `name` if it can be had, else the bundled sample `fallback`.

    Returns the image, (1,3,H,W) in [0,1] with its long side resized to `size` if given, and a one-line
    caption saying which was used: the painting's `credit` ("The Starry Night, Vincent van Gogh, 1889,
    public domain (Wikimedia Commons)"), or "offline: bundled 'waves' instead of The Starry Night".
    A cached painting needs no network; otherwise one try, waiting at most `STYLE_IMAGE_TIMEOUT` seconds
    for each step (name resolution excepted: the system's resolver decides that wait). Both names are
    checked first, so a typo fails online and offline alike.
    """
    entry = _entry(name)
    sample_path(fallback)
    try:
        path = painting_path(name, progress=False, timeout=STYLE_IMAGE_TIMEOUT)
    except DownloadError:
        return sample(fallback, size), f"offline: bundled '{fallback}' instead of {entry.title}"
    return load_image(path, size), entry.credit
