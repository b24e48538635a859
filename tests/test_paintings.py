"""Paintings fetched on demand, served here by a local HTTP server on 127.0.0.1 (the tests never go online).

NSTLIB_PAINTINGS_URL points the catalogue's URLs at the server, or at a closed port for "offline";
NSTLIB_CACHE points the cache into tmp_path, so the real home folder is never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest
import torch
from common import drip
from PIL import Image

import nstlib.io.data
from nstlib.core.errors import DownloadError, ImageLoadError
from nstlib.io.data import PAINTINGS, UPLOAD_ORIGIN, painting, painting_path, sample, style_image

_buf = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)).save(_buf, format="JPEG")
JPEG = _buf.getvalue()
#: Commons' standard thumbnail widths: it refuses to render any other.
STANDARD_WIDTHS = (20, 40, 60, 120, 250, 330, 500, 960, 1280, 1920, 3840)


@dataclass
class Server:
    """What the server answers (`mode`) and what it was asked (`paths`, `agents`)."""

    origin: str
    mode: str = "jpeg"
    paths: list[str] = field(default_factory=list)
    agents: list[str] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)


def _handler(state: Server) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        """jpeg: the picture. html: an error page with status 200. 404: not found. cut: announces the
        picture, sends half and drops the connection. stall: says nothing until the test ends. drip: a byte every
        0.05 s for 4 s, then the rest (complete, but late). huge: announces 10 GiB."""

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            state.paths.append(self.path)
            state.agents.append(self.headers.get("User-Agent", ""))
            if state.mode == "stall":
                state.release.wait(10)
                return
            if state.mode == "404":
                self.send_error(404)
                return
            body = b"<html>Too many requests, try later</html>" if state.mode == "html" else JPEG
            self.send_response(200)
            self.send_header("Content-Type", "text/html" if state.mode == "html" else "image/jpeg")
            self.send_header("Content-Length", str(10 * 2**30 if state.mode == "huge" else len(body)))
            self.end_headers()
            if state.mode == "drip":
                with contextlib.suppress(OSError):  # the client gave up, as it should
                    drip(self.wfile, body)
                return
            if state.mode == "cut":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


def _closed_port() -> str:
    """An origin on 127.0.0.1 where nothing listens: what 'offline' looks like."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture(autouse=True)
def offline(tmp_path, monkeypatch) -> None:
    """Every test starts offline, with its cache in tmp_path."""
    monkeypatch.setenv("NSTLIB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("NSTLIB_PAINTINGS_URL", _closed_port())


@pytest.fixture
def server(monkeypatch) -> Iterator[Server]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    state = Server(f"http://127.0.0.1:{httpd.server_address[1]}")
    httpd.RequestHandlerClass = _handler(state)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    monkeypatch.setenv("NSTLIB_PAINTINGS_URL", state.origin)
    yield state
    state.release.set()
    httpd.shutdown()
    httpd.server_close()


def _served_path(name: str) -> str:
    return PAINTINGS[name].url.removeprefix(UPLOAD_ORIGIN)


def test_a_painting_is_downloaded_once_then_read_from_the_cache(server, tmp_path) -> None:
    image = painting("starry_night", 48, cache_dir=tmp_path, progress=False)
    assert image.shape == (1, 3, 32, 48) and 0 <= image.min() and image.max() <= 1
    assert server.paths == [_served_path("starry_night")] and server.agents[0].startswith("nstlib/")
    assert [p.name for p in tmp_path.iterdir()] == ["starry_night.jpg"]
    assert (tmp_path / "starry_night.jpg").read_bytes() == JPEG
    again = painting("starry_night", 48, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, image) and len(server.paths) == 1  # no second request


def test_the_default_cache_is_nstlib_cache(server, tmp_path) -> None:
    assert painting_path("scream", progress=False) == tmp_path / "cache" / "scream.jpg"


def test_a_home_folder_that_does_not_exist_is_not_created(server, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("NSTLIB_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "nonexistent"))
    with pytest.raises(DownloadError, match="does not exist; set NSTLIB_CACHE"):
        painting("scream", progress=False)
    assert server.paths == [] and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("mode", "cause"), [
    ("html", "did not verify"),  # an error page served with status 200
    ("404", "Not Found"),
    ("cut", "connection closed after"),
])
def test_a_bad_answer_leaves_nothing_in_the_cache(server, tmp_path, mode: str, cause: str) -> None:
    server.mode = mode
    with pytest.raises(DownloadError, match=cause) as caught:
        painting("great_wave", cache_dir=tmp_path / "c", progress=False)
    message = str(caught.value)
    assert message.startswith("painting 'great_wave' (The Great Wave off Kanagawa) could not be downloaded")
    assert "sample('waves')" in message and "\n" not in message
    assert list((tmp_path / "c").iterdir()) == []


def test_style_image_gives_the_painting_with_its_credit(server) -> None:
    image, label = style_image("starry_night", "waves", 48)
    assert image.shape == (1, 3, 32, 48)
    assert label == "The Starry Night, Vincent van Gogh, 1889, public domain (Wikimedia Commons)"


def test_style_image_offline_falls_back_at_once() -> None:
    start = time.monotonic()
    image, label = style_image("starry_night", "waves", 64)
    assert time.monotonic() - start < nstlib.io.data.STYLE_IMAGE_TIMEOUT
    assert label == "offline: bundled 'waves' instead of The Starry Night"
    assert torch.equal(image, sample("waves", 64))


def test_style_image_does_not_wait_past_its_timeout(server, monkeypatch, tmp_path) -> None:
    server.mode = "stall"
    monkeypatch.setattr(nstlib.io.data, "STYLE_IMAGE_TIMEOUT", 0.3)
    start = time.monotonic()
    _, label = style_image("composition_vii", "stained_glass")
    assert time.monotonic() - start < 3 and label == "offline: bundled 'stained_glass' instead of Composition VII"
    assert len(server.paths) == 1 and list((tmp_path / "cache").iterdir()) == []  # one try, nothing kept


def test_style_image_gives_up_on_a_server_that_drips(server, monkeypatch) -> None:
    """Every byte comes within any read timeout, and the painting is complete after 4 s: only an overall deadline
    gives the fallback (the label proves it, no clock is read)."""
    server.mode = "drip"
    monkeypatch.setattr(nstlib.io.data, "STYLE_IMAGE_TIMEOUT", 0.5)
    _, label = style_image("great_wave", "waves")
    assert label == "offline: bundled 'waves' instead of The Great Wave off Kanagawa"


def test_a_painting_announced_far_too_large_is_refused_at_once(server, tmp_path) -> None:
    server.mode = "huge"
    with pytest.raises(DownloadError, match="announces 10,737,418,240 bytes, more than the 16,777,216 expected"):
        painting("scream", cache_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_cached_painting_is_downloaded_again_or_falls_back(server, tmp_path) -> None:
    cached = tmp_path / "cache" / "starry_night.jpg"
    cached.parent.mkdir()
    cached.write_bytes(JPEG[: len(JPEG) // 2])  # cut short since (a full disk, a crash of another program)
    image, label = style_image("starry_night", "waves", 48)
    assert label.startswith("The Starry Night") and cached.read_bytes() == JPEG and image.shape == (1, 3, 32, 48)
    cached.write_bytes(b"not a picture")
    server.mode = "404"
    _, label = style_image("starry_night", "waves")
    assert label.startswith("offline: bundled 'waves'") and cached.read_bytes() == b"not a picture"  # not trusted
    server.mode = "jpeg"
    assert style_image("starry_night", "waves")[1].startswith("The Starry Night") and cached.read_bytes() == JPEG


def test_unknown_names_list_the_choices(server) -> None:
    with pytest.raises(ImageLoadError, match="unknown painting 'mona_lisa'; choose one of starry_night, "):
        painting("mona_lisa")
    with pytest.raises(ImageLoadError, match="unknown painting 'mona_lisa'"):
        style_image("mona_lisa", "waves")
    with pytest.raises(ImageLoadError, match="unknown sample 'wave'; choose one of"):
        style_image("starry_night", "wave")  # a typo in the fallback fails online too
    assert server.paths == []


def test_every_catalogue_entry_is_a_public_domain_commons_file() -> None:
    assert {p.artist for p in PAINTINGS.values()} >= {"Vincent van Gogh", "Katsushika Hokusai", "Edvard Munch",
                                                      "Wassily Kandinsky", "J. M. W. Turner"}
    for name, p in PAINTINGS.items():
        assert p.name == name and p.title and p.artist and p.year and p.licence == "public domain"
        url = urlsplit(p.url)
        assert (url.scheme, url.netloc) == ("https", "upload.wikimedia.org") and not url.query
        root, wiki, commons, thumb, first, first_two, quoted, thumbnail = url.path.split("/")
        assert (root, wiki, commons, thumb) == ("", "wikipedia", "commons", "thumb")
        file = unquote(quoted)
        assert " " not in file and file.endswith(".jpg")
        digest = hashlib.md5(file.encode()).hexdigest()  # Commons' hash path: a/ab from the MD5 of the name
        assert (first, first_two) == (digest[0], digest[:2]), name
        width, _, thumbnail_of = thumbnail.partition("px-")
        assert thumbnail_of == quoted and int(width) in STANDARD_WIDTHS
        assert p.source == f"https://commons.wikimedia.org/wiki/File:{file}"
