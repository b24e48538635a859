"""Safe downloads: fetch to a temporary file, verify, then rename into place.

An interrupted or corrupted download never leaves a file that a later run would trust. Used for the VGG19 weights and
for the public-domain paintings of `nstlib.io.data`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tqdm.auto import tqdm

import nstlib
from nstlib.core.errors import DownloadError, NstlibError
from nstlib.io.files import commit, new_part

CHUNK = 1 << 20
#: Sent with every request: Wikimedia answers 403 to clients that do not say who they are (Python-urllib's
#: default), under its User-Agent policy.
USER_AGENT = (f"nstlib/{nstlib.__version__} ({nstlib.project_urls()['Repository']}) "
              f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}")


def _open(url: str, timeout: float) -> http.client.HTTPResponse:
    """Open `url` with our `USER_AGENT`; raises what `urllib.request.urlopen` raises."""
    return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout)


def _megabytes(n: int) -> str:
    return f"{n / 1e6:.3g} MB"


def download(url: str, dest: str | os.PathLike, *, sha256_prefix: str | None = None, timeout: float = 30.0,
             progress: bool = True, verify: Callable[[Path], object] | None = None,
             max_bytes: int | None = None) -> Path:
    """Download `url` to `dest` atomically and return `dest`.

    The bytes go to `dest.part-<pid>-<random>` first (`nstlib.io.files.new_part`). The file is renamed to `dest` only
    when the transfer is complete (the length matches Content-Length when the server sends one) and, if `sha256_prefix`
    is given, the SHA-256 digest starts with it (torchvision's convention: ``vgg19-dcbb9e9d.pth``), and `verify(path)`,
    if given, accepts the file (it raises an `NstlibError` to reject it). With `max_bytes`, a larger file is refused
    as soon as that is known: from its Content-Length, or once that many bytes have arrived (for an address someone
    typed in). `timeout` bounds the wait to connect and for each read. Otherwise the partial file is deleted and
    `DownloadError` raised; a dropped connection, a timeout or Ctrl-C also delete it. A process killed outright
    (SIGKILL) cannot clean up: its partial file is removed by the next download to the same `dest`.
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
            if max_bytes is not None and total is not None and total > max_bytes:
                raise DownloadError(f"{url}: {_megabytes(total)} is over the {_megabytes(max_bytes)} limit")
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                received = 0
                read = getattr(response, "read1", response.read)  # read1: whatever has arrived, for the bar
                while chunk := read(CHUNK):
                    f.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    if max_bytes is not None and received > max_bytes:
                        raise DownloadError(f"{url}: more than the {_megabytes(max_bytes)} limit")
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
