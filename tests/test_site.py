"""The course site: its executed notebooks are the notebooks as committed, and it builds and renders in a browser.

`docs/build_site.py --no-execute` builds the site from docs/course/ into a temporary folder; a local HTTP server
serves it and headless Chromium (Debian's, as in test_browser.py) opens the front page, every notebook page and the
API reference. The formulas are typeset by MathJax, which the pages load from the jsDelivr CDN; the network is
closed here, so the browser is answered from the npm package in NSTLIB_MATHJAX (a node_modules folder holding
`mathjax` and its font package; .ci/run installs it with npm). Elsewhere the formula test is skipped.
"""

from __future__ import annotations

import base64
import functools
import http.server
import importlib.util
import io
import os
import random
import re
import threading
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from common import CHROMIUM, CHROMIUM_ARGS
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("build_site", ROOT / "docs" / "build_site.py")
build_site = importlib.util.module_from_spec(spec)
spec.loader.exec_module(build_site)

NOTEBOOKS = build_site.notebooks()
CDN = re.compile(r"https://cdn\.jsdelivr\.net/npm/((?:@[^/]+/)?[^@/]+)@[^/]+/(.*)")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_executed_copy_matches_the_notebook(notebook: Path) -> None:
    """The site shows what the notebook says: a copy whose cells differ must be re-executed."""
    assert build_site.stale(notebook) is None, "re-execute it: python docs/build_site.py"


def test_no_execute_refuses_a_stale_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    stale_copy = tmp_path / NOTEBOOKS[0].name
    stale_copy.write_text(NOTEBOOKS[0].read_text().replace("Feature maps", "Feature nets", 1))
    monkeypatch.setattr(build_site, "EXECUTED", tmp_path)
    monkeypatch.setattr(build_site, "build", lambda: pytest.fail("built from a stale copy"))
    assert build_site.main(["--no-execute"]) == 2
    error = capsys.readouterr().err
    assert f"the executed copy of {NOTEBOOKS[0].name} differs from it" in error
    assert f"the executed copy of {NOTEBOOKS[1].name} is missing" in error
    assert error.count("\n") == 1 and "Run: python docs/build_site.py" in error


def test_new_text_reaches_the_copy_without_running_it_and_new_code_does_not(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    copy = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("Old words."),
                                           nbformat.v4.new_code_cell("x = 1")])
    copy.cells[1].outputs = [nbformat.v4.new_output("stream", text="ran\n")]
    (tmp_path / "course").mkdir()
    nbformat.write(copy, tmp_path / "course" / "01_x.ipynb")
    monkeypatch.setattr(build_site, "EXECUTED", tmp_path / "course")
    source = tmp_path / "01_x.ipynb"
    edited = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("New words."),
                                             nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(edited, source)
    assert build_site.stale(source) and build_site.retext(source) and build_site.stale(source) is None
    kept = nbformat.read(tmp_path / "course" / "01_x.ipynb", as_version=4)
    assert kept.cells[0].source == "New words." and kept.cells[1].outputs[0].text == "ran\n"
    edited.cells[1].source = "x = 2"
    nbformat.write(edited, source)
    assert not build_site.retext(source) and build_site.stale(source)


def test_a_page_keeps_what_works_without_a_kernel() -> None:
    """compact: a progress bar goes, the explorer keeps its text, a photo becomes a JPEG, a flat PNG stays."""

    def png(picture: Image.Image) -> str:
        buffer = io.BytesIO()
        picture.save(buffer, "PNG")
        return base64.b64encode(buffer.getvalue()).decode()

    noise = Image.frombytes("RGB", (64, 64), random.Random(0).randbytes(64 * 64 * 3))  # detail: far smaller as JPEG
    flat = Image.new("RGB", (64, 64), "white")
    view = {build_site.WIDGET: {"model_id": "0"}}
    outputs = [nbformat.v4.new_output("display_data", data={**view, "text/plain": "  0%|"}),
               nbformat.v4.new_output("execute_result", data={**view, "text/plain": "StyleExplorer(...)"},
                                      execution_count=1),
               nbformat.v4.new_output("display_data", data={"image/png": png(noise)}),
               nbformat.v4.new_output("display_data", data={"image/png": png(flat)})]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=outputs)],
                                        metadata={"widgets": {"state": {}}})
    build_site.compact(notebook)
    assert "widgets" not in notebook.metadata
    kept = [sorted(output.data) for output in notebook.cells[0].outputs]
    assert kept == [["text/plain"], ["image/jpeg"], ["image/png"]]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # no line per request on stderr
        pass


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The site built from docs/course/ as committed, served on 127.0.0.1; yields its base URL."""
    if not CHROMIUM.exists():
        pytest.skip("needs Debian's chromium at /usr/bin/chromium (apt-get install chromium; .ci/run installs it)")
    pytest.importorskip("myst_nb", reason="needs the site's tools: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp("site")
    build_site.build(out)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(out)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def page(site: str) -> Iterator[object]:
    """A Chromium page. The network is closed: requests to CDNs fail at once rather than time out."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.set_default_timeout(60_000)
            page.route(lambda url: not url.startswith(site), lambda route: route.abort())
            yield page
        finally:
            browser.close()


def _open(page: object, site: str, path: str) -> list[str]:
    """Load the page at `path` of the site (its images included); the site's own images that did not load."""
    page.goto(site + path, wait_until="load")
    return page.evaluate("""site => [...document.images]
        .filter(i => i.src.startsWith(site) && !(i.complete && i.naturalWidth > 0)).map(i => i.src)""", site)


def test_pages_show_their_figures_and_the_api(site: str, page: object) -> None:
    assert _open(page, site, "index.html") == []
    assert page.locator("img[src$='paintings.jpg']").count() == 1  # the gallery leads
    folded = 0
    for notebook in NOTEBOOKS:
        url = f"course/{notebook.stem}.html"
        assert _open(page, site, url) == [], url
        assert page.locator("div.cell_output img").count() >= 1, f"{url} shows no figure from its outputs"
        assert page.locator("script[type*='widget']").count() == 0, f"{url} has a widget that cannot respond"
        assert "come from running the notebook top to bottom on" in page.inner_text("main"), f"{url}: how was it run?"
        solutions = page.locator("div.tag_solution div.cell_input").all()
        assert not any(solution.is_visible() for solution in solutions), f"{url} shows a solution unasked"
        folded += len(solutions)
    assert folded == sum(notebook.read_text().count("#@title Solution") for notebook in NOTEBOOKS)
    assert _open(page, site, "api.html") == []
    assert page.locator("dt#nstlib\\.api\\.stylize").count() == 1  # from the docstring


def test_formulas_are_typeset(site: str, page: object) -> None:
    if not os.environ.get("NSTLIB_MATHJAX"):
        pytest.skip("set NSTLIB_MATHJAX to a node_modules folder with mathjax 4 (npm install mathjax@4); "
                    ".ci/run does")
    packages = Path(os.environ["NSTLIB_MATHJAX"])

    def from_npm(route: object) -> None:  # jsDelivr's /npm/PACKAGE@VERSION/PATH is node_modules/PACKAGE/PATH
        match = CDN.match(route.request.url)
        path = packages / match[1] / match[2] if match else None
        if path and path.is_file():
            route.fulfill(path=str(path))
        else:
            route.abort()

    page.route("https://cdn.jsdelivr.net/**", from_npm)  # before the catch-all abort: the newest route wins
    for name in ("02_gram_matrices", "03_losses"):
        _open(page, site, f"course/{name}.html")
        page.wait_for_function("() => document.querySelectorAll('mjx-container').length > 0")
        assert page.locator("mjx-container").count() >= 10, name
        assert page.locator("mjx-merror").count() == 0, f"{name}: MathJax could not typeset a formula"
        assert page.locator("span.math:not(:has(mjx-container)), div.math:not(:has(mjx-container))").count() == 0


def test_a_large_animation_keeps_every_kth_frame_and_its_length(monkeypatch: pytest.MonkeyPatch) -> None:
    """thin_gif: over the budget, every k-th frame and the last, each k times as long; under it, unchanged."""
    frames = [Image.frombytes("RGB", (48, 48), random.Random(i).randbytes(48 * 48 * 3)) for i in range(10)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=80, loop=0)
    gif = buffer.getvalue()
    assert build_site.thin_gif(gif) == gif
    monkeypatch.setattr(build_site, "GIF_BYTES", len(gif) // 3 + 1)  # k = 3: frames 0, 3, 6, 9
    with Image.open(io.BytesIO(build_site.thin_gif(gif))) as thin:
        assert thin.n_frames == 4 and thin.info["duration"] == 240
