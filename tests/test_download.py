"""Downloads against a local HTTP server on 127.0.0.1 that misbehaves on purpose.

The rule: bytes go to a temporary file, are verified, then renamed. A cut connection, a bad
checksum, a file that is not a picture, a timeout, Ctrl-C or a killed process never leave a file
in the cache that a later run would trust.
"""

from __future__ import annotations

import hashlib
import http.server
import io
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

import nstlib.io.download
from nstlib.core.errors import DownloadError, WeightsError
from nstlib.io.download import download
from nstlib.io.images import load_image
from nstlib.io.weights import hub_file, load_weights

_buf = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(_buf, format="PNG")
PICTURE = _buf.getvalue()
SHA = hashlib.sha256(PICTURE).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """/full.png: the picture. /cut.png: announces it all, sends half, then drops the connection.
    /nolength.png: half the picture without a Content-Length. /page.png: an HTML page with status 200.
    /stall.png: half the picture, then silence."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        name = self.path.split("?")[0].strip("/")
        self.send_response(200)
        if name == "page.png":
            body = b"<html>Sorry, this page moved</html>"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if name != "nolength.png":
            self.send_header("Content-Length", str(len(PICTURE)))
        self.end_headers()
        if name == "full.png":
            self.wfile.write(PICTURE)
            return
        self.wfile.write(PICTURE[: len(PICTURE) // 2])
        self.wfile.flush()
        if name == "stall.png":
            time.sleep(5)
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: what 'offline' looks like."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/full.png"


def test_complete_download_is_verified_and_renamed(server, tmp_path) -> None:
    dest = download(f"{server}/full.png", tmp_path / "a.png", sha256_prefix=SHA[:8], progress=False)
    assert dest.read_bytes() == PICTURE and [p.name for p in tmp_path.iterdir()] == ["a.png"]


@pytest.mark.parametrize(
    ("path", "kwargs", "cause"),
    [
        ("cut.png", {}, "connection closed after"),  # the connection drops halfway
        ("nolength.png", {"sha256_prefix": SHA[:8]}, "checksum mismatch"),  # short, and no length to notice it by
        ("full.png", {"sha256_prefix": "00000000"}, "checksum mismatch"),
        ("page.png", {"verify": load_image}, "did not verify"),
        ("stall.png", {"timeout": 0.5}, "timed out"),
        ("full.png", {"max_bytes": 100}, "over the 0.0001 MB limit"),  # refused from its Content-Length
        ("nolength.png", {"max_bytes": 100}, "more than the 0.0001 MB limit"),  # refused as the bytes arrive
    ],
)
def test_failed_download_leaves_nothing(server, tmp_path, path: str, kwargs: dict, cause: str) -> None:
    with pytest.raises(DownloadError, match=cause):
        download(f"{server}/{path}", tmp_path / "cache" / "a.png", progress=False, **kwargs)
    assert list((tmp_path / "cache").iterdir()) == []


def test_ctrl_c_during_a_download_leaves_nothing(server, tmp_path, monkeypatch) -> None:
    class CtrlC:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def update(self, n: int) -> None:
            raise KeyboardInterrupt

    monkeypatch.setattr(nstlib.io.download, "tqdm", CtrlC)
    with pytest.raises(KeyboardInterrupt):
        download(f"{server}/full.png", tmp_path / "a.png")
    assert list(tmp_path.iterdir()) == []


def test_a_killed_download_is_not_trusted_later(server, tmp_path) -> None:
    """SIGKILL skips all clean-up: the partial file stays, but under a name no run trusts."""
    dest = tmp_path / "a.png"
    code = f"from nstlib.io.download import download; download({server + '/stall.png'!r}, {str(dest)!r})"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", code], env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not any(tmp_path.iterdir()):  # the partial file is open: the transfer has started
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not dest.exists() and [p.name.startswith("a.png.part-") for p in tmp_path.iterdir()] == [True]
    live = tmp_path / f"a.png.part-{os.getppid()}"  # a download still running in another process
    live.write_bytes(b"in progress")
    assert download(f"{server}/full.png", dest, progress=False).read_bytes() == PICTURE
    assert sorted(tmp_path.iterdir()) == [dest, live]  # the killed one's partial file is cleaned up


def test_interrupted_weights_download_leaves_the_hub_cache_empty(server, monkeypatch) -> None:
    monkeypatch.setattr("nstlib.io.weights.IMAGENET", SimpleNamespace(url=f"{server}/cut.png"))
    with pytest.raises(WeightsError, match="weights='random'"):
        load_weights("vgg19-imagenet")
    assert not hub_file().exists() and list(hub_file().parent.iterdir()) == []
