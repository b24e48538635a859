"""Notebook 01's first stylisation: the learner's photo comes in (`course.load_photo`: the bundled cat, a file, an
address, a Colab upload) and the result goes out (`course.offer_download`), never blocking and never overwriting.

Addresses are served by a local HTTP server on 127.0.0.1 (the tests never go online); Colab is a stand-in
`google.colab` module that records what the notebook asked of it.
"""

from __future__ import annotations

import http.server
import io
import sys
import threading
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nstlib
from nstlib import course
from nstlib.core.errors import DownloadError, ImageLoadError, OutputError


def _png(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


PHOTO = _png(160, 80)


class _Handler(http.server.BaseHTTPRequestHandler):
    """/photo.png: a picture. /page.png: an HTML page. /huge.png: announces more bytes than the limit allows.
    /endless.png: no length, and more bytes than the limit."""

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        name = self.path.strip("/")
        self.send_response(200)
        if name == "photo.png":
            self.send_header("Content-Length", str(len(PHOTO)))
            self.end_headers()
            self.wfile.write(PHOTO)
        elif name == "page.png":
            body = b"<html>not a picture</html>"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif name == "huge.png":
            self.send_header("Content-Length", str(course.PHOTO_MAX_BYTES + 1))
            self.end_headers()
        else:  # endless.png: bytes until the client hangs up
            self.end_headers()
            try:
                for _ in range(64):
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def colab(monkeypatch: pytest.MonkeyPatch) -> types.SimpleNamespace:
    """A stand-in for Colab: `google.colab.files` whose upload returns `uploads` and whose download records paths."""
    state = types.SimpleNamespace(uploads={}, downloaded=[])
    files = types.SimpleNamespace(upload=lambda: state.uploads, download=state.downloaded.append)
    google = types.ModuleType("google")
    colab_module = types.ModuleType("google.colab")
    colab_module.files = files
    google.colab = colab_module
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab_module)
    return state


def test_no_photo_is_the_bundled_cat_at_the_size_asked() -> None:
    image, name = course.load_photo("", 64)
    assert torch.equal(image, nstlib.sample("chelsea", 64)) and "chelsea" in name


def test_a_file_path_is_loaded_and_a_missing_one_is_named(tmp_path: Path) -> None:
    (tmp_path / "me.png").write_bytes(PHOTO)
    image, name = course.load_photo(str(tmp_path / "me.png"), 80)
    assert image.shape == (1, 3, 40, 80) and name.endswith("me.png")
    with pytest.raises(ImageLoadError, match="nope.png"):
        course.load_photo(tmp_path / "nope.png")


def test_an_address_is_downloaded_safely_and_leaves_nothing_behind(server: str, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))  # where the temporary download folder goes
    image, name = course.load_photo(f"{server}/photo.png", 80)
    assert image.shape == (1, 3, 40, 80) and name == f"{server}/photo.png"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("path", "cause"), [
    ("page.png", "did not verify"),
    ("huge.png", "announces 30,000,001 bytes, more than the 30,000,000 expected"),
    ("endless.png", "sent more than"),
])
def test_an_address_that_is_no_photo_or_too_large_is_refused(server: str, path: str, cause: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "endless.png":  # the same rule, at a limit the test can reach quickly
        monkeypatch.setattr(course, "PHOTO_MAX_BYTES", 1_000_000)
        cause = "sent more than the 1,000,000 bytes expected"
    with pytest.raises(DownloadError, match=cause):
        course.load_photo(f"{server}/{path}")


def test_upload_never_waits_outside_colab(capsys: pytest.CaptureFixture[str]) -> None:
    assert "google.colab" not in sys.modules
    image, name = course.load_photo("", 64, upload=True)
    assert "chelsea" in name and "uploading works on Colab" in capsys.readouterr().out


def test_on_colab_an_upload_is_used_and_nothing_uploaded_falls_back(colab: types.SimpleNamespace,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    colab.uploads = {"holiday photo.png": PHOTO}
    image, name = course.load_photo("", 80, upload=True)
    assert image.shape == (1, 3, 40, 80) and name == "your upload 'holiday photo.png'"
    colab.uploads = {}
    image, name = course.load_photo("", 64, upload=True)
    assert "chelsea" in name and "nothing was uploaded" in capsys.readouterr().out
    image, name = course.load_photo("", 64)  # without the flag, no upload is asked for
    assert "chelsea" in name


def test_the_result_is_saved_without_overwriting_and_linked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    result = nstlib.stylize(nstlib.sample("chelsea", 48), nstlib.sample("waves", 48), steps=1, progress=False,
                            network="random")
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    monkeypatch.setenv(course.OUTPUT_DIR_ENV, str(tmp_path))
    first, second = course.offer_download(result, "mine.png"), course.offer_download(result, "mine.png")
    assert (first.name, second.name) == ("mine.png", "mine-2.png")
    assert Image.open(first).text["nstlib:network"] == result.network  # the PNG says which network made it
    assert [str(link) for link in shown] == [str(first), str(second)]
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(course.OUTPUT_DIR_ENV)
    assert course.offer_download(result.image, "mine.png").resolve() == tmp_path / "mine-3.png"  # the working folder
    with pytest.raises(OutputError):
        course.offer_download(result.image, "mine.txt")


def test_on_colab_the_browser_downloads_it(colab: types.SimpleNamespace, tmp_path: Path) -> None:
    path = course.offer_download(nstlib.sample("chelsea", 64), folder=tmp_path)
    assert colab.downloaded == [str(path)] and path.name == "stylised.png"
