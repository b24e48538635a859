"""Safe downloads (the VGG19 weights, the paintings, a learner's photo): fetch to a temporary file, verify, then rename
into place, so that an interrupted or corrupted download never leaves a file that a later run would trust."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import socket
import sys
import threading
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
USER_AGENT = (f"nstlib/{nstlib.__version__} (https://github.com/nstlib/nstlib) "
              f"Python-urllib/{sys.version_info.major}.{sys.version_info.minor}")


class _Deadline(urllib.request.HTTPSHandler, urllib.request.HTTPHandler):
    """urllib's HTTP(S) handlers (proxies and redirects included) with an overall deadline: after `seconds` every
    socket of the request is shut down, which ends a read that is blocked or fed a byte at a time (a server that drips
    never trips the per-read `timeout`)."""

    def __init__(self, seconds: float, timeout: float) -> None:
        super().__init__()
        self.timeout, self.sockets, self.expired = timeout, [], False
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def do_open(self, http_class: type[http.client.HTTPConnection], req: urllib.request.Request,
                **kwargs: object) -> http.client.HTTPResponse:
        def connection(host: str, **options: object) -> http.client.HTTPConnection:
            conn = http_class(host, **options)
            connect = conn.connect
            conn.connect = lambda: (connect(), self.watch(conn.sock))
            return conn

        return super().do_open(connection, req, **kwargs)

    def watch(self, sock: socket.socket) -> None:
        sock.settimeout(self.timeout)
        self.sockets.append(sock)
        if self.expired:  # opened just as the time ran out
            self.expire()

    def expire(self) -> None:
        self.expired = True
        for sock in self.sockets:
            with contextlib.suppress(OSError):  # already closed
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: an SSL socket's drops its state


def download(url: str, dest: str | os.PathLike, *, sha256_prefix: str | None = None, max_bytes: int = 2**30,
             timeout: float = 30.0, deadline: float = 3600.0, progress: bool = True,
             verify: Callable[[Path], object] | None = None) -> Path:
    """Download `url` to `dest` atomically and return `dest`.

    The file appears only once complete (Content-Length, if sent), its SHA-256 starting with `sha256_prefix` (if given:
    torchvision's ``vgg19-dcbb9e9d.pth`` convention) and accepted by `verify(path)` (if given: it raises an
    `NstlibError` to reject it). Anything else is a one-line `DownloadError` and nothing left behind: more than
    `max_bytes`, no answer within `timeout` seconds (to connect, then each read), no complete file within `deadline`
    seconds, a dropped connection, Ctrl-C.
    """
    dest = Path(dest)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = new_part(dest)
    except OSError as e:
        raise DownloadError(f"{url}: cannot write in {dest.parent} ({e.strerror or e})") from None
    digest, late = hashlib.sha256(), _Deadline(deadline, timeout)
    slow = f"{url}: no complete answer within {deadline:g} s (the server is too slow, or stalls); try again later"
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    late.timer.start()
    try:
        with os.fdopen(fd, "wb") as f, urllib.request.build_opener(late).open(
                request, timeout=min(timeout, deadline)) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            if total is not None and total > max_bytes:
                raise DownloadError(f"{url}: the server announces {total:,} bytes, more than the {max_bytes:,} "
                                    "expected; nothing was downloaded")
            with tqdm(total=total, unit="B", unit_scale=True, desc=dest.name, disable=not progress) as bar:
                received = 0
                read = getattr(response, "read1", response.read)  # read1: whatever has arrived, for the bar
                while chunk := read(CHUNK):
                    received += len(chunk)
                    if received > max_bytes:
                        raise DownloadError(f"{url}: the server sent more than the {max_bytes:,} bytes expected; "
                                            "stopped and deleted")
                    f.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if late.expired:  # the sockets were shut down: what arrived is cut short
            raise DownloadError(slow)
        if total is not None and received != total:
            raise DownloadError(f"{url}: connection closed after {received} of {total} bytes; try again")
        if sha256_prefix and not digest.hexdigest().startswith(sha256_prefix):
            raise DownloadError(f"{url}: checksum mismatch (sha256 {digest.hexdigest()[:12]}..., expected "
                                f"{sha256_prefix}...)")
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
        if late.expired:
            raise DownloadError(slow) from None
        reason = getattr(e, "reason", e)
        raise DownloadError(f"{url}: download failed ({reason})") from None
    finally:
        late.timer.cancel()
        tmp.unlink(missing_ok=True)
