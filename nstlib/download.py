"""Safe downloads: fetch to a temporary file, verify, then rename into place.

An interrupted or corrupted download never leaves a file that a later run would trust.
Used for the VGG19 weights and by the notebooks for optional extra images.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

from nstlib.errors import DownloadError, NstlibError
from nstlib.files import commit, new_part

CHUNK = 1 << 20


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
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as response:
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
    from nstlib.data import sample_path
    from nstlib.images import load_image

    dest = Path(cache_dir) / Path(url.split("?")[0]).name
    if dest.exists():
        return dest
    try:
        return download(url, dest, progress=False, verify=load_image)
    except DownloadError as e:
        warnings.warn(f"{e}; using the bundled sample '{fallback}' instead", stacklevel=2)
        return sample_path(fallback)
